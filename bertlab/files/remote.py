"""Object stores and other fsspec URLs: the one place bertlab reads and writes through fsspec.

Decisions:
- A path is remote when it is a URL (`s3://`, `gs://`, `hf://`, `https://`, `memory://`, ...)
  whose protocol is not the local file system; `file://` URLs and plain paths are local and every
  caller keeps its local code for them unchanged (atomic renames, fsync, free-space checks).
- Credentials and endpoints come from the usual environment, read by the file system's own
  package: for S3, s3fs through botocore (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
  `AWS_SESSION_TOKEN`, `AWS_PROFILE`, `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL` for an S3 API
  elsewhere than AWS: MinIO, Ceph, a test server). No option is passed here, so bertlab and
  Lightning (its checkpoint writer and TensorBoard logger, which open the same URLs with
  fsspec's defaults) share one cached file system instance.
- Files are streamed: `open_read` returns a seekable file object read by ranges of
  `BLOCK_SIZE`, never a local copy of the whole object.
- Listings can be stale: s3fs caches them per instance, and a checkpoint or log written by
  another writer (TensorBoard's own, another process) is not in that cache. `refresh` drops it;
  callers that look for the newest checkpoint or a run's version folders call it first.
- Every failure the user can fix (no such bucket or object, no credentials or access, the file
  system's package not installed, the endpoint unreachable) is a one-line ValueError naming the
  URL, never a traceback from botocore or aiohttp.
"""

from __future__ import annotations

import contextlib
import fnmatch
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

BLOCK_SIZE = 4 * 2**20  # bytes a streamed read fetches at a time
_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]*)://")
_LOCAL_PROTOCOLS = ("file", "local")
_GLOB = re.compile(r"[*?[]")
# What to install for each protocol, for the message when its package is missing.
INSTALL = {
    "s3": "pip install 'bertlab[remote]' (s3fs)",
    "s3a": "pip install 'bertlab[remote]' (s3fs)",
    "gs": "pip install gcsfs",
    "gcs": "pip install gcsfs",
    "http": "pip install aiohttp",
    "https": "pip install aiohttp",
}


def protocol(path: Any) -> str | None:
    """`s3` for `s3://bucket/key`; None for a plain path."""
    match = _URL.match(str(path))
    return match.group("protocol").lower() if match else None


def is_remote(path: Any) -> bool:
    """Whether `path` is a URL to read or write through fsspec (not a local path or file://)."""
    found = protocol(path)
    return found is not None and found not in _LOCAL_PROTOCOLS


def has_glob(path: Any) -> bool:
    return bool(_GLOB.search(str(path)))


def join(folder: Any, *names: str) -> str:
    """`folder/name` for a URL or a local path (pathlib would fold a URL's `//`)."""
    if not is_remote(folder):
        return str(Path(folder, *names))
    return "/".join([str(folder).rstrip("/"), *(n.strip("/") for n in names)])


def parent(path: Any) -> str:
    """The folder of a URL (`s3://b/x/y.txt` -> `s3://b/x`)."""
    text = str(path).rstrip("/")
    head, _, _ = text.rpartition("/")
    return head if not head.endswith(":/") else text


def name(path: Any) -> str:
    """The last part of a URL or path (`shard-0.jsonl.gz`)."""
    return str(path).rstrip("/").rpartition("/")[2]


def _one_line(url: str, error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


@contextlib.contextmanager
def errors(url: str, what: str = "", keep: tuple[type, ...] = ()) -> Iterator[None]:
    """Turn what a file system raises for `url` into a one-line ValueError naming it.

    `keep`: exceptions the caller handles itself (a corrupt gzip stream, say).
    """
    doing = f" ({what})" if what else ""
    try:
        yield
    except (ValueError, *keep):
        raise
    except ImportError as error:
        install = INSTALL.get(protocol(url) or "", "install its fsspec implementation")
        raise ValueError(
            f"{url}: {protocol(url)}:// URLs need a package that is not installed: {install} "
            f"({_one_line(url, error)})"
        ) from None
    except FileNotFoundError as error:
        reason = _one_line(url, error)
        if "bucket" in reason.lower():
            bucket = _URL.sub("", url).strip("/").split("/", 1)[0]
            raise ValueError(f"{url}: no such bucket {bucket!r}") from None
        raise ValueError(f"{url}: no such file or folder{doing}") from None
    except PermissionError as error:
        raise ValueError(
            f"{url}: access denied{doing} ({_one_line(url, error)}); check the credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)"
        ) from None
    except Exception as error:  # botocore, aiohttp, gcsfs: many kinds, all the store's answer
        kind = type(error).__name__
        hint = ""
        if "credential" in kind.lower() or "credential" in str(error).lower():
            hint = "; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        elif "connect" in kind.lower() or "endpoint" in kind.lower():
            hint = "; check AWS_ENDPOINT_URL and the network"
        raise ValueError(f"{url}: {kind}{doing}: {_one_line(url, error)}{hint}") from None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, its path) for `url`; the instance is fsspec's cached one."""
    from fsspec.core import url_to_fs

    with errors(url):
        return url_to_fs(url)


