"""Pre-training samples: a corpus file -> tokenized sentence pairs -> *.jsonl.gz shards + meta.json.

The format (DESIGN.md's contract, read by bertlab.data): `shard-00000.jsonl.gz` ... with one JSON
object a line, `{"input_ids": [...], "token_type_ids": [...], "next_sentence_label": 0}` (no
padding, no masking; no label in MLM-only data), and `meta.json` with the tokenizer, the
parameters, counts per shard and the source files. The parts: reading and tokenizing in
bertlab.tokenized, cutting samples in bertlab.pairs, writing shards in bertlab.shards, processes
in bertlab.workers.

Decisions:
- Three stages, each a list of independent tasks run in order by this process or a pool of
  --num_proc processes: (1) tokenize chunks of whole documents, (2) build the samples of a range
  of documents for one pass, (3) shuffle and gzip one shard. Results are consumed in task order
  and all randomness is derived from (seed, pass, document index) or (seed, shard index), so the
  output is byte-identical whatever --num_proc.
- The canonical order of samples, before they are dealt to shards: pass, then document, then
  position in the document (Google's order).
- Everything is written inside a temporary folder that replaces --output_dir only when complete
  (bertlab.atomic.atomic_dir): a failed run leaves no meta.json that looks finished, and a failed
  rerun leaves the previous output as it was.
- meta.json holds nothing that depends on the run (no times, no --num_proc) so that it is
  byte-identical too; besides the contract's keys it records `corpus` (documents, sentences and
  tokens read) for throughput figures.
- --max_seq_len below 8 is refused (for MLM-only samples too): [CLS] A [SEP] B [SEP] would be
  mostly special tokens.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path

from tqdm import tqdm

from bertlab.atomic import atomic_dir
from bertlab.pairs import mlm_blocks, nsp_pairs, sample_line
from bertlab.shards import ShardDealer, finish_shard, shard_name
from bertlab.tokenized import TokenizedCorpus, read_documents, tokenize_corpus
from bertlab.workers import WORKER, Workers

FORMAT = "bertlab.samples"
FORMAT_VERSION = 1
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
MIN_SEQ_LEN = 8


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
    documents = read_documents(source)
    first = next(documents, None)  # an empty corpus is an error before the slow imports
    if first is None:
        raise ValueError(f"--input {source}: empty corpus (no text)")
    tok = _load_tokenizer(tokenizer)
    special_ids = _special_ids(tok, tokenizer)
    if getattr(tok, "backend_tokenizer", None) is None:
        raise ValueError(f"--tokenizer {tokenizer}: no tokenizer.json (a fast tokenizer is needed)")

    with atomic_dir(output_dir) as tmp, Workers(num_proc, tok.backend_tokenizer) as workers:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        corpus = tokenize_corpus(itertools.chain([first], documents), source, tok, workers)
        corpus_dir = str(corpus.save(scratch / "corpus") if num_proc > 1 else None)
        WORKER.update(corpus=corpus, corpus_dir=corpus_dir)  # for tasks run in this process

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


def _build_samples(params: tuple, pass_index: int, lo: int, hi: int) -> tuple[list, list]:
    corpus_dir, seed, max_seq_len, short_seq_prob, nsp, special_ids, vocab_size = params
    corpus = WORKER.get("corpus")
    if corpus is None or WORKER.get("corpus_dir") != corpus_dir:
        corpus = WORKER["corpus"] = TokenizedCorpus.load(corpus_dir)
        WORKER["corpus_dir"] = corpus_dir
    cls_id, sep_id = special_ids["cls"], special_ids["sep"]
    if len(WORKER.get("id_strings", ())) != vocab_size:
        WORKER["id_strings"] = [str(i) for i in range(vocab_size)]
    id_strings = WORKER["id_strings"]
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


def measure_throughput(
    input: str,
    tokenizer: str,
    max_seq_len: int = 128,
    dupe_factor: int = 5,
    num_shards: int = 8,
    num_proc: tuple[int, ...] = (1, 2),
    batch_size: int = 1000,
    repeats: int = 3,
    work_dir: str | None = None,
) -> dict:
    """Tokens per second of raw batch encoding and of prepare_samples on the same corpus file.

    Counted tokens are the corpus's own tokens (no special tokens, no dupe_factor), so the rates
    compare directly. Raw encoding is timed as a user would write it, `tokenizer(batch,
    add_special_tokens=False)` over batches of batch_size sentences, and through the Rust backend
    (`encode_batch_fast`, what prepare_samples uses); prepare_samples is timed whole, from loading
    the tokenizer to meta.json, once per num_proc. Each figure is the best of `repeats` runs: on a
    shared machine the fastest run is the one least disturbed.

    Returns {"num_tokens", "results": [{"system", "num_proc", "seconds", "tokens_per_s"}, ...],
    "prepare_vs_raw" (best prepare_samples rate / raw `tokenizer(...)` rate),
    "speedup" ({num_proc: time with 1 / time with num_proc})}.
    """
    import tempfile
    import time

    tok = _load_tokenizer(tokenizer)
    sentences = [s for document in read_documents(Path(input)) for s in document]
    batches = [sentences[i : i + batch_size] for i in range(0, len(sentences), batch_size)]

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    def call() -> None:
        for batch in batches:
            tok(batch, add_special_tokens=False, return_attention_mask=False)

    def backend() -> None:
        for batch in batches:
            tok.backend_tokenizer.encode_batch_fast(batch, add_special_tokens=False)

    num_tokens = sum(
        len(ids)
        for batch in batches
        for ids in tok(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    )
    results = [
        {"system": "tokenizer(batch)", "num_proc": 1, "seconds": best(call)},
        {"system": "encode_batch_fast", "num_proc": 1, "seconds": best(backend)},
    ]
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="throughput-") as scratch:
        for n in num_proc:
            seconds = best(
                lambda n=n: prepare_samples(
                    input,
                    tokenizer,
                    f"{scratch}/samples-{n}",
                    max_seq_len=max_seq_len,
                    dupe_factor=dupe_factor,
                    num_shards=num_shards,
                    num_proc=n,
                )  # fmt: skip
            )
            results.append({"system": "prepare_samples", "num_proc": n, "seconds": seconds})
    for result in results:
        result["tokens_per_s"] = num_tokens / result["seconds"]
    prepare = {r["num_proc"]: r["seconds"] for r in results if r["system"] == "prepare_samples"}
    return {
        "num_tokens": num_tokens,
        "results": results,
        "prepare_vs_raw": results[0]["seconds"] / min(prepare.values()),
        "speedup": {n: prepare[1] / t for n, t in prepare.items()} if 1 in prepare else {},
    }
