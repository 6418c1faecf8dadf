"""tools/benchmark.py runs end to end on tiny shapes and prints JSON lines with the promised keys.

Run: .venv/bin/python -m pytest tests/research/test_benchmark.py -x -q

Nothing here is timed: the figures are BENCHMARKS.md's business; this only checks that the
command a user runs produces them.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_tool

from bertlab.research.benchmark_runs import StepClock
from bertlab.speed.flops import training_flops


def test_quick_benchmark_prints_every_system(en_corpus, tmp_path):
    output = tmp_path / "bench.jsonl"
    args = ["--quick", "--steps", "3", "--warmup_steps", "1", "--prep_repeats", "1"]
    args += ["--systems", "prep", "hf_trainer", "bertlab", "--work_dir", tmp_path / "work"]
    args += ["--input", en_corpus / "valid.txt", "--output", output, "--profile"]
    result = run_tool("benchmark.py", *args)

    lines = [json.loads(line) for line in result.stdout.splitlines()]  # JSON lines only
    assert [json.loads(line) for line in output.read_text().splitlines()] == lines
    by_system = {
        (r["benchmark"], r["system"], r.get("variant"), r.get("num_proc")): r for r in lines
    }
    machine = by_system["machine", "machine", None, None]
    assert machine["cores"] >= 1 and "torch" in machine
    assert machine["cpu"] and machine["usable"].startswith("cpu: ") and machine["isa_mode"]

    prep = [r for r in lines if r["benchmark"] == "prep" and r["system"] != "ratio"]
    assert {(r["system"], r["num_proc"]) for r in prep} >= {
        ("tokenizer(batch)", 1), ("prepare_samples", 1), ("prepare_samples", 2),
    }  # fmt: skip
    assert all(r["tokens_per_s"] > 0 for r in prep)
    assert {"prepare_vs_raw", "num_proc_2_vs_1"} <= set(by_system["prep", "ratio", None, None])

    ours = by_system["train", "bertlab", "defaults", None]
    for key in ("tokens_per_s", "mfu", "peak_rss_mb", "data_fraction", "padding_efficiency"):
        assert ours[key] > 0, key
    assert 0 < ours["mfu"] <= 1
    # bertlab's defaults: nothing set, everything resolved for this machine by the run itself.
    assert ours["precision"] is None and "set_speed" not in ours
    assert ours["resolved_precision"] == "32-true" and ours["compute_dtype"] in ("fp32", "bf16")
    assert all(ours["speed"][k] for k in ("sparse_mlm_head", "fused_mlm_loss", "fast_dropout"))
    assert "auto" not in ours["speed"].values()
    peak = by_system["train", "peak", None, None]
    assert peak["fp32_matmul_flops"] > 0 and peak["bf16_matmul_flops"] > 0

    profile = by_system["profile", "bertlab", "defaults", None]["top_ops"]
    assert len(profile) >= 5 and 0.3 < sum(op["share"] for op in profile) <= 1.0001
    assert any(op["op"] in ("aten::mm", "aten::addmm") for op in profile)

    hf = by_system["train", "hf_trainer", "fp32", None]  # accelerate comes with the dev extra
    assert hf["tokens_per_s"] > 0 and hf["peak_rss_mb"] > 0
    ratio = by_system["train", "ratio", None, None]
    assert ratio["bertlab_vs_hf_trainer"] > 0 and set(ratio["met"]) == {
        "speedup", "mfu_in_0_1", "data_fraction", "auto_within_5pct",
    }  # fmt: skip


def test_bad_flags_are_one_line_errors(tmp_path):
    result = run_tool("benchmark.py", "--systems", "nonsense", check=False)
    assert result.returncode == 2 and "--systems nonsense" in result.stderr
    result = run_tool("benchmark.py", "--steps", "3", "--warmup_steps", "3", check=False)
    assert result.returncode == 2 and "--steps 3 must exceed" in result.stderr
    missing = tmp_path / "missing.xml.bz2"
    result = run_tool("benchmark.py", "--input", missing, "--work_dir", tmp_path, check=False)
    assert result.returncode == 2 and str(missing) in result.stderr


def test_step_clock_window_and_flops():
    clock = StepClock()
    import torch

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    labels = torch.tensor([[-100, 5, -100, -100], [7, -100, -100, -100]])
    for t in range(4):
        clock.begins.append(t + 0.25)  # 0.25 s waiting for data, then 0.75 s of compute
        clock.ends.append(t + 1.0)
        clock.add_batch(mask, labels)
    summary = clock.summary(warmup_steps=1)
    assert summary["measured_steps"] == 3 and summary["seconds"] == pytest.approx(3.0)
    assert summary["tokens_per_s"] == pytest.approx(5.0)  # 5 real tokens a step
    assert summary["data_fraction"] == pytest.approx(0.25)
    assert summary["padding_efficiency"] == pytest.approx(5 / 8)
    # 6·N per token + 12·L·d·Σl² + 6·d·V per prediction
    flops = training_flops(2, 4, 10, 100, tokens=5, sum_squared_lengths=13, predicted_tokens=2)
    assert flops == 6 * 100 * 5 + 12 * 2 * 4 * 13 + 6 * 4 * 10 * 2


def test_the_gpu_comparison_is_planned_without_a_gpu(tmp_path):
    """What `--device cuda` would run (checked here without one): BERT-Base, the recipe in bf16
    and fp32, bertlab with loader workers, GPU goals; and a one-line error where no GPU is."""
    from bertlab.research.benchmark import BERT_BASE, _train_specs
    from bertlab.research.benchmark_records import GPU_OPTIONS, ratio_record

    data = {"tokenizer": "tok", "samples": "samples"}
    specs, skipped = _train_specs(
        ["hf_trainer", "bertlab"], data, BERT_BASE, 30, 10, False, False, device="cuda"
    )
    assert list(specs) == ["hf_trainer/fp32", "hf_trainer/bf16", "bertlab/defaults"]
    assert all(spec["device"] == "cuda" for spec in specs.values()) and not skipped
    assert specs["bertlab/defaults"]["options"] == GPU_OPTIONS
    assert specs["bertlab/defaults"]["shape"]["hidden_size"] == 768
    records = {
        "hf_trainer/bf16": {"variant": "bf16", "dropout": 0.1, "tokens_per_s": 100.0},
        "bertlab/defaults": {"variant": "defaults", "tokens_per_s": 250.0, "mfu": 0.45},
    }
    ratio = ratio_record(records, "cuda", "sm_90")
    assert ratio["goals"]["speedup"] == 2.0 and ratio["goals"]["mfu_at_least"] == 0.4
    assert ratio["met"]["speedup"] and ratio["met"]["mfu_at_least"]
    import torch

    if not torch.cuda.is_available():
        result = run_tool("benchmark.py", "--device", "cuda", "--work_dir", tmp_path, check=False)
        assert result.returncode == 2 and "--device cuda: torch sees no CUDA" in result.stderr
