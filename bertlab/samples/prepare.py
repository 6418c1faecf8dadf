"""Pre-training samples: a corpus file -> tokenized sentence pairs -> *.jsonl.gz shards + meta.json.

The format (README, File formats; read by bertlab.data.datamodule): `shard-00000.jsonl.gz` ... with
one JSON object a line, `{"input_ids": [...], "token_type_ids": [...], "next_sentence_label": 0}`
(no padding, no masking; no label in MLM-only data), and `meta.json` with the tokenizer, the
parameters, counts per shard and the source files. The parts: reading and tokenizing in
bertlab.samples.tokenized, cutting samples in bertlab.samples.pairs, writing shards in
bertlab.samples.shard_writer, processes in bertlab.workers.

Decisions:
- Three stages, each a list of independent tasks run in order by this process or a pool of
  --num_proc processes: (1) tokenize chunks of whole documents, (2) build the samples of a range
  of documents, every pass, as JSON lines already grouped by shard, (3) shuffle and gzip one
  shard (or the same tasks on a Dask cluster, --scheduler: bertlab.workers). The main process
  only reads the file and appends results to the shards. Results are
  consumed in task order and all randomness is derived from (seed, pass, document index) or
  (seed, shard index), so the output is byte-identical whatever --num_proc.
- Bounded memory: no stage holds the corpus. Tokens go, chunk by chunk, into the raw files of a
  token store in the scratch folder (bertlab.samples.token_store, ~4.3 bytes a token on disk); a
  sample-building task reads only its own documents into memory and reads each random-next B
  from the files (os.pread: page cache, not the process's memory), so random-next sentences are
  still drawn uniformly from every other document of the corpus and the samples are exactly those
  of the in-memory version; a shard larger than a bucket is shuffled in buckets and gzipped as
  it is written (bertlab.samples.shard_writer). Peak memory is the tokenizer, a task's window, a
  read block and a bucket: ~350 MB at 25 MB and at 100 MB of corpus (BENCHMARKS.md). The output
  format is unchanged (format_version 1): a corpus whose shards fit in one bucket gives the same
  bytes as before; a larger one the same samples in each shard, in another order.
- The canonical order of samples, before they are dealt to shards: task (a range of documents
  of ~32k tokens, fixed by the corpus alone), pass, document, position in the document. A task
  makes every pass over its documents, so their token text is prepared once for all passes.
- Everything is written inside a temporary folder that replaces --output_dir only when complete
  (bertlab.files.atomic.atomic_dir): a failed run leaves no meta.json that looks finished, and a
  failed rerun leaves the previous output as it was. Since the folder is replaced whole, it must be
  new, empty or an earlier output of prepare_samples, replaced only with --overwrite, and neither
  hold nor lie inside the corpus file or the tokenizer (bertlab.files.output_folder's rule).
- meta.json holds nothing that depends on the run (no times, no --num_proc) so that it is
  byte-identical too; besides the contract's keys it records `corpus` (documents, sentences and
  tokens read) for throughput figures.
- --max_seq_len below 8 is refused (for MLM-only samples too): [CLS] A [SEP] B [SEP] would be
  mostly special tokens.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from bertlab.files.output_folder import Legacy, check_output_folder, output_folder
from bertlab.samples.pairs import mlm_blocks, nsp_pairs
from bertlab.samples.shard_reader import SAMPLES_FORMAT, SAMPLES_FORMAT_VERSION
from bertlab.samples.shard_writer import LineEncoder, ShardDealer, deal, finish_shard, shard_name
from bertlab.samples.token_store import TokenStore
from bertlab.samples.tokenized import check_corpus_name, read_documents, tokenize_corpus
from bertlab.tokenizer.special import MAX_UNKNOWN_SHARE
from bertlab.workers import WORKER, Workers

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
MIN_SEQ_LEN = 8
COMMAND = "prepare_samples"
# What prepare_samples wrote before the output marker existed.
LEGACY = Legacy(names={"meta.json"}, required={"meta.json"}, patterns={"shard-*.jsonl.gz"})


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
    overwrite: bool = False,
    scheduler: str | None = None,
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
        overwrite: replace an earlier output of prepare_samples in output_dir.
        scheduler: run the tasks on the Dask cluster at this address (e.g. tcp://10.0.0.1:8786)
            instead of --num_proc local processes; output_dir must be on a filesystem every
            worker mounts at the same path. Needs pip install 'dask[distributed]'. The output is
            the same as a local run's.
    """
    _check_arguments(max_seq_len, dupe_factor, short_seq_prob, num_shards, num_proc)
    if scheduler is not None and num_proc != 1:
        raise ValueError("--num_proc and --scheduler: give one (a Dask cluster has its workers)")
    source = _source_file(input)
    inputs = [("--input", input), ("--tokenizer", tokenizer)]
    check_output_folder(output_dir, COMMAND, inputs, overwrite, legacy=LEGACY)
    documents = read_documents(Path(input))  # errors name the user's path
    first = next(documents, None)  # an empty corpus is an error before the slow imports
    if first is None:
        raise ValueError(f"--input {input}: empty corpus (no text)")
    tok, special_ids = _fast_tokenizer(tokenizer)

    with (
        output_folder(output_dir, COMMAND) as tmp,
        Workers(num_proc, tok.backend_tokenizer, scheduler) as workers,
    ):
        scratch = tmp / ".scratch"
        scratch.mkdir()
        corpus = tokenize_corpus(
            itertools.chain([first], documents), Path(input), tok, workers, scratch / "corpus"
        )
        corpus_dir = str(corpus.folder)
        vocab_size = max(len(tok), corpus.max_token_id + 1)
        dealer = ShardDealer(scratch / "parts", num_shards)
        params = (
            corpus_dir, seed, max_seq_len, short_seq_prob, nsp, dupe_factor, special_ids,
            vocab_size, num_shards,
        )  # fmt: skip
        tasks = ((params, lo, hi) for lo, hi in corpus.tasks())
        with tqdm(total=corpus.num_tasks, desc="samples", unit="task", disable=None) as bar:
            for groups, counts, tokens in workers.imap(_build_samples, tasks):
                dealer.add(groups, counts, tokens)
                bar.update()
        dealer.close()
        if (store := WORKER.pop("store", None)) is not None:  # num_proc 1: the store's files
            store.close()
        if sum(dealer.num_samples) == 0:
            raise ValueError(f"--input {input}: too little text to make a single sample")
        _warn_of_degenerate_output(input, tokenizer, nsp, corpus, dealer.num_samples)
        finish = [(str(p), str(tmp / shard_name(i)), seed, i) for i, p in enumerate(dealer.parts)]
        shutil.rmtree(corpus.folder)  # not needed any more: room on the disk for the shards
        for _ in tqdm(workers.imap(finish_shard, finish), total=num_shards, desc="shards",
                      unit="shard", disable=None):  # fmt: skip
            pass
        shutil.rmtree(scratch)

        meta = _meta(
            tok, tokenizer, special_ids, source, corpus, dealer, tmp,
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


def _fast_tokenizer(tokenizer: str) -> tuple:
    """The --tokenizer folder loaded (a fast tokenizer: workers share its Rust backend) and the
    ids of its special tokens."""
    tok = _load_tokenizer(tokenizer)
    special_ids = _special_ids(tok, tokenizer)
    if getattr(tok, "backend_tokenizer", None) is None:
        raise ValueError(f"--tokenizer {tokenizer}: no tokenizer.json (a fast tokenizer is needed)")
    return tok, special_ids


def _warn_of_degenerate_output(
    input: str, tokenizer: str, nsp: bool, corpus, num_samples: list[int]
) -> None:
    """Valid samples that mean little, said in one line each: NSP from a single document (every
    label 0), shards left empty, a tokenizer that does not fit the text."""
    if corpus.num_unknown > MAX_UNKNOWN_SHARE * corpus.num_tokens:
        print(
            f"warning: {corpus.num_unknown / corpus.num_tokens:.0%} of --input {input}'s "
            f"tokens are the unknown token: --tokenizer {tokenizer} was not made for this "
            "text (another language or script?); train one on it",
            file=sys.stderr,
        )
    if nsp and corpus.num_documents == 1:
        print(
            f"warning: --input {input} holds one document: every next_sentence_label is 0 "
            "(a random next sentence needs another document), so its NSP figures mean "
            "nothing; give at least two documents, or --nsp false",
            file=sys.stderr,
        )
    if (empty := sum(n == 0 for n in num_samples)) > 0:
        print(
            f"warning: {empty} of the {len(num_samples)} shards are empty ({sum(num_samples)}"
            " samples); a smaller --num_shards makes none",
            file=sys.stderr,
        )


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
    check_corpus_name(path)  # before the slow work; read_documents checks it again
    return path.resolve()


def _load_tokenizer(path: str):
    from bertlab.tokenizer.training import load_tokenizer  # imports transformers: only once needed

    return load_tokenizer(path)


def _special_ids(tok, path: str) -> dict[str, int]:
    vocab = tok.get_vocab()
    missing = [token for token in SPECIAL_TOKENS.values() if token not in vocab]
    if missing:
        raise ValueError(f"--tokenizer {path}: lacks the special tokens {' '.join(missing)}")
    return {name: vocab[token] for name, token in SPECIAL_TOKENS.items()}


def _fingerprint(path: str) -> str:
    from bertlab.tokenizer.training import tokenizer_fingerprint

    return tokenizer_fingerprint(path)


def _build_samples(params: tuple, lo: int, hi: int) -> tuple[list, list, list]:
    """The samples of documents [lo, hi), every pass, as shard lines grouped by shards.deal."""
    (
        corpus_dir, seed, max_seq_len, short_seq_prob, nsp, dupe_factor, special_ids,
        vocab_size, num_shards,
    ) = params  # fmt: skip
    corpus = WORKER.get("store")
    if corpus is None or corpus.folder != corpus_dir:
        if corpus is not None:
            corpus.close()
        corpus = WORKER["store"] = TokenStore(corpus_dir)
    # Only documents [lo, hi) are held in memory; a random B is read from the store's files.
    encoder = LineEncoder(corpus.tokens, vocab_size, special_ids["cls"], special_ids["sep"])
    encoder.window(*corpus.window(lo, hi))
    lines, num_tokens, pass_ends = [], [], []
    for pass_index in range(dupe_factor):
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
                line, n = encoder.line(sample)
                lines.append(line)
                num_tokens.append(n)
        pass_ends.append(len(lines))
    return deal(lines, num_tokens, num_shards, pass_ends)


def _meta(tok, tokenizer, special_ids, source, corpus, dealer, out, **parameters) -> dict:
    folder = Path(tokenizer).resolve()
    # num_bytes: a reader compares the file's size at start-up, so a shard cut short, replaced
    # or appended to is refused before training, not when (or if) a run reads it to its end.
    shards = [
        {"file": shard_name(i), "num_samples": n, "num_tokens": t,
         "num_bytes": (out / shard_name(i)).stat().st_size}
        for i, (n, t) in enumerate(zip(dealer.num_samples, dealer.num_tokens, strict=True))
    ]  # fmt: skip
    return {
        "format": SAMPLES_FORMAT,
        "format_version": SAMPLES_FORMAT_VERSION,
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
    the tokenizer to meta.json (transformers already imported), once per num_proc. The systems
    take turns, `repeats` rounds, and each keeps its fastest round: on a shared machine that is
    the least disturbed one, and a burst of load hits every system alike. `cpu_seconds` counts
    this process and its finished children.

    Returns {"num_tokens", "results": [{"system", "num_proc", "seconds", "cpu_seconds",
    "tokens_per_s"}, ...], "prepare_vs_raw" (best prepare_samples rate / `tokenizer(batch)`
    rate), "speedup" ({num_proc: seconds with 1 process / seconds with num_proc})}.
    """
    import resource
    import tempfile
    import time

    tok = _load_tokenizer(tokenizer)
    sentences = [s for document in read_documents(Path(input)) for s in document]
    batches = [sentences[i : i + batch_size] for i in range(0, len(sentences), batch_size)]

    def call() -> None:
        for batch in batches:
            tok(batch, add_special_tokens=False, return_attention_mask=False)

    def backend() -> None:
        for batch in batches:
            tok.backend_tokenizer.encode_batch_fast(batch, add_special_tokens=False)

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    num_tokens = sum(
        len(ids)
        for batch in batches
        for ids in tok(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    )
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="throughput-") as scratch:
        systems = [("tokenizer(batch)", 1, call), ("encode_batch_fast", 1, backend)]
        for n in num_proc:
            run = functools.partial(
                prepare_samples, input, tokenizer, f"{scratch}/samples-{n}",
                max_seq_len=max_seq_len, dupe_factor=dupe_factor, num_shards=num_shards,
                num_proc=n, overwrite=True,  # each repeat replaces its own earlier output
            )  # fmt: skip
            systems.append(("prepare_samples", n, run))
        best: dict[int, tuple[float, float]] = {}
        for _ in range(repeats):
            for index, (_, _, fn) in enumerate(systems):
                start, start_cpu = time.perf_counter(), cpu()
                fn()
                timing = (time.perf_counter() - start, cpu() - start_cpu)
                best[index] = min(best.get(index, timing), timing)
    results = [
        {"system": name, "num_proc": n, "seconds": best[i][0], "cpu_seconds": best[i][1],
         "tokens_per_s": num_tokens / best[i][0]}
        for i, (name, n, _) in enumerate(systems)
    ]  # fmt: skip
    prepare = {r["num_proc"]: r["seconds"] for r in results if r["system"] == "prepare_samples"}
    return {
        "num_tokens": num_tokens,
        "results": results,
        "prepare_vs_raw": results[0]["seconds"] / min(prepare.values()),
        "speedup": {n: prepare[1] / t for n, t in prepare.items()} if 1 in prepare else {},
    }
