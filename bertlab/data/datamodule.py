"""BertDataModule: samples folders -> resumable, rank-aware DataLoaders of masked batches.

Decisions:
- Construction is cheap and complete: paths are resolved and meta.json read (no shard opened), so
  `tokenizer_path`, `max_seq_len`, `vocab_size`, `special_ids` and `nsp` exist right away for the
  CLI to link into the model, and mistakes (no samples, another tokenizer, NSP missing, data
  longer than the model) surface before anything trains.
- `batch_size` is per process, as in Lightning; evaluation may use its own `eval_batch_size`.
- The training loader is stateful: `state_dict()` is (epoch, batches this rank delivered in it)
  plus the facts that make the position meaningful (processes, workers, batch size, samples).
  Lightning saves it in every checkpoint and restores it on `fit(ckpt_path=...)`. Resuming with
  another number of processes, workers or batch size cannot give the same batches, so it is a
  ValueError rather than a silent change of data order.
- Lightning's epoch reaches the dataset through `loader.sampler.set_epoch` (Lightning calls it
  on the sampler); outside Lightning, each complete pass moves to the next epoch by itself, and a
  pass left unfinished is continued by the next `iter()`. After a resume, Lightning's epoch
  number can be one ahead of the data's (a checkpoint written when `max_steps` stopped a run
  mid-epoch counts that epoch as done): the first set_epoch after loading pairs the two numbers,
  so the saved position, not the counter, decides which batch comes next.
- Batches (see bertlab.data.masking): LongTensors input_ids, attention_mask, token_type_ids, labels
  [B, T] (T the longest sample rounded up to pad_to_multiple_of; labels -100 where nothing is
  predicted), mlm_positions [N] (the flat indices of the labels that are not -100),
  next_sentence_label [B] when the samples have NSP labels, and with with_source
  `source` [B, 2] (shard index, line), which `sources(batch)` turns into `path:line`.
- Workers are forked, or on a rank of a DDP run started from a fork server
  (bertlab.data.worker_start says why).
- The loader starts its workers on the first `next()`, not on `iter()`: Lightning creates the
  iterator before it restores the epoch on resume, and the epoch must be known when workers start.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from bertlab.data.masking import MaskingCollator, word_continuation_table
from bertlab.data.stream import SampleStream
from bertlab.data.worker_start import init_worker, worker_context
from bertlab.samples.shard_reader import SampleSet, resolve_samples

STATE_FORMAT = "bertlab.data.position/1"
# Lightning warns that an IterableDataset's __len__ may be wrong with workers; ours is exact.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _global_seed() -> int | None:
    """The seed Lightning's seed_everything set for this process (None when it set none)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


class _EpochSampler(Sampler):
    """The sampler slot of an IterableDataset's loader (endless Nones, as torch's own) that
    forwards Lightning's set_epoch to the loader."""

    def __init__(self, loader: StreamLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[None]:
        while True:
            yield None

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)


class _CountingIterator:
    """Starts the DataLoader's iterator lazily and counts the batches it hands out."""

    def __init__(self, loader: StreamLoader, generation: int):
        self.loader, self.generation, self.inner = loader, generation, None

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        loader = self.loader
        if self.inner is None:
            self.inner = loader._start()
        batch = next(self.inner)
        if loader._generation == self.generation:
            loader.batches_done += 1
        return batch