def _url(fs: Any, path: str, like: str) -> str:
    """A file system's bare path back as a URL of `like`'s protocol."""
    return fs.unstrip_protocol(path) if protocol(like) else path


def refresh(url: str) -> None:
    """Forget cached listings under `url`, so files other writers made since are seen."""
    fs, path = filesystem(url)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
        fs.invalidate_cache()


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    with errors(url):
        return bool(fs.exists(path))


def is_dir(url: str) -> bool:
    fs, path = filesystem(url)
    with errors(url):
        return bool(fs.isdir(path))


def is_file(url: str) -> bool:
    fs, path = filesystem(url)
    with errors(url):
        return bool(fs.isfile(path))


def size(url: str) -> int:
    fs, path = filesystem(url)
    with errors(url):
        return int(fs.size(path))


def missing(url: str) -> str:
    """Why `url` names nothing, in a few words: `no such bucket b` or `no such file or folder`."""
    fs, path = filesystem(url)
    bucket = path.strip("/").split("/", 1)[0]
    if protocol(url) in ("s3", "s3a", "gs", "gcs") and bucket:
        try:
            there = fs.exists(bucket)
        except Exception:  # noqa: BLE001 (the store's answer to "is it there" is "no")
            there = False
        if not there:
            return f"no such bucket {bucket!r}"
    return "no such file or folder"


def glob(pattern: str) -> list[str]:
    """The URLs matching a glob (`s3://b/samples/*/shard-*.jsonl.gz`, `**` too), sorted."""
    fs, path = filesystem(pattern)
    with errors(pattern, "glob"):
        return sorted(_url(fs, p, pattern) for p in fs.glob(path))


def files_under(url: str, pattern: str = "*") -> list[tuple[str, dict]]:
    """(URL, info) of every file under folder `url`, recursively, whose name matches `pattern`.

    info holds the store's facts: `size`, and `mtime` (seconds) where the store gives one.
    """
    fs, path = filesystem(url)
    refresh(url)
    with errors(url, "listing"):
        found = fs.find(path, detail=True) if fs.exists(path) else {}
    out = []
    for key, info in sorted(found.items()):
        if info.get("type", "file") == "file" and fnmatch.fnmatch(posixpath.basename(key), pattern):
            out.append((_url(fs, key, url), {"size": info.get("size"), "mtime": _mtime(info)}))
    return out


def _mtime(info: dict) -> float:
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
        with contextlib.suppress(TypeError, ValueError):
            from datetime import datetime

            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    return 0.0


def names_in(url: str) -> set[str]:
    """The names of the files directly in folder `url` (one listing, not one request a file)."""
    fs, path = filesystem(url)
    with errors(url, "listing"):
        return {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}


def open_read(url: str) -> IO[bytes]:
    """A seekable binary file object streaming `url` (ValueError naming it when it cannot)."""
    fs, path = filesystem(url)
    with errors(url, "opening"):
        return fs.open(path, "rb", block_size=BLOCK_SIZE)


def read_text(url: str) -> str:
    with open_read(url) as f, errors(url, "reading"):
        return f.read().decode("utf-8")


def open_write(url: str) -> IO[bytes]:
    """A binary file object that becomes the object `url` when closed (a put: atomic)."""
    fs, path = filesystem(url)
    with errors(url, "writing"):
        return fs.open(path, "wb")


def check_writable(folder: str) -> None:
    """Write and delete a probe object in `folder`: a missing bucket or no access fails now."""
    probe = join(folder, ".bertlab-write-test")
    fs, path = filesystem(probe)
    with errors(folder, "writing a probe object"):
        with fs.open(path, "wb") as f:
            f.write(b"bertlab")
        fs.rm(path)
