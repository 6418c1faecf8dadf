"""The network BertPretraining trains: a Hugging Face BertForPreTraining, new or pretrained.

Decisions:
- Built from sizes with the vocabulary size and padding id of the tokenizer folder, or loaded from
  a local model folder (`from_pretrained`; no Hub names: nothing is fetched at run time). With
  from_pretrained the folder's config.json decides the sizes (the size arguments are ignored);
  dropout comes from the arguments, the attention implementation from the speed section.
- A tokenizer with another vocabulary size resizes the embeddings; `reinit_word_embeddings`
  draws the whole matrix afresh (and zeroes the MLM output bias), for a new language's vocabulary
  whose ids mean nothing to the old matrix. Without it, a folder that holds its own tokenizer must
  agree with ours (same tokens at the same ids, new tokens only appended): continuing with the
  wrong tokenizer is an error, not a silently scrambled model.
- `layer_norm: pre` switches a new network to pre-LN (bertlab.model.prenorm) after it is built;
  `position_init: sinusoidal` draws its position table as sinusoids (the architecture, and what
  transformers loads, are unchanged: the positions are still learned); `position_embedding:
  rotary` switches its attention to rotary positions (bertlab.model.rotary).
- The tokenizer is read with AutoTokenizer, not bertlab.tokenizer.training.load_tokenizer: a
  pretrained BERT's own tokenizer (continue-mlm) has special ids other than bertlab's fixed ones.
- The weights are fp32 whatever the folder stored: precision is the trainer's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForPreTraining

from bertlab.files.artefacts import check_model_folder, check_model_weights
from bertlab.model.prenorm import MARKER as PRE_LN
from bertlab.model.prenorm import use_pre_layer_norm
from bertlab.model.rotary import MARKER as ROTARY
from bertlab.model.rotary import use_rotary

# The model shape: what a from_pretrained folder decides, and what a benchmark's systems share.
SHAPE_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings",
)  # fmt: skip


def _load_tokenizer(path: str, flag: str = "model.tokenizer"):
    from bertlab.tokenizer.loading import open_tokenizer

    return open_tokenizer(path, flag)


def _has_tokenizer(folder: Path) -> bool:
    names = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    return any((folder / name).is_file() for name in names)


def _extends(old: dict[str, int], new: dict[str, int]) -> bool:
    """Whether vocabulary `new` keeps every token of `old` at its id (equal, or extended)."""
    return all(new.get(token) == index for token, index in old.items())


def _vocabulary(hp: Mapping[str, Any]) -> tuple[int | None, int]:
    if hp["tokenizer"] is None:
        return hp["vocab_size"], 0
    tokenizer = _load_tokenizer(hp["tokenizer"])
    if tokenizer.pad_token_id is None:
        raise ValueError(f"model.tokenizer: {hp['tokenizer']} has no padding token")
    size, pad_id = len(tokenizer), int(tokenizer.pad_token_id)
    if hp["vocab_size"] is not None and hp["vocab_size"] != size:
        raise ValueError(
            f"model.vocab_size {hp['vocab_size']} disagrees with the tokenizer {hp['tokenizer']} "
            f"({size} tokens); leave model.vocab_size unset"
        )
    return size, pad_id


def build_network(hp: Mapping[str, Any], attn_implementation: str = "sdpa") -> BertForPreTraining:
    """The BertForPreTraining that BertPretraining's hyperparameters `hp` describe."""
    vocab_size, pad_id = _vocabulary(hp)
    if hp["from_pretrained"]:
        if hp.get("layer_norm", "post") == "pre":
            raise ValueError(
                "model.layer_norm pre builds a new pre-LN network; model.from_pretrained "
                "continues a post-LN BERT: set one of them"
            )
        if hp.get("position_embedding", "absolute") == "rotary":
            raise ValueError(
                "model.position_embedding rotary builds a new network; model.from_pretrained "
                "continues a BERT with absolute positions: set one of them"
            )
        return _load_pretrained(hp, vocab_size, pad_id, attn_implementation)
    if vocab_size is None:
        raise ValueError("model.tokenizer is required (or model.vocab_size, or from_pretrained)")
    for key in SHAPE_KEYS:  # transformers would build these, then fail mid-step or train nothing
        if hp[key] < 1:
            raise ValueError(f"--model.{key} {hp[key]} must be at least 1")
    if hp["hidden_size"] % hp["num_attention_heads"]:
        raise ValueError(
            f"--model.hidden_size {hp['hidden_size']} is not a multiple of "
            f"--model.num_attention_heads {hp['num_attention_heads']}"
        )
    config = BertConfig(
        vocab_size=vocab_size,
        **{key: hp[key] for key in SHAPE_KEYS},
        hidden_dropout_prob=hp["hidden_dropout_prob"],
        attention_probs_dropout_prob=hp["attention_probs_dropout_prob"],
        initializer_range=hp["initializer_range"],
        pad_token_id=pad_id,
    )
    config._attn_implementation = attn_implementation
    model = BertForPreTraining(config)
    if hp.get("position_init", "random") == "sinusoidal":
        sinusoidal_positions(model)
    if hp.get("layer_norm", "post") == "pre":
        use_pre_layer_norm(model)
    if hp.get("position_embedding", "absolute") == "rotary":
        use_rotary(model)
    return model


