"""The corpus split by document: cleaned documents spooled, ranked by hash, written as three files.

Decisions:
- Inside a document every line is a paragraph; each is cut into sentences by the rule for the
  language (bertlab.corpus.sentences), and a sentence with no letter or digit is dropped.
- The split depends only on each document's text and the seed: documents are ranked by a keyed
  64-bit BLAKE2 hash of their text, the lowest go to valid, the next to test. Fractions are
  rounded, at least one document when the fraction is not zero. Within a split, documents keep
  their input order, so a rerun gives byte-identical files.
- Memory stays flat: documents stream to a spool file while only their hashes are kept; a second
  pass over the spool writes the splits, each with bertlab.files.atomic.
- Cleaning and sentence splitting may run on several processes; documents come back in input
  order, so the output is the same for any number of processes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import itertools
import multiprocessing
import re
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from bertlab.corpus.inputs import input_size, read_documents
from bertlab.corpus.sentences import split_sentences
from bertlab.corpus.wikipedia import Page
from bertlab.files.atomic import atomic_write
from bertlab.signals import leave_interrupts_to_parent

SPLITS = ("train", "valid", "test")
SCRIPT_SAMPLE_DOCUMENTS = 100  # documents whose script is checked against --lang
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


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


def spool_documents(
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
    total = sum(input_size(p) for p in paths)
    progress = tqdm(total=total, unit="B", unit_scale=True, desc="reading", disable=None)
    documents = itertools.chain(
        (document for path in paths for document in read_documents(path, progress, **columns)),
        rows,
    )
    sampled = [0, 0]  # characters, and CJK ones, of the first documents
    with progress, open(spool, "w", encoding="utf-8", newline="\n") as out:
        for sentences in _in_order(documents, lang, num_proc):
            if len(sentences) < min_doc_sentences:
                continue
            if len(hashes) < SCRIPT_SAMPLE_DOCUMENTS:
                _count_script(sentences, sampled, lang, len(hashes) + 1 == SCRIPT_SAMPLE_DOCUMENTS)
            hashes.append(document_hash(sentences, seed))
            out.write("\n".join(sentences) + "\n\n")
            if len(hashes) % 1000 == 0:
                progress.set_postfix_str(f"{len(hashes):,} documents", refresh=False)
    if 0 < len(hashes) < SCRIPT_SAMPLE_DOCUMENTS:
        _count_script([], sampled, lang, True)
    return hashes


def _count_script(sentences: list[str], sampled: list[int], lang: str, last: bool) -> None:
    """Count CJK characters; after the sample, warn when the text is mostly Chinese or Japanese
    but --lang splits it by the rule for languages written with spaces (no split at 。)."""
    for sentence in sentences:
        sampled[0] += len(sentence)
        sampled[1] += sum(1 for ch in sentence if _CJK.match(ch))
    if last and lang.split("-")[0] not in ("ja", "zh") and sampled[1] > 0.3 * sampled[0]:
        print(
            f"warning: {sampled[1] / sampled[0]:.0%} of the first documents' characters are "
            f"Chinese or Japanese, but --lang {lang} splits sentences at spaced full stops only; "
            "give --lang ja or --lang zh",
            file=sys.stderr,
        )


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
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(num_proc, initializer=leave_interrupts_to_parent) as pool:
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


def assign_splits(hashes: array, valid_docs: int | float, test_docs: int | float) -> bytearray:
    """Split index (0 train, 1 valid, 2 test) of each document, by rank of its hash."""
    n = len(hashes)
    num_valid = _split_count(valid_docs, n)
    num_test = _split_count(test_docs, n)
    if num_valid + num_test >= n:
        raise ValueError(
            f"--valid_docs {valid_docs} and --test_docs {test_docs} leave no training documents "
            f"(the corpus has {n} document{'s' if n != 1 else ''})"
        )
    held_out = num_valid + num_test
    if held_out > n - held_out:  # the usual split holds out a few percent
        print(
            f"warning: --valid_docs {valid_docs} and --test_docs {test_docs} hold out {held_out} "
            f"of {n} documents: only {n - held_out} are left for training",
            file=sys.stderr,
        )
    split_of = bytearray(n)
    # nsmallest is a stable sort cut short: ties (identical texts) keep their input order.
    ranked = heapq.nsmallest(num_valid + num_test, range(n), key=hashes.__getitem__)
    for i in ranked[:num_valid]:
        split_of[i] = 1
    for i in ranked[num_valid : num_valid + num_test]:
        split_of[i] = 2
    return split_of


def write_splits(spool: Path, output: Path, split_of: bytearray) -> dict[str, dict[str, int]]:
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
