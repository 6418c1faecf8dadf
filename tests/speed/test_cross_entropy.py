"""The fused MLM decoder + cross-entropy (bertlab.speed.cross_entropy) against the plain path.

Run: .venv/bin/python -m pytest tests/speed/test_cross_entropy.py -q
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY, make_batch, no_dropout

from bertlab.model.heads import pretraining_losses
from bertlab.model.module import BertPretraining
from bertlab.speed import cross_entropy
from bertlab.speed.cross_entropy import linear_cross_entropy


def _plain_and_fused(dtype, chunk_bytes=None, monkeypatch=None):
    torch.manual_seed(0)
    n, h, v = 37, 16, 101
    inputs = [torch.randn(n, h), torch.randn(v, h), torch.randn(v)]
    targets = torch.randint(0, v, (n,))
    targets[[3, 20, n - 1]] = -100
    if chunk_bytes:
        monkeypatch.setattr(cross_entropy, "_CPU_CHUNK_BYTES", chunk_bytes)
    results = []
    for fused in (False, True):
        leaves = [x.to(dtype).requires_grad_() for x in inputs]
        if fused:
            loss_sum, correct = linear_cross_entropy(*leaves, targets, accuracy=True)
        else:
            logits = F.linear(*leaves).float()
            loss_sum = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
            correct = ((logits.argmax(-1) == targets) & (targets != -100)).sum()
        (loss_sum / 34).backward()
        results.append((loss_sum.detach(), int(correct), [x.grad for x in leaves]))
    return results


@pytest.mark.parametrize("chunk_bytes", [None, 4 * 101 * 5])  # one chunk; chunks of 5 rows
def test_fused_loss_and_gradients_equal_the_plain_path_in_fp32(chunk_bytes, monkeypatch):
    (plain, plain_correct, plain_grads), (fused, fused_correct, fused_grads) = _plain_and_fused(
        torch.float32, chunk_bytes, monkeypatch
    )
    assert torch.allclose(fused, plain, atol=1e-5, rtol=1e-6)
    assert fused_correct == plain_correct
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_fused_loss_in_bf16_matches_up_to_rounding():
    (plain, _, plain_grads), (fused, _, fused_grads) = _plain_and_fused(torch.bfloat16)
    assert torch.allclose(fused, plain, rtol=1e-3)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert a.dtype == torch.bfloat16 and torch.allclose(a.float(), b.float(), atol=2e-3)


def test_model_losses_and_gradients_with_and_without_the_fused_loss():
    torch.manual_seed(0)
    module = BertPretraining(vocab_size=100, **TINY, **no_dropout())
    batch = make_batch()
    results = {}
    for fused in (True, False):
        for sparse in (True, False):
            module.zero_grad()
            out = pretraining_losses(module.model, batch, "mlm_nsp", sparse=sparse, fused=fused)
            out["loss"].backward()
            grads = {n: p.grad.clone() for n, p in module.model.named_parameters()}
            results[fused, sparse] = (out, grads)
    reference_out, reference_grads = results[False, False]
    for key, (out, grads) in results.items():
        assert torch.allclose(out["loss"], reference_out["loss"], atol=1e-5), key
        assert int(out["mlm_correct"]) == int(reference_out["mlm_correct"]), key
        for name, grad in reference_grads.items():
            assert torch.allclose(grads[name], grad, atol=1e-5, rtol=1e-4), (key, name)


@pytest.mark.parametrize("chunk_bytes", [None, 4 * 10 * 3])  # one chunk; chunks of 3 rows
def test_without_gradients_only_the_loss_is_computed(chunk_bytes, monkeypatch):
    monkeypatch.setattr(cross_entropy, "_WORKSPACES", {})
    if chunk_bytes:
        monkeypatch.setattr(cross_entropy, "_CPU_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(8, 4), torch.randn(10, 4), torch.randn(10)
    targets = torch.randint(0, 10, (8,))
    targets[5] = -100
    hidden, weight, bias = (x.requires_grad_() for x in (hidden, weight, bias))  # as parameters
    with torch.inference_mode():  # as Lightning's validation
        loss_sum, correct = linear_cross_entropy(hidden, weight, bias, targets, accuracy=True)
    assert not cross_entropy._WORKSPACES or not any(
        w.is_inference() for w in cross_entropy._WORKSPACES.values()
    )
    logits = F.linear(hidden, weight, bias).detach()
    expected = F.cross_entropy(logits, targets, reduction="sum")
    assert torch.allclose(loss_sum, expected, atol=1e-5)
    assert int(correct) == int(((logits.argmax(-1) == targets) & (targets != -100)).sum())
