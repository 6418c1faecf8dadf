"""Raw text -> the BERT corpus format: train/valid/test.txt, one sentence a line, documents apart.

Decisions:
- Inputs, by file name: MediaWiki dumps (`*.xml`, `*-pages-articles*.xml-p1p2.bz2`), plain text
  (`*.txt`: documents separated by blank lines) and JSON Lines (`*.jsonl`: one document a line,
  in its `text` field), each optionally compressed (`.gz`, `.bz2`, `.xz`). Directories are read
  recursively and globs expanded, in sorted order; hidden files, other extensions and
  multistream dumps' `*-multistream-index.txt.bz2` inside a directory are skipped, but a file
  named explicitly must have a known extension.
- Inputs may be fsspec URLs (`s3://`, `gs://`, `hf://`, `https://`; files, folders and globs;
  bertlab.files.remote): each file is streamed from the store through its decompressor, never
  copied whole first. Credentials and endpoints come from the environment (AWS_ENDPOINT_URL, ...).
- Tables are inputs too (bertlab.corpus.tables): Parquet (`*.parquet`, e.g. the
  `wikimedia/wikipedia` files `20231101.en/train-0000N-of-000MM.parquet`) and Arrow (`*.arrow`,
  e.g. a folder written by `datasets.Dataset.save_to_disk`), one document a row, its
  --text_column split into paragraphs like a JSON Lines "text"; read in batches, never whole.
  `--dataset NAME` reads `datasets.load_dataset(NAME, --dataset_config, split=--dataset_split,
  data_files=--dataset_files, streaming=True)` the same way, after the --input files.
- Inside a document every line is a paragraph (plain text and the `text` field alike); each is cut
  into sentences by the rule for --lang (bertlab.corpus.sentences). A plain-text file already in
  corpus format therefore comes out unchanged. Hard-wrapped text should be unwrapped first: a line
  break always ends a sentence.
- A sentence with no letter or digit is dropped, as is a document left with fewer than
  `min_doc_sentences` sentences; empty documents never reach the output.
- The split is by document and depends only on each document's text and --seed: documents are
  ranked by a keyed 64-bit BLAKE2 hash of their text, the lowest go to valid, the next to test.
  Fractions are rounded, at least one document when the fraction is not zero. Within a split,
  documents keep their input order. A rerun gives byte-identical files.
- Memory stays flat: documents stream to a spool file beside the outputs while only their hashes
  are kept; a second pass over the spool writes the three splits. Each output is written with
  bertlab.files.atomic, so a failed run never leaves a file that looks complete.
- The output folder follows bertlab.files.output_folder's rule: new, empty, or an earlier corpus of
  prepare_corpus replaced only with --overwrite; never a folder holding an input or inside an
  input folder. Unlike the other commands the splits are replaced file by file (each written
  beside and renamed) rather than the folder whole, because the folder also keeps the downloaded
  dump (raw/, by default), which a rerun resumes and must not lose. That cache, and a killed
  run's hidden temporary files, are prepare_corpus's own and never make the folder foreign.
- Cleaning wikitext and splitting sentences can run on --num_proc processes; documents come
  back in input order, so the output is the same for any --num_proc.
- Bad input is a one-line ValueError naming the file, with the line (JSON Lines) or byte offset
  (UTF-8, compressed data) where the problem is.
"""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import functools
import glob
import gzip
import hashlib
import heapq
import itertools
import json
import lzma
import multiprocessing
import os
import re
import shutil
import sys
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

from bertlab.corpus.download import download_dump
from bertlab.corpus.sentences import split_sentences
from bertlab.corpus.wikipedia import Page, iter_pages
from bertlab.files import remote
from bertlab.files.atomic import atomic_write
from bertlab.files.output_folder import Legacy, check_output_folder, write_marker

SPLITS = ("train", "valid", "test")
_FORMAT = re.compile(r".*\.(xml|txt|jsonl)(?:-p\d+p\d+)?(?:\.(gz|bz2|xz))?", re.IGNORECASE)
_TABLE = re.compile(r".*\.(parquet|arrow)", re.IGNORECASE)  # bertlab.corpus.tables reads them
_GLOB = re.compile(r"[*?[]")
_OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)
COMMAND = "prepare_corpus"
DOWNLOADS = "raw"  # the default --download_dir, inside the output folder
# What prepare_corpus wrote before the output marker existed.
LEGACY = Legacy(names={*(f"{s}.txt" for s in SPLITS), DOWNLOADS}, required={"train.txt"})
LEFTOVERS = ".*.tmp"  # the spool and atomic_write's temporary files of a killed run


