"""A corpus file tokenized into flat arrays: the input stage of bertlab.samples.prepare.

Decisions:
- The corpus format (README, File formats): UTF-8, one sentence a line, a blank line (or a line of
  only spaces) between documents; `.gz` is read too. The file is read in 4 MiB blocks cut after a
  newline (which never falls inside a UTF-8 character) and decoded strictly: the first invalid
  byte is a ValueError with its byte offset and line. A leading BOM is ignored.
- Documents are tokenized in chunks of whole documents (~128k characters) by the tokenizer's Rust
  backend (`encode_batch_fast`, no special tokens), on bertlab.workers, while the file is still
  being read. The backend is checked against the transformers tokenizer on the first sentences,
  so the ids are exactly the ones AutoTokenizer gives.
- The result is written as it comes, chunk by chunk, into the raw files of a token store
  (bertlab.samples.token_store: tokens, sentence starts, document starts, about 4.3 bytes per
  token): the corpus is never held in memory, by this process or a pool process, so memory does not
  grow with the corpus. The counts, the largest token id and the sample-building tasks (ranges
  of whole documents of ~32k tokens) are kept on the way. Sentences with no tokens and
  documents with no sentences are dropped.
"""

from __future__ import annotations

import gzip
import itertools
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bertlab.files.output_folder import refuse_foreign_text
from bertlab.samples.token_store import array_path
from bertlab.tokenizer.special import compression_of
from bertlab.workers import WORKER, Workers

_CHUNK_CHARS = 1 << 17  # text per tokenization task
_TASK_TOKENS = 1 << 15  # corpus tokens per sample-building task
_READ_BYTES = 1 << 22
_PARITY_SENTENCES = 256


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


RAW_SUFFIXES = (".jsonl", ".jsonl.gz", ".xml", ".xml.bz2", ".parquet", ".arrow", ".bz2")


def check_corpus_name(path: Path | str) -> None:
    """Refuse a file whose name says it is no corpus text: a samples shard, or raw input for
    prepare_corpus (read as text, its JSON or markup would be taken for sentences)."""
    name = Path(path).name.lower()
    refuse_foreign_text(path, "--input")
    if name.startswith("shard-") and name.endswith((".jsonl", ".jsonl.gz")):
        raise ValueError(
            f"--input {path}: a samples shard (prepare_samples' output), not corpus text; give "
            "a corpus file such as corpus/test.txt"
        )
    if name.endswith(RAW_SUFFIXES) and not name.endswith(".txt.bz2"):  # that one: compressed text
        raise ValueError(
            f"--input {path}: raw input for prepare_corpus, not a corpus; run "
            "tools/prepare_corpus.py on it and give its train.txt"
        )


def read_documents(path: Path) -> Iterator[list[str]]:
    """Documents (lists of sentences) of a corpus file; ValueError at the first byte not UTF-8."""
    offset = 0
    line_number = 0
    pending = b""
    document: list[str] = []
    check_corpus_name(path)
    kind = compression_of(path) if Path(path).suffix != ".gz" and Path(path).is_file() else None
    if kind is not None:
        raise ValueError(
            f"--input {path}: {kind}-compressed; give it as plain text, or gzip-compressed "
            "with a .gz name"
        )
    try:
        with _open_binary(path) as f:
            while True:
                block = f.read(_READ_BYTES)
                data = pending + block
                if block:
                    # Cut after a newline: it never falls inside a multi-byte UTF-8 character.
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:
                        pending = data
                        continue
                    data, pending = data[:cut], data[cut:]
                if not data:
                    break
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    line = line_number + data.count(b"\n", 0, error.start) + 1
                    raise ValueError(
                        f"--input {path}: not UTF-8 at byte {offset + error.start} (line {line})"
                    ) from None
                if offset == 0:
                    text = text.removeprefix("\ufeff")
                offset += len(data)
                lines = text.split("\n")
                if text.endswith("\n"):
                    lines.pop()
                line_number += len(lines)
                for line in lines:
                    sentence = line.strip()
                    if sentence:
                        document.append(sentence)
                    elif document:
                        yield document
                        document = []
                if not block:
                    break
    except (EOFError, OSError, zlib.error) as error:  # unreadable, truncated or corrupt .gz
        raise ValueError(f"--input {path}: cannot be read ({error})") from None
    if document:
        yield document