class StreamLoader(DataLoader):
    """A DataLoader over a SampleStream with Lightning-compatible state_dict/load_state_dict."""

    def __init__(
        self,
        dataset: SampleStream,
        num_workers: int = 0,
        pin_memory: bool = False,
        distributed: tuple[int, int] | None = None,
    ):
        """distributed: (rank, world_size) to use instead of torch.distributed's."""
        world_size = (distributed or rank_and_world_size())[1]
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,  # workers must see each epoch's settings
            worker_init_fn=init_worker,
            multiprocessing_context=worker_context(world_size) if num_workers else None,
        )
        object.__setattr__(self, "sampler", _EpochSampler(self))  # DataLoader forbids setattr
        self.distributed = distributed
        self.epoch = 0
        self.batches_done = 0
        self._generation = 0
        self._epoch_offset: int | None = 0  # our epoch - Lightning's; None: learn at next call

    def rank_and_world_size(self) -> tuple[int, int]:
        return self.distributed or rank_and_world_size()

    def __len__(self) -> int:
        return self.dataset.batches_per_rank(self.rank_and_world_size()[1], self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Lightning's epoch. After a resume, the first call pairs it with the saved position."""
        if self._epoch_offset is None:
            self._epoch_offset = self.epoch - epoch
        if epoch + self._epoch_offset != self.epoch:
            self.epoch, self.batches_done = epoch + self._epoch_offset, 0

    def __iter__(self) -> _CountingIterator:
        self._generation += 1
        return _CountingIterator(self, self._generation)

    def _start(self):
        rank, world_size = self.rank_and_world_size()
        if not self.dataset.train:
            self.batches_done = 0
        elif self.batches_done >= len(self):
            self.epoch, self.batches_done = self.epoch + 1, 0
        self.dataset.start(self.epoch, self.batches_done, rank, world_size)
        return super().__iter__()

    def _facts(self) -> dict:
        return {
            "world_size": self.rank_and_world_size()[1],
            "num_workers": self.num_workers,
            "batch_size": self.dataset.batch_size,
            "num_samples": self.dataset.samples.num_samples,
            "seed": self.dataset.seed,
            # seed_everything draws the dropout masks: another one is not the same run resumed.
            "seed_everything": _global_seed(),
        }

    def state_dict(self) -> dict:
        position = {"format": STATE_FORMAT, "epoch": self.epoch, "batches": self.batches_done}
        return position | self._facts()

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"the checkpoint's data position is not a {STATE_FORMAT} state")
        now = self._facts()
        # A key an earlier bertlab's checkpoint lacks is not compared.
        changed = [f"{k} {state[k]} -> {v}" for k, v in now.items() if k in state and state[k] != v]
        if changed:
            raise ValueError(
                "cannot resume the data exactly where the checkpoint stopped: "
                + ", ".join(changed)
                + " (resume with the same data, seed, batch_size, num_workers and process count)"
            )
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches"])
        self._epoch_offset = None


# Below this share a 128-token sequence has about one masked token, or none.
MIN_USEFUL_MLM_PROBABILITY = 0.01


def _tokenizer_fingerprint(path: str) -> str:
    from bertlab.tokenizer.training import tokenizer_fingerprint

    return tokenizer_fingerprint(path)


