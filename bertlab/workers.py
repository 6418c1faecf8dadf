"""Ordered tasks in this process or in a pool of processes, with the same results either way.

Used by bertlab.samples.prepare for its three stages (tokenize, build samples, write shards).

Decisions:
- `Workers(num_proc, backend).imap(fn, tasks)` yields fn(*task) in task order. With num_proc 1
  nothing is forked: tasks run here and the tokenizer backend keeps its own threads. With more,
  a pool of num_proc processes runs them, each with TOKENIZERS_PARALLELISM=false: the processes
  are the parallelism, tokenizer threads on top would only fight over the cores.
- At most 2 x num_proc tasks are in flight: the pool stays busy while memory holds only a few
  results (Pool.imap would read the whole input ahead into its queue).
- The pool forks where it can: children start at once, sharing the modules already imported.
  TOKENIZERS_PARALLELISM=false is set while forking, so a child of a process whose tokenizer
  threads already ran neither warns nor deadlocks; gc.freeze() before forking keeps the
  children's garbage collector from touching (and so copying) every page inherited from a parent
  that has transformers loaded.
- Task functions find their per-process state (the tokenizer backend as `WORKER["encoder"]`,
  whatever else they cache) in the module-level dict WORKER, filled in this process for num_proc
  1 and by the pool's initializer in each child; it is emptied when the Workers close.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# State of the process running tasks.
WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_json: str) -> None:
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    WORKER["encoder"] = Tokenizer.from_str(tokenizer_json)


class Workers:
    """Run tasks in order, in this process (num_proc 1) or in a pool of num_proc processes."""

    def __init__(self, num_proc: int, backend: Any):
        """backend: a tokenizers.Tokenizer, made available to tasks as WORKER["encoder"]."""
        self.num_proc = num_proc
        self.pool = None
        self.backend = backend

    def __enter__(self) -> Workers:
        WORKER.clear()
        if self.num_proc == 1:
            WORKER["encoder"] = self.backend
            return self
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        gc.freeze()  # children's garbage collector leaves inherited objects (and their pages) alone
        try:
            with _environment(TOKENIZERS_PARALLELISM="false"):
                self.pool = context.Pool(
                    self.num_proc, initializer=_init_worker, initargs=(self.backend.to_str(),)
                )
        finally:
            gc.unfreeze()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        WORKER.clear()
        if self.pool is not None:
            if kind is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def imap(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[Any]:
        if self.pool is None:
            for task in tasks:
                yield fn(*task)
            return
        pending: deque = deque()
        for task in tasks:
            pending.append(self.pool.apply_async(fn, task))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
