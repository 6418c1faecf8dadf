"""The data path at scale: prepare_corpus, train_tokenizer and prepare_samples against corpus size.

`tools/scale_benchmark.py` builds corpora of the given sizes from one real source (the source's
documents through prepare_corpus, repeated in rounds, each round reshuffled), runs each stage on
each size, and reports wall time, corpus tokens per second, peak memory and output bytes per
token, with the raw batch tokenizer on the same text beside prepare_samples, a plot of time and
memory against size, and the projection to a corpus the size of English Wikipedia.

Decisions:
- Each measured stage runs in a child process of its own (`python -m bertlab.research.scale
  SPEC`): the child imports what the stage needs, then times only the call, so the figures are
  the work and not Python's start-up; the parent reads the child's peak memory from os.wait4 (the
  largest process of its tree, `ru_maxrss`, what /usr/bin/time -v reports), so a pool worker's
  memory counts and one stage's memory never leaks into the next figure.
- The raw tokenizer is `tokenizer(batch, add_special_tokens=False)` over batches of 1,000
  sentences of the same train.txt, timed without reading the file (which favours it), twice: with
  one thread (TOKENIZERS_PARALLELISM=false: one process's worth of tokenizing) and with the Rust
  backend's own threads on every core (its default). prepare_samples' processes tokenize with one
  thread each.
- Stages of one size take turns with the other sizes' only in the order given: each figure is
  one run (the largest corpora take minutes); the ratios that matter (prepare_samples against the
  raw tokenizer, two processes against one) are measured on the same corpus minutes apart.
- --work_dir and --output follow bertlab.files.output_folder's rule: a new or empty folder, or
  this command's earlier scratch (replaced only with --overwrite); the marker is written first,
  so a run that fails half-way leaves a folder the next run recognises.
- The projection, the table and the plot are bertlab.research.scale_report's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bertlab.files.output_folder import check_output_file, check_output_folder, write_marker
from bertlab.research.scale_report import plot, project, report, table
from bertlab.signals import Interrupted

# English Wikipedia's article text (20231101.en, ~6.4M articles): about 20 GB of UTF-8.
WIKIPEDIA_MB = 20_000
COMMAND = "scale_benchmark"
SAMPLE_SETTINGS = ("max_seq_len", "dupe_factor", "num_shards")
STAGES = ("prepare_corpus", "train_tokenizer", "tokenizer", "prepare_samples")


def build_corpus(documents: list[str], size_mb: float, path: Path) -> int:
    """Write documents in rounds, each round shuffled with Random(round), until size_mb MB; the
    bytes written (whole documents, the last one crossing the size)."""
    target = int(size_mb * 1_000_000)
    written, round_index = 0, 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        while written < target:
            order = list(documents)
            random.Random(round_index).shuffle(order)
            for document in order:
                text = document + "\n\n"
                out.write(text)
                written += len(text.encode("utf-8"))
                if written >= target:
                    break
            round_index += 1
    return written


def source_documents(corpus_dir: Path) -> list[str]:
    """The documents of a prepared corpus folder (all three splits), each as its lines."""
    documents = []
    for split in ("train", "valid", "test"):
        text = (corpus_dir / f"{split}.txt").read_text(encoding="utf-8")
        documents += [d.strip("\n") for d in text.split("\n\n") if d.strip()]
    return documents


def _run_child(spec: dict, log: Path, env: dict | None = None) -> dict:
    """Run one stage in a child process; its result with `peak_mb` from os.wait4."""
    result_path = log.with_suffix(".json")
    result_path.unlink(missing_ok=True)
    spec = spec | {"result": str(result_path)}
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "bertlab.research.scale", json.dumps(spec)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0 or not result_path.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        if tail and tail[-1].startswith("ValueError: "):  # the stage refused the scaled corpus
            raise ValueError(
                f"{spec['stage']} refused the corpus scaled from --input: "
                f"{tail[-1].removeprefix('ValueError: ')} (each size is cut from --input, or "
                "repeats its documents: give larger --sizes_mb or a larger --input)"
            )
        raise RuntimeError(f"{spec['stage']} failed ({child.returncode}): {' | '.join(tail)}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    return result | {"peak_mb": usage.ru_maxrss / 1024}  # Linux: kilobytes


def _child(spec: dict) -> None:
    """A stage, timed after its imports; its figures written to spec['result'] as JSON."""
    stage = spec["stage"]
    figures: dict[str, Any] = {}
    if stage == "prepare_corpus":
        from bertlab.corpus.prepare import prepare_corpus

        start = time.perf_counter()
        prepare_corpus(input=[spec["input"]], output_dir=spec["output_dir"],
                       num_proc=spec["num_proc"], overwrite=True)  # fmt: skip
    elif stage == "train_tokenizer":
        import transformers  # noqa: F401 (imported before the clock starts)

        from bertlab.tokenizer.training import train_tokenizer

        start = time.perf_counter()
        train_tokenizer(spec["input"], spec["output_dir"], model_type="wordpiece",
                        vocab_size=spec["vocab_size"], overwrite=True)  # fmt: skip
    elif stage == "tokenizer":
        from bertlab.tokenizer.training import load_tokenizer

        tok = load_tokenizer(spec["tokenizer"])
        text = Path(spec["input"]).read_text(encoding="utf-8")
        sentences = [line for line in text.splitlines() if line.strip()]
        del text
        start, tokens = time.perf_counter(), 0
        for i in range(0, len(sentences), 1000):
            batch = tok(sentences[i : i + 1000], add_special_tokens=False,
                        return_attention_mask=False)  # fmt: skip
            tokens += sum(map(len, batch["input_ids"]))
        figures["corpus_tokens"] = tokens
    elif stage == "prepare_samples":
        from bertlab.samples.prepare import _load_tokenizer, prepare_samples

        _load_tokenizer(spec["tokenizer"])  # transformers imported before the clock starts
        start = time.perf_counter()
        meta = prepare_samples(
            spec["input"], spec["tokenizer"], spec["output_dir"],
            max_seq_len=spec["max_seq_len"], dupe_factor=spec["dupe_factor"],
            num_shards=spec["num_shards"], num_proc=spec["num_proc"], overwrite=True,
        )  # fmt: skip
        out = Path(spec["output_dir"])
        figures["corpus_tokens"] = meta["corpus"]["num_tokens"]
        figures["sample_tokens"] = meta["num_tokens"]
        figures["output_bytes"] = sum(p.stat().st_size for p in out.glob("shard-*.jsonl.gz"))
    else:
        raise AssertionError(f"unknown stage {stage}")
    figures["seconds"] = time.perf_counter() - start
    Path(spec["result"]).write_text(json.dumps(figures) + "\n", encoding="utf-8")


def _scratch_names(sizes_mb: list[float], num_proc: list[int]) -> list[str]:
    """Every entry a run writes into --work_dir, for its marker."""
    stages = ["tt", "tok1", f"tok{os.cpu_count()}"]
    stages += [f"{kind}{n}" for kind in ("pc", "ps") for n in num_proc]
    names = ["source"]
    for size in sizes_mb:
        names += [f"raw-{size:g}MB.txt", f"corpus-{size:g}MB", f"tok-{size:g}MB"]
        names += [f"samples-{size:g}MB"]
        names += [f"log-{size:g}-{stage}.{ext}" for stage in stages for ext in ("txt", "json")]
    return names


def _is_records(path: Path) -> bool:
    """Whether a file is an earlier --output of scale_benchmark (JSON lines with a stage)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return bool(lines) and all("stage" in json.loads(line) for line in lines)
    except (OSError, ValueError, TypeError):
        return False


