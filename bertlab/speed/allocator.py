"""glibc malloc settings for training on a CPU: keep freed memory instead of returning it.

A training step allocates and frees the same large temporaries every time (activations,
gradients, the MLM decoder's chunks). With glibc's defaults, blocks above a moving threshold are
fresh `mmap`s and the top of the heap is trimmed as soon as 2x that threshold is free, so the
next step page-faults its way through new zeroed pages: on the bert-mini bf16 step that was 4%
(tools/benchmark.py's ablation) to 12% (a profiled training loop) of the time. The usual cure
is LD_PRELOAD of jemalloc or tcmalloc, which must happen before Python starts; `mallopt` does
the same job from inside the process.

Decisions:
- M_MMAP_THRESHOLD is pinned at its maximum (32 MiB: larger blocks are still mmaps) and
  M_TRIM_THRESHOLD raised to 1 GiB: the heap keeps what a step freed for the next step. The
  resident memory then stays at the step's peak (as with jemalloc) instead of rising and falling.
- Only where glibc is the C library (Linux); elsewhere, and if the call fails, nothing changes.
  Applied once per process, by BertPretraining when it fits on a CPU; DataLoader workers forked
  afterwards inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True if the settings were applied."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    _applied = ok
    return ok
