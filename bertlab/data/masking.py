"""The MLM collator: samples of token ids -> one padded, masked batch of LongTensors.

Decisions:
- Dynamic padding: to the longest sample of the batch, rounded up to `pad_to_multiple_of` (8, for
  tensor cores), never past the data's max_seq_len, so a batch of short samples costs little.
- Masking is a pure function of a 64-bit key per sample and the token position: a counter-based
  hash (splitmix64) gives each (key, position) its random numbers, vectorized in numpy over the
  batch. There is no random state to carry, so a batch is reproducible from its samples alone:
  resuming mid-epoch skips batches without masking them, and the masking of a sample does not
  depend on which worker, process, batch or padding it landed in. The data module keys training
  samples by (seed, epoch, file, line), so masking changes every epoch, and evaluation samples by
  (seed, file, line), so the same checkpoint always gets the same validation loss.
- BERT's recipe: each maskable token is selected with probability mlm_probability; a selected
  token becomes [MASK] (80%), a random token (10%) or stays (10%). Special tokens ([PAD], [CLS],
  [SEP], [UNK], [MASK], ...) are never selected, as in transformers' collator. Random tokens are
  drawn from the non-special ids only.
- The batch carries `mlm_positions` [N]: the flat indices (row * T + column) of its labelled
  positions, found here on the host, as the original BERT's `masked_lm_positions` are. The sparse
  MLM head gathers them with a gather whose size the host already knows, so a training step on
  a GPU never waits for the device to count its masked tokens (`nonzero()` does).
- A batch with something to mask always gets at least one label (the maskable token with the
  smallest draw), so a loss over a tiny batch is never a mean over nothing.
- Whole-word masking selects words instead of tokens: a token continues the word of the token
  before it when it is a WordPiece `##` piece, or, for SentencePiece vocabularies, when it does
  not start with `▁`. A word is selected with mlm_probability and all its tokens are masked (each
  with its own 80/10/10 draw, as in Google's BERT). For text written without spaces (Japanese)
  a SentencePiece "word" runs from one `▁` to the next, which can be a whole phrase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
# Independent random streams per position: selection, 80/10/10 choice, random token.
_SELECT, _ACTION, _TOKEN = 1, 2, 3


def mix64(x: np.ndarray | int) -> np.ndarray:
    """splitmix64's finalizer: a bijective, well-mixed hash of uint64 values (vectorized)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MUL1
        x = (x ^ (x >> np.uint64(27))) * _MUL2
        return x ^ (x >> np.uint64(31))


