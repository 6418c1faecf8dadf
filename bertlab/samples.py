"""Pre-training samples: a corpus file -> tokenized sentence pairs -> *.jsonl.gz shards + meta.json.

The format (DESIGN.md's contract, read by bertlab.data): `shard-00000.jsonl.gz` ... with one JSON
object a line, `{"input_ids": [...], "token_type_ids": [...], "next_sentence_label": 0}` (no
padding, no masking; no label in MLM-only data), and `meta.json` with the tokenizer, the
parameters, counts per shard and the source files. How samples are cut: bertlab.pairs; how shards
are written: bertlab.shards.

Decisions:
- Three stages, each a list of independent tasks run in order by one process or a pool of
  --num_proc processes: (1) tokenize chunks of whole documents (~256k characters) while the file
  is still being read, (2) build the samples of a range of documents for one pass, (3) shuffle and
  gzip one shard. Results are consumed in task order, and all randomness is derived from (seed,
  pass, document index) or (seed, shard index): the output is byte-identical whatever --num_proc.
- Tokenization is the expensive part: sentences are encoded in large batches by the tokenizer's
  Rust backend (`encode_batch_fast`, no special tokens). With one process the backend's own
  threads do the work in parallel; with several, each process runs it single-threaded
  (TOKENIZERS_PARALLELISM=false) so the processes do not fight over the cores. The backend is
  checked against the transformers tokenizer on the first sentences, so the ids are the ones
  AutoTokenizer gives.
- The tokenized corpus is kept as three flat numpy arrays (tokens, sentence starts, document
  starts), about 4 bytes per token; pool processes read them through a memory map of scratch
  files, so memory does not grow with --num_proc. Sentences with no tokens and documents with no
  sentences are dropped.
- Everything is written inside a temporary folder that replaces --output_dir only when complete
  (bertlab.atomic.atomic_dir): a failed run leaves no meta.json that looks finished.
- meta.json holds nothing that depends on the run (no times, no --num_proc) so that it is
  byte-identical too; besides the contract's keys it records `corpus` (documents, sentences and
  tokens read) for throughput figures.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import multiprocessing
import os
import random
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bertlab.atomic import atomic_dir
from bertlab.pairs import mlm_blocks, nsp_pairs, sample_line
from bertlab.shards import ShardDealer, finish_shard, shard_name

FORMAT = "bertlab.samples"
FORMAT_VERSION = 1
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# [CLS] A [SEP] B [SEP] with room to spare: below this a pair is mostly special tokens.
MIN_SEQ_LEN = 8
_CHUNK_CHARS = 1 << 18  # text per tokenization task
_TASK_TOKENS = 1 << 17  # corpus tokens per sample-building task
_READ_BYTES = 1 << 22
_PARITY_SENTENCES = 256


def prepare_samples(
    input: str,
    tokenizer: str,
    output_dir: str,
    max_seq_len: int = 128,
    seed: int = 12345,
    dupe_factor: int = 5,
    short_seq_prob: float = 0.1,
    num_shards: int = 8,
    num_proc: int = 1,
    nsp: bool = True,
) -> dict:
    """Tokenize a corpus and write BERT pre-training samples: *.jsonl.gz shards and meta.json.

    Args:
        input: corpus file: UTF-8, one sentence a line, a blank line between documents (.gz too).
        tokenizer: tokenizer folder (from tools/train_tokenizer.py) with [PAD] [UNK] [CLS] [SEP]
            [MASK].
        output_dir: folder to write shard-00000.jsonl.gz ... and meta.json into (replaced whole).
        max_seq_len: tokens per sample, [CLS] and [SEP]s included (at least 8).
        seed: seed of every random choice; same inputs, seed and num_shards give identical files.
        dupe_factor: passes over the corpus, each cutting the documents differently.
        short_seq_prob: share of sentence pairs given a shorter random target length.
        num_shards: number of shard files.
        num_proc: processes to use; does not change the output.
        nsp: sentence pairs with next_sentence_label (true) or MLM-only blocks of one document
            (false).
    """
    _check_arguments(max_seq_len, dupe_factor, short_seq_prob, num_shards, num_proc)
    source = _source_file(input)
    tok = _load_tokenizer(tokenizer)
    special_ids = _special_ids(tok, tokenizer)
    if getattr(tok, "backend_tokenizer", None) is None:
        raise ValueError(f"--tokenizer {tokenizer}: no tokenizer.json (a fast tokenizer is needed)")

    with atomic_dir(output_dir) as tmp, _Workers(num_proc, tok.backend_tokenizer) as workers:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        corpus = _tokenize(source, tok, workers)
        corpus_dir = str(corpus.save(scratch / "corpus") if num_proc > 1 else None)
        _WORKER.update(corpus=corpus, corpus_dir=corpus_dir)  # for tasks run in this process

        vocab_size = max(len(tok), int(corpus.tokens.max()) + 1)
        dealer = ShardDealer(scratch / "parts", num_shards)
        params = (corpus_dir, seed, max_seq_len, short_seq_prob, nsp, special_ids, vocab_size)
        tasks = [(params, p, lo, hi) for p in range(dupe_factor) for lo, hi in corpus.tasks()]
        with tqdm(total=len(tasks), desc="samples", unit="task", disable=None) as bar:
            for lines, num_tokens in workers.imap(_build_samples, tasks):
                dealer.add(lines, num_tokens)
                bar.update()
        dealer.close()
        if sum(dealer.num_samples) == 0:
            raise ValueError(f"--input {source}: too little text to make a single sample")

        finish = [(str(p), str(tmp / shard_name(i)), seed, i) for i, p in enumerate(dealer.parts)]
        for _ in tqdm(workers.imap(finish_shard, finish), total=num_shards, desc="shards",
                      unit="shard", disable=None):  # fmt: skip
            pass
        shutil.rmtree(scratch)

        meta = _meta(
            tok, tokenizer, special_ids, source, corpus, dealer,
            max_seq_len=max_seq_len, nsp=nsp, seed=seed, dupe_factor=dupe_factor,
            short_seq_prob=short_seq_prob,
        )  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(
        f"prepare_samples: {meta['num_samples']} samples, {meta['num_tokens']} tokens in "
        f"{num_shards} shards from {corpus.num_documents} documents, "
        f"{corpus.num_sentences} sentences, {corpus.num_tokens} tokens -> {output_dir}"
    )
    return meta


def _check_arguments(
    max_seq_len: int, dupe_factor: int, short_seq_prob: float, num_shards: int, num_proc: int
) -> None:
    if max_seq_len < MIN_SEQ_LEN:
        raise ValueError(
            f"--max_seq_len {max_seq_len} is too small for a sentence pair (needs >= {MIN_SEQ_LEN})"
        )
    if dupe_factor < 1:
        raise ValueError(f"--dupe_factor {dupe_factor} must be at least 1")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"--short_seq_prob {short_seq_prob} must be between 0 and 1")
    if num_shards < 1:
        raise ValueError(f"--num_shards {num_shards} must be at least 1")
    if num_proc < 1:
        raise ValueError(f"--num_proc {num_proc} must be at least 1")


def _source_file(input: str) -> Path:
    path = Path(input)
    if not path.exists():
        raise ValueError(f"--input {input}: no such file")
    if path.is_dir():
        raise ValueError(
            f"--input {input} is a folder; give a corpus file such as corpus/train.txt"
        )
    return path.resolve()


def _load_tokenizer(path: str):
    try:
        from bertlab.tokenizer import load_tokenizer
    except ImportError:  # bertlab.tokenizer is being written; same contract meanwhile
        load_tokenizer = _load_tokenizer_fallback
    return load_tokenizer(path)


def _load_tokenizer_fallback(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise ValueError(f"--tokenizer {path}: no such folder")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--tokenizer {path}: not a tokenizer folder ({error})") from None


def _special_ids(tok, path: str) -> dict[str, int]:
    vocab = tok.get_vocab()
    missing = [token for token in SPECIAL_TOKENS.values() if token not in vocab]
    if missing:
        raise ValueError(f"--tokenizer {path}: lacks the special tokens {' '.join(missing)}")
    return {name: vocab[token] for name, token in SPECIAL_TOKENS.items()}


def _fingerprint(path: str) -> str:
    try:
        from bertlab.tokenizer import tokenizer_fingerprint
    except ImportError:
        tokenizer_fingerprint = _fingerprint_fallback
    return tokenizer_fingerprint(path)


def _fingerprint_fallback(path: str) -> str:
    import hashlib

    spec = json.loads((Path(path) / "tokenizer.json").read_text(encoding="utf-8"))
    from transformers import AutoTokenizer

    vocab = sorted(AutoTokenizer.from_pretrained(path).get_vocab().items())
    canonical = {
        "vocab": vocab,
        "normalizer": spec.get("normalizer"),
        "pre_tokenizer": spec.get("pre_tokenizer"),
    }
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Reading and tokenizing


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _read_documents(path: Path) -> Iterator[list[str]]:
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
    except (EOFError, gzip.BadGzipFile, OSError) as error:
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
        arrays = {
            name: np.load(Path(folder) / f"{name}.npy", mmap_mode="r")
            for name in ("tokens", "sentence_starts", "document_starts")
        }
        return cls(**arrays)


def _encode_chunk(documents: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of a chunk: (tokens, tokens per kept sentence, kept sentences per document)."""
    sentences = [s for document in documents for s in document]
    encodings = _WORKER["encoder"].encode_batch_fast(sentences, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(
        itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())
    )
    keep = lengths > 0
    owner = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    per_document = np.bincount(owner[keep], minlength=len(documents))
    return tokens, lengths[keep], per_document


