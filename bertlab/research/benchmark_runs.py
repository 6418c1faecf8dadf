"""One measured training run of tools/benchmark.py: the Hugging Face Trainer recipe or bertlab.

Each run is a fresh process (`python -m bertlab.research.benchmark_runs SPEC.json RESULT.json`), so
its peak resident memory is its own and no run inherits another's allocator, threads or compiled
kernels. `run_in_process` (called by bertlab.research.benchmark and .quality) starts these
processes; benchmark turns their results into JSON lines.

Decisions:
- Both systems are timed by one clock (bertlab.research.step_clock) and scored by one FLOPs
  formula; the recipe's runner is bertlab.research.hf_recipe. Tokens are real tokens
  (attention_mask == 1), counted from the very batches that trained.
- bertlab runs its real path: `BertPretraining` and `BertDataModule` through `pl.Trainer`, with
  the spec's explicit `speed` settings and every other one `auto`, resolved for this process's
  device exactly as `bertlab fit` resolves it (the result says what was chosen); the
  ThroughputMonitor callback runs beside the clock over the same window, so its MFU and data
  fraction are checked against the benchmark's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bertlab.model.network import SHAPE_KEYS
from bertlab.research.hf_recipe import run_hf_trainer
from bertlab.research.step_clock import (
    ClockCallback,
    ProfileSteps,
    StepClock,
    finish,
    optimizer_name,
    window_ends,
)
from bertlab.speed.flops import measure_peak_flops

# ------------------------------------------------------------------------ the Hugging Face recipe


# --------------------------------------------------------------------------------------- bertlab
def _model_and_data(spec: dict, resolution, processes: int):
    """bertlab's module and DataModule for the spec's shape, as `bertlab fit` would build them."""
    from bertlab.data.datamodule import BertDataModule
    from bertlab.model.module import BertPretraining

    shape, options = spec["shape"], spec["options"]
    model = BertPretraining(
        tokenizer=spec["tokenizer"],
        **{key: shape[key] for key in SHAPE_KEYS},
        hidden_dropout_prob=spec["dropout"],
        attention_probs_dropout_prob=spec["dropout"],
        objective=options["objective"],
        lr=spec["lr"],
        warmup_steps=spec["warmup_steps"],
        speed=resolution.speed,
    )
    data = BertDataModule(
        train_files=spec["samples"],
        batch_size=shape["batch_size"] // processes,
        num_workers=options["num_workers"],
        pad_to_multiple_of=resolution.speed.pad_to_multiple_of,
        shuffle_buffer_size=10000,
        seed=0,
    )
    return model, data


def run_bertlab(spec: dict) -> dict:
    """Train through BertPretraining + BertDataModule + pl.Trainer with the spec's switches."""
    import pytorch_lightning as pl

    from bertlab.speed.settings import Speed, probe_device, resolve
    from bertlab.train.throughput import ThroughputMonitor

    options = spec["options"]
    processes = options.get("processes", 1)
    gpu = spec.get("device") == "cuda"
    if processes > 1 and not gpu:
        # Data parallel on one machine: each process gets its share of the cores and the batch.
        torch.set_num_threads(max(1, torch.get_num_threads() // processes))
    clock = StepClock(sync_at=window_ends(spec) if gpu else frozenset())
    profiled: dict = {}
    profile_steps = spec.get("profile_steps", 0)
    profile = [ProfileSteps(spec["warmup_steps"], profile_steps, profiled)] if profile_steps else []
    window = spec["steps"] - spec["warmup_steps"]
    monitor = ThroughputMonitor(
        peak_flops=spec.get("peak_flops") or None, window=window, log_every_n_steps=spec["steps"]
    )
    pl.seed_everything(0, verbose=False)
    facts = probe_device("cuda" if gpu else "cpu")
    resolution = resolve(Speed(**spec.get("speed", {})), facts, spec.get("precision"), processes)
    model, data = _model_and_data(spec, resolution, processes)
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        precision=resolution.precision,
        max_steps=spec["steps"],
        gradient_clip_val=1.0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ClockCallback(clock), monitor, *profile],
    )
    trainer.fit(model, datamodule=data)
    callback = _monitor_figures(monitor)
    optimizer = optimizer_name(trainer.optimizers[0])
    if trainer.global_rank != 0:
        return {}
    chosen = {"speed": resolution.speed.as_dict(), "precision": resolution.precision}
    chosen["compute_dtype"] = "bf16" if model.compute_dtype == torch.bfloat16 else "fp32"
    if resolution.precision.startswith("bf16"):
        chosen["compute_dtype"] = "bf16"
    extra = {"optimizer": optimizer, **callback, **profiled, **chosen}
    result = finish(clock, spec, model.model, extra)
    if processes > 1:
        # Every process trained as many batches of the same size; the clock saw rank 0's.
        for key in ("samples_per_s", "tokens_per_s", "useful_flops_per_s"):
            result[key] *= processes
        result["processes"] = processes
    return result


