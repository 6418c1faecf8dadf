"""Reading prepare_samples' output: resolve shard paths, check meta.json, stream and parse lines.

Decisions:
- A split is given as paths, directories or globs (or a list of them). A directory means every
  shard its meta.json lists; a file means that shard, described by the meta.json beside it. The
  meta.json is authoritative: shard sizes come from it without opening a shard, which is what
  lets every process agree on an epoch's batch count before reading a byte.
- All shards of a run must come from the same tokenizer (fingerprint) and agree on NSP labels;
  mixing them is a user's mistake, reported naming both folders.
- Lines are streamed as bytes and parsed only when a sample is really used; a reader that skips
  (another process's line, a batch already trained on before a resume) pays for reading only.
- A split may also be fsspec URLs (`s3://bucket/samples/train`, globs too: bertlab.files.remote):
  meta.json is read and the shards are streamed from the store by ranges (gzip over the streamed
  file object), never copied whole; the folder is listed once, not asked once per shard.
- Every user-visible problem in a shard is a one-line ValueError naming the file and line:
  malformed JSON, missing fields, a sample longer than max_seq_len, a token id outside the
  vocabulary, a truncated or corrupt gzip, a shard whose line count differs from meta.json.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bertlab.files import remote
from bertlab.files.identity import file_identity

SAMPLES_FORMAT = "bertlab.samples"
SAMPLES_FORMAT_VERSION = 1
SHARD_SUFFIXES = (".jsonl.gz", ".jsonl")
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@dataclass(frozen=True)
class Shard:
    path: str
    num_samples: int
    max_seq_len: int


@dataclass
class SampleSet:
    """The shards of one split and what their meta.json files agree on."""

    shards: list[Shard]
    folders: list[str]
    tokenizer: dict
    max_seq_len: int
    vocab_size: int
    special_ids: dict[str, int]
    nsp: bool
    metas: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def num_samples(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

    @property
    def source_files(self) -> dict:
        """The corpus files the samples were made from: file identity -> path as recorded."""
        return {
            file_identity(path): str(path)
            for meta in self.metas.values()
            for path in meta.get("source_files") or []
            if isinstance(path, str)
        }


def read_meta(folder: str | Path) -> dict:
    """Load and check folder/meta.json (ValueError naming the file when absent or wrong)."""
    if remote.is_remote(folder):
        path = remote.join(folder, "meta.json")
        if not remote.is_file(path):
            raise ValueError(
                f"{folder} has no meta.json: not a samples folder made by prepare_samples"
            )
        text = remote.read_text(path)
    else:
        path = Path(folder) / "meta.json"
        if not path.is_file():
            raise ValueError(
                f"{folder} has no meta.json: not a samples folder made by prepare_samples"
            )
        text = None
    try:
        meta = json.loads(text if text is not None else path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SAMPLES_FORMAT:
        raise ValueError(f"{path}: not a {SAMPLES_FORMAT} meta.json")
    if meta.get("format_version") != SAMPLES_FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {meta.get('format_version')} is not supported "
            f"(this bertlab reads version {SAMPLES_FORMAT_VERSION}); remake the samples"
        )
    for key in ("tokenizer", "max_seq_len", "shards"):
        if key not in meta:
            raise ValueError(f"{path}: missing {key!r}")
    _check_counts(meta, path)
    return meta


def _read_meta_of(folder: str | Path, flag: str) -> dict:
    """read_meta, its refusal led by the flag that named the folder."""
    try:
        return read_meta(folder)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None


def _check_size(path: Path, listed: dict, flag: str) -> None:
    """A local shard's size against the num_bytes its meta.json records (samples made before
    the field record none; an object store's shards are checked by their line count only)."""
    recorded = listed.get("num_bytes")
    size = path.stat().st_size
    if recorded is not None and size != recorded:
        raise ValueError(
            f"{flag}: {path} is damaged: {size:,} bytes, but its meta.json records "
            f"{recorded:,}: not the shard prepare_samples wrote (cut short, replaced or "
            "appended to); remake the samples"
        )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_counts(meta: dict, path: object) -> None:
    """The counts a reader trusts: a negative or non-integer one is a damaged meta.json (an
    epoch count of -409,600,000, a shard read as holding no samples)."""
    if not (_is_count(meta["max_seq_len"]) and meta["max_seq_len"] > 0):
        raise ValueError(f"{path} is damaged: max_seq_len {meta['max_seq_len']!r} is no length")
    tokenizer = meta["tokenizer"]
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("fingerprint"), str):
        raise ValueError(  # every check of samples against a tokenizer compares it
            f"{path} is damaged: its tokenizer record has no fingerprint; remake the samples"
        )
    if "nsp" in meta and not isinstance(meta["nsp"], bool):
        raise ValueError(f"{path} is damaged: nsp {meta['nsp']!r} is not true or false")
    if "num_samples" in meta and not _is_count(meta["num_samples"]):
        raise ValueError(f"{path} is damaged: num_samples {meta['num_samples']!r} is no count")
    if not isinstance(meta["shards"], list):
        raise ValueError(f"{path} is damaged: 'shards' is not a list")
    for shard in meta["shards"]:
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str):
            raise ValueError(f"{path} is damaged: a shard entry without a file name ({shard!r})")
        for key in ("num_samples", "num_bytes"):
            if (key == "num_samples" or key in shard) and not _is_count(shard.get(key)):
                raise ValueError(
                    f"{path} is damaged: {shard['file']}'s {key} {shard.get(key)!r} is no count"
                )
    listed = sum(shard["num_samples"] for shard in meta["shards"])
    if "num_samples" in meta and meta["num_samples"] != listed:  # which count is the truth?
        raise ValueError(
            f"{path} is damaged: num_samples {meta['num_samples']} is not the sum of its "
            f"shards' ({listed}); remake the samples"
        )