def _chunks(documents: Iterable[list[str]]) -> Iterator[tuple[list[list[str]]]]:
    chunk: list[list[str]] = []
    size = 0
    for document in documents:
        chunk.append(document)
        size += sum(map(len, document))
        if size >= _CHUNK_CHARS:
            yield (chunk,)
            chunk, size = [], 0
    if chunk:
        yield (chunk,)


def _encode_chunk(documents: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of a chunk: (tokens, tokens per kept sentence, kept sentences per document)."""
    sentences = [s for document in documents for s in document]
    encodings = WORKER["encoder"].encode_batch_fast(sentences, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(
        itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())
    )
    keep = lengths > 0
    owner = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    per_document = np.bincount(owner[keep], minlength=len(documents))
    return tokens, lengths[keep], per_document


@dataclass
class CorpusCounts:
    """What tokenize_corpus wrote into its folder (bertlab.samples.token_store), counted on the
    way."""

    folder: Path
    num_documents: int
    num_sentences: int
    num_tokens: int
    max_token_id: int
    task_starts: array  # first document of each sample-building task, then num_documents
    num_unknown: int = 0  # tokens that are the tokenizer's [UNK]

    @property
    def num_tasks(self) -> int:
        return len(self.task_starts) - 1

    def tasks(self) -> Iterator[tuple[int, int]]:
        """Document ranges of about _TASK_TOKENS tokens (fixed by the corpus, not --num_proc)."""
        return itertools.pairwise(self.task_starts)


def tokenize_corpus(
    documents: Iterable[list[str]], source: Path, tok, workers: Workers, folder: Path
) -> CorpusCounts:
    """Tokenize documents (from read_documents(source)) with tok's backend on workers into the
    raw arrays of a token store in folder (created)."""
    chunks = _chunks(documents)
    first = next(chunks, None)
    if first is None:
        raise ValueError(f"--input {source}: empty corpus (no text)")
    _check_parity(tok, first[0])
    folder.mkdir(parents=True)
    num_tokens = num_sentences = num_documents = num_unknown = 0
    max_token_id = -1
    unk_id = tok.unk_token_id
    # A task ends at the first document that starts _TASK_TOKENS or more after the task's start.
    task_starts, task_target = array("q", [0]), _TASK_TOKENS
    bar = tqdm(desc="tokenize", unit=" sentences", disable=None)
    with (
        open(array_path(folder, "tokens"), "wb") as tokens_file,
        open(array_path(folder, "sentence_starts"), "wb") as sentences_file,
        open(array_path(folder, "document_starts"), "wb") as documents_file,
    ):
        sentences_file.write(np.zeros(1, np.int64).tobytes())
        documents_file.write(np.zeros(1, np.int64).tobytes())
        for chunk_tokens, lengths, per_document in workers.imap(
            _encode_chunk, itertools.chain([first], chunks)
        ):
            per_document = per_document[per_document > 0]
            tokens_file.write(chunk_tokens.tobytes())
            sentences_file.write((num_tokens + np.cumsum(lengths)).tobytes())
            documents_file.write((num_sentences + np.cumsum(per_document)).tobytes())
            if len(chunk_tokens):
                max_token_id = max(max_token_id, int(chunk_tokens.max()))
                if unk_id is not None:
                    num_unknown += int((chunk_tokens == unk_id).sum())
            if len(per_document):
                ends = np.cumsum(per_document)
                document_tokens = np.add.reduceat(lengths, ends - per_document)
                for size in document_tokens.tolist():
                    if num_documents > task_starts[-1] and num_tokens >= task_target:
                        task_starts.append(num_documents)
                        task_target = num_tokens + _TASK_TOKENS
                    num_tokens += size
                    num_documents += 1
            num_sentences += len(lengths)
            bar.update(len(lengths))
    bar.close()
    if num_sentences == 0:
        raise ValueError(f"--input {source}: empty corpus (no tokens)")
    task_starts.append(num_documents)
    return CorpusCounts(
        folder, num_documents, num_sentences, num_tokens, max_token_id, task_starts, num_unknown
    )


def _check_parity(tok, documents: list[list[str]]) -> None:
    sentences = [s for document in documents for s in document][:_PARITY_SENTENCES]
    expected = tok(sentences, add_special_tokens=False)["input_ids"]
    backend = tok.backend_tokenizer.encode_batch_fast(sentences, add_special_tokens=False)
    if [e.ids for e in backend] != expected:
        raise ValueError(
            f"--tokenizer {tok.name_or_path}: its tokenizer.json encodes differently from "
            "AutoTokenizer; export it again with tools/train_tokenizer.py or convert_tokenizer.py"
        )
