"""Pre-LayerNorm BERT (`model.layer_norm: pre`): the same modules, the LayerNorms moved in front.

transformers' BERT is post-LN: each sublayer's output is added to its input and then normalised.
Pre-LN normalises each sublayer's input and adds its output to an untouched residual stream, with
one LayerNorm after the last layer (Xiong et al. 2020; Cramming, MosaicBERT and most recent
encoders train this way): it takes larger learning rates without warm-up trouble, which is what
a short budget needs (BENCHMARKS.md, "Time to quality").

Decisions:
- The network stays a `BertForPreTraining` (bertlab's heads, speed paths, checkpoints and
  parameter names are unchanged); `use_pre_layer_norm` switches each layer's class for one whose
  forward is pre-LN and gives the encoder a final LayerNorm (`bert.encoder.LayerNorm`, the one
  new parameter pair). Each layer's `attention.output.LayerNorm` becomes the LayerNorm before
  attention, its `output.LayerNorm` the one before the feed-forward block.
- The order of operations is exactly that of transformers' `RobertaPreLayerNorm` classes, so an
  export is a renaming of weights into `RobertaPreLayerNormForMaskedLM` (`to_roberta_prelayernorm`),
  which any transformers user loads with AutoModelForMaskedLM; export_model's logit check
  compares the two. RoBERTa numbers positions from `pad_token_id + 1`, so the position table
  gains `pad_token_id + 1` leading rows (never used by a real token).
- transformers has no pre-LN class with a next-sentence head: pre-LN is for `objective: mlm`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertForPreTraining
from transformers.models.bert.modeling_bert import BertAttention, BertEncoder, BertLayer

from bertlab.model.conversion import load_converted, refuse_decoder, shared_fields

MARKER = "bertlab_layer_norm"  # the BertConfig attribute (saved in checkpoints) that says "pre"


class _PreNormAttention(BertAttention):
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.output.LayerNorm(hidden_states)
        attention, weights = self.self(normed, attention_mask=attention_mask, cache=cache, **kwargs)
        return hidden_states + self.output.dropout(self.output.dense(attention)), weights


class _PreNormLayer(BertLayer):
    def feed_forward_chunk(self, attention_output: torch.Tensor) -> torch.Tensor:
        normed = self.output.LayerNorm(attention_output)
        hidden = self.intermediate(normed)
        return attention_output + self.output.dropout(self.output.dense(hidden))


class _PreNormEncoder(BertEncoder):
    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.last_hidden_state = self.LayerNorm(output.last_hidden_state)
        return output


def is_pre_layer_norm(model: nn.Module) -> bool:
    """Whether `model` (a BertForPreTraining) was switched to pre-LN."""
    return getattr(model.config, MARKER, "post") == "pre"


def use_pre_layer_norm(model: BertForPreTraining) -> BertForPreTraining:
    """Make `model` pre-LN in place (a new final LayerNorm, weights 1 and biases 0); return it."""
    config = model.config
    refuse_decoder(config, "model.layer_norm pre")
    encoder = model.bert.encoder
    if not isinstance(encoder, _PreNormEncoder):
        encoder.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        encoder.__class__ = _PreNormEncoder
    for layer in encoder.layer:
        layer.__class__ = _PreNormLayer
        layer.attention.__class__ = _PreNormAttention
    setattr(config, MARKER, "pre")
    return model


def to_roberta_prelayernorm(model: BertForPreTraining):
    """The same network as a transformers RobertaPreLayerNormForMaskedLM (fp32 weights copied)."""
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM

    assert is_pre_layer_norm(model)
    bert = model.config
    offset = bert.pad_token_id + 1  # RoBERTa's first real position id
    config = RobertaPreLayerNormConfig(
        **shared_fields(bert),
        max_position_embeddings=bert.max_position_embeddings + offset,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    )
    source = {k: v.detach().float() for k, v in model.state_dict().items()}
    target: dict[str, torch.Tensor] = {}
    prefix = "roberta_prelayernorm."
    for name in ("word_embeddings", "token_type_embeddings"):
        target[f"{prefix}embeddings.{name}.weight"] = source[f"bert.embeddings.{name}.weight"]
    positions = source["bert.embeddings.position_embeddings.weight"]
    padding = torch.zeros(offset, positions.size(1))
    target[f"{prefix}embeddings.position_embeddings.weight"] = torch.cat([padding, positions])
    renames = {
        "bert.embeddings.LayerNorm": f"{prefix}embeddings.LayerNorm",
        "bert.encoder.LayerNorm": f"{prefix}LayerNorm",
        "cls.predictions.transform.dense": "lm_head.dense",
        "cls.predictions.transform.LayerNorm": "lm_head.layer_norm",
    }
    for i in range(bert.num_hidden_layers):
        ours, theirs = f"bert.encoder.layer.{i}.", f"{prefix}encoder.layer.{i}."
        renames |= {
            ours + "attention.self.query": theirs + "attention.self.query",
            ours + "attention.self.key": theirs + "attention.self.key",
            ours + "attention.self.value": theirs + "attention.self.value",
            ours + "attention.output.dense": theirs + "attention.output.dense",
            ours + "attention.output.LayerNorm": theirs + "attention.LayerNorm",
            ours + "intermediate.dense": theirs + "intermediate.dense",
            ours + "output.LayerNorm": theirs + "intermediate.LayerNorm",
            ours + "output.dense": theirs + "output.dense",
        }
    for old, new in renames.items():
        for kind in ("weight", "bias"):
            target[f"{new}.{kind}"] = source[f"{old}.{kind}"]
    target["lm_head.bias"] = source["cls.predictions.bias"]
    target["lm_head.decoder.weight"] = target[f"{prefix}embeddings.word_embeddings.weight"]
    target["lm_head.decoder.bias"] = source["cls.predictions.bias"]
    return load_converted(RobertaPreLayerNormForMaskedLM, config, target)
