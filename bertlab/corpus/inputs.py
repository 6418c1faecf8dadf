"""Raw corpus inputs: which files an --input names, and each format read into documents.

Decisions:
- By file name: MediaWiki dumps (`*.xml`, `*-pages-articles*.xml-p1p2.bz2`), plain text (`*.txt`:
  documents apart by blank lines, a paragraph a line) and JSON Lines (`*.jsonl`, a document's
  `text` a line), each optionally `.gz`, `.bz2` or `.xz`; Parquet and Arrow tables
  (bertlab.corpus.tables). Folders are read recursively and globs expanded, in sorted order;
  hidden files, other extensions and multistream dumps' index files inside a folder are skipped,
  but a file named outright must have a known extension. A folder another bertlab command wrote
  (its output marker) is refused as an input, and skipped inside an input folder (said in one
  line): a tokenizer's vocab.txt is no corpus, and an earlier corpus's held-out splits would
  leak into the new training split.
- A URL (bertlab.files.remote) stays a URL string and is streamed through its decompressor.
- Bad input is a one-line ValueError naming the file, with the line (JSON Lines) or byte offset
  (UTF-8, compressed data) where the problem is.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
import os
import re
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

from bertlab.corpus.wikipedia import Page, iter_pages
from bertlab.files import remote
from bertlab.files.artefacts import not_a_file
from bertlab.files.identity import file_identity
from bertlab.files.output_folder import MARKER, SHOWN_NAMES, corpus_split, read_marker

FORMAT = re.compile(r".*\.(xml|txt|jsonl)(?:-p\d+p\d+)?(?:\.(gz|bz2|xz))?", re.IGNORECASE)
TABLE = re.compile(r".*\.(parquet|arrow)", re.IGNORECASE)  # bertlab.corpus.tables reads them
_GLOB = re.compile(r"[*?[]")
_OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def input_roots(items: list[str]) -> list[Path]:
    """What the --input items name, globs expanded: the paths the output must stay clear of."""
    roots = []
    for item in map(str, items):
        if remote.is_remote(item):
            continue  # a URL cannot hold the local output folder
        if _GLOB.search(item) and not Path(item).exists():
            roots.extend(Path(m) for m in sorted(glob.glob(item, recursive=True)))
        else:
            roots.append(Path(item))
    return roots


def known_format(name: str) -> bool:
    return bool(FORMAT.fullmatch(name) or TABLE.fullmatch(name))


def _expand_remote(item: str) -> list[str]:
    """The files a URL --input names: the file, a folder's files (recursively), a glob's."""
    if _GLOB.search(item):
        found = [url for url in remote.glob(item) if known_format(remote.name(url))]
        if not found:
            raise ValueError(f"--input {item}: no file matches this pattern")
        return found
    if remote.is_dir(item):
        found = [
            url
            for url, _ in remote.files_under(item)
            if known_format(remote.name(url))
            and "multistream-index" not in remote.name(url)
            and not any(part.startswith(".") for part in url[len(item) :].split("/"))
        ]
        if not found:
            raise ValueError(
                f"--input {item}: no .xml, .txt, .jsonl, .parquet or .arrow files in it"
            )
        return found
    if remote.is_file(item):
        if not known_format(remote.name(item)):
            raise ValueError(
                f"--input {item}: unknown format; expected .xml (a Wikipedia dump), "
                ".txt or .jsonl, optionally .gz, .bz2 or .xz, or .parquet"
            )
        return [item]
    raise ValueError(f"--input {item}: {remote.missing(item)}")


def input_name(path: Path | str) -> str:
    return remote.name(path) if remote.is_remote(path) else path.name


def input_size(path: Path | str) -> int:
    return remote.size(str(path)) if remote.is_remote(path) else os.path.getsize(path)


def _refuse_command_output(folder: Path) -> None:
    """A folder another command wrote is no raw text: a tokenizer's vocab.txt, samples' shards
    or an earlier corpus (whose held-out splits would leak into the new training split)."""
    marker = read_marker(folder)
    if marker is None:
        return
    if marker["command"] == "prepare_corpus":
        raise ValueError(
            f"--input {folder} is prepare_corpus's output: its valid and test documents would "
            "be mixed into the new splits; give its train.txt, or the raw text"
        )
    raise ValueError(
        f"--input {folder} holds the output of {marker['command']}, not text to make a corpus "
        "of; give the text files or their folder"
    )


def _command_outputs_inside(folder: Path) -> list[Path]:
    """Subfolders of an --input folder that bertlab commands wrote: skipped, said in one line."""
    owned = sorted(marker.parent for marker in folder.rglob(MARKER) if marker.parent != folder)
    if owned:
        names = ", ".join(
            f"{p.relative_to(folder)} ({read_marker(p)['command']})"
            for p in owned[:SHOWN_NAMES]
            if read_marker(p)
        )
        print(
            f"--input {folder}: skipping the folders bertlab commands wrote: {names}"
            + (" ..." if len(owned) > SHOWN_NAMES else ""),
            file=sys.stderr,
        )
    return owned


def _warn_of_held_out_split(path: Path) -> None:
    """An earlier corpus's valid.txt or test.txt as input: its documents, held out there, may
    land in this corpus's training split (a folder of a corpus is refused for that reason)."""
    split = corpus_split(path)
    if split and split[1] in ("valid", "test"):
        print(
            f"warning: --input {path} is the held-out {split[1]} split of an earlier corpus: "
            "its documents may be trained on here; evaluate a model of that corpus elsewhere",
            file=sys.stderr,
        )


