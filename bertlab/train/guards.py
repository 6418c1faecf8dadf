"""NonFiniteLossGuard: a NaN or infinite loss skips its update, or stops the run with a checkpoint.

Decisions:
- The check runs where an update can still be refused: `on_before_optimizer_step`, after the
  backward pass(es) of the step and before clipping and the optimizer. A step is bad when the
  loss of any of its micro-batches or any gradient is NaN or infinite; the gradient check is the
  max-abs norm (no overflow from squaring) in one fused reduction.
- Skip means no update at all: weights, AdamW's moments and its step count stay as they were.
  Zeroing the gradients instead would still decay the moments and move the weights. With the
  fused AdamW (bertlab's default where it exists) the flag goes to the kernel as `found_inf`,
  the mechanism GradScaler uses, so skipping costs no host sync: the flags are read once per
  logging interval (`trainer.log_every_n_steps`), when the warnings and the count are made.
  Other optimizers get every gradient set to None (AdamW leaves a parameter without a gradient
  untouched), which needs the flag on the host at every step. With fp16 loss scaling
  (`16-mixed`) the GradScaler already skips steps with non-finite gradients and lowers its
  scale; the guard only counts those. The step still counts (global step, learning-rate
  schedule, data position), so a resumed run stays aligned.
- Under DDP the gradients are already averaged (a NaN on one rank is a NaN on all), so the
  gradient flag agrees on every rank; the host-side decision is also reduced across ranks.
- Stop (checked at every step) saves a checkpoint at the end of the bad step (its update not
  applied, the data position after the bad batch: a consistent point to resume from) as
  `nonfinite-step=N.ckpt` beside the other checkpoints, then raises FloatingPointError naming
  the step and the source lines (`path:line`, grouped by file) of the samples whose loss was
  not finite (all of the step's when only gradients were), gathered from every rank. The lines
  come from the datamodule's `sources(batch)`, so batches need `data.with_source` (the `bertlab`
  command turns it on). With `skip`, `max_consecutive` bad steps in a row also stop: a run that
  keeps producing NaNs has diverged and will not recover by skipping.
- Skips are counted (kept in checkpoints) and logged as `train/skipped_steps`; each skip warns
  with the step and the first lines of its batch.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

from bertlab.files import remote

log = logging.getLogger(__name__)
ACTIONS = ("skip", "stop")
_MAX_LINES_IN_WARNING = 3


def describe_sources(sources: list[str], limit: int | None = None) -> str:
    """`a.jsonl.gz:3,17; b.jsonl.gz:5` from `path:line` strings, file order kept."""
    by_file: dict[str, list[str]] = defaultdict(list)
    for source in sources[:limit] if limit else sources:
        path, _, line = source.rpartition(":")
        by_file[path].append(line)
    text = "; ".join(f"{path}:{','.join(lines)}" for path, lines in by_file.items())
    if limit and len(sources) > limit:
        text += f" (+{len(sources) - limit} more)"
    return text


@dataclass
class _Step:
    """One optimizer step as the guard saw it (flags are 0-dim bool tensors on the device)."""

    number: int
    bad: torch.Tensor
    loss_bad: list[torch.Tensor]
    sources: list[torch.Tensor | None]


class NonFiniteLossGuard(Callback):
    """Skip the update of a step whose loss or gradients are NaN or infinite, or stop the run.

    Args:
        action: skip (drop the step's update, count it and go on) or stop (save a checkpoint,
            then stop with an error naming the step and the source lines of its batch).
        max_consecutive: With skip, this many bad steps in a row stop the run as `stop` does
            (0: never stop).
    """

    def __init__(self, action: Literal["skip", "stop"] = "skip", max_consecutive: int = 5) -> None:
        if action not in ACTIONS:
            raise ValueError(f"--nonfinite_guard.action {action!r} must be one of {ACTIONS}")
        if max_consecutive < 0:
            raise ValueError(f"--nonfinite_guard.max_consecutive {max_consecutive} must be >= 0")
        self.action = action
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._losses: list[torch.Tensor] = []
        self._sources: list[torch.Tensor | None] = []
        self._pending: list[_Step] = []  # steps whose flags the host has not read yet
        self._deferred = False  # whether the pending steps may wait for the next logging step

    # -- collecting the step's micro-batches ----------------------------------------------------

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._sources.append(batch.get("source") if isinstance(batch, dict) else None)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self._losses.append(loss.detach())

    # -- the decision ---------------------------------------------------------------------------

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        losses, sources = self._losses, self._sources
        self._losses, self._sources = [], []
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer's
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        device = grads[0].device if grads else pl_module.device
        grads_bad = torch.zeros((), dtype=torch.bool, device=device)
        if grads:
            peak = torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=None)
            grads_bad = ~peak.isfinite()
        loss_bad = [~loss.float().isfinite().all() for loss in losses]
        local_bad = grads_bad
        for flag in loss_bad:
            local_bad = local_bad | flag.to(device)
        step = _Step(trainer.global_step + 1, local_bad, loss_bad, sources)
        no_scaler = getattr(trainer.precision_plugin, "scaler", None) is None
        self._deferred = (
            self.action == "skip" and no_scaler and bool(optimizer.defaults.get("fused"))
        )
        if self._deferred:
            # The fused AdamW kernel skips the whole update on the device when found_inf is set
            # (as for a GradScaler): no host sync. Under DDP the gradients are averaged, so their
            # flag is the same on every rank (a rank's local loss is not).
            step.bad = grads_bad if trainer.world_size > 1 else local_bad
            optimizer.found_inf = step.bad.float()
        else:
            bad = bool(local_bad)
            if trainer.world_size > 1:
                bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
            step.bad = torch.tensor(bad)
            if bad and no_scaler:
                for p in params:
                    p.grad = None  # AdamW skips parameters without a gradient: a true no-op
        self._pending.append(step)

    def _lines(self, trainer: pl.Trainer, step: _Step) -> list[str]:
        """`path:line` of the step's samples with a non-finite loss (all when none), all ranks."""
        flags = [bool(flag) for flag in step.loss_bad]
        chosen = [s for s, f in zip(step.sources, flags, strict=False) if f] or step.sources
        datamodule = trainer.datamodule
        lines: list[str] = []
        if datamodule is not None and hasattr(datamodule, "sources"):
            for source in chosen:
                if source is not None:
                    lines += datamodule.sources({"source": source.cpu()})
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[list[str]] = [[] for _ in range(trainer.world_size)]
            dist.all_gather_object(gathered, lines)
            lines = [line for rank_lines in gathered for line in rank_lines]
        return lines

    # -- acting at the end of the step ----------------------------------------------------------

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
    ) -> None:  # (outputs, batch, batch_idx): not needed here
        every = trainer.log_every_n_steps or 1
        if not self._pending or (self._deferred and trainer.global_step % every):
            return  # mid-accumulation, or deferred flags that can wait for the logging step
        self._check(trainer)
        if self.skipped:
            pl_module.log("train/skipped_steps", float(self.skipped), rank_zero_only=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending:
            self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        """Read the pending flags (one sync): count, warn, or save and stop."""
        pending, self._pending = self._pending, []
        flags = torch.stack([step.bad.cpu() for step in pending]).tolist()
        for step, bad in zip(pending, flags, strict=True):
            if not bad:
                self.consecutive = 0
                continue
            self.skipped += 1
            self.consecutive += 1
            lines = self._lines(trainer, step)
            stop = self.action == "stop" or (
                self.max_consecutive and self.consecutive >= self.max_consecutive
            )
            if stop:
                self._stop(trainer, step.number, lines)
            if trainer.is_global_zero:
                where = describe_sources(lines, _MAX_LINES_IN_WARNING) if lines else "unknown"
                log.warning(
                    f"warning: non-finite training loss or gradients at step {step.number}: the "
                    f"update was skipped ({self.skipped} so far); batch lines: {where}"
                )

    def _stop(self, trainer: pl.Trainer, number: int, lines: list[str]) -> None:
        path = self._save(trainer, trainer.global_step)
        where = describe_sources(lines) if lines else "unknown (set data.with_source true)"
        why = (
            "the training loss or gradients were NaN or infinite"
            if self.action == "stop"
            else f"the training loss or gradients were NaN or infinite for {self.consecutive} "
            "steps in a row, the last"
        )
        raise FloatingPointError(
            f"{why} at step {number}; its update was not applied; {path} holds the run at step "
            f"{trainer.global_step} (resume with --ckpt_path {path}, with a lower model.lr or "
            f"nonfinite_guard.action skip); the batch's samples: {where}"
        )

    def _save(self, trainer: pl.Trainer, step: int) -> str:
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or trainer.default_root_dir
        path = remote.join(folder, f"nonfinite-step={step}.ckpt")
        trainer.save_checkpoint(path, weights_only=False)
        return path

    # -- the count survives a resume ------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        # Steps not yet read count too (without consuming them: their warnings come later).
        unread = [bool(step.bad) for step in self._pending]
        consecutive = self.consecutive
        for bad in unread:
            consecutive = consecutive + 1 if bad else 0
        return {"skipped": self.skipped + sum(unread), "consecutive": consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
