"""The network as transformers users load it: BERT itself, or its conversion for a switched one.

Decisions:
- The architecture switches (prenorm.py: `model.layer_norm pre`, rotary.py:
  `model.position_embedding rotary`) keep the network a `BertForPreTraining` and mark its config;
  an export converts a switched network into the transformers class that computes the same
  function (RobertaPreLayerNorm, RoFormer), so AutoModelForMaskedLM loads it anywhere.
- What the conversions share lives here once: the encoder-only check a switch makes, the
  BertConfig fields every target config copies, and loading the renamed weights strictly
  (nothing unexpected, nothing missing but position-id buffers).
- `transformers_model` is the one place that picks the conversion; export_model and fine-tuning
  (`encoder_config_and_state`) both go through it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertForPreTraining, PretrainedConfig

# BertConfig fields with the same name and meaning in every target config.
SHARED_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
)  # fmt: skip


def refuse_decoder(config: BertConfig, setting: str) -> None:
    """A switch is for encoders: refuse a decoder or cross-attention config, naming `setting`."""
    if config.is_decoder or config.add_cross_attention:
        raise ValueError(f"{setting}: encoders only (no decoder, no cross-attention)")


def shared_fields(bert: BertConfig) -> dict[str, Any]:
    """The fields of `bert` a converted model's config takes unchanged."""
    return {name: getattr(bert, name) for name in SHARED_FIELDS}


def load_converted(
    target_class: type, config: PretrainedConfig, state: dict[str, torch.Tensor]
) -> nn.Module:
    """`target_class(config)` holding `state`; every weight accounted for (eval mode)."""
    converted = target_class(config)
    missing, unexpected = converted.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(name.endswith("position_ids") for name in missing), missing
    return converted.eval()


def transformers_model(model: BertForPreTraining) -> nn.Module:
    """What transformers users load for `model`: itself (post-LN, absolute positions), or its
    conversion (pre-LN: RobertaPreLayerNorm; rotary positions: RoFormer)."""
    from bertlab.model.prenorm import is_pre_layer_norm, to_roberta_prelayernorm
    from bertlab.model.rotary import is_rotary, to_roformer

    if is_rotary(model):
        return to_roformer(model)
    return to_roberta_prelayernorm(model) if is_pre_layer_norm(model) else model


def encoder_config_and_state(model: BertForPreTraining) -> tuple:
    """(config, state dict) of the encoder a downstream classifier is built on, as transformers
    names it: BERT's, RobertaPreLayerNorm's for a pre-LN network, RoFormer's for rotary."""
    exported = transformers_model(model)
    return exported.config, exported.base_model.state_dict()