def _tokenize(source: Path, tok, workers: _Workers) -> TokenizedCorpus:
    chunks = _chunks(_read_documents(source))
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


# ---------------------------------------------------------------------------------------------
# Building samples


def _build_samples(params: tuple, pass_index: int, lo: int, hi: int) -> tuple[list, list]:
    corpus_dir, seed, max_seq_len, short_seq_prob, nsp, special_ids, vocab_size = params
    corpus = _WORKER.get("corpus")
    if corpus is None or _WORKER.get("corpus_dir") != corpus_dir:
        corpus = _WORKER["corpus"] = TokenizedCorpus.load(corpus_dir)
        _WORKER["corpus_dir"] = corpus_dir
    cls_id, sep_id = special_ids["cls"], special_ids["sep"]
    if len(_WORKER.get("id_strings", ())) != vocab_size:
        _WORKER["id_strings"] = [str(i) for i in range(vocab_size)]
    id_strings = _WORKER["id_strings"]
    lines, num_tokens = [], []
    for document in range(lo, hi):
        rng = random.Random(f"bertlab.samples:{seed}:{pass_index}:{document}")
        if nsp:
            samples = nsp_pairs(
                document, corpus.sentence_starts, corpus.document_starts, rng, max_seq_len,
                short_seq_prob,
            )  # fmt: skip
        else:
            start, end = corpus.token_range(document)
            samples = mlm_blocks(start, end, pass_index, rng, max_seq_len)
        for sample in samples:
            line, n = sample_line(corpus.tokens, sample, cls_id, sep_id, id_strings)
            lines.append(line)
            num_tokens.append(n)
    return lines, num_tokens