def prepare_corpus(
    input: list[str] | None = None,
    output_dir: str = "corpus",
    lang: str | None = None,
    valid_docs: int | float = 0.01,
    test_docs: int | float = 0.01,
    seed: int = 0,
    download: str | None = None,
    date: str | None = None,
    download_dir: str | None = None,
    mirror: str | None = None,
    min_doc_sentences: int = 1,
    num_proc: int = 1,
    overwrite: bool = False,
    text_column: str = "text",
    title_column: str | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    dataset_split: str = "train",
    dataset_files: list[str] | None = None,
) -> dict:
    """Turn Wikipedia dumps, text, JSON Lines, Parquet or a dataset into train/valid/test.txt.

    Output: UTF-8, one sentence a line, a blank line between documents; the split is by document,
    deterministic (same inputs and seed, byte-identical files). Prints a summary line.

    Args:
        input: files, directories or globs. Wikipedia dumps `*pages-articles*.xml.bz2`, plain
            text `.txt` with documents separated by blank lines and one paragraph a line, JSON
            Lines `.jsonl` with a "text" field a line; any of them may end in .gz, .bz2 or .xz.
            Parquet `.parquet` and Arrow `.arrow` files (a folder `datasets.save_to_disk` wrote):
            one document a row, one paragraph a line of its --text_column.
        output_dir: folder for train.txt, valid.txt and test.txt.
        lang: language code choosing the sentence splitter. ja and zh split after the full
            stop, ! and ? of Chinese and Japanese text; any other code uses English-style rules
            for space-delimited text. Default is the --download language, else en.
        valid_docs: documents for valid.txt, a count like 10 or a fraction below 1 like 0.01.
        test_docs: documents for test.txt, a count or a fraction below 1.
        seed: changes which documents go to valid and test.
        download: a Wikipedia language code such as en or ja. Downloads that wiki's
            pages-articles dump of --date first, resuming a partial download and checking the
            checksum, and uses it as an input.
        date: the dump date YYYYMMDD, with --download.
        download_dir: where the dump is stored, by default OUTPUT_DIR/raw.
        mirror: base URL of the Wikimedia dumps site, for a mirror or a local copy. The
            default is $BERTLAB_WIKIMEDIA_MIRROR if set, else dumps.wikimedia.org itself.
        min_doc_sentences: drop documents with fewer sentences than this.
        num_proc: processes cleaning and splitting documents; the output does not depend on it.
        overwrite: replace an earlier corpus of prepare_corpus in output_dir (the downloaded
            dump in it is kept).
        text_column: the column of Parquet, Arrow and --dataset rows holding the text.
        title_column: a column whose value becomes each document's first line, such as title;
            by default titles are left out, as they are from Wikipedia dumps.
        dataset: a name for datasets.load_dataset, read streaming after the --input files: a
            Hub dataset such as wikimedia/wikipedia (needs the network), a local folder, or a
            builder for --dataset_files such as parquet. Needs pip install datasets.
        dataset_config: the --dataset configuration, such as 20231101.en.
        dataset_split: the --dataset split to read.
        dataset_files: files or globs for --dataset's data_files, such as 'data/*.parquet'.
    """
    output = Path(output_dir)
    lang = lang or download or "en"
    if num_proc < 1:
        raise ValueError(f"--num_proc must be at least 1, got {num_proc}")
    if min_doc_sentences < 1:
        raise ValueError(f"--min_doc_sentences must be at least 1, got {min_doc_sentences}")
    _check_split_size("valid_docs", valid_docs)
    _check_split_size("test_docs", test_docs)
    if dataset is None:
        for flag, value in (("dataset_config", dataset_config), ("dataset_files", dataset_files)):
            if value is not None:
                raise ValueError(f"--{flag} is only used with --dataset NAME")
    items = [input] if isinstance(input, str) else list(input or [])
    table_files = [dataset_files] if isinstance(dataset_files, str) else list(dataset_files or [])
    downloads = Path(download_dir) if download_dir is not None else output / DOWNLOADS
    own_cache = download is not None and downloads.resolve() == (output / DOWNLOADS).resolve()
    inputs = [("--input", path) for path in _input_roots(items)]
    if download is not None and not own_cache:
        inputs.append(("--download_dir", downloads))
    inputs += [("--dataset_files", path) for path in _input_roots(table_files)]
    if dataset is not None and Path(dataset).exists():  # a local folder, not a Hub name
        inputs.append(("--dataset", Path(dataset)))
    check_output_folder(
        output, COMMAND, inputs, overwrite, legacy=LEGACY,
        keep=(LEFTOVERS, DOWNLOADS) if own_cache else (LEFTOVERS,),
    )  # fmt: skip
    outputs = {(output / f"{split}.txt").resolve() for split in SPLITS}
    paths = expand_inputs(items, outputs)
    if download is not None:
        if date is None:
            raise ValueError("--download needs --date YYYYMMDD (a dump date of that wiki)")
        paths.append(download_dump(download, date, downloads, mirror))
    elif date is not None:
        raise ValueError("--date is only used with --download LANG")
    if not paths and dataset is None:
        raise ValueError(
            "--input is required (or --download LANG --date YYYYMMDD, or --dataset NAME)"
        )
    if dataset is None and not any(_TABLE.fullmatch(os.path.basename(str(p))) for p in paths):
        for flag, value, default in (("text_column", text_column, "text"),
                                     ("title_column", title_column, None)):  # fmt: skip
            if value != default:
                raise ValueError(
                    f"--{flag} is only used with Parquet or Arrow inputs or --dataset; "
                    "these inputs have no columns (leave it out)"
                )
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*|simple", lang.lower().replace("_", "-")):
        print(
            f"warning: --lang {lang} is not a language code (en, de, ja, zh, ...): sentences are "
            "split by the rule for languages written with spaces",
            file=sys.stderr,
        )
    columns = {"text_column": text_column, "title_column": title_column}
    sources = [str(p) for p in paths]
    rows: Iterator[list[str]] = iter(())
    if dataset is not None:
        from bertlab.corpus.tables import iterable_documents, load_streaming_dataset

        # Loaded (files resolved, the Hub asked) before the output folder is made.
        loaded = load_streaming_dataset(dataset, dataset_config, dataset_split, table_files)
        rows = iterable_documents(loaded, f"--dataset {dataset}", **columns)
        sources.append(
            f"dataset {dataset}" + (f" {dataset_config}" if dataset_config else "")
            + f" split {dataset_split}"
        )  # fmt: skip

    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    spool = output / f".spool-{os.getpid()}.tmp"
    try:
        hashes = _spool_documents(
            paths, rows, columns, spool, lang, seed, min_doc_sentences, num_proc
        )
        names = ", ".join(sources)
        if not hashes:
            raise ValueError(f"{names}: no documents left after cleaning (empty corpus)")
        split_of = _assign_splits(hashes, valid_docs, test_docs)
        counts = _write_splits(spool, output, split_of)
    except BaseException:
        if created:  # a failed first run leaves no folder behind (all in it is this run's)
            shutil.rmtree(output, ignore_errors=True)
        raise
    finally:
        spool.unlink(missing_ok=True)
    # Last, so that only a complete corpus is recognised as prepare_corpus's (the dump's folder
    # and what an earlier run left, all checked to be prepare_corpus's own, stay listed).
    names = [p.name for p in output.iterdir() if not fnmatch.fnmatch(p.name, LEFTOVERS)]
    write_marker(output, COMMAND, names)
    summary = {
        "output_dir": str(output),
        "inputs": sources,
        "lang": lang,
        "seed": seed,
        "splits": counts,
    }
    print(
        f"prepare_corpus: {output}: "
        + "; ".join(
            f"{split} {c['documents']:,} documents, {c['sentences']:,} sentences, "
            f"{c['characters']:,} characters"
            for split, c in counts.items()
        )
    )
    return summary