def run_in_process(spec: dict, timeout: float = 3600, env: dict | None = None) -> dict:
    """Run one measurement (bertlab.research.benchmark_runs) in a fresh Python process; its
    result."""
    with tempfile.TemporaryDirectory(prefix="bertlab-bench-") as scratch:
        spec_path, result_path = Path(scratch, "spec.json"), Path(scratch, "result.json")
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "bertlab.research.benchmark_runs",
            str(spec_path),
            str(result_path),
        ]
        environment = {**os.environ, **(env or {})}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment
        )
        if done.returncode != 0 or not result_path.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:] or [""]
            return {"error": f"exit status {done.returncode}: {tail[-1]}", "log_tail": tail}
        return json.loads(result_path.read_text(encoding="utf-8"))


def measure_peaks(
    threads: int | None, env: dict, seconds: float, bf16: bool, device: str = "cpu"
) -> dict:
    """The fp32 (and bf16) matrix-product peaks, measured in a process of their own."""
    spec = {"system": "peak", "threads": threads, "seconds": seconds, "bf16": bf16}
    result = run_in_process(spec | {"device": device}, env=env)
    assert "error" not in result, result
    return result


def _monitor_figures(monitor) -> dict:
    """The ThroughputMonitor's own figures over the same window, to check the clock's against."""
    names = ("mfu", "tokens_per_sec", "data_fraction")
    figures = {
        f"callback_{k.split('/', 1)[1]}": v
        for k, v in monitor.last.items()
        if k.split("/", 1)[1] in names
    }
    return figures | {"callback_peak_flops": monitor.peak_flops}


def run_peak(spec: dict) -> dict:
    """This process's fp32 and bf16 matrix-product peaks (FLOP/s) and what the resolver sees.

    On a GPU the fp32 peak is with fp32 products as the resolver sets them (TF32 allowed).
    """
    from bertlab.speed.settings import cpu_facts, cuda_facts

    device = spec.get("device", "cpu")
    facts = cuda_facts() if device == "cuda" else cpu_facts()
    seconds = spec.get("seconds", 1.0)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    peaks = {"fp32": measure_peak_flops(torch.float32, seconds, device)}
    if spec.get("bf16", True):
        peaks["bf16"] = measure_peak_flops(torch.bfloat16, seconds, device)
    speedup = facts.bf16_speedup or 0
    if device == "cuda" and "bf16" in peaks:
        speedup = peaks["bf16"] / peaks["fp32"]
    result = {
        "peaks": peaks,
        "describe": facts.describe(),
        "isa": facts.isa,
        "bf16_speedup": round(speedup, 3),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        result |= {"gpu": facts.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1)}
        result["cuda"] = torch.version.cuda
    return result


RUNNERS = {"hf_trainer": run_hf_trainer, "bertlab": run_bertlab, "peak": run_peak}


def main(argv: list[str]) -> None:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    result = RUNNERS[spec["system"]](spec)
    if result:  # other ranks of a data-parallel run report nothing
        Path(result_path).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
