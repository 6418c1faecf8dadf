"""Fault injection for the reliability tests: callbacks and a checkpoint writer that misbehave.

Not a test file: `bertlab fit` subprocesses import it (the tests put tests/ on PYTHONPATH) through
`--trainer.callbacks+=...` and `--trainer.plugins=...`, so the production code carries no test
hooks. Each fault is deterministic: it fires at a given global step.
"""

from __future__ import annotations

import io
import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from bertlab.checkpointing import AtomicCheckpointIO


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(Callback):
    """SIGKILL this process at global step `step`, at the moment `when`.

    when: `step` (after the backward pass of the step, before the optimizer),
    `validation` (after the second batch of the validation that follows the step),
    `interrupt` (send SIGINT to itself after the step, as a user's Ctrl-C).
    """

    def __init__(self, step: int, when: str = "step") -> None:
        assert when in ("step", "validation", "interrupt"), when
        self.step, self.when = step, when

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.when == "step" and trainer.global_step == self.step - 1:
            _die()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args) -> None:
        if (
            self.when == "validation"
            and not trainer.sanity_checking
            and trainer.global_step == self.step
            and batch_idx == 1
        ):
            _die()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.when == "interrupt" and trainer.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGINT)


class DieWhileSaving(AtomicCheckpointIO):
    """Write half of checkpoint number `save` (1-based) to its temporary file, then SIGKILL."""

    def __init__(self, save: int = 1) -> None:
        super().__init__()
        self.save, self.count = save, 0

    def write(self, checkpoint: dict[str, Any], file) -> None:
        self.count += 1
        if self.count != self.save:
            super().write(checkpoint, file)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        os.fsync(file.fileno())
        _die()


class InjectNaN(Callback):
    """Make the loss NaN at the given global steps (1-based) through a hook on the embeddings."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)
        self._armed = False
        self._hook = None

    def on_train_start(self, trainer, pl_module) -> None:
        embeddings = pl_module.model.bert.embeddings
        self._hook = embeddings.register_forward_hook(
            lambda module, args, output: output * float("nan") if self._armed else output
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._armed = trainer.global_step + 1 in self.steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._armed = False


class FileSizeLimit(Callback):
    """From global step `step` on, no file may grow past `max_bytes` (RLIMIT_FSIZE: EFBIG)."""

    def __init__(self, step: int, max_bytes: int) -> None:
        self.step, self.max_bytes = step, max_bytes

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step - 1:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an OSError rather than death
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_bytes, resource.RLIM_INFINITY))


class RecordSources(Callback):
    """Append `global_step<TAB>path:line ...` for every training batch to folder/rank<R>.txt."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = trainer.datamodule.sources(batch)
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{trainer.global_step}\t{' '.join(lines)}\n")