def _check_split_size(flag: str, value: int | float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"--{flag} must be a count or a fraction, got {value!r}")
    if value < 0 or (isinstance(value, float) and value >= 1):
        raise ValueError(f"--{flag} {value}: give a count (10) or a fraction below 1 (0.01)")


def _input_roots(items: list[str]) -> list[Path]:
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


def _known(name: str) -> bool:
    return bool(_FORMAT.fullmatch(name) or _TABLE.fullmatch(name))


def _expand_remote(item: str) -> list[str]:
    """The files a URL --input names: the file, a folder's files (recursively), a glob's."""
    if _GLOB.search(item):
        found = [url for url in remote.glob(item) if _known(remote.name(url))]
        if not found:
            raise ValueError(f"--input {item}: no file matches this pattern")
        return found
    if remote.is_dir(item):
        found = [
            url
            for url, _ in remote.files_under(item)
            if _known(remote.name(url))
            and "multistream-index" not in remote.name(url)
            and not any(part.startswith(".") for part in url[len(item) :].split("/"))
        ]
        if not found:
            raise ValueError(
                f"--input {item}: no .xml, .txt, .jsonl, .parquet or .arrow files in it"
            )
        return found
    if remote.is_file(item):
        if not _known(remote.name(item)):
            raise ValueError(
                f"--input {item}: unknown format; expected .xml (a Wikipedia dump), "
                ".txt or .jsonl, optionally .gz, .bz2 or .xz, or .parquet"
            )
        return [item]
    raise ValueError(f"--input {item}: {remote.missing(item)}")


