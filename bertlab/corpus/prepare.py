"""Raw text -> the BERT corpus format: train/valid/test.txt, one sentence a line, documents apart.

The command (`tools/prepare_corpus.py`): its flags checked, its inputs found
(bertlab.corpus.inputs: dumps, text, JSON Lines, tables, URLs), an optional dump downloaded
(bertlab.corpus.download) or `datasets` dataset streamed (bertlab.corpus.tables), and the
documents cleaned, split by document and written (bertlab.corpus.splits).

Decisions:
- Tables are inputs too (bertlab.corpus.tables): Parquet (`*.parquet`, e.g. the
  `wikimedia/wikipedia` files `20231101.en/train-0000N-of-000MM.parquet`) and Arrow (`*.arrow`,
  e.g. a folder written by `datasets.Dataset.save_to_disk`), one document a row, its
  --text_column split into paragraphs like a JSON Lines "text"; read in batches, never whole.
  `--dataset NAME` reads `datasets.load_dataset(NAME, --dataset_config, split=--dataset_split,
  data_files=--dataset_files, streaming=True)` the same way, after the --input files.
- A plain-text file already in corpus format comes out unchanged. Hard-wrapped text should be
  unwrapped first: a line break always ends a sentence. A document left with fewer than
  `min_doc_sentences` sentences is dropped; empty documents never reach the output.
- The output folder follows bertlab.files.output_folder's rule: new, empty, or an earlier corpus of
  prepare_corpus replaced only with --overwrite; never a folder holding an input or inside an
  input folder. Unlike the other commands the splits are replaced file by file (each written
  beside and renamed) rather than the folder whole, because the folder also keeps the downloaded
  dump (raw/, by default), which a rerun resumes and must not lose. That cache, and a killed
  run's hidden temporary files, are prepare_corpus's own and never make the folder foreign. A
  failed first run leaves no folder.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from bertlab.corpus.download import download_dump
from bertlab.corpus.inputs import TABLE, expand_inputs, input_roots
from bertlab.corpus.splits import SPLITS, assign_splits, spool_documents, write_splits
from bertlab.files.output_folder import Legacy, check_output_folder, write_marker

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
    dataset_split: str | None = None,
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
        dataset_split: the --dataset split to read (default: train).
        dataset_files: files or globs for --dataset's data_files, such as 'data/*.parquet'.
    """
    output = Path(output_dir)
    lang = lang or download or "en"
    _check_settings(num_proc, min_doc_sentences, valid_docs, test_docs, lang)
    _refuse_unused_flags(
        download, dataset,
        {"date": date, "mirror": mirror, "download_dir": download_dir},
        {"dataset_config": dataset_config, "dataset_files": dataset_files,
         "dataset_split": dataset_split},
    )  # fmt: skip
    dataset_split = dataset_split or "train"
    items = [input] if isinstance(input, str) else list(input or [])
    table_files = [dataset_files] if isinstance(dataset_files, str) else list(dataset_files or [])
    downloads = Path(download_dir) if download_dir is not None else output / DOWNLOADS
    own_cache = download is not None and downloads.resolve() == (output / DOWNLOADS).resolve()
    inputs = [("--input", path) for path in input_roots(items)]
    if download is not None and not own_cache:
        inputs.append(("--download_dir", downloads))
    inputs += [("--dataset_files", path) for path in input_roots(table_files)]
    if dataset is not None and Path(dataset).exists():  # a local folder, not a Hub name
        inputs.append(("--dataset", Path(dataset)))
    check_output_folder(
        output, COMMAND, inputs, overwrite, legacy=LEGACY,
        keep=(LEFTOVERS, DOWNLOADS) if own_cache else (LEFTOVERS,),
    )  # fmt: skip
    outputs = {(output / f"{split}.txt").resolve() for split in SPLITS}
    paths = expand_inputs(items, outputs)
    if download is not None:
        paths.append(download_dump(download, date, downloads, mirror))
    if not paths and dataset is None:
        raise ValueError(
            "--input is required (or --download LANG --date YYYYMMDD, or --dataset NAME)"
        )
    if dataset is None:
        _check_columns_unused(paths, text_column, title_column)
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
    documents = {"paths": paths, "rows": rows, "columns": columns, "sources": sources}
    counts = _write_corpus(output, documents, lang, seed, min_doc_sentences, num_proc,
                           (valid_docs, test_docs))  # fmt: skip
    print(
        f"prepare_corpus: {output}: "
        + "; ".join(
            f"{split} {c['documents']:,} documents, {c['sentences']:,} sentences, "
            f"{c['characters']:,} characters"
            for split, c in counts.items()
        )
    )
    return {"output_dir": str(output), "inputs": sources, "lang": lang, "seed": seed,
            "splits": counts}  # fmt: skip