_warned_unlisted: set[str] = set()


def _warn_unlisted(folder: Path, listed: dict) -> None:
    """A shard file the folder's meta.json does not list is never read: said once, in a line."""
    unlisted = sorted(
        p.name for p in folder.iterdir() if p.name.endswith(SHARD_SUFFIXES) and p.name not in listed
    )
    key = str(folder.resolve())
    if unlisted and key not in _warned_unlisted:
        _warned_unlisted.add(key)
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        print(
            f"warning: {folder / unlisted[0]}{more} not listed in {folder / 'meta.json'}: not "
            "read (a leftover? remove it, or remake the samples)",
            file=sys.stderr,
        )


def _expand(entry: str, flag: str) -> list[Path]:
    path = Path(entry).expanduser()
    if path.exists():
        return [path]
    matches = sorted(glob.glob(str(path), recursive=True))
    if not matches:
        raise ValueError(f"{flag} {entry}: no such file, directory or glob match")
    return [Path(m) for m in matches]


def _expand_remote(entry: str, flag: str) -> list[tuple[str, bool]]:
    """(URL, is a folder) for a URL, a folder URL or a glob of them."""
    if remote.has_glob(entry):
        matches = remote.glob(entry)
        if not matches:
            raise ValueError(f"{flag} {entry}: no object or folder matches this glob")
        return [(m, remote.is_dir(m)) for m in matches]
    if remote.is_dir(entry):
        return [(entry.rstrip("/"), True)]
    if remote.is_file(entry):
        return [(entry, False)]
    raise ValueError(f"{flag} {entry}: {remote.missing(entry)}")


def _resolve_remote(
    entry: str, flag: str, metas: dict[str, dict], chosen: dict[str, Shard]
) -> None:
    listings: dict[str, set[str]] = {}
    for url, folder_given in _expand_remote(entry, flag):
        folder = url if folder_given else remote.parent(url)
        if folder not in metas:
            metas[folder] = _read_meta_of(folder, flag)
        meta = metas[folder]
        listed = {s["file"]: s for s in meta["shards"]}
        if folder_given:
            names = [s["file"] for s in meta["shards"]]
        elif remote.name(url).endswith(SHARD_SUFFIXES):
            names = [remote.name(url)]
        else:
            continue  # a glob also matched meta.json or another file: not a shard
        if folder not in listings:
            listings[folder] = remote.names_in(folder)
        for shard_name in names:
            if shard_name not in listed:
                raise ValueError(
                    f"{flag}: {remote.join(folder, shard_name)} is not listed in its meta.json"
                )
            if shard_name not in listings[folder]:
                raise ValueError(
                    f"{flag}: {folder}/meta.json lists {shard_name}, but the object is missing"
                )
            shard_url = remote.join(folder, shard_name)
            chosen.setdefault(
                shard_url,
                Shard(shard_url, int(listed[shard_name]["num_samples"]), meta["max_seq_len"]),
            )


def resolve_samples(spec: str | os.PathLike | list, flag: str) -> SampleSet:
    """Resolve paths / directories / globs to shards, checking the meta.json of every folder."""
    entries = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not entries:
        raise ValueError(f"{flag} is empty")
    metas: dict[str, dict] = {}
    chosen: dict[str, Shard] = {}  # absolute path -> shard, in the user's order
    for entry in entries:
        if remote.is_remote(entry):
            _resolve_remote(str(entry), flag, metas, chosen)
            continue
        for path in _expand(str(entry), flag):
            folder = path if path.is_dir() else path.parent
            key = str(folder.resolve())
            if key not in metas:
                metas[key] = _read_meta_of(folder, flag)
            meta = metas[key]
            listed = {s["file"]: s for s in meta["shards"]}
            if path.is_dir():
                names = [s["file"] for s in meta["shards"]]
                _warn_unlisted(path, listed)
            elif path.name.endswith(SHARD_SUFFIXES):
                names = [path.name]
            else:
                continue  # a glob also matched meta.json or another file: not a shard
            for name in names:
                if name not in listed:
                    raise ValueError(f"{flag}: {folder / name} is not listed in its meta.json")
                shard_path = folder / name
                if not shard_path.is_file():
                    raise ValueError(
                        f"{flag}: {folder}/meta.json lists {name}, but the file is missing"
                    )
                _check_size(shard_path, listed[name], flag)
                chosen.setdefault(
                    str(shard_path.resolve()),
                    Shard(str(shard_path), int(listed[name]["num_samples"]), meta["max_seq_len"]),
                )
    if not chosen:
        raise ValueError(f"{flag} {spec}: no *.jsonl.gz / *.jsonl shards found")
    return _agree(list(chosen.values()), metas, flag)