def scale_benchmark(
    input: str,
    work_dir: str = "runs/scale",
    sizes_mb: list[float] | None = None,
    num_proc: list[int] | None = None,
    vocab_size: int = 30000,
    max_seq_len: int = 128,
    dupe_factor: int = 5,
    num_shards: int = 8,
    cores: list[int] | None = None,
    target_mb: float = WIKIPEDIA_MB,
    output: str | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Time and memory of the data path against corpus size, with the raw tokenizer beside it.

    For each size: a corpus of that many MB made from --input's documents (repeated in rounds,
    each round reshuffled), then prepare_corpus, train_tokenizer (WordPiece) and prepare_samples
    on it, each in a process of its own, and the raw batch tokenizer on the same train.txt (one
    thread, and the Rust backend's threads). Prints a table, the ratios and the projection to
    --target_mb; writes the records (JSON lines) to --output and a plot beside it.

    Args:
        input: the source text, anything prepare_corpus reads (a Wikipedia dump, .txt, .jsonl).
        work_dir: scratch folder for the corpora, tokenizers and samples (reused, replaced).
        sizes_mb: corpus sizes in MB (default: 25 100 400).
        num_proc: prepare_corpus and prepare_samples processes to measure (default: 1 2).
        vocab_size: the WordPiece tokenizer's size.
        max_seq_len: prepare_samples' --max_seq_len.
        dupe_factor: prepare_samples' --dupe_factor.
        num_shards: prepare_samples' --num_shards.
        cores: core counts to project prepare_samples and prepare_corpus to (default: 64).
        target_mb: the corpus size to project to (default: English Wikipedia, ~20 GB).
        output: a JSON-lines file for the records (and OUTPUT.png, the plot); default: none.
        overwrite: replace an earlier --work_dir of scale_benchmark, and an earlier --output.
    """
    from bertlab.corpus.prepare import prepare_corpus

    sizes_mb = sizes_mb or [25, 100, 400]
    num_proc = num_proc or [1, 2]
    cores = cores or [64]
    settings = {"num_proc": num_proc, "vocab_size": vocab_size, "max_seq_len": max_seq_len,
                "dupe_factor": dupe_factor, "num_shards": num_shards}  # fmt: skip
    _check_flags(input, sizes_mb, cores, target_mb, settings)
    work = Path(work_dir)
    if output:
        out = Path(output)
        check_output_file(out, COMMAND, [("--input", input), ("--work_dir", work)], overwrite,
                          flag="--output", recognise=_is_records)  # fmt: skip
    if check_output_folder(work, COMMAND, [("--input", input)], overwrite, flag="--work_dir"):
        shutil.rmtree(work)  # only this command's own earlier scratch (checked just above)
    made = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    write_marker(
        work, COMMAND, _scratch_names(sizes_mb, num_proc)
    )  # first: a failed run's folder is still this command's
    try:
        prepare_corpus(input=[input], output_dir=str(work / "source"), valid_docs=0, test_docs=0,
                       overwrite=True)  # fmt: skip
        documents = source_documents(work / "source")
        records: list[dict] = []
        print("\n".join(table([])), flush=True)
        for size in sizes_mb:
            records += _measure_size(work, documents, size, settings)
    except (ValueError, Interrupted):  # refused or stopped: no scratch of this run is left
        if made:
            shutil.rmtree(work, ignore_errors=True)
        raise
    projections = project(records, target_mb, cores)
    report(records, projections)
    if output:
        out = Path(output)
        with open(out, "w", encoding="utf-8") as f:
            for entry in records + [{"projection": True, **p} for p in projections]:
                f.write(json.dumps(entry) + "\n")
        plot(records, out.with_suffix(".png"))
        print(f"records -> {out}, plot -> {out.with_suffix('.png')}")
    return records


def _check_flags(
    input: str, sizes_mb: list[float], cores: list[int], target_mb: float, settings: dict
) -> None:
    """The flags, refused before any scratch is made (a stage would refuse them later)."""
    if any(size <= 0 for size in sizes_mb):
        raise ValueError(f"--sizes_mb {sizes_mb}: sizes must be positive")
    if not target_mb > 0:
        raise ValueError(f"--target_mb {target_mb} must be positive (the size to project to)")
    if any(n < 1 for n in settings["num_proc"]) or any(n < 1 for n in cores):
        raise ValueError("--num_proc and --cores must be at least 1")
    if settings["vocab_size"] <= 5:
        raise ValueError(f"--vocab_size {settings['vocab_size']} must exceed the 5 special tokens")
    if settings["max_seq_len"] < 8:
        raise ValueError(f"--max_seq_len {settings['max_seq_len']} is too small (needs >= 8)")
    if settings["dupe_factor"] < 1 or settings["num_shards"] < 1:
        raise ValueError("--dupe_factor and --num_shards must be at least 1")
    if not Path(input).exists():
        raise ValueError(f"--input {input}: no such file")


def _record(size: float, stage: str, result: dict, **extra: Any) -> dict:
    """One measured stage as a record (rates derived), printed as a table row."""
    entry = {"size_mb": size, "stage": stage, **extra, **result}
    if entry.get("corpus_tokens"):
        entry["tokens_per_s"] = entry["corpus_tokens"] / entry["seconds"]
    if entry.get("output_bytes"):
        entry["bytes_per_token"] = entry["output_bytes"] / entry["corpus_tokens"]
    print(table([entry])[-1], flush=True)
    return entry


def _measure_size(work: Path, documents: list[str], size: float, settings: dict) -> list[dict]:
    """Every stage on a corpus of `size` MB built in work (removed once measured)."""
    raw = work / f"raw-{size:g}MB.txt"
    build_corpus(documents, size, raw)
    corpus, tok = work / f"corpus-{size:g}MB", work / f"tok-{size:g}MB"
    records = []
    for n in settings["num_proc"]:
        spec = {"stage": "prepare_corpus", "input": str(raw), "output_dir": str(corpus),
                "num_proc": n}  # fmt: skip
        result = _run_child(spec, work / f"log-{size:g}-pc{n}.txt")
        records.append(_record(size, "prepare_corpus", result, num_proc=n))
    train = str(corpus / "train.txt")
    spec = {"stage": "train_tokenizer", "input": train, "output_dir": str(tok),
            "vocab_size": settings["vocab_size"]}  # fmt: skip
    records.append(
        _record(size, "train_tokenizer", _run_child(spec, work / f"log-{size:g}-tt.txt"))
    )
    threads = [(1, {"TOKENIZERS_PARALLELISM": "false"})]
    if (os.cpu_count() or 1) > 1:  # the Rust backend's own threads, on every core
        threads.append((os.cpu_count(), {}))
    for count, env in threads:
        spec = {"stage": "tokenizer", "input": train, "tokenizer": str(tok)}
        result = _run_child(spec, work / f"log-{size:g}-tok{count}.txt", env)
        records.append(_record(size, "tokenizer", result, threads=count))
    for n in settings["num_proc"]:
        spec = {"stage": "prepare_samples", "input": train, "tokenizer": str(tok),
                "output_dir": str(work / f"samples-{size:g}MB"), "num_proc": n,
                **{k: settings[k] for k in SAMPLE_SETTINGS}}  # fmt: skip
        result = _run_child(spec, work / f"log-{size:g}-ps{n}.txt")
        tokens = [r["corpus_tokens"] for r in records if r["stage"] == "tokenizer"]
        assert result["corpus_tokens"] == tokens[0], "prepare_samples and the tokenizer agree"
        records.append(_record(size, "prepare_samples", result, num_proc=n))
    raw.unlink()  # the largest files: gone once measured
    return records


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
