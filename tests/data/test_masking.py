"""Tests of the MLM collator: rates, 80/10/10, special tokens, determinism, whole-word masking.

Run: .venv/bin/python -m pytest tests/data/test_masking.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertlab.data.masking import MaskingCollator, sample_keys, word_continuation_table

VOCAB = 1000
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
SPECIAL_IDS = torch.tensor(sorted(SPECIAL.values()))


def pair(rng: np.random.Generator, length: int, unk_every: int = 0) -> dict:
    """[CLS] A [SEP] B [SEP] of random ordinary ids (and an [UNK] every unk_every tokens)."""
    ids = rng.integers(5, VOCAB, length).tolist()
    if unk_every:
        ids[::unk_every] = [1] * len(ids[::unk_every])
    half = length // 2
    ids = [2, *ids[:half], 3, *ids[half:], 3]
    types = [0] * (half + 2) + [1] * (length - half + 1)
    return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": length % 2}


def check_batch(batch: dict, samples: list[dict], multiple: int = 8, cap: int = 10**6) -> None:
    """What every batch must satisfy, whatever the masking drew."""
    size, length = batch["input_ids"].shape
    longest = max(len(s["input_ids"]) for s in samples)
    assert size == len(samples)
    assert longest <= length < longest + multiple
    assert length % multiple == 0 or length == max(cap, longest)
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert batch[key].dtype == torch.long and batch[key].shape == (size, length)
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        original = torch.tensor(sample["input_ids"])
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (length - n)
        assert batch["token_type_ids"][row, :n].tolist() == sample["token_type_ids"]
        assert (ids[n:] == 0).all() and (labels[n:] == -100).all()
        labelled = labels[:n] != -100
        assert torch.equal(labels[:n][labelled], original[labelled])
        assert torch.equal(ids[:n][~labelled], original[~labelled])  # only labelled ones change
        special = torch.isin(original, SPECIAL_IDS)
        assert not (labelled & special).any()
        assert not torch.isin(ids[:n][labelled & (ids[:n] != 4)], SPECIAL_IDS).any()


def test_rates_and_80_10_10():
    rng = np.random.default_rng(0)
    samples = [pair(rng, int(rng.integers(40, 126)), unk_every=17) for _ in range(256)]
    collator = MaskingCollator(VOCAB, SPECIAL, max_seq_len=128, nsp=True)
    batch = collator(samples, sample_keys(0, 0, np.arange(256)))
    check_batch(batch, samples)
    labelled = batch["labels"] != -100
    maskable = (batch["attention_mask"] == 1) & ~torch.isin(batch["labels"].where(
        labelled, batch["input_ids"]), SPECIAL_IDS)  # fmt: skip
    n = labelled.sum().item()
    assert abs(n / maskable.sum().item() - 0.15) < 0.01
    chosen = batch["input_ids"][labelled]
    kept = (chosen == batch["labels"][labelled]).float().mean().item()
    assert abs((chosen == 4).float().mean().item() - 0.8) < 0.02
    assert abs(kept - 0.1) < 0.015
    assert batch["next_sentence_label"].tolist() == [s["next_sentence_label"] for s in samples]


def test_padding_to_a_multiple_of_8_capped_at_max_seq_len():
    rng = np.random.default_rng(1)
    collator = MaskingCollator(VOCAB, SPECIAL, max_seq_len=42)
    assert collator([pair(rng, 10)])["input_ids"].shape == (1, 16)
    assert collator([pair(rng, 10), pair(rng, 37)])["input_ids"].shape == (2, 40)
    assert collator([pair(rng, 39)])["input_ids"].shape == (1, 42)  # not 48 > max_seq_len


def test_masking_depends_on_the_key_only():
    """The same key masks a sample the same way in any batch; another key (epoch) differently."""
    rng = np.random.default_rng(2)
    a, b = pair(rng, 30), pair(rng, 100)
    collator = MaskingCollator(VOCAB, SPECIAL)
    alone = collator([a], [7])
    together = collator([b, a], [8, 7])
    assert torch.equal(alone["input_ids"][0, :33], together["input_ids"][1, :33])
    assert torch.equal(alone["labels"][0, :33], together["labels"][1, :33])
    epochs = [collator([b], sample_keys(0, epoch, 3, 5))["labels"] for epoch in range(3)]
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    assert torch.equal(epochs[0], collator([b], sample_keys(0, 0, 3, 5))["labels"])


def test_a_batch_with_something_to_mask_gets_a_label():
    collator = MaskingCollator(VOCAB, SPECIAL)
    samples = [{"input_ids": [2, 9, 3], "token_type_ids": [0, 0, 0]}] * 3
    for key in range(50):
        assert (collator(samples, [key, key + 1, key + 2])["labels"] != -100).sum() >= 1
    only_special = [{"input_ids": [2, 3], "token_type_ids": [0, 0]}]
    assert (collator(only_special)["labels"] == -100).all()


def test_whole_word_masking_keeps_words_together():
    continuation = np.zeros(VOCAB, dtype=bool)
    continuation[500:] = True  # ids >= 500 are "##" pieces
    rng = np.random.default_rng(3)
    samples = [pair(rng, 120) for _ in range(64)]
    collator = MaskingCollator(VOCAB, SPECIAL, continuation=continuation)
    batch = collator(samples, np.arange(64))
    check_batch(batch, samples)
    labelled = (batch["labels"] != -100).numpy()
    for row, sample in enumerate(samples):
        ids = sample["input_ids"]
        word, words = [], []
        for pos, token in enumerate(ids):
            if not continuation[token] or token in (2, 3):
                words.append(word)
                word = []
            word.append(pos)
        words.append(word)
        for word in words:
            ordinary = [p for p in word if ids[p] not in (2, 3)]
            assert len({bool(labelled[row, p]) for p in ordinary}) <= 1, (row, word)
    rate = labelled.sum() / (batch["attention_mask"].sum().item() - 3 * 64)
    assert 0.09 < rate < 0.21  # words are picked at 15%; whole words vary the token count


def test_continuation_tables_of_real_tokenizers(en_wordpiece, ja_unigram):
    from bertlab.tokenizer.training import load_tokenizer

    for folder in (en_wordpiece, ja_unigram):
        tokenizer = load_tokenizer(str(folder))
        vocab = tokenizer.get_vocab()
        table = word_continuation_table(folder, len(vocab))
        assert table.shape == (len(vocab),) and 0 < table.sum() < len(vocab)
        marker = "##" if folder == en_wordpiece else "▁"
        for token in [t for t in vocab if t.startswith(marker)][:50]:
            assert table[vocab[token]] == (marker == "##")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mlm_probability 1.5"):
        MaskingCollator(VOCAB, SPECIAL, mlm_probability=1.5)
    with pytest.raises(ValueError, match="pad_to_multiple_of 0"):
        MaskingCollator(VOCAB, SPECIAL, pad_to_multiple_of=0)


@st.composite
def sample_lists(draw):
    max_len = draw(st.integers(2, 40))
    samples = []
    for _ in range(draw(st.integers(1, 6))):
        ids = draw(st.lists(st.integers(0, 29), min_size=1, max_size=max_len))
        types = draw(st.lists(st.integers(0, 1), min_size=len(ids), max_size=len(ids)))
        samples.append({"input_ids": ids, "token_type_ids": types, "next_sentence_label": 1})
    return samples, max_len, draw(st.integers(1, 16)), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(sample_lists(), st.integers(0, 2**63), st.floats(0.01, 0.99))
def test_any_valid_samples_make_a_valid_batch(case, seed, probability):
    samples, max_len, multiple, whole_words = case
    continuation = (np.arange(30) % 3 == 0) if whole_words else None
    collator = MaskingCollator(
        30, SPECIAL, probability, multiple, max_len, nsp=True, continuation=continuation
    )
    keys = sample_keys(seed, np.arange(len(samples)))
    batch = collator(samples, keys)
    check_batch(batch, samples, multiple, cap=max_len)
    assert batch["next_sentence_label"].tolist() == [1] * len(samples)
    again = collator(samples, keys)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
