"""The sparse MLM head's gather: positions from the collator, no device count inside a step.

Run: .venv/bin/python -m pytest tests/model/test_heads.py -q

Batches come from the real collator (bertlab.data.masking), which finds the labelled positions on
the host; the gather of that known size must give exactly what the gather found with `nonzero()`
gives (loss and every gradient, fp32), and a training step must never call `nonzero()`: on a
GPU that call waits for the device in the middle of the step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TINY, no_dropout

from bertlab.data.masking import MaskingCollator
from bertlab.model.heads import gather_masked, pretraining_losses
from bertlab.model.module import BertPretraining

VOCAB = 100
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def collated(batch_size: int = 6, seed: int = 0, nsp: bool = True) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(batch_size):
        length = int(rng.integers(8, 40))
        ids = [2, *rng.integers(5, VOCAB, length - 2).tolist(), 3]
        samples.append({"input_ids": ids, "token_type_ids": [0] * length, "next_sentence_label": 0})
    return MaskingCollator(VOCAB, SPECIAL, nsp=nsp)(samples, np.arange(batch_size) + seed)


def test_the_collator_gives_the_labelled_positions():
    batch = collated()
    flat = batch["labels"].reshape(-1)
    assert torch.equal(batch["mlm_positions"], (flat != -100).nonzero().squeeze(1))
    assert batch["mlm_positions"].dtype == torch.long


@pytest.mark.parametrize("pad", [1, 8, 64])
def test_known_positions_give_the_loss_and_gradients_of_the_found_ones(pad):
    torch.manual_seed(0)
    module = BertPretraining(vocab_size=VOCAB, **TINY, **no_dropout())
    batch = collated()
    found = {k: v for k, v in batch.items() if k != "mlm_positions"}

    def run(b):
        module.zero_grad()
        out = pretraining_losses(module.model, b, "mlm_nsp", sparse=True, pad_masked_to=pad)
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        return out, grads

    (known_out, known_grads), (found_out, found_grads) = run(batch), run(found)
    for key in ("loss", "mlm_loss", "nsp_loss", "mlm_count", "mlm_correct"):
        assert torch.equal(known_out[key], found_out[key]), key
    assert known_grads.keys() == found_grads.keys()
    for name, grad in found_grads.items():
        assert torch.equal(known_grads[name], grad), name
    hidden = torch.randn(*batch["labels"].shape, 8)
    gathered, targets = gather_masked(hidden, batch["labels"], pad, batch["mlm_positions"])
    assert gathered.size(0) % pad == 0 and gathered.size(0) == targets.size(0)
    assert int((targets != -100).sum()) == len(batch["mlm_positions"])


def test_a_training_step_never_asks_the_device_for_its_count(monkeypatch):
    module = BertPretraining(vocab_size=VOCAB, **TINY)
    batch = collated(nsp=False)
    module.hparams.objective = "mlm"

    def refuse(*args, **kwargs):
        raise AssertionError("nonzero() inside a training step: a GPU would wait here")

    monkeypatch.setattr(torch.Tensor, "nonzero", refuse)
    monkeypatch.setattr(torch, "nonzero", refuse)
    out = module(batch)
    out["loss"].backward()
    assert out["mlm_count"] == len(batch["mlm_positions"])