def like_saved(model: BertForPreTraining) -> BertForPreTraining:
    """Apply to a freshly built BertForPreTraining the switches its config records (pre-LN,
    rotary positions), as a checkpoint's network had them; return it."""
    if getattr(model.config, PRE_LN, "post") == "pre":
        use_pre_layer_norm(model)
    if getattr(model.config, ROTARY, "absolute") == "rotary":
        use_rotary(model)
    return model


def sinusoidal_positions(model: BertForPreTraining) -> None:
    """Draw the (learned) position embeddings as the Transformer's sinusoids, at the scale of
    the other initial weights: one fixed linear map takes position p to p - k for every p, so a
    head that attends to its neighbours is one matrix to learn, not one vector per position."""
    table = model.bert.embeddings.position_embeddings.weight
    positions, width = table.shape
    position = torch.arange(positions, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    waves = torch.zeros(positions, width)
    waves[:, 0::2] = torch.sin(position * rates)
    waves[:, 1::2] = torch.cos(position * rates)[:, : width // 2]
    scale = model.config.initializer_range / float(waves.std())
    with torch.no_grad():
        table.copy_(waves * scale)


def _load_pretrained(
    hp: Mapping[str, Any], vocab_size: int | None, pad_id: int, attn_implementation: str
) -> BertForPreTraining:
    folder = Path(hp["from_pretrained"])
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model.from_pretrained: {folder} is not a Hugging Face model folder "
            "(no config.json); Hub names are not fetched, download the model first"
        )
    check_model_folder(folder, "model.from_pretrained")  # a damaged file named, not a traceback
    check_model_weights(folder, "model.from_pretrained")
    config = BertConfig.from_pretrained(folder)
    if config.model_type != "bert":
        raise ValueError(
            f"model.from_pretrained: {folder} holds a {config.model_type!r} model, not BERT"
        )
    if hp["tokenizer"] and not hp["reinit_word_embeddings"] and _has_tokenizer(folder):
        theirs = _load_tokenizer(str(folder), "model.from_pretrained").get_vocab()
        if not _extends(theirs, _load_tokenizer(hp["tokenizer"]).get_vocab()):
            raise ValueError(
                f"model.from_pretrained {folder} was trained with another tokenizer than "
                f"{hp['tokenizer']} (the data's): make the samples with {folder}'s tokenizer, "
                "or set model.reinit_word_embeddings: true to learn new word embeddings"
            )
    model = BertForPreTraining.from_pretrained(
        folder,
        attn_implementation=attn_implementation,
        hidden_dropout_prob=hp["hidden_dropout_prob"],
        attention_probs_dropout_prob=hp["attention_probs_dropout_prob"],
    )
    if vocab_size is not None and vocab_size != model.config.vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    if vocab_size is not None:
        model.config.pad_token_id = pad_id
    if hp["reinit_word_embeddings"]:
        with torch.no_grad():
            embeddings = model.get_input_embeddings().weight
            embeddings.normal_(0.0, model.config.initializer_range)
            embeddings[model.config.pad_token_id].zero_()
            model.cls.predictions.bias.zero_()
    return model.float()


def never_trained(model: torch.nn.Module) -> bool:
    """Whether every LayerNorm of `model` still has its initial scale 1 and shift 0.

    Every one of them is on the path of the masked-LM loss and has no weight decay to hold it,
    so the first optimizer step with a non-zero learning rate moves them all.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    return bool(norms) and all(
        (m.weight is None or bool((m.weight == 1).all()))
        and (m.bias is None or bool((m.bias == 0).all()))
        for m in norms
    )