def sample_keys(*parts: int | np.ndarray) -> np.ndarray:
    """One uint64 key per sample from integer parts (scalars or arrays, broadcast together)."""
    key = np.zeros((), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for part in parts:
            if isinstance(part, int):
                # Seeds are any Python int (2**63 and negatives included): take them mod 2**64.
                part = np.uint64(part & 0xFFFF_FFFF_FFFF_FFFF)
            else:
                part = np.asarray(part, dtype=np.int64).astype(np.uint64)
            key = mix64(key ^ mix64(part + _GOLDEN))
    return key


def _threshold(probability: float) -> np.uint64:
    """The uint64 h with P(hash < h) == probability."""
    return np.uint64(min(int(probability * 2.0**64), 2**64 - 1))


def word_continuation_table(tokenizer_path: str | Path, vocab_size: int) -> np.ndarray:
    """A bool per token id: True where the token continues the word of the token before it."""
    from bertlab.tokenizer.training import load_tokenizer

    vocab = load_tokenizer(str(tokenizer_path)).get_vocab()
    wordpiece = sum(t.startswith("##") for t in vocab) > sum(t.startswith("▁") for t in vocab)
    table = np.zeros(vocab_size, dtype=bool)
    for token, token_id in vocab.items():
        if token_id < vocab_size:
            table[token_id] = token.startswith("##") if wordpiece else not token.startswith("▁")
    return table


class MaskingCollator:
    """Pad, mask and batch samples: `collator(samples, keys) -> dict of LongTensors`.

    Args:
        vocab_size: ids are < vocab_size.
        special_ids: name -> id of every special token (pad, cls, sep, mask, unk, ...).
        mlm_probability: fraction of maskable tokens (or words) selected for prediction.
        pad_to_multiple_of: the padded length is a multiple of this (capped at max_seq_len).
        max_seq_len: the data's longest allowed sample.
        nsp: add `next_sentence_label` [B] from the samples.
        continuation: for whole-word masking, `word_continuation_table(...)`; None masks tokens.
    """

    def __init__(
        self,
        vocab_size: int,
        special_ids: Mapping[str, int],
        mlm_probability: float = 0.15,
        pad_to_multiple_of: int = 8,
        max_seq_len: int | None = None,
        nsp: bool = False,
        continuation: np.ndarray | None = None,
    ):
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"--data.mlm_probability {mlm_probability} must be in (0, 1)")
        if pad_to_multiple_of < 1:
            raise ValueError(f"--speed.pad_to_multiple_of {pad_to_multiple_of} must be >= 1")
        for name in ("pad", "mask"):
            if name not in special_ids:
                raise ValueError(f"special_ids {dict(special_ids)} lack the {name!r} token")
        self.vocab_size = vocab_size
        self.pad_id = special_ids["pad"]
        self.mask_id = special_ids["mask"]
        self.mlm_probability = mlm_probability
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_seq_len = max_seq_len
        self.nsp = nsp
        self.is_special = np.zeros(vocab_size, dtype=bool)
        self.is_special[[i for i in special_ids.values() if 0 <= i < vocab_size]] = True
        self.candidates = np.flatnonzero(~self.is_special).astype(np.int64)
        if continuation is not None and len(continuation) != vocab_size:
            raise ValueError(f"continuation table has {len(continuation)} ids, not {vocab_size}")
        self.continuation = continuation
        self._select = _threshold(mlm_probability)
        self._to_mask = _threshold(0.8)
        self._to_random = _threshold(0.9)
        self._position_salt: dict[int, np.ndarray] = {}

    def _salt(self, stream: int, length: int) -> np.ndarray:
        """Per-position constants of a random stream, cached: hash inputs for (key, position)."""
        cached = self._position_salt.get(stream)
        if cached is None or len(cached) < length:
            size = max(length, 512)
            cached = sample_keys(stream, np.arange(size))
            self._position_salt[stream] = cached
        return cached[:length]

    def padded_length(self, longest: int) -> int:
        multiple = self.pad_to_multiple_of
        length = -(-longest // multiple) * multiple
        if self.max_seq_len is not None:
            length = min(length, max(self.max_seq_len, longest))
        return length

    def __call__(
        self, samples: Sequence[Mapping], keys: np.ndarray | Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Collate samples (dicts with input_ids, token_type_ids[, next_sentence_label]).

        keys: one integer per sample that decides its masking; default: its index in the batch.
        """
        assert samples, "an empty batch"
        keys = np.arange(len(samples)) if keys is None else keys
        keys = np.atleast_1d(np.asarray(keys)).astype(np.uint64)
        assert keys.shape == (len(samples),), "one key per sample"
        lengths = np.fromiter((len(s["input_ids"]) for s in samples), dtype=np.int64)
        size, length = len(samples), self.padded_length(int(lengths.max()))
        total = int(lengths.sum())
        attention = np.arange(length)[None, :] < lengths[:, None]
        # One flat conversion, scattered row-major into the padded batch: no per-row numpy calls.
        input_ids = np.full((size, length), self.pad_id, dtype=np.int64)
        flat = chain.from_iterable(s["input_ids"] for s in samples)
        input_ids[attention] = np.fromiter(flat, dtype=np.int64, count=total)
        token_type_ids = np.zeros((size, length), dtype=np.int64)
        flat = chain.from_iterable(s["token_type_ids"] for s in samples)
        token_type_ids[attention] = np.fromiter(flat, dtype=np.int64, count=total)
        masked_ids, labels = self.mask(input_ids, attention, keys)
        batch = {
            "input_ids": torch.from_numpy(masked_ids),
            "attention_mask": torch.from_numpy(attention.astype(np.int64)),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "labels": torch.from_numpy(labels),
            "mlm_positions": torch.from_numpy(np.flatnonzero(labels != -100)),
        }
        if self.nsp:
            nsp = [s["next_sentence_label"] for s in samples]
            batch["next_sentence_label"] = torch.tensor(nsp, dtype=torch.long)
        return batch

    def mask(
        self, input_ids: np.ndarray, attention: np.ndarray, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (masked input ids, labels with -100 where nothing is predicted)."""
        size, length = input_ids.shape
        maskable = attention & ~self.is_special[input_ids]
        draw = mix64(keys[:, None] ^ self._salt(_SELECT, length)[None, :])
        chosen = draw < self._select
        if self.continuation is not None:
            # A word's decision is the draw of its first token; continuations copy it.
            starts = ~self.continuation[input_ids] | self.is_special[input_ids]
            starts[:, 0] = True
            first = np.where(starts, np.arange(length)[None, :], 0)
            np.maximum.accumulate(first, axis=1, out=first)
            chosen = np.take_along_axis(chosen, first, axis=1)
        selected = chosen & maskable
        if not selected.any() and maskable.any():
            fallback = np.where(maskable, draw, np.uint64(2**64 - 1))
            selected.flat[np.argmin(fallback)] = True
        rows, cols = np.nonzero(selected)
        labels = np.full((size, length), -100, dtype=np.int64)
        labels[rows, cols] = input_ids[rows, cols]
        masked = input_ids.copy()
        action = mix64(keys[rows] ^ self._salt(_ACTION, length)[cols])
        masked[rows[action < self._to_mask], cols[action < self._to_mask]] = self.mask_id
        swap = (action >= self._to_mask) & (action < self._to_random)
        token = mix64(keys[rows[swap]] ^ self._salt(_TOKEN, length)[cols[swap]])
        masked[rows[swap], cols[swap]] = self.candidates[token % np.uint64(len(self.candidates))]
        return masked, labels
