"""tools/benchmark.py: bertlab against the Hugging Face Trainer recipe, same data, same model.

Decisions:
- One command measures everything side by side, in one run, on one machine, and prints one JSON
  line per measured system plus the ratios: on a shared machine only figures taken together
  compare. Each training run is its own process (bertlab.research.benchmark_runs) so that its peak
  memory is its own; with `--repeats` the runs are interleaved, each round starting one run later
  (A B C, B C A, ...: identical configurations measured up to 12% apart by their place in the
  order), and each system keeps its fastest, the run least disturbed by the machine's other work.
- The data is built from the shared English Wikipedia sample with bertlab's own pipeline
  (prepare_corpus -> a WordPiece tokenizer -> prepare_samples), cached cramming-style in
  `--work_dir` under folders named by a hash of the settings that made them (and of the input
  file's size and mtime), so a rerun starts measuring at once.
- MFU's denominator is the matrix-product peak (bertlab.speed.flops) in the dtype each run computes
  in (fp32 or bf16), measured in this run by a process like the training runs' (same threads, same
  instruction-set limits), before, between and after them; the best of all counts, since a busy
  moment can only make it look lower.
- bertlab runs with its defaults: every `speed` setting `auto` and no precision, resolved by the
  run's own process as `bertlab fit` would (`defaults`); each ablation line sets one setting
  explicitly, so "auto is within a few percent of the best explicit choice" is read off one run.
- The train ratio compares bertlab's defaults with the recipe's better precision (fp32 or bf16),
  dropout 0.1 on both sides; the recipe without dropout is reported beside it, never instead.
  Where bf16 products run at under a quarter of fp32's rate (an AVX2 CPU: emulated), the bf16
  lines (the recipe's and bertlab's) are not run, and say so: they would take hours and could
  not be the better variant.
- `--emulate_avx2` runs the whole training comparison a second time with ONEDNN_MAX_CPU_ISA=AVX2
  ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 in every measuring process: an AVX2-only
  CPU, reproduced on a wider one. Every line names the CPU and the instruction set it ran with.
- `--device cuda` runs the same comparison on a GPU, by default on the BERT-Base shape
  (`--shape base`: 12 layers, hidden 768, 12 heads) at `--seq_len` 128 or 512: the recipe in
  bf16 (and fp32, beside), bertlab with its defaults resolved for the GPU, loader workers on
  both sides where they are each one's default (none for the notebook recipe, 4 for bertlab).
  The clock synchronises with the GPU at the two ends of the measured window only, so neither
  side is timed with waits it would not otherwise make; peak memory is the GPU's
  (`torch.cuda.max_memory_allocated`), MFU is against the GPU's bf16 peak measured in the run.
- Sample preparation is measured by bertlab.samples.prepare.measure_throughput (raw batch encoding
  against prepare_samples with --num_proc 1 and 2, on the same corpus file).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bertlab.files.output_folder import check_outside_outputs
from bertlab.research.benchmark_records import (
    default_options,
    machine_facts,
    prep_records,
    ratio_record,
    train_record,
)
from bertlab.research.benchmark_runs import measure_peaks, run_in_process
from bertlab.research.measured_data import DEFAULT_INPUT, cached_pipeline

SYSTEMS = ("prep", "hf_trainer", "bertlab", "ablation")
BERT_MINI = {
    "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
    "intermediate_size": 1024, "max_position_embeddings": 512, "batch_size": 32,
    "max_seq_len": 128, "vocab_size": 30522, "dupe_factor": 5,
}  # fmt: skip
BERT_BASE = BERT_MINI | {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "batch_size": 256,
}  # fmt: skip
SHAPES = {"mini": BERT_MINI, "base": BERT_BASE}
# The batch per sequence length on a GPU, the same for both systems (BERT-Base fits either on
# an 80 GB or larger GPU in bf16 with the recipe's dense MLM head).
GPU_BATCH = {128: 256, 512: 64}
QUICK = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 128, "max_position_embeddings": 64, "batch_size": 8,
    "max_seq_len": 64, "vocab_size": 1000, "dupe_factor": 1,
}  # fmt: skip
ABLATIONS = {
    "bf16_working_copy": {"speed": {"bf16_working_copy": True}, "bf16": True},
    "fp32": {"speed": {"bf16_working_copy": False}},
    "autocast_bf16": {"precision": "bf16-mixed", "bf16": True},
    "no_sparse_head": {"speed": {"sparse_mlm_head": False}},
    "no_fused_loss": {"speed": {"fused_mlm_loss": False}},
    "torch_dropout": {"speed": {"fast_dropout": False}},
    "glibc_default_malloc": {"speed": {"keep_freed_memory": False}},
    "eager_attention": {"speed": {"attn_implementation": "eager"}},
    "sdpa_attention": {"speed": {"attn_implementation": "sdpa"}},
    "foreach_adamw": {"speed": {"optimizer_implementation": "foreach"}},
    "for_loop_adamw": {"speed": {"optimizer_implementation": "for_loop"}},
    "compile": {"speed": {"compile": True, "pad_to_multiple_of": 128}},
    "static_length_128": {"speed": {"pad_to_multiple_of": 128}},
    "dropout_0": {"dropout": 0.0},
    "loader_worker": {"options": {"num_workers": 1}},
    "mlm_nsp": {"options": {"objective": "mlm_nsp"}},
    "two_processes": {"options": {"processes": 2}},
}
AVX2_EMULATION = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
SLOW_BF16 = 0.25  # bf16 products under this share of fp32's rate: bf16 lines are not run


# ------------------------------------------------------------------------------------------ data
def prepare_data(input: str, work_dir: str, shape: dict) -> dict:
    """Corpus, tokenizer and samples for the benchmark, cached in work_dir by their settings."""
    data = cached_pipeline(
        input, work_dir, prefix="", valid_docs=1, test_docs=1, vocab_size=shape["vocab_size"],
        max_seq_len=shape["max_seq_len"], dupe_factor=shape["dupe_factor"], num_shards=8,
    )  # fmt: skip
    meta = data.meta()
    return {
        "corpus": str(data.corpus / "train.txt"),
        "tokenizer": str(data.tokenizer),
        "samples": str(data.samples["train"]),
        "vocab_size": meta["tokenizer"]["vocab_size"],
        "num_samples": meta["num_samples"],
        "num_tokens": meta["num_tokens"],
    }


# --------------------------------------------------------------------------------- measurements
def _train_specs(
    systems: list[str],
    data: dict,
    shape: dict,
    steps: int,
    warmup: int,
    quick: bool,
    slow_bf16: bool,
    variants: list[str] | None = None,
    device: str = "cpu",
) -> tuple[dict, dict]:
    """(name -> spec of every run the systems ask for, in run order; name -> why one is not run)."""
    common = {
        "tokenizer": data["tokenizer"], "samples": data["samples"], "shape": shape,
        "steps": steps, "warmup_steps": warmup, "lr": 5e-4, "device": device,
    }  # fmt: skip
    specs: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    why = f"bf16 products run at under {SLOW_BF16}x fp32 here: hours, and never the faster"
    if "hf_trainer" in systems:
        for precision in ("fp32",) if quick else ("fp32", "bf16"):
            name = f"hf_trainer/{precision}"
            if precision == "bf16" and slow_bf16:
                skipped[name] = why
                continue
            specs[name] = {**common, "system": "hf_trainer", "precision": precision, "dropout": 0.1}
        if not quick and device == "cpu":
            specs["hf_trainer/fp32_dropout_0"] = {
                **common, "system": "hf_trainer", "precision": "fp32", "dropout": 0.0,
            }  # fmt: skip
    chosen = {"defaults": {}} if "bertlab" in systems or "ablation" in systems else {}
    if "ablation" in systems:
        chosen |= {name: ABLATIONS[name] for name in variants or ABLATIONS}
    for name, change in chosen.items():
        if change.get("bf16") and slow_bf16:
            skipped[f"bertlab/{name}"] = why
            continue
        specs[f"bertlab/{name}"] = {
            **common, "system": "bertlab", "speed": change.get("speed", {}),
            "precision": change.get("precision"), "dropout": change.get("dropout", 0.1),
            "options": default_options(device) | change.get("options", {}),
        }  # fmt: skip
    return specs, skipped


def _emit(record: dict, output: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if output:
        with open(output, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _check_flags(
    *, systems: list[str], steps: int, warmup_steps: int, repeats: int, prep_repeats: int,
    output: str | None, variants: list[str] | None, device: str, emulate_avx2: bool,
    shape_name: str, seq_len: int | None, batch_size: int | None, threads: int | None,
    native: bool,
) -> None:  # fmt: skip
    """Every flag refused before any data is made or any process started."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads} must be at least 1 (or left out: one per core)")
    if not native and not emulate_avx2:
        raise ValueError("--native false needs --emulate_avx2: nothing to measure")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"--systems {' '.join(unknown)}: unknown; choose from {' '.join(SYSTEMS)}")
    if warmup_steps < 1 or steps <= warmup_steps:
        raise ValueError(f"--steps {steps} must exceed --warmup_steps {warmup_steps} (>= 1)")
    if repeats < 1 or prep_repeats < 1:
        raise ValueError("--repeats and --prep_repeats must be at least 1")
    if output is not None and Path(output).is_dir():
        raise ValueError(f"--output {output} is a folder; give a file for the JSON lines")
    if output is not None:
        check_outside_outputs(output, "--output")
    if output is not None and Path(output).is_file() and Path(output).stat().st_size:
        # Results are appended: only to a file of earlier results (JSON lines), never to text.
        with open(output, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
        if not (first.startswith("{") and first.endswith("}")):
            raise ValueError(
                f"--output {output} is not a file of benchmark results (JSON lines); "
                "choose another file name"
            )
    wrong = [v for v in variants or [] if v not in ABLATIONS]
    if wrong:
        raise ValueError(
            f"--variants {' '.join(wrong)}: unknown; choose from {' '.join(ABLATIONS)}"
        )
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device on this machine")
    if device == "cuda" and emulate_avx2:
        raise ValueError("--emulate_avx2 limits a CPU's instructions: not with --device cuda")
    if shape_name not in SHAPES:
        raise ValueError(f"--shape {shape_name}: choose from {' '.join(SHAPES)}")
    if seq_len is not None and not 8 <= seq_len <= 512:
        raise ValueError(f"--seq_len {seq_len} must be between 8 and 512")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch_size {batch_size} must be >= 1")


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
    emulate_avx2: bool = False,
    variants: list[str] | None = None,
    native: bool = True,
    device: str = "cpu",
    shape: str | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
) -> None:
    """Measure bertlab against the Hugging Face Trainer recipe; print one JSON line per system.

    Same data (the shared English Wikipedia sample through bertlab's pipeline, a ~30k WordPiece
    vocabulary), same model shape (bert-mini: 4 layers, hidden 256, 4 heads, intermediate 1024;
    sequences of 128, batch 32). bertlab runs with its defaults (every speed setting `auto`,
    resolved for this machine). Lines: `machine` (CPU, usable instruction set, versions, the
    fp32/bf16 peaks), `prep` (sample preparation against raw tokenizer encoding), `train`
    (tokens/s, MFU, peak memory, data-loading share per system and variant) and `ratio` lines
    with the goals.

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
        profile: also run bertlab's defaults once more under torch.profiler (4 steps after the
            warm-up; not timed) and print the operators that take its step's time.
        emulate_avx2: run the training comparison natively, then again under the AVX2 emulation
            (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2).
        variants: the ablation lines to run (default: all of them).
        native: run the training comparison natively (--native false with --emulate_avx2: only
            under the emulation).
        device: cpu, or cuda (the first GPU: the comparison in bf16, MFU against its bf16 peak).
        shape: mini (bert-mini) or base (BERT-Base); default: mini on a CPU, base on a GPU.
        seq_len: the samples' max_seq_len (default 128).
        batch_size: the batch of both systems (default: 32 on a CPU; on a GPU 256 at
            sequence length 128 and 64 at 512).
    """
    systems = list(systems or SYSTEMS)
    shape_name = shape or ("base" if device == "cuda" else "mini")
    _check_flags(
        systems=systems, steps=steps, warmup_steps=warmup_steps, repeats=repeats,
        prep_repeats=prep_repeats, output=output, variants=variants, device=device,
        emulate_avx2=emulate_avx2, shape_name=shape_name, seq_len=seq_len, batch_size=batch_size,
        threads=threads, native=native,
    )  # fmt: skip
    shape = dict(QUICK if quick else SHAPES[shape_name])
    if seq_len and not quick:
        shape["max_seq_len"] = seq_len
    if device == "cuda" and not quick:
        shape["batch_size"] = GPU_BATCH.get(shape["max_seq_len"], shape["batch_size"])
    if batch_size:
        shape["batch_size"] = batch_size
    work_dir = work_dir or str(Path(tempfile.gettempdir()) / "bertlab-benchmark")
    check_outside_outputs(work_dir, "--work_dir", "benchmark")  # a cache, never in another's
    if threads:
        torch.set_num_threads(threads)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON lines only
        data = prepare_data(input, work_dir, shape)
    modes = ({("cuda" if device == "cuda" else "native"): {}} if native else {}) | (
        {"avx2_emulated": AVX2_EMULATION} if emulate_avx2 else {}
    )
    if not modes:
        raise ValueError("--native false needs --emulate_avx2: nothing to measure")
    peak_seconds = 0.3 if quick else 2.0
    for mode, env in modes.items():
        probe = measure_peaks(threads, env, peak_seconds, bf16=True, device=device)
        slow_bf16 = probe["bf16_speedup"] < SLOW_BF16
        peaks = [probe["peaks"]]
        record = {"benchmark": "machine", "isa_mode": mode, "system": "machine"}
        facts = machine_facts(probe) | {"env": env, "data": data, "shape": shape}
        _emit(record | facts, output)
        if "prep" in systems and mode in ("native", "cuda"):
            with contextlib.redirect_stdout(sys.stderr):
                records = prep_records(data, work_dir, shape, 1 if quick else prep_repeats)
            for record in records:
                _emit(record, output)
        plan = MeasuringPlan(
            systems, data, shape, steps, warmup_steps, quick, repeats, threads, profile, output,
            variants, device, peak_seconds,
        )  # fmt: skip
        _train(plan, IsaMode(mode, env, probe, slow_bf16, peaks))


