"""tools/benchmark.py: bertlab against the Hugging Face Trainer recipe, same data, same model.

Decisions:
- One command measures everything side by side, in one run, on one machine, and prints one JSON
  line per measured system plus the ratios: on a shared machine only figures taken together
  compare. Each training run is its own process (bertlab.benchmark_runs) so that its peak memory
  is its own; with `--repeats` the runs are interleaved (A B C A B C) and each system keeps its
  fastest, the run least disturbed by the machine's other work.
- The data is built from the shared English Wikipedia sample with bertlab's own pipeline
  (prepare_corpus -> a WordPiece tokenizer -> prepare_samples), cached cramming-style in
  `--work_dir` under folders named by a hash of the settings that made them (and of the input
  file's size and mtime), so a rerun starts measuring at once.
- MFU's denominator is this machine's bf16 matrix-multiply peak measured in this run, with the
  runs' thread count: the best rate of square and batched bf16 products of a few sizes (batched:
  one or two matrices per thread, which on the 2-core development machine reach twice what one
  product split over both cores does), measured before, between and after the training runs
  (the best of all, since a busy moment can only make it look lower).
- The train ratio compares bertlab with the recipe's better precision (fp32 or bf16), dropout
  0.1 on both sides (issue 5); the recipe without dropout is reported beside it, never instead.
- Sample preparation is measured by bertlab.samples.measure_throughput (raw batch encoding
  against prepare_samples with --num_proc 1 and 2, on the same corpus file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bertlab.atomic import atomic_dir

SHARED_DATA = os.environ.get(
    "BERTLAB_SHARED_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
DEFAULT_INPUT = str(Path(SHARED_DATA) / "enwiki-sample.xml.bz2")
SYSTEMS = ("prep", "hf_trainer", "bertlab", "ablation")
BERT_MINI = {
    "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
    "intermediate_size": 1024, "max_position_embeddings": 512, "batch_size": 32,
    "max_seq_len": 128, "vocab_size": 30522, "dupe_factor": 5,
}  # fmt: skip
QUICK = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 128, "max_position_embeddings": 64, "batch_size": 8,
    "max_seq_len": 64, "vocab_size": 1000, "dupe_factor": 1,
}  # fmt: skip
# bertlab's fastest settings; each ablation line flips one of them.
# precision "bf16" is model.bf16_compute (a bf16 working copy, fp32 masters, trainer precision
# 32-true); "bf16-mixed" is Lightning's autocast.
BEST = {
    "precision": "bf16", "dropout": 0.1, "objective": "mlm", "sparse_mlm_head": True,
    "fused_mlm_loss": True, "fast_dropout": True, "keep_freed_memory": True,
    "attn_implementation": "sdpa", "optimizer_implementation": "fused", "compile": False,
    "pad_to_multiple_of": 8, "num_workers": 0, "processes": 1,
}  # fmt: skip
ABLATIONS = {
    "no_sparse_head": {"sparse_mlm_head": False},
    "no_fused_loss": {"fused_mlm_loss": False},
    "torch_dropout": {"fast_dropout": False},
    "glibc_default_malloc": {"keep_freed_memory": False},
    "autocast_bf16": {"precision": "bf16-mixed"},
    "fp32": {"precision": "32-true"},
    "eager_attention": {"attn_implementation": "eager"},
    "dropout_0": {"dropout": 0.0},
    "foreach_adamw": {"optimizer_implementation": "foreach"},
    "for_loop_adamw": {"optimizer_implementation": "for_loop"},
    "compile": {"compile": True, "pad_to_multiple_of": 128},
    "static_length_128": {"pad_to_multiple_of": 128},
    "loader_worker": {"num_workers": 1},
    "mlm_nsp": {"objective": "mlm_nsp"},
    "two_processes": {"processes": 2, "precision": "bf16-mixed"},
}
GOALS = {"speedup": 4.0, "mfu": 0.12, "data_fraction": 0.05, "prep_vs_raw": 0.5}


# ------------------------------------------------------------------------------------ data cache
def _key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _cached(folder: Path, marker: str, build) -> Path:
    """Build `folder` with build(tmp) unless a complete one (holding `marker`) exists."""
    if not (folder / marker).exists():
        with atomic_dir(folder) as tmp:
            build(tmp)
    return folder


def prepare_data(input: str, work_dir: str, shape: dict) -> dict:
    """Corpus, tokenizer and samples for the benchmark, cached in work_dir by their settings."""
    from bertlab.corpus import prepare_corpus
    from bertlab.samples import prepare_samples
    from bertlab.tokenizer import train_tokenizer

    source = Path(input)
    if not source.is_file():
        raise ValueError(f"--input {input}: no such file")
    work = Path(work_dir)
    stat = source.stat()
    corpus_settings = {
        "input": str(source.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime),
        "lang": "en", "valid_docs": 1, "test_docs": 1, "seed": 0,
    }  # fmt: skip
    corpus = _cached(
        work / f"corpus-{_key(corpus_settings)}",
        "train.txt",
        lambda tmp: prepare_corpus(
            input=[str(source)], output_dir=str(tmp), lang="en", valid_docs=1, test_docs=1
        ),
    )
    tokenizer_settings = {"corpus": corpus.name, "type": "wordpiece", "vocab": shape["vocab_size"]}
    tokenizer = _cached(
        work / f"tokenizer-{_key(tokenizer_settings)}",
        "tokenizer.json",
        lambda tmp: train_tokenizer(
            str(corpus / "train.txt"),
            str(tmp),
            model_type="wordpiece",
            vocab_size=shape["vocab_size"],
        ),  # fmt: skip
    )
    sample_settings = {
        "corpus": corpus.name, "tokenizer": tokenizer.name, "max_seq_len": shape["max_seq_len"],
        "dupe_factor": shape["dupe_factor"], "seed": 12345, "num_shards": 8, "nsp": True,
    }  # fmt: skip
    samples = _cached(
        work / f"samples-{_key(sample_settings)}",
        "meta.json",
        lambda tmp: prepare_samples(
            str(corpus / "train.txt"),
            str(tokenizer),
            str(tmp),
            max_seq_len=shape["max_seq_len"],
            dupe_factor=shape["dupe_factor"],
            num_shards=8,
        ),  # fmt: skip
    )
    meta = json.loads((samples / "meta.json").read_text(encoding="utf-8"))
    return {
        "corpus": str(corpus / "train.txt"),
        "tokenizer": str(tokenizer),
        "samples": str(samples),
        "vocab_size": meta["tokenizer"]["vocab_size"],
        "num_samples": meta["num_samples"],
        "num_tokens": meta["num_tokens"],
    }


# --------------------------------------------------------------------------------- measurements
def measure_peak_flops(
    dtype: torch.dtype = torch.bfloat16,
    sizes: tuple[int, ...] = (256, 512, 1024),
    seconds: float = 3.0,
) -> float:
    """Best observed FLOP/s of matrix products in `dtype` on the CPU: the practical peak.

    Square products alone understate it: one product split across cores by oneDNN reached about
    half of what the same cores do each on a product of its own. So batched products with one or
    two matrices per thread are timed too, and the best rate of all counts.
    """
    threads = torch.get_num_threads()
    forms = [(batch, size) for size in sizes for batch in (1, threads, 2 * threads)]
    best = 0.0
    for batch, size in dict.fromkeys(forms):
        a = torch.randn(batch, size, size).to(dtype)
        b = torch.randn(batch, size, size).to(dtype)
        out = torch.empty(batch, size, size, dtype=dtype)
        torch.bmm(a, b, out=out)  # warm-up: kernel selection, AMX tile configuration
        deadline = time.perf_counter() + seconds / len(forms)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.bmm(a, b, out=out)
            best = max(best, 2 * batch * size**3 / (time.perf_counter() - start))
    return best


def machine_facts() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "amx": "amx_bf16" in _cpu_flags(),
    }


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line for line in text.splitlines() if line.startswith("flags")), "")


def run_in_process(spec: dict, timeout: float = 3600) -> dict:
    """Run one training run (bertlab.benchmark_runs) in a fresh Python process; its result."""
    with tempfile.TemporaryDirectory(prefix="bertlab-bench-") as scratch:
        spec_path, result_path = Path(scratch, "spec.json"), Path(scratch, "result.json")
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [sys.executable, "-m", "bertlab.benchmark_runs", str(spec_path), str(result_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not result_path.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:] or [""]
            return {"error": f"exit status {done.returncode}: {tail[-1]}", "log_tail": tail}
        return json.loads(result_path.read_text(encoding="utf-8"))


def _train_specs(
    systems: list[str], data: dict, shape: dict, steps: int, warmup: int, quick: bool
) -> dict:
    """name -> spec of every training run the selected systems ask for, in run order."""
    common = {
        "tokenizer": data["tokenizer"], "samples": data["samples"], "shape": shape,
        "steps": steps, "warmup_steps": warmup, "lr": 5e-4,
    }  # fmt: skip
    specs: dict[str, dict] = {}
    if "hf_trainer" in systems:
        for precision in ("fp32",) if quick else ("fp32", "bf16"):
            specs[f"hf_trainer/{precision}"] = {
                **common, "system": "hf_trainer", "precision": precision, "dropout": 0.1,
            }  # fmt: skip
        if not quick:
            specs["hf_trainer/fp32_dropout_0"] = {
                **common, "system": "hf_trainer", "precision": "fp32", "dropout": 0.0,
            }  # fmt: skip
    variants = {"best": {}} if "bertlab" in systems or "ablation" in systems else {}
    if "ablation" in systems:
        variants |= ABLATIONS
    for name, change in variants.items():
        options = BEST | change
        specs[f"bertlab/{name}"] = {
            **common, "system": "bertlab", "precision": options.pop("precision"),
            "dropout": options.pop("dropout"), "options": options,
        }  # fmt: skip
    return specs


def _emit(record: dict, output: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if output:
        with open(output, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _prep_records(data: dict, work_dir: str, shape: dict, repeats: int) -> list[dict]:
    from bertlab.samples import measure_throughput

    measured = measure_throughput(
        data["corpus"], data["tokenizer"], max_seq_len=shape["max_seq_len"],
        dupe_factor=shape["dupe_factor"], num_shards=8, num_proc=(1, 2), repeats=repeats,
        work_dir=work_dir,
    )  # fmt: skip
    records = [
        {
            "benchmark": "prep",
            "system": r["system"],
            "num_proc": r["num_proc"],
            "seconds": round(r["seconds"], 3),
            "tokens_per_s": round(r["tokens_per_s"]),
            "corpus_tokens": measured["num_tokens"],
        }  # fmt: skip
        for r in measured["results"]
    ]
    speedup = measured["speedup"].get(2)
    records.append(
        {
            "benchmark": "prep",
            "system": "ratio",
            "prepare_vs_raw": round(measured["prepare_vs_raw"], 3),
            "num_proc_2_vs_1": round(speedup, 3) if speedup else None,
            "goal_prepare_vs_raw": GOALS["prep_vs_raw"],
            "met": measured["prepare_vs_raw"] >= GOALS["prep_vs_raw"] and (speedup or 0) > 1,
        }  # fmt: skip
    )
    return records


def _train_record(name: str, spec: dict, result: dict, peak: float) -> dict:
    system, variant = name.split("/", 1)
    record = {"benchmark": "train", "system": system, "variant": variant}
    record |= {"precision": spec["precision"], "dropout": spec["dropout"]}
    if "options" in spec:
        record["options"] = spec["options"]
    if "error" in result:
        return record | result
    record |= {
        "tokens_per_s": round(result["tokens_per_s"], 1),
        "samples_per_s": round(result["samples_per_s"], 2),
        "step_s": round(result["step_s"], 4),
        "mfu": round(result["useful_flops_per_s"] / peak, 4),
    }
    keep = (
        "data_fraction", "padding_efficiency", "cpu_share", "cpu_s_per_step", "peak_rss_mb",
        "peak_rss_children_mb",
        "measured_steps", "attn_implementation", "optimizer", "torch_threads",
        "callback_mfu", "callback_tokens_per_sec", "callback_data_fraction",
    )  # fmt: skip
    if result.get("callback_mfu") and result.get("callback_peak_flops"):
        # The callback divided by the peak known when the run started; rescale to the run's.
        result["callback_mfu"] *= result["callback_peak_flops"] / peak
    for key in keep:
        if key in result:
            value = result[key]
            record[key] = round(value, 4) if isinstance(value, float) else value
    return record


def _ratio_record(records: dict[str, dict]) -> dict | None:
    hf = [r for n, r in records.items() if n.startswith("hf_trainer/") and r["dropout"] == 0.1]
    hf = [r for r in hf if "tokens_per_s" in r]
    ours = records.get("bertlab/best")
    if not hf or not ours or "tokens_per_s" not in ours:
        return None
    baseline = max(hf, key=lambda r: r["tokens_per_s"])
    speedup = ours["tokens_per_s"] / baseline["tokens_per_s"]
    record = {
        "benchmark": "train", "system": "ratio",
        "bertlab_vs_hf_trainer": round(speedup, 3),
        "hf_trainer_best_variant": baseline["variant"],
        "bertlab_mfu": ours["mfu"], "bertlab_data_fraction": ours.get("data_fraction"),
        "goals": GOALS,
    }  # fmt: skip
    record["met"] = {
        "speedup": speedup >= GOALS["speedup"],
        "mfu": ours["mfu"] >= GOALS["mfu"],
        "data_fraction": (ours.get("data_fraction") or 0) < GOALS["data_fraction"],
    }
    return record


def benchmark(
    steps: int = 40,
    warmup_steps: int = 10,
    systems: list[str] | None = None,
    work_dir: str | None = None,
    input: str = DEFAULT_INPUT,
    repeats: int = 1,
    prep_repeats: int = 2,
    quick: bool = False,
    output: str | None = None,
    threads: int | None = None,
    profile: bool = False,
) -> None:
    """Measure bertlab against the Hugging Face Trainer recipe; print one JSON line per system.

    Same data (the shared English Wikipedia sample through bertlab's pipeline, a ~30k WordPiece
    vocabulary), same model shape (bert-mini: 4 layers, hidden 256, 4 heads, intermediate 1024;
    sequences of 128, batch 32). Lines: `machine` (CPU, versions, measured bf16 peak), `prep`
    (sample preparation against raw tokenizer encoding), `train` (tokens/s, MFU, peak memory,
    data-loading share per system and variant) and `ratio` lines with the goals.

    Args:
        steps: training steps per run.
        warmup_steps: steps left out of the steady-state window (start-up, compilation).
        systems: any of prep, hf_trainer, bertlab, ablation (default: all).
        work_dir: cache of the corpus, tokenizer and samples (default: $TMPDIR/bertlab-benchmark).
        input: the text the data is made from (default: the shared English Wikipedia sample).
        repeats: runs per training system, interleaved; each keeps its fastest.
        prep_repeats: timed runs per sample-preparation figure (the fastest is kept).
        quick: tiny shapes and few steps: checks that the tool works, measures nothing useful.
        output: also append the JSON lines to this file.
        threads: torch threads of each training run (default: torch's choice, one per core).
        profile: also run bertlab's best variant once more under torch.profiler (4 steps after
            the warm-up; not timed) and print the operators that take its step's time.
    """
    systems = list(systems or SYSTEMS)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"--systems {' '.join(unknown)}: unknown; choose from {' '.join(SYSTEMS)}")
    if warmup_steps < 1 or steps <= warmup_steps:
        raise ValueError(f"--steps {steps} must exceed --warmup_steps {warmup_steps} (>= 1)")
    if repeats < 1 or prep_repeats < 1:
        raise ValueError("--repeats and --prep_repeats must be at least 1")
    shape = QUICK if quick else BERT_MINI
    work_dir = work_dir or str(Path(tempfile.gettempdir()) / "bertlab-benchmark")
    if threads:
        torch.set_num_threads(threads)  # the peak is measured with the runs' thread count
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON lines only
        data = prepare_data(input, work_dir, shape)
    peaks = [measure_peak_flops()]
    _emit({"benchmark": "machine", "system": "machine", **machine_facts(), "data": data}, output)
    if "prep" in systems:
        with contextlib.redirect_stdout(sys.stderr):
            records = _prep_records(data, work_dir, shape, 1 if quick else prep_repeats)
        for record in records:
            _emit(record, output)

    shape = {**shape, "vocab_size": data["vocab_size"]}
    specs = _train_specs(systems, data, shape, steps, warmup_steps, quick)
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for name, spec in specs.items():
            result = run_in_process({**spec, "threads": threads, "peak_flops": max(peaks)})
            old = results.get(name)
            if old is None or result.get("tokens_per_s", 0) > old.get("tokens_per_s", 0):
                results[name] = result
            peaks.append(measure_peak_flops(seconds=1.0))
    if not specs:
        return
    peaks.append(measure_peak_flops())
    peak = max(peaks)
    _emit({"benchmark": "train", "system": "peak", "bf16_matmul_flops": round(peak)}, output)
    records = {name: _train_record(name, specs[name], results[name], peak) for name in specs}
    for record in records.values():
        _emit(record, output)
    ratio = _ratio_record(records)
    if ratio:
        _emit(ratio, output)
    if profile and "bertlab/best" in specs:
        spec = specs["bertlab/best"]
        steps = spec["warmup_steps"] + 4
        result = run_in_process({**spec, "steps": steps, "threads": threads, "profile_steps": 4})
        record = {"benchmark": "profile", "system": "bertlab", "variant": "best"}
        _emit(record | {k: result[k] for k in ("top_ops", "error") if k in result}, output)
