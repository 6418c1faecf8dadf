"""GracefulInterrupt: Ctrl-C or SIGTERM finishes the step, saves a resumable checkpoint, exits.

Decisions:
- Lightning's own handling is not enough: on Ctrl-C it raises KeyboardInterrupt wherever Python
  happens to be (between backward and the optimizer, inside `optimizer.step`, in validation), and
  `ModelCheckpoint(save_on_exception=True)` or `OnExceptionCheckpoint` then save that half-done
  state; on SIGTERM it stops at a batch end but saves nothing (outside SLURM), and also stops in
  the middle of validation, whose restart then evaluates fewer batches.
- Here, from the start of training, SIGINT and SIGTERM only set a flag. At the end of the current
  training step, the state every checkpoint holds (weights, optimizer, schedule and data position
  all after the same step), the run saves `last.ckpt` through the checkpoint callback (so its
  bookkeeping stays right; `interrupted.ckpt` when `checkpoint.save_last` is off), says where on
  stderr and asks Lightning to stop (`trainer.should_stop`), which ends fit the normal way
  (metrics of the step logged, loggers closed). The `bertlab` command then exits with status
  128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), the shell's convention, so a job
  script can tell an interrupted run from a finished one (`exit_status`).
  `bertlab fit ... --ckpt_path last` continues it exactly.
- A second Ctrl-C interrupts at once, for a user who will not wait: bertlab.signals'
  `Interrupted`, not a KeyboardInterrupt (which Lightning turns into exit status 1), so the
  command still exits with 130; the atomic checkpoint writer leaves every checkpoint file whole
  (a write it cuts short leaves the previous file).
- Before training starts (start-up, the sanity validation) and after fit ends, bertlab.signals'
  handlers stop the command at once: there is no step to finish and nothing to save. This
  callback's `on_exception` then says, in the command's last line, whether a checkpoint of this
  run exists.
- A signal during validation lets validation finish and stops after the next training step (one
  step later, but never a half-evaluated checkpoint). A signal after the last step changes
  nothing: the run ends normally with its final checkpoint.
- Under DDP every process installs the handler, and the flag is reduced across processes at every
  step end (one one-element all-reduce), so all processes stop, save and exit at the same step
  whether the signal reached one process or all.
- The previous handlers come back when fit ends, after the final checkpoint (a signal during
  that write lets it finish: the run completes, exit status 0). DataLoader workers started
  during training inherit the handler and ignore the signal (a terminal's Ctrl-C reaches the
  whole process group), so the step in flight still gets its batches; Lightning's own SIGTERM
  handling (which would stop mid-validation) is replaced for the duration of training.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_warn

from bertlab.files import remote
from bertlab.signals import Interrupted, stop_now, stopping

SIGNALS = ("SIGINT", "SIGTERM")


class GracefulInterrupt(Callback):
    """On SIGINT (Ctrl-C) or SIGTERM, finish the step, save a resumable checkpoint and exit.

    Args:
        signals: Signals that stop the run this way (SIGINT, SIGTERM); [] leaves them to Lightning.
    """

    def __init__(self, signals: list[str] | None = None) -> None:
        signals = list(SIGNALS if signals is None else signals)
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"--interrupt.signals {unknown} must be among {list(SIGNALS)}")
        self.signals = signals
        self.received: int | None = None
        self.stopped_by: int | None = None  # the signal that stopped the run (for the exit status)
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()
        self._training = False  # between on_train_start and the end of fit: steps were taken

    # -- handlers -------------------------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid or stopping():
            return  # a DataLoader worker forked with this handler (the trainer decides), or
            # the second Ctrl-C's unwinding, which must not be cut short
        if self.received is not None and signum == signal.SIGINT:
            stop_now(signum)  # the second Ctrl-C: stop now
        if self.received is None:
            self.received = signum
            print(
                f"\n{signal.Signals(signum).name} received: stopping after this training step "
                "with a checkpoint (Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = self.stopped_by = None
        self._pid = os.getpid()
        self._training = True
        for name in self.signals:
            signum = getattr(signal, name)
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (a notebook's worker): leave it to Lightning
                rank_zero_warn(f"cannot handle {name} outside the main thread")

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            # Lightning's teardown may have put back the handlers it found first: keep those.
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)
        self._previous = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not at on_train_end: the final last.ckpt is written after it, and a signal then must
        # let that write finish (the run is complete), not stop it at once.
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if isinstance(exception, Interrupted) and trainer.state.fn == "fit":
            if self._training:
                exception.detail = (
                    f"stopped at once at step {trainer.global_step}; `bertlab fit ... "
                    "--ckpt_path last` resumes from the newest complete checkpoint"
                )
            else:
                exception.detail = "stopped before the first training step; nothing saved"

    # -- stopping at a step end -----------------------------------------------------------------

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
    ) -> None:  # (outputs, batch, batch_idx): not needed here
        if not self._previous:
            return
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or not _at_step_end(trainer):
            return
        signum = self.received or signal.SIGTERM  # another process got it
        path = self._save(trainer)
        if trainer.is_global_zero:
            print(
                f"interrupted by {signal.Signals(signum).name} at step {trainer.global_step}: "
                f"saved {path}; resume with `bertlab fit ... --ckpt_path last`",
                file=sys.stderr,
                flush=True,
            )
        self._restore()
        self.stopped_by = signum
        trainer.should_stop = True

    def _save(self, trainer: pl.Trainer) -> str:
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
            return callback.last_model_path
        folder = getattr(callback, "dirpath", None) or trainer.default_root_dir
        path = remote.join(folder, "interrupted.ckpt")
        trainer.save_checkpoint(path, weights_only=False)
        return path


def _at_step_end(trainer: pl.Trainer) -> bool:
    """Whether the batch that just ended completed an optimizer step (not mid-accumulation)."""
    loop = trainer.fit_loop.epoch_loop
    return not loop._should_accumulate()


def exit_status(trainer: pl.Trainer | None) -> int:
    """128 + the signal that stopped fit through GracefulInterrupt; 0 when none did."""
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, GracefulInterrupt) and callback.stopped_by is not None:
            return 128 + callback.stopped_by
    return 0