@dataclass
class MeasuringPlan:
    """What one benchmark command measures, as its flags (and the prepared data) say."""

    systems: list[str]
    data: dict
    shape: dict
    steps: int
    warmup_steps: int
    quick: bool
    repeats: int
    threads: int | None
    profile: bool
    output: str | None
    variants: list[str] | None
    device: str
    peak_seconds: float


@dataclass
class IsaMode:
    """One way of running the measurements: natively, or under an instruction-set emulation."""

    name: str
    env: dict
    probe: dict  # the peak probe's facts: isa, bf16 speedup, the matrix-product peaks
    slow_bf16: bool
    peaks: list[dict]  # every peak measured in this mode: the best of them is the peak


def _train(plan: MeasuringPlan, isa: IsaMode) -> None:
    """The training runs of one instruction-set mode, interleaved over `plan.repeats`; their
    lines."""
    shape = {**plan.shape, "vocab_size": plan.data["vocab_size"]}
    specs, skipped = _train_specs(
        plan.systems,
        plan.data,
        shape,
        plan.steps,
        plan.warmup_steps,
        plan.quick,
        isa.slow_bf16,
        plan.variants,
        plan.device,
    )
    if not specs:
        return
    results: dict[str, dict] = {}
    rounds: list[dict[str, float]] = []
    names = list(specs)
    for round_index in range(plan.repeats):
        rounds.append({})
        # Each round starts one run later in the list: a run's place (right after a large
        # process has exited, say) measurably moves its figure on a shared VM.
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            spec = specs[name]
            result = run_in_process({**spec, "threads": plan.threads}, env=isa.env)
            rounds[-1][name] = result.get("tokens_per_s", 0)
            old = results.get(name)
            if old is None or result.get("tokens_per_s", 0) > old.get("tokens_per_s", 0):
                results[name] = result
            if plan.device == "cpu":  # a GPU's peak does not move with its neighbours' load
                between = measure_peaks(
                    plan.threads, isa.env, plan.peak_seconds / 2, not isa.slow_bf16, plan.device
                )
                isa.peaks.append(between["peaks"])
    best = {dtype: max(p.get(dtype, 0) for p in isa.peaks) for dtype in ("fp32", "bf16")}
    _emit(
        {"benchmark": "train", "isa_mode": isa.name, "system": "peak",
         "fp32_matmul_flops": round(best["fp32"]), "bf16_matmul_flops": round(best["bf16"])},
        plan.output,
    )  # fmt: skip
    records = {n: train_record(n, specs[n], results[n], best, isa.name) for n in specs}
    for name, why in skipped.items():
        system, variant = name.split("/", 1)
        records[name] = {
            "benchmark": "train", "isa_mode": isa.name, "system": system, "variant": variant,
            "skipped": why,
        }  # fmt: skip
    ratio = ratio_record(records, isa.name, isa.probe["isa"], rounds)
    for record in [*records.values(), *([ratio] if ratio else [])]:
        _emit(record | {"machine": isa.probe["describe"]}, plan.output)
    if plan.profile and "bertlab/defaults" in specs:
        spec = specs["bertlab/defaults"]
        steps = spec["warmup_steps"] + 4
        run = {**spec, "steps": steps, "threads": plan.threads, "profile_steps": 4}
        result = run_in_process(run, env=isa.env)
        record = {"benchmark": "profile", "isa_mode": isa.name, "system": "bertlab"}
        record["variant"] = "defaults"
        _emit(record | {k: result[k] for k in ("top_ops", "error") if k in result}, plan.output)
