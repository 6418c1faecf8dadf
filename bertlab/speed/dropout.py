"""Dropout and attention whose random masks cost a fraction of torch's on a CPU.

On the bert-mini bf16 step, torch's CPU dropout (`bernoulli_`, one mt19937 draw per element) was
a quarter of the step, and SDPA with dropout fell back to its math path, which upcasts bf16 to
fp32 and back around every product. `speed.fast_dropout: true` (BertPretraining) swaps both, in
the model it trains, for what is here; off, or on a GPU, torch's own run.

Decisions:
- One 64-bit draw of torch's generator (`random_` on int64, whose values are uniform in
  [0, 2^63)) gives four 15-bit uniform numbers; an element is kept when its number is at least
  round(p · 2^15), so p is quantised to 1/32768 (0.1 becomes 0.100006). Same generator as
  torch's dropout: seeding (`seed_everything`) makes runs repeatable.
- The mask is kept as a multiplier in the input's dtype (0 or 1/(1-p)), as torch's native dropout
  does, so the backward is one product.
- Attention (`attention`, registered with transformers as `bertlab_sdpa`): when training with
  dropout on a CPU, the scores, softmax, dropout and products run in the model's dtype (bf16 with
  the working copy) with the padding mask as an additive bias over keys; otherwise it is
  transformers' own SDPA function, given the same boolean mask as `sdpa`, so evaluation and GPUs
  are unchanged. `_attn_implementation` is not serialised, so checkpoints and exported configs
  never name it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION_NAME = "bertlab_sdpa"
_BITS = 15


def dropout_multiplier(shape: torch.Size, p: float, dtype: torch.dtype, device) -> Tensor:
    """A tensor of 0 (probability ~p) and 1/(1-p), from one 64-bit draw per four elements."""
    n = shape.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    uniform = draws.view(torch.int16)[:n].bitwise_and_(2**_BITS - 1)
    keep = uniform >= round(p * 2**_BITS)
    return keep.view(shape).to(dtype).mul_(1.0 / (1.0 - p))


def fast_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout with cheaper masks on a CPU (torch's own elsewhere)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        # torch.compile generates its own fused random masks; the int16 view here would break
        # its graph.
        return nn.functional.dropout(x, p, True)
    return x * dropout_multiplier(x.shape, p, x.dtype, x.device)


class FastDropout(nn.Dropout):
    """nn.Dropout (same state, same repr) whose CPU masks come from fast_dropout."""

    def forward(self, x: Tensor) -> Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """transformers attention function: SDPA, or bf16-friendly math with fast dropout (CPU)."""
    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    if attention_mask is not None:
        # sdpa_mask's boolean [B, 1, Tq, Tk]: True where a key may be attended.
        bias = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
        scores = scores + bias.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    output = torch.matmul(fast_dropout(probs, dropout), value)
    return output.transpose(1, 2).contiguous(), None


def use_fast_dropout(model: nn.Module) -> None:
    """Swap the model's dropout layers and attention for this file's (in place, state unchanged)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    config = getattr(model, "config", None)
    if config is not None and config._attn_implementation == "sdpa":
        config._attn_implementation = ATTENTION_NAME


ALL_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
