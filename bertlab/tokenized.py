"""A corpus file tokenized into flat arrays: the input stage of bertlab.samples.

Decisions:
- The corpus format (DESIGN.md): UTF-8, one sentence a line, a blank line (or a line of only
  spaces) between documents; `.gz` is read too. The file is read in 4 MiB blocks cut after a
  newline (which never falls inside a UTF-8 character) and decoded strictly: the first invalid
  byte is a ValueError with its byte offset and line. A leading BOM is ignored.
- Documents are tokenized in chunks of whole documents (~128k characters) by the tokenizer's Rust
  backend (`encode_batch_fast`, no special tokens), on bertlab.workers, while the file is still
  being read. The backend is checked against the transformers tokenizer on the first sentences,
  so the ids are exactly the ones AutoTokenizer gives.
- The result is three numpy arrays (tokens, sentence starts, document starts), about 4 bytes per
  token; `save`/`load` put them in .npy files that pool processes open as memory maps, so memory
  does not grow with the number of processes. Sentences with no tokens and documents with no
  sentences are dropped.
"""

from __future__ import annotations

import gzip
import itertools
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bertlab.workers import WORKER, Workers

_CHUNK_CHARS = 1 << 17  # text per tokenization task
_TASK_TOKENS = 1 << 15  # corpus tokens per sample-building task
_READ_BYTES = 1 << 22
_PARITY_SENTENCES = 256


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def read_documents(path: Path) -> Iterator[list[str]]:
    """Documents (lists of sentences) of a corpus file; ValueError at the first byte not UTF-8."""
    offset = 0
    line_number = 0
    pending = b""
    document: list[str] = []
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


@dataclass
class TokenizedCorpus:
    """Documents of sentences of token ids, as flat arrays."""

    tokens: np.ndarray  # int32, every token of every sentence, back to back
    sentence_starts: np.ndarray  # int64 [num_sentences + 1], offsets into tokens
    document_starts: np.ndarray  # int64 [num_documents + 1], offsets into sentence_starts

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def token_range(self, document: int) -> tuple[int, int]:
        """Where a document starts and ends in tokens."""
        first, last = self.document_starts[document], self.document_starts[document + 1]
        return int(self.sentence_starts[first]), int(self.sentence_starts[last])

    def tasks(self) -> list[tuple[int, int]]:
        """Document ranges of about _TASK_TOKENS tokens (independent of --num_proc)."""
        token_starts = self.sentence_starts[self.document_starts]
        ranges, lo = [], 0
        while lo < self.num_documents:
            target = token_starts[lo] + _TASK_TOKENS
            hi = int(np.searchsorted(token_starts, target, side="left"))
            hi = min(max(hi, lo + 1), self.num_documents)
            ranges.append((lo, hi))
            lo = hi
        return ranges

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True)
        for name in ("tokens", "sentence_starts", "document_starts"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        return folder

    @classmethod
    def load(cls, folder: str) -> TokenizedCorpus:
        # Plain ndarray views of the maps: slicing a np.memmap runs Python code every time.
        arrays = {
            name: np.load(Path(folder) / f"{name}.npy", mmap_mode="r").view(np.ndarray)
            for name in ("tokens", "sentence_starts", "document_starts")
        }
        return cls(**arrays)


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


def tokenize_corpus(
    documents: Iterable[list[str]], source: Path, tok, workers: Workers
) -> TokenizedCorpus:
    """Tokenize documents (from read_documents(source)) with tok's backend on workers."""
    chunks = _chunks(documents)
    first = next(chunks, None)
    if first is None:
        raise ValueError(f"--input {source}: empty corpus (no text)")
    _check_parity(tok, first[0])
    tokens, lengths, per_document = [], [], []
    bar = tqdm(desc="tokenize", unit=" sentences", disable=None)
    for chunk_tokens, chunk_lengths, chunk_documents in workers.imap(
        _encode_chunk, itertools.chain([first], chunks)
    ):
        tokens.append(chunk_tokens)
        lengths.append(chunk_lengths)
        per_document.append(chunk_documents)
        bar.update(len(chunk_lengths))
    bar.close()
    lengths_all = np.concatenate(lengths)
    per_document_all = np.concatenate(per_document)
    per_document_all = per_document_all[per_document_all > 0]
    if len(lengths_all) == 0:
        raise ValueError(f"--input {source}: empty corpus (no tokens)")
    return TokenizedCorpus(
        tokens=np.concatenate(tokens),
        sentence_starts=np.concatenate([[0], np.cumsum(lengths_all)]).astype(np.int64),
        document_starts=np.concatenate([[0], np.cumsum(per_document_all)]).astype(np.int64),
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
