"""Ctrl-C and SIGTERM for a whole command: stop at once, clean up, exit with 128 + the signal.

Decisions:
- Python's and Lightning's defaults give an interrupted command the wrong exit status and can
  leave debris: SIGTERM kills a tool without running any clean-up (the hidden temporary folder of
  an export being written stays beside the output); Ctrl-C raises KeyboardInterrupt, which
  Lightning turns into exit status 1; Lightning's own SIGTERM handling outside training raises
  SystemExit with no code, exit status 0. A job script could not tell an interrupted run from a
  failed or a finished one.
- `stop_on_signals()` is entered by every command's front door (bertlab.train.cli.main,
  bertlab.command.run). While it is active, the first SIGINT or SIGTERM raises `Interrupted`: a
  BaseException, so no `except Exception` swallows it, and not a KeyboardInterrupt, which
  Lightning would turn into exit status 1. Its unwinding runs every clean-up (bertlab.files.atomic
  deletes the temporary file or folder, so an output is the earlier one or absent, never half
  written); the front door prints one line and exits with 128 + the signal number (130, 143), the
  shell's convention, never with a traceback.
- Signals that arrive while the command unwinds are ignored, so a repeated Ctrl-C cannot cut a
  clean-up short (SIGKILL still stops it).
- `bertlab fit`'s training replaces these handlers with bertlab.train.interrupt's, which finish the
  step and save `last.ckpt` first. Outside training (start-up, sanity validation, test, validate,
  the tools) no work is lost by stopping at once, and that is what a user who asks to stop wants.
- Forked children (DataLoader workers, bertlab.workers' pool) inherit the handler. A Ctrl-C
  reaches them with their whole process group, and the parent decides: they ignore it (no worker
  tracebacks). A SIGTERM a child gets is its parent ending it (Pool.terminate, a DataLoader's
  shutdown): it takes the default action and dies, so the parent's join never hangs.
- This module imports nothing heavy: every tool's front door uses it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_owner: int | None = None  # the process whose command handles the signals
_stopping = False  # Interrupted was raised: the command is unwinding


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the command at once; `detail` says what was kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail: str | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        """The one line the front door prints."""
        detail = self.detail or "stopped at once; no output is half-written"
        return f"interrupted by {self.name}: {detail}"


def stopping() -> bool:
    """Whether the command is already unwinding from an Interrupted."""
    return _stopping


def stop_now(signum: int) -> NoReturn:
    """Raise Interrupted(signum); later signals are ignored while the command unwinds."""
    global _stopping
    _stopping = True
    raise Interrupted(signum)


def in_child(signum: int) -> bool:
    """In a forked child, handle `signum` as a child must (see Decisions) and return True."""
    if _owner is None or os.getpid() == _owner:
        return False
    if signum == signal.SIGTERM:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return True


def leave_interrupts_to_parent() -> None:
    """A pool initializer for spawned workers, which inherit no handler: Ctrl-C reaches the whole
    process group, and a worker's KeyboardInterrupt traceback would bury the parent's one line.
    The worker ignores it; the parent stops, and its pool ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _handle(signum: int, frame: FrameType | None) -> None:
    if in_child(signum) or _stopping:
        return
    stop_now(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise Interrupted in this process (main thread only)."""
    global _owner, _stopping
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set there (a notebook's worker thread)
        return
    _owner, _stopping = os.getpid(), False
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _owner = None
