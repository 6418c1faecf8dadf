"""Fault injection for the reliability tests: callbacks and a checkpoint writer that misbehave.

Not a test file. `bertlab fit` runs load the faults by import path through
`--trainer.callbacks+=...` and `--trainer.plugins=...` (subprocesses get tests/ on PYTHONPATH), so
the production code carries no test hooks. Each fault is deterministic: it fires at a given global
step. `Forked` runs `bertlab` in a forked copy of the test process (a real process that can be
killed, without a fresh interpreter's imports).
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import resource
import signal
import sys
import traceback
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
    `interrupt` (SIGINT to its process group at the start of the step: a terminal's Ctrl-C,
    which DataLoader workers get too).
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
            os.killpg(os.getpgid(0), signal.SIGINT)


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


# -- running `bertlab` in a forked process -------------------------------------------------------


def _child_main(args: list[str], log_path: str) -> None:
    """The body of a forked `bertlab` process: output to log_path, exit with main()'s status."""
    os.setsid()  # its own process group, as a command started from a shell
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    # pytest's capture and logging plugins hold the parent's streams: point every handler here.
    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                handler.setStream(sys.stderr)
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    sys.argv = ["bertlab", *args]
    code = 0
    try:
        from bertlab.cli import main

        main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Forked:
    """`bertlab ARGS` in a forked copy of the test process: a real process (it can be killed),
    without paying the ~10 s of imports a fresh interpreter costs on a small machine."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = Path(log_path)
        context = multiprocessing.get_context("fork")
        self.process = context.Process(
            target=_child_main, args=([str(a) for a in args], str(log_path))
        )
        self.process.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float = 300) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            raise AssertionError(f"bertlab did not finish in {timeout} s:\n{self.output[-3000:]}")
        return self.process.exitcode

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def forked_bertlab(*args: str, log_path: Path, timeout: float = 300) -> tuple[int, str]:
    """Run `bertlab ARGS` forked and wait: (exit status, -9 when killed; its output)."""
    run = Forked(list(args), log_path)
    status = run.wait(timeout)
    return status, run.output