# ---------------------------------------------------------------------------------------------
# Processes

# State of the process running tasks: the tokenizer backend and the tokenized corpus.
_WORKER: dict = {}


def _init_worker(tokenizer_json: str) -> None:
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER["encoder"] = Tokenizer.from_str(tokenizer_json)


class _Workers:
    """Run tasks in order, in this process (num_proc 1) or in a pool of num_proc processes."""

    def __init__(self, num_proc: int, backend):
        self.num_proc = num_proc
        self.pool = None
        self.backend = backend

    def __enter__(self) -> _Workers:
        _WORKER.clear()
        if self.num_proc == 1:
            _WORKER["encoder"] = self.backend
            return self
        methods = multiprocessing.get_all_start_methods()
        # fork shares the already-imported modules; elsewhere the default start method works too.
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        # Set while forking so a child of a process whose tokenizer threads already ran neither
        # warns nor deadlocks.
        with _environment(TOKENIZERS_PARALLELISM="false"):
            self.pool = context.Pool(
                self.num_proc, initializer=_init_worker, initargs=(self.backend.to_str(),)
            )
        return self

    def __exit__(self, kind, value, traceback) -> None:
        _WORKER.clear()
        if self.pool is not None:
            if kind is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def imap(self, fn, tasks: Iterable[tuple]) -> Iterator:
        if self.pool is None:
            for task in tasks:
                yield fn(*task)
            return
        # A bounded window of tasks in flight: the pool stays busy, memory stays small.
        pending: deque = deque()
        for task in tasks:
            pending.append(self.pool.apply_async(fn, task))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------------------------
# meta.json


def _meta(tok, tokenizer, special_ids, source, corpus, dealer, **parameters) -> dict:
    folder = Path(tokenizer).resolve()
    shards = [
        {"file": shard_name(i), "num_samples": n, "num_tokens": t}
        for i, (n, t) in enumerate(zip(dealer.num_samples, dealer.num_tokens, strict=True))
    ]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "path": str(folder),
            "name": folder.name,
            "vocab_size": len(tok),
            "fingerprint": _fingerprint(str(folder)),
            "special_ids": special_ids,
        },
        **parameters,
        "num_samples": sum(dealer.num_samples),
        "num_tokens": sum(dealer.num_tokens),
        "shards": shards,
        "source_files": [str(source)],
        "corpus": {
            "num_documents": corpus.num_documents,
            "num_sentences": corpus.num_sentences,
            "num_tokens": corpus.num_tokens,
        },
    }