def _name(path: Path | str) -> str:
    return remote.name(path) if remote.is_remote(path) else path.name


def _size(path: Path | str) -> int:
    return remote.size(str(path)) if remote.is_remote(path) else os.path.getsize(path)


def expand_inputs(inputs: list[str], outputs: set[Path] = frozenset()) -> list[Path | str]:
    """Files named by `inputs` (files, directories read recursively, globs), in a stable order.

    A URL (bertlab.files.remote) stays a URL string; everything else is a Path.

    A file named twice is read once. `outputs` (resolved paths) are skipped inside directories
    and globs and are an error when named outright: a corpus folder may sit inside an input one.
    """
    paths: dict[Path | str, Path | str] = {}
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
                found = [
                    p
                    for p in sorted(path.rglob("*"))
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                    and (_FORMAT.fullmatch(p.name) or _TABLE.fullmatch(p.name))
                    and "multistream-index" not in p.name  # a dump's index is not text
                    and p.resolve() not in outputs
                ]
                if not found:
                    raise ValueError(
                        f"--input {path}: no .xml, .txt, .jsonl, .parquet or .arrow files in it"
                    )
            elif path.is_file():
                if not (_FORMAT.fullmatch(path.name) or _TABLE.fullmatch(path.name)):
                    raise ValueError(
                        f"--input {path}: unknown format; expected .xml (a Wikipedia dump), "
                        ".txt or .jsonl, optionally .gz, .bz2 or .xz, or .parquet or .arrow"
                    )
                if path.resolve() in outputs:
                    raise ValueError(f"--input {path} is one of this run's outputs")
                found = [path]
            else:
                raise ValueError(f"--input {path}: no such file or directory")
            for p in found:
                paths.setdefault(p.resolve(), p)
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
    if _TABLE.fullmatch(_name(path)):
        # Imported here: pyarrow is needed for tables only, and the GPU check's image (make
        # gpu-check), which reads no tables, may lack it.
        from bertlab.corpus.tables import table_documents

        yield from table_documents(path, text_column, title_column, progress)
        return
    match = _FORMAT.fullmatch(_name(path))
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
            progress.update(_size(path) - done)


