"""A tokenized corpus on disk: flat arrays in raw files, read a window at a time.

What bertlab.samples.tokenized writes and bertlab.samples.prepare reads: every token of the corpus
back to back (`tokens.i32`), where each sentence starts in it (`sentence_starts.i64`, one more at
the end) and where each document starts in the sentences (`document_starts.i64`, one more at the
end), the layout bertlab.samples.pairs works on. The files live in the scratch folder of
prepare_samples' output and are removed with it.

Decisions:
- Nothing is memory-mapped. Pages of a mapped file that a process has touched count in its
  resident memory until the kernel needs them back, so drawing random-next sentences from all
  over a mapped corpus would make a process's RSS grow with the corpus. Instead a sample-building
  task reads the arrays of its own documents into memory (`window`), and every element outside
  the window, a random-next B from another document, is read with os.pread: page cache, not the
  process's memory. So memory is bounded by the window, whatever the corpus size, and random-next
  sentences are still drawn from any document of the corpus, as in Google's script.
- StoredArray answers `a[i]`, `a[i:j]` and `len(a)` like the numpy arrays bertlab.samples.pairs and
  bertlab.samples.shard_writer.LineEncoder were written for, so the sample algorithm is unchanged.
  An element read outside the window brings a small block with it (the next sentence starts of a
  random B are read one by one).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_BLOCK = 64  # elements read around an element outside the window

NAMES = {"tokens": np.int32, "sentence_starts": np.int64, "document_starts": np.int64}
SUFFIXES = {np.int32: ".i32", np.int64: ".i64"}


def array_path(folder: Path, name: str) -> Path:
    dtype = NAMES[name]
    return Path(folder) / f"{name}{SUFFIXES[dtype]}"


class StoredArray:
    """A 1-D array in a raw file: one window of it in memory, any other element read on demand."""

    def __init__(self, path: Path, dtype: type):
        self.dtype = np.dtype(dtype)
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY)
        self._length = os.fstat(self._fd).st_size // self.dtype.itemsize
        self._lo, self._data = 0, np.empty(0, self.dtype)
        self._block_lo, self._block = 0, np.empty(0, self.dtype)

    def __len__(self) -> int:
        return self._length

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Elements [lo, hi) from the file (a fresh array)."""
        lo, hi = max(lo, 0), min(hi, self._length)
        size = self.dtype.itemsize
        want = max(hi - lo, 0) * size
        data = os.pread(self._fd, want, lo * size)
        while len(data) < want:  # pread may return less than asked for (very large reads)
            more = os.pread(self._fd, want - len(data), lo * size + len(data))
            if not more:
                raise OSError(f"short read of a token store file at byte {lo * size + len(data)}")
            data += more
        return np.frombuffer(data, dtype=self.dtype)

    def window(self, lo: int, hi: int) -> None:
        """Hold elements [lo, hi) in memory; reads inside them cost nothing."""
        self._lo, self._data = lo, self.read(lo, hi)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            assert step == 1, "StoredArray slices have step 1"
            first = start - self._lo
            if first >= 0 and stop - self._lo <= len(self._data):
                return self._data[first : stop - self._lo]
            return self.read(start, stop)
        index = int(key)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        at = index - self._lo
        if 0 <= at < len(self._data):
            return self._data[at]
        at = index - self._block_lo
        if not 0 <= at < len(self._block):
            self._block_lo, self._block = index, self.read(index, index + _BLOCK)
            at = 0
        return self._block[at]


class TokenStore:
    """The three arrays of a tokenized corpus folder, with the window of a range of documents."""

    def __init__(self, folder: str | Path):
        self.folder = str(folder)
        self.tokens = StoredArray(array_path(Path(folder), "tokens"), np.int32)
        self.sentence_starts = StoredArray(array_path(Path(folder), "sentence_starts"), np.int64)
        self.document_starts = StoredArray(array_path(Path(folder), "document_starts"), np.int64)

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    def token_range(self, document: int) -> tuple[int, int]:
        """Where a document starts and ends in tokens."""
        first, last = self.document_starts[document], self.document_starts[document + 1]
        return int(self.sentence_starts[first]), int(self.sentence_starts[last])

    def window(self, lo: int, hi: int) -> tuple[int, int]:
        """Load documents [lo, hi) into memory; returns their token range."""
        self.document_starts.window(lo, hi + 1)
        first, last = int(self.document_starts[lo]), int(self.document_starts[hi])
        self.sentence_starts.window(first, last + 1)
        start, end = int(self.sentence_starts[first]), int(self.sentence_starts[last])
        self.tokens.window(start, end)
        return start, end

    def close(self) -> None:
        for array in (self.tokens, self.sentence_starts, self.document_starts):
            array.close()
