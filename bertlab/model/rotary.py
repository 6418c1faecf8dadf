"""Rotary positions (`model.position_embedding: rotary`): BERT whose attention knows relative order.

Transformers' BERT adds a learned absolute position vector to each token. To use its neighbours,
a masked token must first learn position vectors whose query-key products single out the tokens
next to it, and until it has, it predicts word frequencies: the MLM plateau on which every
absolute-position run of this project sat for millions of tokens (BENCHMARKS.md, "Time to
quality"). Rotary positions (RoFormer, Su et al. 2021) rotate each query and key by an angle
proportional to its position, so a query-key product depends on the two tokens' distance and
"attend to the next word" is the same weights at every position. Measured: 2.2 nats below the
unigram model after 4M tokens, where absolute positions are at 0.

Decisions:
- The network stays a `BertForPreTraining` (bertlab's heads, speed paths, checkpoints and most
  parameter names unchanged): `use_rotary` switches each layer's self-attention class for one
  that rotates queries and keys before the attention function (so SDPA, the fast-dropout
  attention and eager all apply), and the embeddings for ones that add no position vector
  (`bert.embeddings.position_embeddings` stays in the state dict, unused, so checkpoints keep
  their shape). The config's `bertlab_positions` attribute says "rotary" and is saved with it.
- The rotation is transformers' RoFormer's, computed by its own code (the sinusoid table of
  `RoFormerSinusoidalPositionalEmbedding`, `apply_rotary_position_embeddings`), with values not
  rotated (`rotary_value: false`): an export is a renaming of weights into
  `RoFormerForMaskedLM` (`to_roformer`), which any transformers user loads with
  AutoModelForMaskedLM; export_model's logit check compares the two.
- transformers has no RoFormer class with a next-sentence head, nor a pre-LN RoFormer: rotary
  positions are for `objective: mlm` with post-LN.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertForPreTraining
from transformers.models.bert.modeling_bert import (
    ALL_ATTENTION_FUNCTIONS,
    BertEmbeddings,
    BertSelfAttention,
    eager_attention_forward,
)
from transformers.models.roformer.modeling_roformer import (
    RoFormerSelfAttention,
    RoFormerSinusoidalPositionalEmbedding,
)

from bertlab.model.conversion import load_converted, refuse_decoder, shared_fields

MARKER = "bertlab_positions"  # the BertConfig attribute (saved in checkpoints) that says "rotary"


def sinusoid_table(positions: int, head_size: int) -> torch.Tensor:
    """RoFormer's table: [positions, head_size], sines in the first half, cosines in the second."""
    return RoFormerSinusoidalPositionalEmbedding(positions, head_size).create_weight()


class _RotarySelfAttention(BertSelfAttention):
    def forward(self, hidden_states: torch.Tensor, attention_mask=None, cache=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        query = self.query(hidden_states).view(*hidden_shape).transpose(1, 2)
        key = self.key(hidden_states).view(*hidden_shape).transpose(1, 2)
        value = self.value(hidden_states).view(*hidden_shape).transpose(1, 2)
        table = self.rotary_table[: input_shape[-1]].to(query.dtype)[None, None]
        query, key = RoFormerSelfAttention.apply_rotary_position_embeddings(table, query, key)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention(
            self, query, key, value, attention_mask,
            dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs,
        )  # fmt: skip
        return output.reshape(*input_shape, -1).contiguous(), weights


class _NoPositionEmbeddings(BertEmbeddings):
    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                cache_length: int = 0) -> torch.Tensor:  # fmt: skip
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros(
                inputs_embeds.shape[:-1], dtype=torch.long, device=inputs_embeds.device
            )
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


def is_rotary(model: nn.Module) -> bool:
    """Whether `model` (a BertForPreTraining) was switched to rotary positions."""
    return getattr(model.config, MARKER, "absolute") == "rotary"


def use_rotary(model: BertForPreTraining) -> BertForPreTraining:
    """Make `model`'s attention rotary in place (no parameter added or removed); return it."""
    config = model.config
    refuse_decoder(config, "model.position_embedding rotary")
    head_size = config.hidden_size // config.num_attention_heads
    if head_size % 2:
        raise ValueError(
            f"model.position_embedding rotary needs an even head size; hidden_size "
            f"{config.hidden_size} / num_attention_heads {config.num_attention_heads} = {head_size}"
        )
    table = sinusoid_table(config.max_position_embeddings, head_size)
    model.bert.embeddings.__class__ = _NoPositionEmbeddings
    for layer in model.bert.encoder.layer:
        attention = layer.attention.self
        attention.__class__ = _RotarySelfAttention
        device = attention.query.weight.device
        attention.register_buffer("rotary_table", table.to(device), persistent=False)
    setattr(config, MARKER, "rotary")
    return model


def to_roformer(model: BertForPreTraining):
    """The same network as a transformers RoFormerForMaskedLM (fp32 weights copied)."""
    from transformers import RoFormerConfig, RoFormerForMaskedLM

    assert is_rotary(model)
    bert = model.config
    config = RoFormerConfig(
        **shared_fields(bert),
        embedding_size=bert.hidden_size,
        max_position_embeddings=bert.max_position_embeddings,
        rotary_value=False,
        tie_word_embeddings=True,
    )
    source = {k: v.detach().float() for k, v in model.state_dict().items()}
    target = {
        "roformer." + k[len("bert.") :]: v
        for k, v in source.items()
        if k.startswith("bert.") and not k.startswith(("bert.embeddings.position_", "bert.pooler."))
    }
    target |= {k: v for k, v in source.items() if k.startswith("cls.predictions.")}
    head_size = bert.hidden_size // bert.num_attention_heads
    target["roformer.encoder.embed_positions.weight"] = sinusoid_table(
        bert.max_position_embeddings, head_size
    )
    return load_converted(RoFormerForMaskedLM, config, target)
