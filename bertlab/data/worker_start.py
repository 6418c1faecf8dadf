"""How DataLoader workers start: forked, or from a fork server on a rank of a DDP run.

Decisions:
- A single process forks its workers (the default on Linux): they start at once and share the
  modules already imported.
- A rank of a multi-process (DDP) run starts them from a fork server instead. A DDP rank has
  threads of its own (the process group's, the tensorboard writer's) and forking a threaded
  process can deadlock the child inside CPython (observed: a worker stuck for ever in
  `PyOS_AfterFork_Child -> _PyEval_ReInitThreads`, its rank waiting for the batch, the other rank
  in DDP's buffer broadcast). The fork server is a single-threaded process started once per rank;
  it preloads torch, bertlab's data modules and the main script, so a worker starts in tens of
  milliseconds, not the 2-3 s of re-importing them. A script that trains on several processes must
  therefore guard its entry point with `if __name__ == "__main__":`, as PyTorch asks for any
  start method other than fork.
- A worker from the fork server has Python's default signal handlers, not the rank's: it ignores
  Ctrl-C (which reaches it with the whole process group; its rank decides what to do, see
  bertlab.signals) and dies of SIGTERM, as a forked worker does.
- A process forked from one that started a fork server (a test harness, a tool's pool) inherits
  the server's address and pid but is not its parent: it forgets them, so its own first use starts
  its own server instead of failing with "No child processes".
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from multiprocessing.context import BaseContext

PRELOAD = ["__main__", "bertlab.data.datamodule"]


def worker_context(world_size: int) -> BaseContext | None:
    """The multiprocessing context for a rank's DataLoader workers (None: the default, fork)."""
    if world_size <= 1 or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    multiprocessing.set_forkserver_preload(PRELOAD)
    return multiprocessing.get_context("forkserver")


def init_worker(worker_id: int) -> None:
    """A DataLoader worker_init_fn: Ctrl-C is the rank's to handle, SIGTERM ends the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _forget_inherited_fork_server() -> None:
    server = multiprocessing.forkserver._forkserver
    server._forkserver_address = None
    server._forkserver_alive_fd = None
    server._forkserver_pid = None
    server._inherited_fds = None
    server._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited_fork_server)
