"""Fault injection for the reliability tests: callbacks and a checkpoint writer that misbehave.

Not a test file. `bertlab fit` runs load the faults by import path through
`--trainer.callbacks+=...` and `--trainer.plugins=...` (subprocesses get tests/ on PYTHONPATH), so
the production code carries no test hooks. Each fault is deterministic: it fires at a given global
step. `Forked` runs `bertlab` (or another command's main) in a forked copy of the test process (a
real process that can be killed, without a fresh interpreter's imports).

`Pause` and `PauseWhileSaving` are for signal tests: at the start of a phase they print a marker
line, `PHASE <name>`, and wait until the test creates a file (after sending its signal), so the
signal provably lands inside that phase; the test reads the marker instead of guessing with sleeps.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from bertlab.train.checkpointing import AtomicCheckpointIO


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


# -- pausing at a phase, for the signal tests ---------------------------------------------------

PAUSE_SECONDS = 120.0  # a test that never creates the file fails on its own timeout, not here


def pause(phase: str, go: str | Path) -> None:
    """Print `PHASE <phase>`, then wait (in Python, where signal handlers run) until `go` exists."""
    print(f"PHASE {phase}", flush=True)
    deadline = time.monotonic() + PAUSE_SECONDS
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class Pause(Callback):
    """Pause once at the start of `phase` of a `bertlab fit` or `bertlab test` run.

    phase: `startup` (setup of fit, before the sanity check), `sanity` (the first sanity
    validation batch), `training` (the start of step `step`), `validation` (the second batch of
    the validation after step `step`), `test` (the second test batch).
    """

    PHASES = ("startup", "sanity", "training", "validation", "test")

    def __init__(self, phase: str, go: str, step: int = 0) -> None:
        assert phase in self.PHASES, phase
        self.phase, self.go, self.step = phase, go, step
        self._done = False

    def _at(self, phase: str, when: bool = True) -> None:
        if self.phase == phase and when and not self._done:
            self._done = True
            pause(phase, self.go)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._at("startup", stage == "fit")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._at("sanity", trainer.sanity_checking)
        validation = not trainer.sanity_checking and trainer.global_step == self.step
        self._at("validation", validation and batch_idx == 1)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._at("training", trainer.global_step == self.step - 1)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._at("test", batch_idx == 1)


class PauseWhileSaving(AtomicCheckpointIO):
    """Write half of last.ckpt of global step `step` to its temporary file, pause (`saving`), then
    write the rest: a signal lands in the middle of a checkpoint write."""

    def __init__(self, go: str, step: int) -> None:
        super().__init__()
        self.go, self.step = go, step
        self._done = False

    def write(self, checkpoint: dict[str, Any], file) -> None:
        last = Path(file.name).name.startswith(".last.ckpt.")  # atomic_write's temporary name
        if self._done or not last or checkpoint.get("global_step") != self.step:
            super().write(checkpoint, file)
            return
        self._done = True
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        pause("saving", self.go)
        file.write(data[len(data) // 2 :])


def paused_export(go: str | Path) -> Callable[[list[str]], None]:
    """`export_model ARGS` (tools/export_model.py's main) that pauses (`export`) once the model
    is written into its temporary folder, before the reload checks."""

    def main(args: list[str]) -> None:
        import bertlab.export.model
        from bertlab.command import run

        verify = bertlab.export.model.verify_model_folder

        def paused(*a: Any, **k: Any) -> Any:
            pause("export", go)
            return verify(*a, **k)

        bertlab.export.model.verify_model_folder = paused
        run(bertlab.export.model.export_model, args)

    return main


# -- running `bertlab` in a forked process -------------------------------------------------------


def _bertlab_main(args: list[str]) -> None:
    from bertlab.train.cli import main

    main(args)


def _child_main(args: list[str], log_path: str, main: Callable[[list[str]], None]) -> None:
    """The body of a forked command: output to log_path, exit with main()'s status."""
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
    without paying the ~10 s of imports a fresh interpreter costs on a small machine.

    main: another command's entry point, called with ARGS (default: `bertlab`'s).
    """

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        main: Callable[[list[str]], None] = _bertlab_main,
    ) -> None:
        self.log_path = Path(log_path)
        context = multiprocessing.get_context("fork")
        self.process = context.Process(
            target=_child_main, args=([str(a) for a in args], str(log_path), main)
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