class BertDataModule(pl.LightningDataModule):
    """Streams the samples that prepare_samples wrote, masked for BERT pre-training.

    Args:
        train_files: samples for `fit`: a folder, a shard, a glob, or a list of them.
        val_files: samples for validation (optional).
        test_files: samples for `test` (optional).
        tokenizer: tokenizer folder; default: the one recorded in the samples' meta.json.
        batch_size: samples per batch and per process.
        eval_batch_size: batch size for validation and test; default: batch_size.
        num_workers: DataLoader worker processes per training process.
        shuffle_buffer_size: samples held per reader for shuffling the training stream (0 or 1:
            none, samples in shard order; the order of the shards is still shuffled each epoch).
        mlm_probability: fraction of tokens (or words) selected for masked-LM prediction.
        whole_word_masking: select whole words instead of single tokens.
        pad_to_multiple_of: pad each batch to a multiple of this length (a speed setting: the
            `bertlab` command links it from speed.pad_to_multiple_of).
        seed: seed of shuffling and masking.
        on_bad_sample: `fail` at a bad shard line, or `skip` it (counted and logged).
        with_source: add `source` [B, 2] (shard index, line) to batches; see `sources()`.
    """

    def __init__(
        self,
        train_files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
        test_files: str | list[str] | None = None,
        tokenizer: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle_buffer_size: int = 10000,
        mlm_probability: float = 0.15,
        whole_word_masking: bool = False,
        pad_to_multiple_of: int = 8,
        seed: int = 0,
        on_bad_sample: str = "fail",
        with_source: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        for flag, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"--data.{flag} {value} must be >= 1")
        if num_workers < 0:
            raise ValueError(f"--data.num_workers {num_workers} must be >= 0")
        if shuffle_buffer_size < 0:
            raise ValueError(f"--data.shuffle_buffer_size {shuffle_buffer_size} must be >= 0")
        if on_bad_sample not in ("fail", "skip"):
            raise ValueError(f"--data.on_bad_sample {on_bad_sample!r} must be 'fail' or 'skip'")
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"--data.mlm_probability {mlm_probability} must be in (0, 1)")
        if mlm_probability < MIN_USEFUL_MLM_PROBABILITY and int(os.environ.get("RANK", "0")) == 0:
            print(
                f"warning: --data.mlm_probability {mlm_probability} masks {mlm_probability:.1%} "
                "of tokens (BERT masks 15%): most batches have few or no masked tokens to learn "
                "from",
                file=sys.stderr,
            )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle_buffer_size = shuffle_buffer_size
        self.mlm_probability = mlm_probability
        self.whole_word_masking = whole_word_masking
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.on_bad_sample = on_bad_sample
        self.with_source = with_source
        self.sets: dict[str, SampleSet] = {}
        for split, spec in (("train", train_files), ("val", val_files), ("test", test_files)):
            if spec is not None and spec != []:
                self.sets[split] = resolve_samples(spec, f"--data.{split}_files")
        if not self.sets:
            raise ValueError("no samples given: set --data.train_files, val_files or test_files")
        self._check_splits_agree()
        first = next(iter(self.sets.values()))
        self.vocab_size: int = first.vocab_size
        self.special_ids: dict[str, int] = dict(first.special_ids)
        self.nsp: bool = first.nsp
        self.max_seq_len: int = max(s.max_seq_len for s in self.sets.values())
        self.tokenizer_path: str = self._resolve_tokenizer(tokenizer, first)
        self._collator: MaskingCollator | None = None

    def _check_splits_agree(self) -> None:
        splits = list(self.sets)
        first = self.sets[splits[0]]
        for split in splits[1:]:
            other = self.sets[split]
            where = f"--data.{splits[0]}_files ({first.folders[0]}) and --data.{split}_files"
            if other.tokenizer.get("fingerprint") != first.tokenizer.get("fingerprint"):
                raise ValueError(
                    f"{where} ({other.folders[0]}) were made with different tokenizers "
                    f"(fingerprint {first.tokenizer.get('fingerprint')} != "
                    f"{other.tokenizer.get('fingerprint')})"
                )
            if other.nsp != first.nsp:
                raise ValueError(f"{where} ({other.folders[0]}) disagree on NSP labels")
        # Valid, but its loss would not be held-out: said in one line (rank 0).
        train = {os.path.realpath(s.path) for s in self.sets.get("train", first).shards}
        for split in [s for s in ("val", "test") if s in self.sets and "train" in self.sets]:
            shared = [s for s in self.sets[split].shards if os.path.realpath(s.path) in train]
            sources = self.sets[split].source_files.keys() & self.sets["train"].source_files
            if int(os.environ.get("RANK", "0")) != 0:
                continue
            if shared:
                print(
                    f"warning: --data.{split}_files ({self.sets[split].folders[0]}) shares "
                    f"{len(shared)} of its {len(self.sets[split].shards)} shards with "
                    "--data.train_files: its loss is not held-out",
                    file=sys.stderr,
                )
            elif sources:  # a copy of the training samples, or made from the same text
                named = self.sets["train"].source_files[next(iter(sources))]
                print(
                    f"warning: --data.{split}_files ({self.sets[split].folders[0]}) was made "
                    f"from {named}, as --data.train_files was: its loss is not held-out",
                    file=sys.stderr,
                )

    def _resolve_tokenizer(self, tokenizer: str | None, samples: SampleSet) -> str:
        recorded = samples.tokenizer.get("path")
        folder = samples.folders[0]
        if tokenizer is None:
            if not recorded or not Path(recorded).is_dir():
                raise ValueError(
                    f"the tokenizer recorded in {folder}/meta.json ({recorded}) does not exist "
                    "here; pass --data.tokenizer DIR"
                )
            # The folder may have been retrained in place since: same path, other ids.
            mine, theirs = _tokenizer_fingerprint(recorded), samples.tokenizer.get("fingerprint")
            if mine != theirs:
                raise ValueError(
                    f"the tokenizer recorded in {folder}/meta.json ({recorded}) has changed since "
                    f"the samples were made (fingerprint {mine} != {theirs}); remake the samples "
                    "or pass --data.tokenizer with the tokenizer they were made with"
                )
            return str(recorded)
        if not Path(tokenizer).is_dir():
            raise ValueError(f"--data.tokenizer {tokenizer}: no such folder")
        mine, theirs = _tokenizer_fingerprint(tokenizer), samples.tokenizer.get("fingerprint")
        if mine != theirs:
            raise ValueError(
                f"--data.tokenizer {tokenizer} does not match the tokenizer the samples in "
                f"{folder} were made with (fingerprint {mine} != {theirs})"
            )
        return os.path.abspath(tokenizer)

    def check_model(self, max_position_embeddings: int, objective: str, vocab_size: int) -> None:
        """Raise a ValueError when a model with these settings cannot train on this data."""
        folder = next(iter(self.sets.values())).folders[0]
        if self.max_seq_len > max_position_embeddings:
            longest = max(self.sets.values(), key=lambda s: s.max_seq_len)  # name the culprit
            raise ValueError(
                f"the samples in {longest.folders[0]} are up to {longest.max_seq_len} tokens "
                "(max_seq_len), "
                f"longer than --model.max_position_embeddings {max_position_embeddings}; make "
                "samples with a smaller --max_seq_len or give the model more positions"
            )
        if objective not in ("mlm", "mlm_nsp"):
            raise ValueError(f"--model.objective {objective!r} must be 'mlm' or 'mlm_nsp'")
        if objective == "mlm_nsp" and not self.nsp:
            raise ValueError(
                f"--model.objective mlm_nsp needs NSP labels, but the samples in {folder} have "
                "none (made with --nsp false); use --model.objective mlm"
            )
        if vocab_size != self.vocab_size:
            raise ValueError(
                f"the model's vocabulary has {vocab_size} tokens but the samples in {folder} were "
                f"made with a tokenizer of {self.vocab_size}"
            )

    @property
    def collator(self) -> MaskingCollator:
        if self._collator is None:
            continuation = None
            if self.whole_word_masking:
                continuation = word_continuation_table(self.tokenizer_path, self.vocab_size)
            self._collator = MaskingCollator(
                self.vocab_size,
                self.special_ids,
                mlm_probability=self.mlm_probability,
                pad_to_multiple_of=self.pad_to_multiple_of,
                max_seq_len=self.max_seq_len,
                nsp=self.nsp,
                continuation=continuation,
            )
        return self._collator

    def _loader(self, split: str, flag_hint: str) -> StreamLoader:
        if split not in self.sets:
            raise ValueError(f"{flag_hint} needs --data.{split}_files")
        train = split == "train"
        dataset = SampleStream(
            self.sets[split],
            self.collator,
            batch_size=self.batch_size if train else self.eval_batch_size,
            train=train,
            shuffle_buffer_size=self.shuffle_buffer_size if train else 0,
            seed=self.seed,
            on_bad_sample=self.on_bad_sample,
            with_source=self.with_source,
        )
        return StreamLoader(dataset, self.num_workers, pin_memory=torch.cuda.is_available())

    def sources(self, batch: dict[str, torch.Tensor], split: str = "train") -> list[str]:
        """`path:line` of each sample of a batch made with with_source=True."""
        shards = self.sets[split].shards
        return [f"{shards[i].path}:{line}" for i, line in batch["source"].tolist()]

    def train_dataloader(self) -> StreamLoader:
        return self._loader("train", "training")

    def val_dataloader(self) -> StreamLoader | list:
        return self._loader("val", "validation") if "val" in self.sets else []

    def test_dataloader(self) -> StreamLoader:
        return self._loader("test", "testing")
