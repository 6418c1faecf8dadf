"""Resuming from a checkpoint: the model and data settings it brings against the user's.

A run started with `--ckpt_path` builds the model the checkpoint holds: LightningCLI reads the
checkpoint's hyperparameters into `model`, over whatever the config says. That must never be
silent when it contradicts the user.

Decisions:
- A model key the user set explicitly (on the command line or in a `--config` file: both are
  the user's own statement, unlike a default) whose value differs from the checkpoint's is an
  error naming the key and both values, every such key in one line: training the checkpoint's
  64-wide model when the user asked for 256 and recording 64 in the run's config is the silent
  contradiction this module exists to refuse. The user drops the setting or starts a new run.
- A key the user did not set is taken from the checkpoint; when that changes what the run would
  otherwise have used (the default), the keys and values taken are logged in one line.
- `tokenizer` is not compared here: it is linked from the data module, whose own checks refuse
  samples of another tokenizer. Values compare as plain data (a tuple equals the same list, 1e-3
  equals 0.001), as YAML and the checkpoint's pickle spell them differently.
- Data settings are not taken from the checkpoint (Lightning restores only the model's): the
  resumed run uses what this command line and config say. Those the loader's saved position
  checks (batch size, seed, workers, the samples) are refused there when they differ; the
  others that change what is trained on (masking, shuffling) are legitimate to change mid-run,
  so a difference is one warning line naming both values, set or default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_COMPARED = {"tokenizer", "_instantiator", "_class_path"}
# Settings of how weights are trained, not of what they compute: validate and test, which only
# score the checkpoint's weights, never contradict it through them (a config shared with fit).
TRAINING_ONLY = frozenset({
    "lr", "weight_decay", "betas", "eps", "warmup_steps", "lr_schedule", "trainable",
    "initializer_range", "reinit_word_embeddings", "position_init", "hidden_dropout_prob",
    "attention_probs_dropout_prob",
})  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return ("bool", value)  # True is not the number 1 here
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def same(a: Any, b: Any) -> bool:
    """Whether two settings are the same value, however YAML or pickle spelled them."""
    return _plain(a) == _plain(b)


def check_resume(
    ckpt_path: str,
    checkpoint_model: Mapping[str, Any],
    explicit_model: Mapping[str, Any],
    current_model: Mapping[str, Any],
) -> str | None:
    """Refuse explicit model settings the checkpoint contradicts; describe the ones it supplies.

    Args:
        ckpt_path: the checkpoint, for the messages.
        checkpoint_model: the model hyperparameters saved in the checkpoint.
        explicit_model: the model keys the user set (command line and config files).
        current_model: the model section as parsed (explicit values and defaults).

    Returns the one line to log about the values taken from the checkpoint (None: none changed).
    """
    conflicts, taken = [], []
    for key, theirs in checkpoint_model.items():
        if key in NOT_COMPARED:
            continue
        if key in explicit_model:
            mine = explicit_model[key]
            if not same(mine, theirs):
                conflicts.append(
                    f"model.{key} is set to {mine!r} but the checkpoint has {theirs!r}"
                )
        elif key in current_model and not same(current_model[key], theirs):
            taken.append(f"{key}={theirs!r}")
    if conflicts:
        raise ValueError(
            f"--ckpt_path {ckpt_path}: " + "; ".join(conflicts) + ". A run from a checkpoint "
            "keeps the checkpoint's model: drop these settings, or train a new run without "
            "--ckpt_path"
        )
    if not taken:
        return None
    return f"--ckpt_path {ckpt_path}: model settings taken from the checkpoint: " + ", ".join(taken)


# The data settings that change what is trained on but not where the saved position points.
DATA_COMPARED = ("mlm_probability", "whole_word_masking", "shuffle_buffer_size", "on_bad_sample")


def data_changes(
    ckpt_path: str,
    checkpoint_data: Mapping[str, Any],
    explicit_data: Mapping[str, Any],
    current_data: Mapping[str, Any],
) -> str | None:
    """The one warning line for data settings that differ from the checkpoint's run (or None)."""
    changes = []
    for key in DATA_COMPARED:
        if key in checkpoint_data and key in current_data:
            theirs, mine = checkpoint_data[key], current_data[key]
            if not same(mine, theirs):
                how = "set" if key in explicit_data else "the default"
                changes.append(f"data.{key} {theirs!r} -> {mine!r} ({how})")
    if not changes:
        return None
    return (
        f"warning: --ckpt_path {ckpt_path}: resuming with other data settings than the "
        "checkpoint's run: " + ", ".join(changes) + "; give the run's values to keep them"
    )
