"""The shard writer of bertlab.samples.prepare: sample lines in a canonical order -> *.jsonl.gz
shards.

Decisions:
- Samples arrive in one canonical order (see bertlab.samples.prepare), whatever process made them,
  and are dealt to the shards round-robin (sample k goes to shard k % num_shards): shards differ in
  size by at most one sample.
- A shard is first collected as plain lines in a scratch part file, a block for each task and
  pass, then shuffled with its own seeded generator (seed, shard index): consecutive samples of
  one document end up spread over the shard, and a reader streaming the shards in any order sees
  mixed data. A part of up to _BUCKET_BYTES is shuffled whole, as before. A larger one (a large
  corpus) is shuffled in two levels, so that memory holds one bucket, not one shard: its blocks
  (listed with their offsets in an index file beside the part) are put in a random order and cut
  into consecutive buckets of about equal size, and the lines of each bucket are shuffled. A
  bucket mixes the blocks of hundreds of (task, pass) pairs drawn from anywhere in the corpus
  (a block is ~26 KB with 8 shards), and the passes of one task over the same text mostly land
  in different buckets, so a reader still sees mixed data. The shard is gzipped as it is
  written, not built in memory.
- A line is assembled as text, not with json.dumps: the decimal strings of a range of tokens
  are joined once (LineEncoder.window) and every segment inside it is a slice of that text, about
  ten times faster for the same JSON (compact, keys in the contract's order).
- gzip with mtime=0 and no file name in the header, at a fixed compression level: identical
  inputs give byte-identical files, on any run and with any number of processes. The compressor
  is Intel ISA-L's (the `isal` package, standard gzip that every reader reads): at its level 1
  it compresses ~3.7x faster than zlib's level 1 and ~6% smaller (measured on a 20 MB shard set,
  BENCHMARKS.md), and with zlib compression was a quarter of the run. ISA-L chooses its SIMD code
  for the CPU at run time, so shards made on different kinds of CPU may differ in their
  compressed bytes, never in their lines.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path

import numpy as np
from isal import isal_zlib

# A shard part up to this size is shuffled whole; a larger one in buckets of about this size.
_BUCKET_BYTES = 16 << 20
# ISA-L's level 1 (of 0-3): zlib's level 1 took a quarter of the run, its level 6 more time than
# tokenizing; ISA-L's 1 is faster than both and smaller than zlib's 1.
COMPRESS_LEVEL = 1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.jsonl.gz"


@functools.lru_cache(maxsize=4)
def _id_tables(vocab_size: int) -> tuple[list[str], np.ndarray]:
    # Built once per process, not once per task: ~25 ms for a 30k vocabulary.
    texts = [f"{i}," for i in range(vocab_size)]
    return texts, np.array([len(t) for t in texts], dtype=np.int64)


class LineEncoder:
    """Samples (spans of a flat token array, see bertlab.samples.pairs) -> newline-terminated JSON
    lines."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, cls_id: int, sep_id: int):
        self.tokens = tokens
        self.id_texts, self.id_lengths = _id_tables(vocab_size)
        self.cls, self.sep = f"{cls_id},", str(sep_id)
        self.start, self.text, self.offsets = 0, "", [0]

    def _join(self, start: int, end: int) -> str:
        ids = self.tokens[start:end]
        if len(ids) == 1:
            return self.id_texts[int(ids[0])]
        return "".join(itemgetter(*ids.tolist())(self.id_texts))

    def window(self, start: int, end: int) -> None:
        """Prepare the text of tokens [start, end): spans inside it become slices."""
        self.start, self.text = start, self._join(start, end)
        lengths = self.id_lengths[self.tokens[start:end]]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()

    def _ids(self, start: int, end: int) -> str:
        """'id,id,...,' of tokens [start, end)."""
        first, last = start - self.start, end - self.start
        if first >= 0 and last < len(self.offsets):
            return self.text[self.offsets[first] : self.offsets[last]]
        return self._join(start, end)  # outside the window: a random B from another document

    def line(self, sample) -> tuple[bytes, int]:
        """The shard line of a sample and its number of tokens."""
        (a0, a1), b, label = sample
        if b is None:
            length = a1 - a0 + 2
            ids = f"{self.cls}{self._ids(a0, a1)}{self.sep}"
            types = "0," * (length - 1) + "0"
            line = f'{{"input_ids":[{ids}],"token_type_ids":[{types}]}}\n'
        else:
            b0, b1 = b
            length = a1 - a0 + b1 - b0 + 3
            ids = f"{self.cls}{self._ids(a0, a1)}{self.sep},{self._ids(b0, b1)}{self.sep}"
            types = "0," * (a1 - a0 + 2) + "1," * (b1 - b0) + "1"
            line = (
                f'{{"input_ids":[{ids}],"token_type_ids":[{types}],'
                f'"next_sentence_label":{label}}}\n'
            )
        return line.encode("ascii"), length


