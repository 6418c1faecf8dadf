"""ThroughputMonitor, a callback every `bertlab fit` gets: tokens per second, data share, MFU.

Decisions:
- Throughput is wall time between consecutive training-batch ends over a rolling window, so data
  loading is included (what a user waits for); the time between one batch's end and the next
  one's start is reported separately as `data_fraction` (the loader starving the step shows
  there). Tokens are real tokens (attention_mask == 1), not padding; `padding_efficiency` is real
  over padded tokens. Throughput is summed over processes (local × world size).
- Counts are accumulated as tensors on the batch's device and read (one sync) only when a line is
  logged, every `log_every_n_steps` batches; the window's end is synchronised then, so GPU queues
  do not make the rate look higher than it is.
- MFU counts useful FLOPs only (`BertPretraining.training_flops`, bertlab.speed.flops: 6·N per real
  token for the encoder weights, 12·L·d·l² for attention per sequence of l real tokens, 6·d·V per
  predicted token) against `peak_flops`: given in the config, else measured at fit start
  (bertlab.speed.flops.measure_peak_flops) on the run's device in the dtype it computes in (the
  module's bf16 working copy, else the precision's). A value above 1 means the peak was not the
  peak (a busy moment during the probe): MFU is then not logged, with a one-line warning.
- Metrics go straight to the loggers at the current global step (they are about the run, not the
  model, and must not depend on Lightning's own logging cadence), and `last` keeps the latest
  values for tools and tests.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from bertlab.speed.flops import measure_peak_flops, precision_dtype
from bertlab.speed.memory import peak_memory_mb


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
        if window < 1:  # a window of no batches logs no rate at all
            raise ValueError(f"--throughput.window {window} must be at least 1 (batches)")
        self.peak_flops = peak_flops
        self.window = window
        self.log_every_n_steps = log_every_n_steps
        self.last: dict[str, float] = {}
        self._mfu_off = False
        self._reset()

    def _reset(self) -> None:
        self._ends: deque[float] = deque(maxlen=self.window + 1)
        self._data_time: deque[float] = deque(maxlen=self.window)
        self._counts: deque[torch.Tensor] = deque(maxlen=self.window)
        self._batches = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.peak_flops is None and pl_module.device.type in ("cpu", "cuda"):
            # A module that computes in its own dtype (the bf16 working copy) says so.
            dtype = getattr(pl_module, "compute_dtype", None) or precision_dtype(
                str(trainer.precision)
            )
            self.peak_flops = measure_peak_flops(dtype, seconds=0.5, device=pl_module.device)
        self._mfu_off = False
        self._reset()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._ends:
            self._data_time.append(time.perf_counter() - self._ends[-1])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *_: Any
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
            "throughput/peak_memory_mb": peak_memory_mb(pl_module.device),
        }
        flops = getattr(pl_module, "training_flops", None)
        if flops is not None and self.peak_flops and not self._mfu_off:
            mfu = flops(tokens, squared_lengths, predicted) / elapsed / self.peak_flops
            if 0 < mfu <= 1:
                metrics["throughput/mfu"] = mfu
            else:
                self._mfu_off = True
                rank_zero_warn(
                    f"throughput/mfu is not logged: {mfu:.2f} of the peak measured at the start "
                    f"({self.peak_flops / 1e9:.0f} GFLOP/s) means that peak was not the peak; "
                    "set throughput.peak_flops to the device's"
                )
        self.last = metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
