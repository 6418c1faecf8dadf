"""The streaming dataset: shards -> (rank x worker) split -> shuffle buffer -> masked batches.

Decisions:
- The dataset yields whole collated batches (the DataLoader runs with batch_size=None): a batch is
  made from the samples of one reader, so batch counts, exact resume and equal counts per rank
  are decided here, from meta.json's per-shard sample counts, before any shard is opened.
- Readers: one per (global rank, dataloader worker), `slots = world_size x num_workers`.
  Training splits by shard when there are at least as many shards as readers: shards go to ranks,
  then to the rank's workers, largest first to the least-loaded (balanced to within one shard,
  the same every epoch, since which rank sees a sample changes nothing in data-parallel SGD);
  each reader's shard order is shuffled every epoch. With fewer shards than readers it splits by
  line: reader s takes every slots-th line of the shards' concatenation (shard order shuffled per
  epoch, the same for all readers), reading all lines but parsing only its own.
- Equal batch counts (DDP hangs otherwise): a reader makes floor(samples / batch_size) batches;
  every rank yields the smallest rank's total, `batches_per_rank`, and drops the rest of the epoch
  (the partial batch of each reader, plus a larger rank's surplus; shuffling changes which samples
  are dropped every epoch). Within a rank the DataLoader takes batches from its workers
  round-robin, so the first `batches_per_rank` of that order are kept: `round_robin_quota`.
- Shuffle: a buffer of shuffle_buffer_size raw lines per reader, reseeded from (seed, epoch,
  rank, worker); lines are parsed only when they leave the buffer in a batch that is used.
- Exact resume: the position in an epoch is the number of batches the rank has delivered. Since
  the round-robin order is known, that says how many batches each worker delivered; on resume a
  worker replays its epoch (reading and shuffling lines, which is cheap) and skips that many
  batches without parsing or masking them. Masking is keyed by (seed, epoch, file, line), so the
  resumed batches are the ones an uninterrupted run gets, with num_workers 0 or more.
- Evaluation (valid/test): no shuffle, every sample, same masking every time (keyed by seed, file
  and line). Samples are dealt to ranks round-robin; with several ranks, the last samples are
  repeated so every rank has ceil(N / world_size) and the same batch count, DistributedSampler's
  convention (at most world_size - 1 duplicates; a single process sees each sample exactly once).
  A rank's batches go to its workers round-robin, so batches do not depend on num_workers.
- With with_source, a batch also holds `source` [B, 2]: each sample's shard index (in
  `samples.shards`) and line number, so a bad batch can be traced to its lines.
- on_bad_sample: "fail" (default) stops at the first bad line with its file and line; "skip"
  drops bad lines from their batch (which is then smaller, so batch counts stay equal), logs the
  first few and a count. A truncated gzip or a shard whose length differs from meta.json always
  fails: the batch counts every process agreed on would be wrong.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Iterator
from itertools import islice

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from bertlab.data.masking import MaskingCollator, sample_keys
from bertlab.samples.shard_reader import SampleSet, parse_sample, read_lines

log = logging.getLogger(__name__)
_EVAL_EPOCH = -1  # the masking "epoch" of evaluation samples: fixed
_MAX_SKIP_LOGS = 5


def _rng(*parts: int) -> random.Random:
    return random.Random(int(sample_keys(*parts)))


def _balance(sizes: dict[int, int], bins: int) -> list[list[int]]:
    """Largest first into the least-loaded bin (ties: lowest bin): loads within one item."""
    heap = [(0, b) for b in range(bins)]
    out: list[list[int]] = [[] for _ in range(bins)]
    for item in sorted(sizes, key=lambda i: (-sizes[i], i)):
        load, b = heapq.heappop(heap)
        out[b].append(item)
        heapq.heappush(heap, (load + sizes[item], b))
    return out


def round_robin_quota(capacities: list[int], total: int) -> list[int]:
    """How many of the first `total` round-robin batches come from each worker.

    The DataLoader takes batch i from worker i % num_workers, skipping exhausted workers.
    """
    assert 0 <= total <= sum(capacities)
    low, high = 0, max(capacities, default=0)
    while low < high:  # the number of full rounds: largest t with sum(min(c, t)) <= total
        mid = (low + high + 1) // 2
        low, high = (mid, high) if sum(min(c, mid) for c in capacities) <= total else (low, mid - 1)
    quota = [min(c, low) for c in capacities]
    rest = total - sum(quota)
    for worker, capacity in enumerate(capacities):
        if rest and capacity > low:
            quota[worker] += 1
            rest -= 1
    return quota


class SampleStream(IterableDataset):
    """Batches of one split, split by rank and worker; see the module docstring.

    `start(epoch, skip, rank, world_size)` must be called (the loader does) before iterating.
    """

    def __init__(
        self,
        samples: SampleSet,
        collator: MaskingCollator,
        batch_size: int,
        train: bool,
        shuffle_buffer_size: int = 10000,
        seed: int = 0,
        on_bad_sample: str = "fail",
        with_source: bool = False,
    ):
        # BertDataModule refuses these as the user's flags; here they are our own invariants.
        assert batch_size >= 1 and on_bad_sample in ("fail", "skip"), (batch_size, on_bad_sample)
        self.samples = samples
        self.collator = collator
        self.batch_size = batch_size
        self.train = train
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = seed
        self.on_bad_sample = on_bad_sample
        self.with_source = with_source
        self.epoch, self.skip, self.rank, self.world_size = 0, 0, 0, 1

    def start(self, epoch: int, skip: int, rank: int, world_size: int) -> None:
        self.epoch, self.skip, self.rank, self.world_size = epoch, skip, rank, world_size

    # -- the plan: what each reader reads, decided from meta.json alone ----------------------

    def shard_assignment(self, world_size: int, num_workers: int) -> list[list[list[int]]] | None:
        """[rank][worker] -> shard indices when splitting by shard; None when splitting by line."""
        sizes = {i: shard.num_samples for i, shard in enumerate(self.samples.shards)}
        if len(sizes) < world_size * num_workers:
            return None
        per_rank = _balance(sizes, world_size)
        return [_balance({i: sizes[i] for i in shards}, num_workers) for shards in per_rank]

    def reader_sizes(self, world_size: int, num_workers: int) -> list[list[int]]:
        """[rank][worker] -> number of samples that reader reads in an epoch of training."""
        assignment = self.shard_assignment(world_size, num_workers)
        counts = [shard.num_samples for shard in self.samples.shards]
        if assignment is not None:
            return [[sum(counts[i] for i in shards) for shards in rank] for rank in assignment]
        total, slots = sum(counts), world_size * num_workers
        return [
            [total // slots + (r * num_workers + w < total % slots) for w in range(num_workers)]
            for r in range(world_size)
        ]

    def batches_per_rank(self, world_size: int, num_workers: int) -> int:
        """Batches every rank yields in an epoch (the same on all ranks)."""
        num_workers = max(1, num_workers)
        if not self.train:
            return -(-self._eval_samples_per_rank(world_size) // self.batch_size)
        sizes = self.reader_sizes(world_size, num_workers)
        batches = min(sum(n // self.batch_size for n in rank) for rank in sizes)
        if batches == 0:
            raise ValueError(
                f"--data.train_files: {self.samples.num_samples} samples make no full batch of "
                f"--data.batch_size {self.batch_size} for every one of {world_size} process(es) "
                f"x {num_workers} worker(s); use more data, a smaller batch or fewer workers"
            )
        return batches

    def worker_quota(
        self, world_size: int, num_workers: int, rank: int, delivered: int
    ) -> list[int]:
        """Batches each worker of `rank` yields among the rank's first `delivered` batches."""
        sizes = self.reader_sizes(world_size, num_workers)[rank]
        return round_robin_quota([n // self.batch_size for n in sizes], delivered)

    def _eval_samples_per_rank(self, world_size: int) -> int:
        return -(-self.samples.num_samples // world_size)

    def _train_segments(self, num_workers: int, worker: int) -> list[tuple[int, int, int]]:
        """(shard, first line index, step) runs this reader reads this epoch, in order."""
        shards = self.samples.shards
        slot = self.rank * num_workers + worker
        assignment = self.shard_assignment(self.world_size, num_workers)
        if assignment is not None:
            mine = list(assignment[self.rank][worker])
            _rng(self.seed, self.epoch, slot, 1).shuffle(mine)
            return [(i, 0, 1) for i in mine]
        order = list(range(len(shards)))
        _rng(self.seed, self.epoch, 2).shuffle(order)  # the same for every reader
        slots, offset, segments = self.world_size * num_workers, 0, []
        for i in order:
            first = (slot - offset) % slots
            if first < shards[i].num_samples:
                segments.append((i, first, slots))
            offset += shards[i].num_samples
        return segments

    # -- reading ------------------------------------------------------------------------------

    def _lines(self, segments: list[tuple[int, int, int]]) -> Iterator[tuple[bytes, int, int]]:
        """(raw line, shard index, line number) of the given runs."""
        for index, first, step in segments:
            shard = self.samples.shards[index]
            for number, raw in read_lines(shard.path, shard.num_samples):
                if (number - 1 - first) % step == 0 and number > first:
                    yield raw, index, number

    def _shuffled(self, items: Iterator, rng: random.Random) -> Iterator:
        size = self.shuffle_buffer_size
        if size <= 1:
            yield from items
            return
        buffer: list = []
        for item in items:
            if len(buffer) < size:
                buffer.append(item)
                continue
            j = rng.randrange(size)
            yield buffer[j]
            buffer[j] = item
        rng.shuffle(buffer)
        yield from buffer

    def _collate(self, items: list[tuple[bytes, int, int]], epoch: int) -> dict[str, torch.Tensor]:
        samples, shard_ids, lines, error = [], [], [], None
        for raw, index, number in items:
            shard = self.samples.shards[index]
            try:
                sample = parse_sample(
                    raw, shard.path, number, shard.max_seq_len,
                    self.samples.vocab_size, self.samples.nsp,
                )  # fmt: skip
            except ValueError as e:
                if self.on_bad_sample == "fail":
                    raise
                error = e
                self._skipped += 1
                if self._skipped <= _MAX_SKIP_LOGS:
                    log.warning("skipping a bad sample (--data.on_bad_sample skip): %s", e)
                continue
            samples.append(sample)
            shard_ids.append(index)
            lines.append(number)
        if not samples:
            raise ValueError(f"every sample of a batch was bad, the last: {error}")
        keys = sample_keys(self.seed, epoch, np.asarray(shard_ids), np.asarray(lines))
        batch = self.collator(samples, keys)
        if self.with_source:
            batch["source"] = torch.tensor([shard_ids, lines], dtype=torch.long).T
        return batch

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self._skipped = 0
        batches = (
            self._train(worker, num_workers) if self.train else self._eval(worker, num_workers)
        )
        yield from batches
        if self._skipped:
            log.warning(
                "skipped %d bad sample(s) in this epoch (rank %d, worker %d)",
                self._skipped, self.rank, worker,
            )  # fmt: skip

    def _train(self, worker: int, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
        total = self.batches_per_rank(self.world_size, num_workers)
        quotas = self.worker_quota(self.world_size, num_workers, self.rank, total)
        skips = self.worker_quota(self.world_size, num_workers, self.rank, self.skip)
        # A new DataLoader iterator asks worker 0 first; on resume the batch due next belongs to
        # the reader that was next in the round-robin: rotate which reader each worker plays.
        pending = [
            (done, v) for v, (done, q) in enumerate(zip(skips, quotas, strict=True)) if done < q
        ]
        worker = (worker + min(pending)[1]) % num_workers if pending else worker
        quota, skip = quotas[worker], skips[worker]
        slot = self.rank * num_workers + worker
        lines = self._lines(self._train_segments(num_workers, worker))
        stream = self._shuffled(lines, _rng(self.seed, self.epoch, slot, 3))
        for index in range(quota):
            items = list(islice(stream, self.batch_size))
            assert len(items) == self.batch_size, "meta.json's counts promised a full batch"
            if index >= skip:
                yield self._collate(items, self.epoch)

    def _eval(self, worker: int, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
        rank, world_size, size = self.rank, self.world_size, self.batch_size
        total = self.samples.num_samples
        segments = [(i, 0, 1) for i in range(len(self.samples.shards))]
        head: list = []  # the first world_size samples: the repeats that pad the last ranks
        items: list = []
        position = 0  # this rank's sample count so far
        for g, item in enumerate(self._lines(segments)):
            if g < world_size:
                head.append(item)
            if g % world_size != rank:
                continue
            if (position // size) % num_workers == worker:
                items.append(item)
                if len(items) == size:
                    yield self._collate(items, _EVAL_EPOCH)
                    items = []
            position += 1
        while position < self._eval_samples_per_rank(world_size):  # at most one repeat
            if (position // size) % num_workers == worker:
                items.append(head[position * world_size + rank - total])
            position += 1
        if items:
            yield self._collate(items, _EVAL_EPOCH)
