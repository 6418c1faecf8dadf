"""The one output rule of every bertlab command that writes a folder (or a result file).

A command writes into a new or empty folder, or into a folder that holds only its own earlier
output, and then only with `--overwrite`. It never deletes an input or a file it did not make,
and it refuses an output folder that contains, or lies inside, one of its inputs. The
replacement is atomic: the new output is built beside the old one and renamed into place
(bertlab.files.atomic), so a failed run leaves the earlier output as it was.

Decisions:
- A command recognises its own output by a marker file it writes last, `.bertlab-output`: JSON
  naming the command and the entries (top-level names) it wrote. A folder whose every entry is
  the marker or one of those names is that command's; anything else in it (a user's notes, another
  command's output) makes it someone else's folder, refused even with `--overwrite`.
- Folders written by bertlab versions before the marker carry none. Each command names the files
  it has always written (`legacy`): a folder holding only those, with the command's key file, is
  taken for its earlier output (so `--overwrite` works on it as before); any other folder is
  refused with the advice to choose a new or empty folder. The marker is hidden, so
  the Hub upload, the corpus reader and the tokenizer loader never see it.
- `keep` names entries a command may find in its folder that are neither output nor foreign: its
  own caches and leftovers (prepare_corpus's downloaded dump in raw/, a killed run's hidden
  temporary files). They do not make a folder non-empty and are never deleted.
- Inputs are compared after resolving symlinks and `..`: an output equal to an input, one that
  holds an input at any depth (the input's folder, its parent, ...), or one inside an input folder
  is refused before anything is read or written.
- A run refused after it began (`bertlab fit`'s refusals from inside Lightning: a damaged
  held-out text, a resume mismatch) removes the run folder it made for itself (`new_folders`
  before, `remove_unused` after) when that holds no checkpoint, so a refusal leaves nothing
  behind; a folder that was there before, or that holds a checkpoint, stays as it is.
- Every refusal is a ValueError naming the output flag and path, which bertlab.command turns
  into one `error:` line and exit status 2.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bertlab.files.atomic import atomic_dir, atomic_write

MARKER = ".bertlab-output"
MARKER_VERSION = 1
# How many foreign names a refusal lists before "...": enough to recognise the folder.
SHOWN_NAMES = 3
# Commands whose output folder holds the outputs of the commands and runs they start (each in
# its own subfolder, with its own marker): the one kind of marked folder others may write in.
HOLDERS = frozenset({"gpu_check", "soak", "quality_benchmark", "scale_benchmark"})


@dataclass(frozen=True)
class Legacy:
    """How a command's output from before the marker is recognised: only these names, with
    `required` among them (e.g. a tokenizer folder's tokenizer_config.json)."""

    names: Collection[str]
    required: Collection[str]
    # Some outputs have numbered files (shard-00000.jsonl.gz): patterns also allowed.
    patterns: Collection[str] = ()

    def recognises(self, entries: list[str]) -> bool:
        def known(name: str) -> bool:
            return name in self.names or any(fnmatch.fnmatch(name, p) for p in self.patterns)

        return all(known(n) for n in entries) and all(r in entries for r in self.required)


Inputs = Iterable[tuple[str, "str | os.PathLike | None"]]


def _resolved(path: str | os.PathLike, flag: str = "") -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise ValueError(
            f"{flag} {path} is a symbolic link that points to itself".strip()
        ) from None


def _matches(name: str, patterns: Collection[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def read_marker(folder: Path) -> dict | None:
    """The marker's content, or None when the folder has none (or an unreadable one)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("command"), str):
        return None
    return marker


def refuse_foreign_text(path: str | os.PathLike, flag: str) -> None:
    """A text input that is a file of another command's output (a tokenizer's vocab.txt, a
    samples folder's meta.json, an export's config) is no corpus: refused, naming whose it is.
    prepare_corpus's own files are corpus text."""
    marker = read_marker(Path(path).parent)
    if marker is not None and marker["command"] != "prepare_corpus":
        raise ValueError(
            f"{flag} {path}: a file of {marker['command']}'s output, not corpus text; give a "
            "text file such as prepare_corpus's train.txt"
        )


COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def corpus_split(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(corpus folder, split) when `path` is a file of a prepare_corpus folder: train, valid or
    test (a compressed copy beside it, train.txt.gz, counts as its split), or the file's name."""
    path = Path(path)
    marker = read_marker(path.parent)
    if marker is None or marker["command"] != "prepare_corpus":
        return None
    name = path.name
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    split = name.removesuffix(".txt") if name in ("train.txt", "valid.txt", "test.txt") else name
    return path.parent, split


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (weights files run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def write_marker(folder: Path, command: str, names: Iterable[str] | None = None) -> None:
    """Write the marker naming `command` and the entries it wrote (default: all but the marker),
    with the SHA-256 of each weights file among them: their headers say nothing of bytes changed
    inside a tensor, and readers (bertlab.files.artefacts.check_model_weights) compare."""
    if names is None:
        names = (p.name for p in folder.iterdir())
    entries = sorted({n for n in names if n != MARKER})
    marker = {"command": command, "version": MARKER_VERSION, "entries": entries}
    weights = [n for n in entries if n.endswith(".safetensors") and (folder / n).is_file()]
    if weights:
        marker["sha256"] = {name: file_sha256(folder / name) for name in weights}
    with atomic_write(folder / MARKER) as f:
        f.write(json.dumps(marker, indent=2) + "\n")


def check_inputs(
    output: str | os.PathLike, inputs: Inputs, flag: str = "--output_dir", noun: str = "folder"
) -> None:
    """Refuse an output that is, holds or lies inside one of `inputs` ((flag, path) pairs)."""
    out = _resolved(output, flag)
    for input_flag, value in inputs:
        if value is None:
            continue
        source = _resolved(value, input_flag)
        if source == out:
            raise ValueError(f"{flag} {output} is {input_flag} {value}; choose another {noun}")
        if out in source.parents:
            raise ValueError(f"{flag} {output} holds {input_flag} {value}; choose another folder")
        if source in out.parents:
            raise ValueError(
                f"{flag} {output} is inside {input_flag} {value}; choose a {noun} outside it"
            )
        linked = _hard_link_in(out, source)
        if linked is not None:
            raise ValueError(
                f"{flag} {output} holds {input_flag} {value} under another name ({linked} is a "
                f"hard link to it); choose another {noun}, or copy the input"
            )


def _hard_link_in(out: Path, source: Path) -> Path | None:
    """A file in (or at) `out` that is `source` by another name: only a file with more than one
    link can be one, so folders are walked for those alone."""
    try:
        info = source.stat()
    except OSError:
        return None
    if not source.is_file() or info.st_nlink < 2 or not out.exists():
        return None
    candidates = out.rglob("*") if out.is_dir() else [out]
    for path in candidates:
        try:
            other = path.stat()
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
            return path
    return None


def _refuse_url(output: str | os.PathLike, flag: str) -> None:
    """A tool writes a local folder: `s3://b/c` would become a folder named `s3:` here."""
    # A Path has already folded `s3://b` into `s3:/b`: the scheme is what tells.
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(output)):
        raise ValueError(
            f"{flag} {output} is a URL; this command writes a local path (only bertlab fit "
            "writes its runs to an object store): write here, then copy it there"
        )


def check_outside_outputs(output: str | os.PathLike, flag: str, command: str | None = None) -> None:
    """Refuse an output inside another command's marked output folder (a HOLDERS folder
    aside): the owner's --overwrite would then be refused, and its Hub upload or its reader
    would take the stranger for its own. With `command`, `output` itself must not be another
    command's folder either (for caches, which check_output_folder does not judge)."""
    _refuse_url(output, flag)
    out = _resolved(output, flag)
    for owner in (out, *out.parents) if command else out.parents:
        marker = read_marker(owner) if owner.is_dir() else None
        if marker is None or (owner != out and marker["command"] in HOLDERS):
            continue
        if owner == out:
            if marker["command"] != command:
                raise ValueError(
                    f"{flag} {output} holds the output of {marker['command']}, not {command}; "
                    "choose another folder"
                )
            continue
        raise ValueError(
            f"{flag} {output} is inside {owner} ({marker['command']}'s output), which would "
            f"then hold files {marker['command']} did not write; choose a folder outside it"
        )


def check_output_folder(
    output: str | os.PathLike,
    command: str,
    inputs: Inputs = (),
    overwrite: bool = False,
    *,
    flag: str = "--output_dir",
    legacy: Legacy | None = None,
    keep: Collection[str] = (),
) -> bool:
    """Refuse an output folder the rule forbids; True when it holds an earlier output to replace.

    Args:
        output: the folder the command is about to write.
        command: the command's name, as its marker records it.
        inputs: (flag, path) of everything the command reads; None paths are skipped.
        overwrite: the user passed --overwrite.
        flag: the output's flag, for the messages.
        legacy: how the command's output from before the marker looks, if it has one.
        keep: names or patterns of the command's own caches and leftovers (never output).
    """
    check_inputs(output, inputs, flag)
    check_outside_outputs(output, flag)
    path = Path(output)
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{flag} {output} is a link to {os.readlink(path)}, which does not exist; remove "
            "the link or give another folder"
        )
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {output} is a file, not a folder; give a folder to write")
    if not path.exists():
        return False
    entries = sorted(p.name for p in path.iterdir() if not _matches(p.name, keep))
    if not entries:
        return False
    marker = read_marker(path)
    if marker is None:
        if legacy is None or not legacy.recognises(entries):
            raise ValueError(
                f"{flag} {output} is not empty and holds no output of {command} "
                f"({_shown(entries)}); choose a new or empty folder"
            )
    elif marker["command"] != command:
        raise ValueError(
            f"{flag} {output} holds the output of {marker['command']}, not {command}; "
            "choose another folder"
        )
    else:
        own = set(marker.get("entries") or ()) | {MARKER}
        foreign = [n for n in entries if n not in own]
        if foreign:
            raise ValueError(
                f"{flag} {output} holds files {command} did not write ({_shown(foreign)}); "
                "choose a new or empty folder, or move them away"
            )
    if not overwrite:
        raise ValueError(
            f"{flag} {output} holds an earlier output of {command}; pass --overwrite to "
            "replace it, or choose another folder"
        )
    return True


def _shown(names: list[str]) -> str:
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")


@contextlib.contextmanager
def output_folder(output: str | os.PathLike, command: str) -> Iterator[Path]:
    """Yield a temporary folder that replaces `output` whole on success, once the caller has
    checked the rule (check_output_folder, before its slow work). The marker is written into it
    last, listing what the command put there."""
    with atomic_dir(output) as tmp:
        yield tmp
        write_marker(tmp, command)


def check_output_file(
    output: str | os.PathLike,
    command: str,
    inputs: Inputs = (),
    overwrite: bool = False,
    *,
    flag: str,
    recognise: Callable[[Path], bool],
    appends: bool = False,
) -> None:
    """The same rule for a single result file: never an input or inside an input folder; an
    existing file only if `recognise` says this command wrote it, and only with --overwrite
    (`appends`: a file the command adds to, its own earlier one continued without it)."""
    check_inputs(output, inputs, flag, noun="file name")
    check_outside_outputs(output, flag)
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"{flag} {output} is a folder; give a file name to write")
    if not path.exists():
        return
    if not recognise(path):
        raise ValueError(
            f"{flag} {output} exists and is not a result of {command}; choose another file name"
        )
    if not overwrite and not appends:
        raise ValueError(
            f"{flag} {output} holds an earlier result of {command}; pass --overwrite to "
            "replace it, or choose another file name"
        )


def new_folders(folder: str | os.PathLike) -> list[Path]:
    """`folder` and each of its parents that does not exist yet, deepest first."""
    path, made = Path(folder).absolute(), []
    while not path.exists() and path != path.parent:
        made.append(path)
        path = path.parent
    return made


def remove_unused(folders: list[Path]) -> None:
    """Remove the folders `new_folders` found missing, now made by a refused run: the deepest
    with what the run wrote in it (its logs and config) unless a checkpoint is among it, each
    parent only when it is empty."""
    if not folders:
        return
    if folders[0].is_dir():
        if any(folders[0].rglob("*.ckpt")):
            return
        shutil.rmtree(folders[0], ignore_errors=True)
    for parent in folders[1:]:  # made by the run, and empty: a stop before its version folder
        with contextlib.suppress(OSError):  # not empty: something else is in it now
            parent.rmdir()