def deal(
    lines: list[bytes], num_tokens: list[int], num_shards: int, pass_ends: list[int]
) -> tuple[list, list, list]:
    """Group a task's lines round-robin as if its first line went to shard 0.

    pass_ends: where each pass of dupe_factor ends in lines. Returns, per shard, the lines as one
    bytes per pass (a block of finish_shard's buckets) with their number and tokens;
    ShardDealer rotates the groups to where the task really starts. Done in the process that
    made the lines, so the main process moves a few large strings instead of every line.
    """
    groups = []
    for i in range(num_shards):
        # Line i + k * num_shards is the k-th of this shard's group.
        bounds = [0] + [max(0, -(-(end - i) // num_shards)) for end in pass_ends]
        mine = lines[i::num_shards]
        groups.append([b"".join(mine[a:b]) for a, b in itertools.pairwise(bounds)])
    counts = [len(lines[i::num_shards]) for i in range(num_shards)]
    tokens = [sum(num_tokens[i::num_shards]) for i in range(num_shards)]
    return groups, counts, tokens


class ShardDealer:
    """Deal sample lines round-robin into num_shards scratch files, counting samples and tokens."""

    def __init__(self, scratch_dir: Path, num_shards: int):
        scratch_dir.mkdir(parents=True, exist_ok=True)
        self.parts = [scratch_dir / f"part-{i:05d}.jsonl" for i in range(num_shards)]
        self._files = [open(p, "wb") for p in self.parts]  # noqa: SIM115 (closed in close())
        # (offset, length) of every block of a part, for finish_shard's buckets.
        self._indexes = [open(index_path(p), "wb") for p in self.parts]  # noqa: SIM115
        self._sizes = [0] * num_shards
        self.num_samples = [0] * num_shards
        self.num_tokens = [0] * num_shards
        self._next = 0  # the shard of the next sample

    def add(self, groups: list[list[bytes]], counts: list[int], tokens: list[int]) -> None:
        """Append the next task's lines, grouped by deal(): one block per shard and pass."""
        num_shards = len(self._files)
        for i in range(num_shards):
            shard = (self._next + i) % num_shards
            for block in groups[i]:
                if block:
                    self._files[shard].write(block)
                    entry = np.array([self._sizes[shard], len(block)], dtype=np.int64)
                    self._indexes[shard].write(entry.tobytes())
                    self._sizes[shard] += len(block)
            self.num_samples[shard] += counts[i]
            self.num_tokens[shard] += tokens[i]
        self._next = (self._next + sum(counts)) % num_shards

    def close(self) -> None:
        for f in self._files + self._indexes:
            f.close()


def index_path(part: Path) -> Path:
    return part.with_suffix(".index")


def finish_shard(part: str, output: str, seed: int, index: int) -> None:
    """Shuffle one scratch part with the generator of (seed, shard index) and gzip it to output."""
    part_path = Path(part)
    rng = random.Random(f"bertlab.shards:{seed}:{index}")
    size = part_path.stat().st_size
    # zlib-style gzip framing (wbits 31, mtime 0, no file name), streamed: the shard is never
    # held in memory whole.
    compressor = isal_zlib.compressobj(COMPRESS_LEVEL, isal_zlib.DEFLATED, 31)
    with open(output, "wb") as out:
        for bucket in _buckets(part_path, size, rng):
            lines = [line for block in bucket for line in block.splitlines(keepends=True)]
            bucket.clear()  # the blocks' bytes go while the lines are shuffled and written
            rng.shuffle(lines)
            out.write(compressor.compress(b"".join(lines)))
            del lines
        out.write(compressor.flush())
    part_path.unlink()
    index_path(part_path).unlink()


def _buckets(part: Path, size: int, rng: random.Random) -> Iterator[list[bytes]]:
    """The part whole (up to _BUCKET_BYTES), or its blocks in a random order cut into buckets;
    each bucket a list of blocks of whole lines."""
    if size <= _BUCKET_BYTES:
        yield [part.read_bytes()]
        return
    blocks = np.fromfile(index_path(part), dtype=np.int64).reshape(-1, 2)
    order = list(range(len(blocks)))
    rng.shuffle(order)
    num_buckets = -(-size // _BUCKET_BYTES)
    with open(part, "rb") as f:
        bucket: list[bytes] = []
        done, ended = 0, 1  # bytes read, number of the bucket being filled
        for j in order:
            offset, length = blocks[j].tolist()
            f.seek(offset)
            bucket.append(f.read(length))
            done += length
            # Bucket k ends with the block that brings the total to k/num_buckets of the part.
            if done * num_buckets >= size * ended:
                yield bucket
                bucket = []
                while done * num_buckets >= size * ended:
                    ended += 1
        assert not bucket, "the last block ends the last bucket"