def _refuse_unused_flags(
    download: str | None, dataset: str | None, of_download: dict, of_dataset: dict
) -> None:
    """A flag of --download or --dataset given without it would be ignored: refused."""
    if download is not None and of_download["date"] is None:
        raise ValueError("--download needs --date YYYYMMDD (a dump date of that wiki)")
    for needed, name, flags in (
        (download, "--download LANG", of_download), (dataset, "--dataset NAME", of_dataset)
    ):  # fmt: skip
        for flag, value in flags.items():
            if needed is None and value is not None:
                raise ValueError(f"--{flag} is only used with {name}")


def _check_settings(
    num_proc: int, min_doc_sentences: int, valid_docs: int | float, test_docs: int | float,
    lang: str,
) -> None:  # fmt: skip
    if num_proc < 1:
        raise ValueError(f"--num_proc must be at least 1, got {num_proc}")
    if min_doc_sentences < 1:
        raise ValueError(f"--min_doc_sentences must be at least 1, got {min_doc_sentences}")
    _check_split_size("valid_docs", valid_docs)
    _check_split_size("test_docs", test_docs)
    if (
        isinstance(valid_docs, float)
        and isinstance(test_docs, float)
        and valid_docs + test_docs >= 1
    ):
        raise ValueError(
            f"--valid_docs {valid_docs} and --test_docs {test_docs} hold out every document: "
            "their fractions must sum to less than 1 (0.01 each is usual)"
        )
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*|simple", lang.lower().replace("_", "-")):
        print(
            f"warning: --lang {lang} is not a language code (en, de, ja, zh, ...): sentences are "
            "split by the rule for languages written with spaces",
            file=sys.stderr,
        )


def _check_columns_unused(paths: list, text_column: str, title_column: str | None) -> None:
    """Column flags set for inputs that have no columns: a mistake, said before reading."""
    if any(TABLE.fullmatch(os.path.basename(str(p))) for p in paths):
        return
    for flag, value, default in (("text_column", text_column, "text"),
                                 ("title_column", title_column, None)):  # fmt: skip
        if value != default:
            raise ValueError(
                f"--{flag} is only used with Parquet or Arrow inputs or --dataset; "
                "these inputs have no columns (leave it out)"
            )


def _write_corpus(
    output: Path, documents: dict, lang: str, seed: int, min_doc_sentences: int, num_proc: int,
    split_sizes: tuple[int | float, int | float],
) -> dict[str, dict[str, int]]:  # fmt: skip
    """Spool, split and write the documents into `output`; mark it as prepare_corpus's."""
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    spool = output / f".spool-{os.getpid()}.tmp"
    try:
        hashes = spool_documents(
            documents["paths"], documents["rows"], documents["columns"], spool, lang, seed,
            min_doc_sentences, num_proc,
        )  # fmt: skip
        if not hashes:
            names = ", ".join(documents["sources"])
            raise ValueError(f"{names}: no documents left after cleaning (empty corpus)")
        counts = write_splits(spool, output, assign_splits(hashes, *split_sizes))
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
    return counts


def _check_split_size(flag: str, value: int | float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"--{flag} must be a count or a fraction, got {value!r}")
    if value < 0 or (isinstance(value, float) and value >= 1):
        raise ValueError(f"--{flag} {value}: give a count (10) or a fraction below 1 (0.01)")
