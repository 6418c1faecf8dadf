"""tools/quality_benchmark.py's verdicts (bertlab.research.quality.summarise) and its refusals.

The benchmark itself trains for many minutes and is not a test; its arithmetic is.
Run: .venv/bin/python -m pytest tests/research/test_quality.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bertlab.research.quality import plot, quality_benchmark, summarise


def _point(step: int, seconds: float, loss: float, unigram: float = 7.0) -> dict:
    figures = {"loss": loss, "accuracy": 0.1, "unigram_loss": unigram}
    return {
        "step": step,
        "train_seconds": seconds,
        "t.txt": figures | {"below_unigram": unigram - loss},
    }


def test_summary_judges_equal_steps_wall_clock_and_budget():
    runs = {
        "hf_trainer": {"heldout": [_point(100, 300, 7.2), _point(200, 600, 6.9)]},
        "bertlab": {"heldout": [_point(100, 90, 7.1), _point(200, 180, 6.93)]},
        "budget": {"heldout": [_point(500, 100, 6.8), _point(2000, 480, 5.9)]},
        "ablation/no_sparse_head": {"heldout": [_point(200, 300, 6.95)]},
    }
    lines = "\n".join(summarise(runs, ["t.txt"]))
    assert "equal steps, t.txt: bertlab - recipe = +0.030 nats (goal within 0.05: met)" in lines
    assert "ratio 0.300 (goal at most 1/3: met)" in lines
    # The budget run is below the recipe's final 6.9 at its first point: 100 s of the 600.
    assert "`budget` reaches the recipe's final 6.900 nats in 100 s = 0.167" in lines
    assert "`bertlab` reaches the recipe's final 6.900 nats in never, in this run" in lines
    assert "+1.100 nats below unigram after 480 training s (goal 1.0: met)" in lines
    assert "no_sparse_head +0.020" in lines


def test_the_budget_run_alone_is_judged_at_equal_wall_clock():
    """--systems hf_trainer budget: no equal-steps run, the wall-clock verdict all the same."""
    runs = {
        "hf_trainer": {"heldout": [_point(200, 600, 6.9)]},
        "budget": {"heldout": [_point(50, 150, 7.0), _point(100, 300, 6.5)]},
    }
    lines = "\n".join(summarise(runs, ["t.txt"]))
    assert "`budget` reaches the recipe's final 6.900 nats in 300 s = 0.500" in lines
    assert "(not met)" in lines and "equal steps" not in lines


def test_plot_writes_a_png(tmp_path: Path):
    runs = {"bertlab": {"heldout": [_point(1, 1, 7.0), _point(2, 2, 6.5)]}, "x": {"error": "e"}}
    plot(runs, ["t.txt"], tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_systems_and_variants_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="--systems nope"):
        quality_benchmark(systems=["nope"], output_dir=str(tmp_path / "q"))
    with pytest.raises(ValueError, match="--variants nope"):
        quality_benchmark(variants=["nope"], output_dir=str(tmp_path / "q"))
