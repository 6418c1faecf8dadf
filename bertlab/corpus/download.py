"""Download a Wikipedia `pages-articles` dump from the Wikimedia dumps site, resumable, verified.

Decisions:
- Only the standard library (urllib): a download is one GET with a Range header, nothing that
  needs a dependency.
- The URL layout is the dumps site's,
  BASE/{lang}wiki/{date}/{lang}wiki-{date}-pages-articles.xml.bz2, with BASE
  https://dumps.wikimedia.org or a mirror (--mirror or $BERTLAB_WIKIMEDIA_MIRROR).
- Data goes to NAME.part; an existing .part is resumed with `Range: bytes=N-` (a server that
  answers 200 instead of 206 makes us start again from zero). A dropped connection is retried,
  resuming, a few times before giving up; the .part stays for the next run.
- The finished file is checked against the dump's own `{lang}wiki-{date}-sha1sums.txt` (or
  md5sums.txt) before it takes its final name, so a file under the final name is always a
  verified one and a rerun uses it without touching the network. A mismatch deletes the .part
  (resuming a corrupt file cannot repair it) and is a ValueError naming the file and both sums.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

DEFAULT_MIRROR = "https://dumps.wikimedia.org"
MIRROR_ENV = "BERTLAB_WIKIMEDIA_MIRROR"
_USER_AGENT = "bertlab/0.1 (BERT pre-training corpus preparation; python-urllib)"
_CHUNK = 1 << 20
_RETRIES = 3


def dump_url(lang: str, date: str, mirror: str | None = None) -> str:
    """The URL of the pages-articles dump of `lang` Wikipedia on `date`."""
    lang, date = _check(lang, date)
    base = (mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")
    return f"{base}/{lang}wiki/{date}/{lang}wiki-{date}-pages-articles.xml.bz2"


def download_dump(
    lang: str, date: str | int, download_dir: str | os.PathLike, mirror: str | None = None
) -> Path:
    """Download (or resume) the dump into `download_dir`, verify its checksum, return its path."""
    url = dump_url(lang, str(date), mirror)
    name = url.rsplit("/", 1)[1]
    target = Path(download_dir) / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    algorithm, expected, sums_url = _expected_checksum(url, name)
    part = target.with_name(name + ".part")
    _fetch(url, part)
    actual = _file_digest(part, algorithm)
    if actual != expected:
        part.unlink()
        raise ValueError(
            f"{part}: {algorithm} checksum {actual} does not match {expected} from {sums_url}; "
            "the corrupt download was deleted, run again to download it afresh"
        )
    os.replace(part, target)
    return target


def _check(lang: str, date: str) -> tuple[str, str]:
    lang = str(lang).strip().lower().replace("-", "_")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", lang):
        raise ValueError(f"--download {lang!r} is not a Wikipedia language code (en, ja, zh_yue)")
    date = str(date).strip()
    if not re.fullmatch(r"\d{8}", date):
        raise ValueError(f"--date {date!r} must be a dump date YYYYMMDD, e.g. 20240601")
    return lang, date


def _open(url: str, start: int = 0):
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)


def _expected_checksum(url: str, name: str) -> tuple[str, str, str]:
    """(algorithm, hex digest, checksum file URL) for `name`, from the dump's checksum files."""
    folder = url.rsplit("/", 1)[0]
    prefix = name.split("-pages-articles")[0]
    errors = []
    for algorithm in ("sha1", "md5"):
        sums_url = f"{folder}/{prefix}-{algorithm}sums.txt"
        try:
            with _open(sums_url) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            errors.append(f"{sums_url}: HTTP {error.code}")
            continue
        except (urllib.error.URLError, OSError) as error:
            raise ValueError(f"{sums_url}: {getattr(error, 'reason', error)}") from None
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1] == name:
                return algorithm, fields[0].lower(), sums_url
        errors.append(f"{sums_url} does not list {name}")
    raise ValueError(
        f"{url}: cannot verify the download ({'; '.join(errors)}); is there a dump of this wiki "
        "on this date? The dates are listed at " + url.rsplit("/", 2)[0] + "/"
    )


def _fetch(url: str, part: Path) -> None:
    """Download `url` into `part`, resuming what is there; retry dropped connections."""
    for attempt in range(_RETRIES + 1):
        try:
            _fetch_once(url, part)
            return
        except urllib.error.HTTPError as error:
            raise ValueError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            if attempt == _RETRIES:
                raise ValueError(
                    f"{url}: {getattr(error, 'reason', error)} "
                    f"(the partial download {part} is kept; run again to resume)"
                ) from None
            time.sleep(2**attempt)


def _fetch_once(url: str, part: Path) -> None:
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing left to send: the .part is complete
            return
        raise
    with response:
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise ValueError(f"{url}: the server resumed at {content_range!r}, not at {start}")
            mode = "ab"
        else:  # the server ignored the Range header: start again
            start, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        progress = tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=part.name, disable=None
        )
        with progress, open(part, mode) as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                progress.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed at byte {part.stat().st_size} of {total}")


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
