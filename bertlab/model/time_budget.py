"""A time budget as the learning-rate schedule's clock: `--trainer.max_time` without max_steps.

"The best model in 8 minutes" is one flag: with `trainer.max_time` set and `trainer.max_steps`
-1, the linear schedule decays to zero at the end of the budget instead of at a step count, as
Cramming's budgeted one-cycle does. Lightning's own `Timer` callback (which max_time installs)
stops the run and is the clock: its elapsed time is saved in checkpoints, so a resumed run goes
on with the budget it had left.

Decisions:
- The share of the budget spent is read at the start of every training batch and the factor for
  the next step is 1 minus that share (bertlab.model.optim.lr_multiplier); warm-up is still counted
  in steps (model.warmup_steps).
- Several processes must step with the same learning rate, or their copies of the weights drift
  apart: their clocks differ by milliseconds. Every `SYNC_EVERY` steps rank 0's share and its
  rate per step are broadcast, and every rank extrapolates from them in between; one small
  broadcast per `SYNC_EVERY` steps, not a wait in every step.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer

SYNC_EVERY = 20


def budget_seconds(trainer: pl.Trainer) -> float | None:
    """The run's time budget in seconds when the schedule follows it (max_time, no max_steps)."""
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        return None
    timer = _timer(trainer)
    return None if timer is None else timer._duration


def _timer(trainer: pl.Trainer) -> Timer | None:
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return timers[0] if timers and timers[0]._duration else None


class BudgetClock:
    """The share of the time budget spent (0 to 1), equal on every process of the run."""

    def __init__(self, trainer: pl.Trainer) -> None:
        timer = _timer(trainer)
        assert timer is not None, "BudgetClock needs trainer.max_time"
        self.trainer = trainer
        self.timer = timer
        self.budget = float(timer._duration)
        self.used = 0.0
        self._synced_step, self._synced_used, self._per_step = 0, 0.0, 0.0

    def _local(self) -> float:
        return min(1.0, (self.timer.time_elapsed("train") or 0.0) / self.budget)

    def update(self, step: int) -> float:
        """Advance to optimizer step `step`; return the share spent."""
        if self.trainer.world_size == 1:
            self.used = self._local()
            return self.used
        if step == 0 or step - self._synced_step >= SYNC_EVERY:
            used = self._local()
            steps = step - self._synced_step
            per_step = (used - self._synced_used) / steps if steps > 0 else 0.0
            used, per_step = self.trainer.strategy.broadcast((used, per_step), src=0)
            self._synced_step, self._synced_used, self._per_step = step, used, per_step
        self.used = min(1.0, self._synced_used + (step - self._synced_step) * self._per_step)
        return self.used
