"""A time budget as the schedule (bertlab.model.time_budget): `--trainer.max_time` without
max_steps.

Run: .venv/bin/python -m pytest tests/model/test_time_budget.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_tool
from tiny import fit_args

from bertlab.model.optim import lr_multiplier


def test_the_factor_warms_up_in_steps_then_falls_with_the_budget_spent():
    spent = [0.0]
    factor = lr_multiplier(4, -1, "linear", budget_used=lambda: spent[0])
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    spent[0] = 0.6
    assert factor(100) == pytest.approx(0.4)
    # A long run's warm-up (10,000 steps) ends by 5% of a short budget all the same.
    long_warmup = lr_multiplier(10_000, -1, "linear", budget_used=lambda: spent[0])
    spent[0] = 0.025
    assert long_warmup(10) == pytest.approx(0.5)
    spent[0] = 0.5
    assert long_warmup(300) == pytest.approx(0.5)
    spent[0] = 1.0
    assert factor(200) == 0.0
    with pytest.raises(ValueError, match="trainer.max_time"):
        lr_multiplier(4, -1, "linear")  # no steps, no budget: nothing to decay over


def test_fit_with_max_time_decays_the_learning_rate_to_zero_by_the_deadline(
    en_samples: Path, tmp_path: Path
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = fit_args(en_samples, tmp_path / "runs", "--trainer.max_time=00:00:00:15", steps=-1)
    done = run_tool("bertlab", *args)
    assert "linear decay to 0 at the end of trainer.max_time (15 s" in done.stderr + done.stdout
    events = EventAccumulator(str(next((tmp_path / "runs").rglob("events.out.*")).parent))
    events.Reload()
    scalars = events.Scalars("lr/decay")
    lrs = [event.value for event in scalars]
    peak = max(lrs)
    # Judged by the clock, not by a step count: a busy machine takes fewer steps in 15 s.
    assert len(lrs) > 8 and scalars[-1].wall_time - scalars[0].wall_time > 8, (
        "the run stopped long before its budget"
    )
    after_peak = lrs[lrs.index(peak) :]
    falls = [b <= a + 1e-12 for a, b in zip(after_peak, after_peak[1:], strict=False)]
    assert all(falls), "not decaying"
    # Stopped by the timer near the end of the decay (validation and checkpoints every 4 steps
    # take a share of the 15 s after the last logged rate).
    assert after_peak[-1] < 0.3 * peak
