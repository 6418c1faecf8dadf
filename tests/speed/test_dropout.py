"""Fast dropout and the attention function beside it (bertlab.speed.dropout), against torch's.

Run: .venv/bin/python -m pytest tests/speed/test_dropout.py -q
"""

from __future__ import annotations

import torch
from tiny import TINY, make_batch
from torch import nn

from bertlab.model.heads import pretraining_losses
from bertlab.model.module import BertPretraining
from bertlab.speed.dropout import ATTENTION_NAME, FastDropout, fast_dropout
from bertlab.speed.settings import Speed


def test_masks_drop_p_of_the_elements_and_keep_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(1_000_003)
    y = fast_dropout(x, 0.1)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.1) < 0.002
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.9)))
    assert abs(float(y.mean()) - 1.0) < 0.005
    # Successive masks differ, a reseeded generator repeats them.
    assert not torch.equal(fast_dropout(x, 0.1), y)
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, 0.1), y)


def test_backward_uses_the_forward_mask_and_eval_is_the_identity():
    torch.manual_seed(0)
    x = torch.randn(64, 33, dtype=torch.bfloat16, requires_grad=True)
    y = fast_dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    assert torch.equal(y, x.detach() * x.grad)  # the gradient is the forward's multiplier
    assert set(x.grad.unique().tolist()) <= {0.0, float(torch.tensor(1 / 0.7).bfloat16())}
    assert y.dtype == torch.bfloat16
    layer = FastDropout(0.3).eval()
    assert layer(x) is x
    assert fast_dropout(x, 0.0) is x


def test_model_uses_them_only_where_they_change_nothing_but_speed():
    torch.manual_seed(0)
    kwargs = dict(vocab_size=100, **TINY)
    fast = BertPretraining(speed=Speed(fast_dropout=True, attn_implementation="sdpa"), **kwargs)
    plain = BertPretraining(speed=Speed(fast_dropout=False, attn_implementation="sdpa"), **kwargs)
    plain.load_state_dict(fast.state_dict())
    assert fast.model.config._attn_implementation == ATTENTION_NAME
    assert not any(type(m) is nn.Dropout for m in fast.model.bert.modules())
    assert "attn_implementation" not in str(fast.model.config.to_dict().keys())
    batch = make_batch()
    fast.eval(), plain.eval()
    with torch.no_grad():  # without dropout: the same function (transformers' SDPA)
        a = pretraining_losses(fast.model, batch)["loss"]
        b = pretraining_losses(plain.model, batch)["loss"]
    assert torch.allclose(a, b, atol=1e-6)
    # Training: random masks differ, but the loss and its spread over masks agree.
    fast.train(), plain.train()
    losses = {}
    for name, module in (("fast", fast), ("plain", plain)):
        torch.manual_seed(1)
        with torch.no_grad():
            losses[name] = torch.stack([module(batch)["loss"] for _ in range(40)])
    assert abs(float(losses["fast"].mean() - losses["plain"].mean())) < 0.05
    assert float(losses["fast"].std()) > 0


def test_attention_with_dropout_matches_sdpa_math_given_the_same_mask(monkeypatch):
    """The bf16-friendly path is attention: same result as SDPA when the mask is all ones."""
    from bertlab.speed import dropout as module

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[1, :, :, 5:] = False
    monkeypatch.setattr(module, "dropout_multiplier", lambda shape, p, dtype, device: 1.0)
    layer = nn.Module()
    layer.is_causal = False
    ours, _ = module.attention(layer, q, k, v, mask, dropout=0.5, scaling=0.3)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, mask, scale=0.3)
    assert torch.allclose(ours, reference.transpose(1, 2), atol=1e-5)
