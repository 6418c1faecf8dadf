"""Ordered tasks in this process, a pool of processes, or a Dask cluster: the same results.

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
- Past one machine, the same tasks run on a Dask cluster (`scheduler`: the address of a running
  `dask scheduler`, e.g. tcp://10.0.0.1:8786; workers started with `dask worker ADDRESS
  --nthreads 1` on each machine). Dask rather than Ray: it is pure Python and pip-installable, a
  cluster is two commands (or a LocalCluster, or dask-jobqueue on Slurm), and futures consumed
  in submission order give the pool's ordering, hence byte-identical output, with no change to
  the tasks. The tokenizer goes to each worker once (scattered, broadcast); a worker runs one
  of these tasks at a time whatever its thread count (their per-process state is not
  thread-safe); at most 2 x workers tasks are in flight. Tasks read and write files by path
  (the token store, shard parts, shards), so the output folder must be on a filesystem every
  worker mounts at the same path (NFS, Lustre, a cloud filesystem); the driver reads the corpus
  and writes the store, the workers tokenize, build samples and compress shards.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# State of the process running tasks.
WORKER: dict[str, Any] = {}
# One task at a time in a Dask worker process, whatever its threads.
_DASK_LOCK = threading.Lock()


def _init_worker(tokenizer_json: str) -> None:
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    WORKER["encoder"] = Tokenizer.from_str(tokenizer_json)


def _run_on_dask(tokenizer_json: str, fn: Callable[..., Any], task: tuple) -> Any:
    """A task in a Dask worker: its state made once per tokenizer, then fn(*task)."""
    with _DASK_LOCK:
        if WORKER.get("tokenizer_json") != tokenizer_json:
            _clear_dask_worker()
            _init_worker(tokenizer_json)
            WORKER["tokenizer_json"] = tokenizer_json
        return fn(*task)


def _clear_dask_worker() -> None:
    with contextlib.suppress(Exception):
        store = WORKER.get("store")
        if store is not None:
            store.close()
    WORKER.clear()


def connect(scheduler: str):
    """A Dask client of the cluster at `scheduler`; a one-line ValueError when there is none."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError(
            f"--scheduler {scheduler} needs Dask: pip install 'dask[distributed]' (or bertlab's "
            "dask extra)"
        ) from None
    try:
        client = Client(scheduler, timeout=10)
    except (OSError, TimeoutError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--scheduler {scheduler}: no Dask scheduler reached ({reason})") from None
    if not client.scheduler_info().get("workers"):
        client.close()
        raise ValueError(f"--scheduler {scheduler}: the cluster has no workers")
    return client


class Workers:
    """Run tasks in order: in this process (num_proc 1), in a pool of num_proc processes, or on
    the Dask cluster at `scheduler`."""

    def __init__(self, num_proc: int, backend: Any, scheduler: str | None = None):
        """backend: a tokenizers.Tokenizer, made available to tasks as WORKER["encoder"]."""
        self.num_proc = num_proc
        self.pool = None
        self.backend = backend
        self.scheduler = scheduler
        self.client = None

    def __enter__(self) -> Workers:
        WORKER.clear()
        if self.scheduler is not None:
            self.client = connect(self.scheduler)
            self.num_proc = len(self.client.scheduler_info()["workers"])
            self.tokenizer = self.client.scatter(self.backend.to_str(), broadcast=True)
            return self
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
        if self.client is not None:
            with contextlib.suppress(Exception):  # a lost worker keeps nothing of ours anyway
                self.client.run(_clear_dask_worker)
            self.client.close()
        if self.pool is not None:
            if kind is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def imap(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[Any]:
        if self.client is None and self.pool is None:
            for task in tasks:
                yield fn(*task)
            return
        if self.client is not None:
            client, tokenizer = self.client, self.tokenizer

            def submit(task: tuple) -> Any:
                return client.submit(_run_on_dask, tokenizer, fn, task, pure=False)

            def wait(future: Any) -> Any:
                return future.result()
        else:
            pool = self.pool

            def submit(task: tuple) -> Any:
                return pool.apply_async(fn, task)

            def wait(future: Any) -> Any:
                return future.get()

        pending: deque = deque()
        for task in tasks:
            pending.append(submit(task))
            if len(pending) >= 2 * self.num_proc:
                yield wait(pending.popleft())
        while pending:
            yield wait(pending.popleft())


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