def expand_inputs(inputs: list[str], outputs: set[Path] = frozenset()) -> list[Path | str]:
    """Files named by `inputs` (files, directories read recursively, globs), in a stable order.

    A URL (bertlab.files.remote) stays a URL string; everything else is a Path.

    A file named twice (the same path, another spelling of it, a folder holding it, a hard
    link) is read once, said in one warning line: reading it twice would count its documents
    twice, and a valid or test document could be a training one too. `outputs` (resolved paths)
    are skipped inside directories and globs and are an error when named outright: a corpus
    folder may sit inside an input one.
    """
    paths: dict[Path | str | tuple[int, int], Path | str] = {}
    twice: list[tuple[Path | str, Path]] = []
    for item in map(str, inputs):
        if remote.is_remote(item):
            for url in _expand_remote(item):
                paths.setdefault(url, url)
            continue
        if _GLOB.search(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise ValueError(f"--input {item}: no file matches this pattern")
            candidates = [Path(m) for m in matches if Path(m).resolve() not in outputs]
        else:
            candidates = [Path(item)]
        for path in candidates:
            if path.is_dir():
                _refuse_command_output(path)
                owned = _command_outputs_inside(path)
                found = [
                    p
                    for p in sorted(path.rglob("*"))
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                    and (FORMAT.fullmatch(p.name) or TABLE.fullmatch(p.name))
                    and "multistream-index" not in p.name  # a dump's index is not text
                    and p.resolve() not in outputs
                    and not any(folder in p.parents for folder in owned)
                ]
                if not found:
                    raise ValueError(
                        f"--input {path}: no .xml, .txt, .jsonl, .parquet or .arrow files in it"
                    )
            elif path.is_file():
                if not (FORMAT.fullmatch(path.name) or TABLE.fullmatch(path.name)):
                    raise ValueError(
                        f"--input {path}: unknown format; expected .xml (a Wikipedia dump), "
                        ".txt or .jsonl, optionally .gz, .bz2 or .xz, or .parquet or .arrow"
                    )
                if path.resolve() in outputs:
                    raise ValueError(f"--input {path} is one of this run's outputs")
                _warn_of_held_out_split(path)
                found = [path]
            else:
                raise ValueError(f"--input {path}: {not_a_file(path)}")
            for p in found:
                key = file_identity(p)
                if key in paths:
                    twice.append((paths[key], p))
                paths.setdefault(key, p)
    if twice:
        first, again = twice[0]
        more = f" and {len(twice) - 1} more file(s)" if len(twice) > 1 else ""
        print(
            f"warning: --input names {first} twice (also as {again}){more}: each file is read once",
            file=sys.stderr,
        )
    return list(paths.values())


def read_documents(
    path: Path | str,
    progress: tqdm | None = None,
    text_column: str = "text",
    title_column: str | None = None,
) -> Iterator[list[str] | Page]:
    """Yield each document of one input file: its paragraphs, or a dump's page to be cleaned.

    The columns name a Parquet or Arrow file's text and (optional) title. `path` may be a URL.
    """
    if TABLE.fullmatch(input_name(path)):
        # Imported here: pyarrow is needed for tables only, and the GPU check's image (make
        # gpu-check), which reads no tables, may lack it.
        from bertlab.corpus.tables import table_documents

        yield from table_documents(path, text_column, title_column, progress)
        return
    match = FORMAT.fullmatch(input_name(path))
    assert match is not None, path
    kind, compression = match.group(1).lower(), (match.group(2) or "").lower()
    url = remote.is_remote(path)
    with remote.open_read(str(path)) if url else open(path, "rb") as raw:
        stream: IO[bytes] = _OPENERS[compression](raw) if compression else raw
        done = 0
        try:
            if kind == "xml":
                documents = iter_pages(stream, str(path))
            elif kind == "jsonl":
                documents = _jsonl_documents(stream, path)
            else:
                documents = _text_documents(stream, path)
            for document in documents:
                yield document
                if progress is not None:
                    progress.update(raw.tell() - done)
                    done = raw.tell()
        except _DECOMPRESSION_ERRORS as error:
            if not compression:
                raise
            raise ValueError(
                f"{path}: truncated or corrupt {compression} data near compressed byte "
                f"{raw.tell()} ({error})"
            ) from None
        if progress is not None:
            progress.update(input_size(path) - done)


def _decoded_lines(stream: IO[bytes], path: Path | str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; invalid UTF-8 is a ValueError with its byte offset."""
    match = FORMAT.fullmatch(input_name(path))
    compressed = match is not None and match.group(2) is not None
    offset = 0
    for number, data in enumerate(stream, start=1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as error:
            where = "decompressed byte" if compressed else "byte"
            raise ValueError(
                f"{path}: not UTF-8 at {where} {offset + error.start} (line {number})"
            ) from None
        offset += len(data)
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield number, line.rstrip("\r\n")


def _text_documents(stream: IO[bytes], path: Path | str) -> Iterator[list[str]]:
    paragraphs: list[str] = []
    for _, line in _decoded_lines(stream, path):
        if line.strip():
            paragraphs.append(line)
        elif paragraphs:
            yield paragraphs
            paragraphs = []
    if paragraphs:
        yield paragraphs


def _jsonl_documents(stream: IO[bytes], path: Path | str) -> Iterator[list[str]]:
    for number, line in _decoded_lines(stream, path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number}: not valid JSON ({error.msg})") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError(f'{path}: line {number}: no "text" string field in this JSON line')
        yield text.split("\n")
