"""NonFiniteLossGuard: a NaN or infinite loss skips its update, or stops the run with a checkpoint.

Decisions:
- The check runs where an update can still be refused: `on_before_optimizer_step`, after the
  backward pass(es) of the step and before clipping and the optimizer. A step is bad when the
  loss of any of its micro-batches or any gradient is NaN or infinite. The gradient check uses
  the max-abs norm (no overflow from squaring) in one fused reduction and one host sync per step.
- Under DDP the gradients are already averaged (a NaN on one rank is a NaN on all), and the
  decision is also reduced across ranks, so every rank skips or stops at the same step.
- Skip means no update at all: every gradient is set to None, and AdamW leaves a parameter
  without a gradient untouched (no weight decay, no moment decay, no step count). Zeroing the
  gradients instead would still decay the moments and move the weights. The step still counts
  (global step, learning-rate schedule, data position), so a resumed run stays aligned. With
  fp16 loss scaling (`16-mixed`) the GradScaler already skips steps with non-finite gradients
  and lowers its scale; the guard only counts those.
- Stop saves a checkpoint at the end of the bad step (the update not applied, the data position
  after the bad batch: a consistent point to resume from) as `nonfinite-step=N.ckpt` beside the
  other checkpoints, then raises FloatingPointError naming the step and the source lines
  (`path:line`, grouped by file) of the samples that produced it, gathered from every rank. The
  lines come from the datamodule's `sources(batch)`, so batches need `data.with_source` (the
  `bertlab` command turns it on). With `skip`, `max_consecutive` bad steps in a row also stop:
  a run that keeps producing NaNs has diverged and will not recover by skipping.
- Skips are counted (kept in checkpoints) and logged as `train/skipped_steps`; each skip warns
  with the step and the first lines of its batch.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

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
        self._bad_sources: list[str] | None = None  # set by a bad step, read at its batch end

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
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        finite = torch.tensor(True)
        if losses:
            finite = torch.stack([loss.float().isfinite().all() for loss in losses]).all()
        if grads:
            peak = torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=None)
            finite = finite & peak.isfinite().to(finite.device)
        bad = not bool(finite)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.consecutive = 0
            return
        self.skipped += 1
        self.consecutive += 1
        if getattr(trainer.precision_plugin, "scaler", None) is None:
            for p in params:
                p.grad = None  # AdamW skips parameters without a gradient: a true no-op
        local = [s for s, loss in zip(sources, losses, strict=False) if not loss.isfinite().all()]
        self._bad_sources = self._gather_sources(trainer, local or sources)

    def _gather_sources(self, trainer: pl.Trainer, sources: list[torch.Tensor | None]) -> list[str]:
        datamodule = trainer.datamodule
        lines: list[str] = []
        if datamodule is not None and hasattr(datamodule, "sources"):
            for source in sources:
                if source is not None:
                    lines += datamodule.sources({"source": source.cpu()})
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[list[str]] = [[] for _ in range(trainer.world_size)]
            dist.all_gather_object(gathered, lines)
            lines = [line for rank_lines in gathered for line in rank_lines]
        return lines

    # -- acting at the end of the step ----------------------------------------------------------

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.skipped:
            pl_module.log("train/skipped_steps", float(self.skipped), rank_zero_only=True)
        if self._bad_sources is None:
            return
        lines, self._bad_sources = self._bad_sources, None
        step = trainer.global_step
        where = describe_sources(lines) if lines else "unknown (set data.with_source true)"
        stop = self.action == "stop" or (
            self.max_consecutive and self.consecutive >= self.max_consecutive
        )
        if not stop:
            if trainer.is_global_zero:
                log.warning(
                    f"non-finite training loss or gradients at step {step}: the update was "
                    f"skipped ({self.skipped} so far); batch lines: "
                    f"{describe_sources(lines, _MAX_LINES_IN_WARNING) if lines else where}"
                )
            return
        path = self._save(trainer, step)
        why = (
            "the training loss or gradients were NaN or infinite"
            if self.action == "stop"
            else f"the training loss or gradients were NaN or infinite for {self.consecutive} "
            "steps in a row"
        )
        raise FloatingPointError(
            f"{why} at step {step}; the update was not applied and {path} holds the run as it "
            f"was (resume with --ckpt_path {path}, with a lower model.lr or "
            f"nonfinite_guard.action skip); the batch's samples: {where}"
        )

    def _save(self, trainer: pl.Trainer, step: int) -> str:
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or trainer.default_root_dir
        path = str(Path(folder) / f"nonfinite-step={step}.ckpt")
        trainer.save_checkpoint(path, weights_only=False)
        return path

    # -- the count survives a resume ------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
