"""Callbacks every `bertlab fit` gets: throughput and MFU, checkpoints that include the last step.

Decisions:
- Throughput is wall time between consecutive training-batch ends over a rolling window, so data
  loading is included (what a user waits for); the time between one batch's end and the next
  one's start is reported separately as `data_fraction` (the loader starving the step shows
  there). Tokens are real tokens (attention_mask == 1), not padding; `padding_efficiency` is real
  over padded tokens. Throughput is summed over processes (local × world size).
- Counts are accumulated as tensors on the batch's device and read (one sync) only when a line is
  logged, every `log_every_n_steps` batches; the window's end is synchronised then, so GPU queues
  do not make the rate look higher than it is.
- MFU counts useful FLOPs only (`BertPretraining.training_flops`: 6·N per real token for the
  encoder weights, 12·L·d·l² for attention per sequence of l real tokens, 6·d·V per predicted
  token) against `peak_flops`: given in the config, else Lightning's table for the GPU in the
  precision's dtype, else measured on the CPU with a short matrix-multiply loop at fit start.
- Metrics go straight to the loggers at the current global step (they are about the run, not the
  model, and must not depend on Lightning's own logging cadence), and `last` keeps the latest
  values for tools and tests.
- `Checkpoint` is Lightning's ModelCheckpoint plus one thing: when fit ends between two
  validations, the final weights are still written as last.ckpt (export reads that).
"""

from __future__ import annotations

import resource
import time
from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint


def measure_matmul_flops(
    dtype: torch.dtype = torch.bfloat16, size: int = 1024, seconds: float = 0.5
) -> float:
    """Best observed FLOP/s of a square matrix product on the CPU (the practical peak)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def precision_dtype(precision: str) -> torch.dtype:
    if "bf16" in precision:
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


class ThroughputMonitor(Callback):
    """Log samples/s, real tokens/s, padding efficiency, data-loading share and MFU while training.

    Args:
        peak_flops: Peak FLOP/s of one device for MFU; null: the GPU table or a CPU measurement;
            0 turns MFU off.
        window: Batches the rates are averaged over.
        log_every_n_steps: Batches between two logged values (null: the trainer's setting).
    """

    def __init__(
        self,
        peak_flops: float | None = None,
        window: int = 20,
        log_every_n_steps: int | None = None,
    ) -> None:
        self.peak_flops = peak_flops
        self.window = window
        self.log_every_n_steps = log_every_n_steps
        self.last: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._ends: deque[float] = deque(maxlen=self.window + 1)
        self._data_time: deque[float] = deque(maxlen=self.window)
        self._counts: deque[torch.Tensor] = deque(maxlen=self.window)
        self._batches = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.peak_flops is None:
            # A module that computes in its own dtype (bf16_compute) says so.
            dtype = getattr(pl_module, "compute_dtype", None) or precision_dtype(
                str(trainer.precision)
            )
            if pl_module.device.type == "cuda":
                from lightning_fabric.utilities.throughput import get_available_flops

                self.peak_flops = get_available_flops(pl_module.device, dtype)
            elif pl_module.device.type == "cpu":
                self.peak_flops = measure_matmul_flops(dtype)
        self._reset()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._ends:
            self._data_time.append(time.perf_counter() - self._ends[-1])

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        mask = batch["attention_mask"]
        lengths = mask.sum(1)
        counts = torch.stack(
            [
                lengths.new_tensor(mask.size(0)),
                lengths.sum(),
                (lengths * lengths).sum(),
                (batch["labels"] != -100).sum(),
                lengths.new_tensor(mask.numel()),
            ]
        )
        self._counts.append(counts)
        self._batches += 1
        every = self.log_every_n_steps or trainer.log_every_n_steps
        should_log = bool(every) and self._batches % every == 0
        if should_log and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._ends.append(time.perf_counter())
        if should_log:
            self._log(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The pause for validation is not training time: a fresh window starts now.
        self._ends.clear()
        self._data_time.clear()
        self._counts.clear()
        self._ends.append(time.perf_counter())

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches = min(len(self._ends) - 1, len(self._counts))
        elapsed = self._ends[-1] - self._ends[-1 - batches]
        if batches < 1 or elapsed <= 0:
            return
        total = torch.stack(list(self._counts)[-batches:]).sum(0).tolist()
        samples, tokens, squared_lengths, predicted, padded = total
        world = trainer.world_size
        metrics = {
            "throughput/samples_per_sec": samples * world / elapsed,
            "throughput/tokens_per_sec": tokens * world / elapsed,
            "throughput/padding_efficiency": tokens / max(padded, 1),
            "throughput/data_fraction": sum(list(self._data_time)[-batches:]) / elapsed,
            "throughput/peak_memory_mb": _peak_memory_mb(pl_module.device),
        }
        flops = getattr(pl_module, "training_flops", None)
        if flops is not None and self.peak_flops:
            useful = flops(tokens, squared_lengths, predicted)
            metrics["throughput/mfu"] = useful / elapsed / self.peak_flops
        self.last = metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves last.ckpt when fit ends between two validations."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
