"""Peak memory, read one way everywhere: a training run's log, the benchmark's results.

Decisions:
- On a GPU the figure is what torch allocated at the most (`max_memory_allocated`): the memory a
  batch size is limited by. On a CPU it is the process's peak resident set (`ru_maxrss`, KiB on
  Linux), which includes the interpreter, the libraries and the data; children (DataLoader
  workers, a pool) count apart, as the largest finished child.
"""

from __future__ import annotations

import resource

import torch


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_children_mb": round(children, 1)}


def peak_memory_mb(device: torch.device) -> float:
    """The peak that limits a run on `device`: allocated GPU memory, or this process's RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