def _decoded_lines(stream: IO[bytes], path: Path | str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; invalid UTF-8 is a ValueError with its byte offset."""
    match = _FORMAT.fullmatch(_name(path))
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


def document_sentences(document: list[str] | Page, lang: str) -> list[str]:
    """The sentences of one document: each paragraph split, sentences without letters dropped."""
    paragraphs = document.paragraphs() if isinstance(document, Page) else document
    sentences = []
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph, lang):
            if any(ch.isalnum() for ch in sentence):
                sentences.append(sentence)
    return sentences


def document_hash(sentences: list[str], seed: int) -> int:
    """The 64-bit key that orders documents for the split: depends on the text and the seed only."""
    digest = hashlib.blake2b(
        "\n".join(sentences).encode("utf-8"), digest_size=8, key=str(seed).encode("utf-8")
    )
    return int.from_bytes(digest.digest(), "big")


def _spool_documents(
    paths: list[Path | str],
    rows: Iterator[list[str]],
    columns: dict[str, str | None],
    spool: Path,
    lang: str,
    seed: int,
    min_doc_sentences: int,
    num_proc: int,
) -> array:
    """Spool the documents of `paths`, then of `rows` (a --dataset's), and return their hashes."""
    hashes = array("Q")
    total = sum(_size(p) for p in paths)
    progress = tqdm(total=total, unit="B", unit_scale=True, desc="reading", disable=None)
    documents = itertools.chain(
        (document for path in paths for document in read_documents(path, progress, **columns)),
        rows,
    )
    with progress, open(spool, "w", encoding="utf-8", newline="\n") as out:
        for sentences in _in_order(documents, lang, num_proc):
            if len(sentences) < min_doc_sentences:
                continue
            hashes.append(document_hash(sentences, seed))
            out.write("\n".join(sentences) + "\n\n")
            if len(hashes) % 1000 == 0:
                progress.set_postfix_str(f"{len(hashes):,} documents", refresh=False)
    return hashes


def _in_order(
    documents: Iterator[list[str] | Page], lang: str, num_proc: int
) -> Iterator[list[str]]:
    """document_sentences of each document, in input order, on `num_proc` processes.

    Batches go to the pool one at a time while the next is read (reading stays in this process,
    so its errors and progress are ours); at most two batches are in memory.
    """
    work = functools.partial(document_sentences, lang=lang)
    if num_proc == 1:
        yield from map(work, documents)
        return
    batch_size = 64 * num_proc
    with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
        pending = None
        while batch := list(itertools.islice(documents, batch_size)):
            submitted = pool.map_async(work, batch, chunksize=4)
            if pending is not None:
                yield from pending.get()
            pending = submitted
        if pending is not None:
            yield from pending.get()


def _split_count(value: int | float, num_documents: int) -> int:
    if isinstance(value, float):
        return max(1, round(value * num_documents)) if value > 0 else 0
    return value


def _assign_splits(hashes: array, valid_docs: int | float, test_docs: int | float) -> bytearray:
    """Split index (0 train, 1 valid, 2 test) of each document, by rank of its hash."""
    n = len(hashes)
    num_valid = _split_count(valid_docs, n)
    num_test = _split_count(test_docs, n)
    if num_valid + num_test >= n:
        raise ValueError(
            f"--valid_docs {valid_docs} and --test_docs {test_docs} leave no training documents "
            f"(the corpus has {n} documents)"
        )
    split_of = bytearray(n)
    # nsmallest is a stable sort cut short: ties (identical texts) keep their input order.
    ranked = heapq.nsmallest(num_valid + num_test, range(n), key=hashes.__getitem__)
    for i in ranked[:num_valid]:
        split_of[i] = 1
    for i in ranked[num_valid : num_valid + num_test]:
        split_of[i] = 2
    return split_of


def _write_splits(spool: Path, output: Path, split_of: bytearray) -> dict[str, dict[str, int]]:
    counts = {s: {"documents": 0, "sentences": 0, "characters": 0} for s in SPLITS}
    with contextlib.ExitStack() as stack:
        files = [
            stack.enter_context(atomic_write(output / f"{s}.txt", "w", newline="\n"))
            for s in SPLITS
        ]
        with open(spool, encoding="utf-8", newline="\n") as source:
            progress = tqdm(total=len(split_of), unit="doc", desc="writing", disable=None)
            with progress:
                index, document = 0, []
                for line in source:
                    if line != "\n":
                        document.append(line)
                        continue
                    split = SPLITS[split_of[index]]
                    c = counts[split]
                    if c["documents"]:
                        files[split_of[index]].write("\n")
                    files[split_of[index]].writelines(document)
                    c["documents"] += 1
                    c["sentences"] += len(document)
                    c["characters"] += sum(len(s) - 1 for s in document)
                    index, document = index + 1, []
                    progress.update()
        assert index == len(split_of), (index, len(split_of))
    return counts