def _agree(shards: list[Shard], metas: dict[str, dict], flag: str) -> SampleSet:
    folders = list(metas)
    first = metas[folders[0]]
    tokenizer = first["tokenizer"]
    nsp = bool(first.get("nsp", False))
    for folder in folders[1:]:
        meta = metas[folder]
        if meta["tokenizer"].get("fingerprint") != tokenizer.get("fingerprint"):
            raise ValueError(
                f"{flag}: {folders[0]} and {folder} were made with different tokenizers "
                f"(fingerprint {tokenizer.get('fingerprint')} != "
                f"{meta['tokenizer'].get('fingerprint')})"
            )
        if bool(meta.get("nsp", False)) != nsp:
            raise ValueError(f"{flag}: {folders[0]} and {folder} disagree on NSP labels (nsp)")
    if sum(s.num_samples for s in shards) == 0:
        raise ValueError(f"{flag}: the shards in {', '.join(folders)} hold no samples")
    return SampleSet(
        shards=shards,
        folders=folders,
        tokenizer=tokenizer,
        max_seq_len=max(int(metas[f]["max_seq_len"]) for f in folders),
        vocab_size=int(tokenizer["vocab_size"]),
        special_ids={k: int(v) for k, v in tokenizer["special_ids"].items()},
        nsp=nsp,
        metas=metas,
    )


def read_lines(path: str, expected: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (line number from 1, raw line) of a .jsonl or .jsonl.gz shard, streaming.

    A truncated or corrupt gzip stream, or (when the file is read to its end) a line count
    different from `expected`, is a ValueError naming the file and line.
    """
    number = 0
    opener = gzip.open if path.endswith(".gz") else open
    try:
        if remote.is_remote(path):
            with remote.open_read(path) as raw, remote.errors(path, "reading", _GZIP_ERRORS):
                f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
                for number, line in enumerate(f, start=1):  # noqa: B007 (used after the loop)
                    yield number, line
        else:
            with opener(path, "rb") as f:
                for number, line in enumerate(f, start=1):  # noqa: B007 (used after the loop)
                    yield number, line
    except _GZIP_ERRORS as e:
        raise ValueError(
            f"{path}: truncated or corrupt gzip after line {number} ({e}); remake this shard"
        ) from None
    if expected is not None and number != expected:
        raise ValueError(
            f"{path}: has {number} lines but its meta.json says {expected} samples; "
            "the shard or meta.json was changed after prepare_samples wrote them"
        )


def _all_ints(values: list) -> bool:
    try:
        return type(sum(values)) is int
    except TypeError:
        return False


def _has_bool(sample: dict) -> bool:
    """Whether a JSON true or false stands among the ids (sum() takes them for 1 and 0)."""
    return any(
        type(v) is bool
        for key in ("input_ids", "token_type_ids")
        if isinstance(sample.get(key), list)
        for v in sample[key]
    )


def parse_sample(
    raw: bytes, path: str, line: int, max_seq_len: int, vocab_size: int, nsp: bool
) -> dict:
    """Parse and check one shard line; ValueError naming file and line when it is not valid."""
    where = f"{path}:{line}"
    try:
        sample = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise ValueError(f"{where}: malformed JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(sample, dict):
        raise ValueError(f"{where}: a sample line must be a JSON object")
    ids = sample.get("input_ids")
    types = sample.get("token_type_ids")
    # sum/min/max run in C: a str, null or list raises TypeError, a float makes the sum a float;
    # only true and false pass for ints, and a byte scan finds whether any line holds one.
    if not isinstance(ids, list) or not ids or not _all_ints(ids):
        raise ValueError(f"{where}: input_ids must be a non-empty list of integers")
    if (b"true" in raw or b"false" in raw) and _has_bool(sample):
        raise ValueError(f"{where}: input_ids and token_type_ids must be integers, not true/false")
    if len(ids) > max_seq_len:
        raise ValueError(
            f"{where}: sample of {len(ids)} tokens is longer than max_seq_len {max_seq_len}"
        )
    if min(ids) < 0 or max(ids) >= vocab_size:
        bad = next(i for i in ids if i < 0 or i >= vocab_size)
        raise ValueError(f"{where}: token id {bad} is outside the vocabulary (size {vocab_size})")
    if (
        not isinstance(types, list)
        or len(types) != len(ids)
        or not _all_ints(types)
        or min(types) < 0
        or max(types) > 1
    ):
        raise ValueError(f"{where}: token_type_ids must be {len(ids)} zeros and ones")
    label = sample.get("next_sentence_label")
    if nsp and not (type(label) is int and 0 <= label <= 1):
        raise ValueError(f"{where}: next_sentence_label must be 0 or 1 (the data has NSP)")
    return sample
