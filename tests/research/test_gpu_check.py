"""`make gpu-check` in its CPU smoke mode: every check of the GPU path runs tiny and passes.

Run: .venv/bin/python -m pytest tests/research/test_gpu_check.py -q

The same command is what a GPU machine runs (without --device cpu --smoke); this proves the
script end to end before GPU time is spent on it: data, fit, kill + resume with identical
losses, test, export, benchmark, one summary line each, figures in checks.json.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CHECKS = ("data", "fit", "resume", "test", "export", "benchmark")


def make_gpu_check(args: str, shared_data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTLAB_SHARED_DATA": str(shared_data)}
    return subprocess.run(
        ["make", "--no-print-directory", "gpu-check", f"GPU_CHECK_ARGS={args}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_smoke_mode_runs_every_check_on_the_cpu(shared_data, tmp_path):
    out = tmp_path / "gpu-check"
    slice_ = REPO / "tests" / "text" / "enwiki-sample.xml.bz2"  # real text, small
    done = make_gpu_check(f"--device cpu --smoke --output_dir {out} --input {slice_}", shared_data)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("check ")]
    assert [line.split(":")[0] for line in lines] == [f"check {name}" for name in CHECKS]
    assert all(": ok: " in line for line in lines), lines
    report = json.loads((out / "checks.json").read_text())
    figures = {c["name"]: c["figures"] for c in report["checks"]}
    assert figures["fit"]["last_loss"] < figures["fit"]["first_loss"]
    assert "last.ckpt" in figures["fit"]["checkpoints"]
    # On a CPU a resumed run's losses are the uninterrupted run's, bit for bit.
    resume = figures["resume"]
    assert resume["max_diff_after_resume"] == 0.0 and resume["compared_steps"] >= 1
    assert figures["test"]["test_mlm_loss"] > 0
    assert (out / "model" / "config.json").is_file()
    ratio = figures["benchmark"]["runs"][0]["ratio"]
    assert ratio["bertlab_vs_hf_trainer"] > 0 and 0 < ratio["bertlab_mfu"] <= 1
    assert (out / "benchmark.jsonl").is_file()
    # Its output folder follows the rule: a second run needs --overwrite.
    again = make_gpu_check(f"--device cpu --smoke --output_dir {out} --checks data", shared_data)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_is_one_line(shared_data, tmp_path):
    done = make_gpu_check(f"--output_dir {tmp_path / 'x'}", shared_data)
    assert done.returncode == 2
    assert "error: --device cuda: torch sees no CUDA device here" in done.stderr
    assert "Traceback" not in done.stderr
