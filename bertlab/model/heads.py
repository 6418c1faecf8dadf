"""Pre-training losses and metrics computed from `BertForPreTraining`'s parts, not its `forward`.

Decisions:
- `BertForPreTraining.forward` returns a loss only when both MLM and NSP labels are given and runs
  the MLM decoder (hidden -> vocabulary) on every position. We call `model.bert` and the two heads
  ourselves, which is where the sparse head lives.
- Sparse MLM head: the transform and the decoder of `cls.predictions` run only on the positions
  that carry a label (labels != -100), gathered into a [N, hidden] matrix. With a 30k vocabulary
  and 15% masking that skips ~85% of the largest matrix product of a small BERT. The loss and the
  gradients equal the dense computation (a test checks both, fp32, <= 1e-5).
- The labelled positions come from the batch (`mlm_positions`, found by the collator on the
  host) where it has them, so the gather's size is known without asking the device: no
  host-device synchronisation inside a training step. Without them (a batch from elsewhere)
  they are found with `nonzero()`, which waits for a GPU; both give the same loss and gradients.
- The gathered positions are padded to a multiple of `pad_masked_to` (padding rows point at
  position 0 with target -100, so they add nothing to the loss or the gradients): matrix products
  get aligned shapes and `torch.compile` sees a few bucketed sizes instead of a new N every step.
- The MLM loss is a sum over labelled positions divided by their count (clamped to 1), so a batch
  with no masked token gives 0, not NaN, and no data-dependent branch is needed.
- `fused` (the default) computes the decoder and the loss in one autograd function
  (bertlab.speed.cross_entropy), which never builds the fp32 log-probabilities or the zero-filled
  gradient of the [N, V] logits; off, the plain path below runs.
- Logits are cast to fp32 before the log-softmax: a bf16 log-softmax over 30k classes loses the
  loss's precision, and the loss is what the schedule and the checkpoints are judged by.
- Counts (masked tokens, correct predictions) are returned as tensors: nothing here calls
  `.item()`, so a training step never waits for the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import BertForPreTraining

from bertlab.speed.cross_entropy import IGNORE_INDEX, linear_cross_entropy

__all__ = ["IGNORE_INDEX", "gather_masked", "mlm_loss", "nsp_loss", "pretraining_losses"]


def gather_masked(
    hidden: Tensor, labels: Tensor, pad_to_multiple_of: int = 8, positions: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Hidden states [N, H] and targets [N] of the labelled positions (N padded, targets -100).

    positions: the flat indices of the labelled positions (the batch's `mlm_positions`); None
    finds them on the device (a host-device synchronisation on a GPU).
    """
    flat_labels = labels.reshape(-1)
    if positions is None:
        positions = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
    else:
        positions = positions.to(device=flat_labels.device, dtype=torch.long)
    targets = flat_labels.index_select(0, positions)
    if pad_to_multiple_of > 1:
        padding = -positions.numel() % pad_to_multiple_of
        if padding:
            positions = F.pad(positions, (0, padding), value=0)
            targets = F.pad(targets, (0, padding), value=IGNORE_INDEX)
    gathered = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
    return gathered, targets


def mlm_loss(
    model: BertForPreTraining,
    sequence_output: Tensor,
    labels: Tensor,
    sparse: bool = True,
    pad_masked_to: int = 8,
    accuracy: bool = True,
    fused: bool = True,
    positions: Tensor | None = None,
) -> dict[str, Tensor]:
    """Masked-LM loss (mean over labelled positions), label count, correct count (if accuracy).

    positions: the flat indices of the labelled positions, if known (see gather_masked).
    """
    if sparse:
        hidden, targets = gather_masked(sequence_output, labels, pad_masked_to, positions)
    else:
        hidden, targets = sequence_output, labels.reshape(-1)
    labelled = targets != IGNORE_INDEX
    if fused:
        head = model.cls.predictions
        transformed = head.transform(hidden)
        loss_sum, correct = linear_cross_entropy(
            transformed.reshape(-1, transformed.size(-1)),
            head.decoder.weight,
            head.decoder.bias,
            targets,
            accuracy,
        )
    else:
        logits = model.cls.predictions(hidden).float()
        logits = logits.reshape(-1, logits.size(-1))
        loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        if accuracy:
            with torch.no_grad():
                correct = ((logits.argmax(-1) == targets) & labelled).sum()
    count = labelled.sum()
    result = {"mlm_loss": loss_sum / count.clamp(min=1), "mlm_count": count}
    if accuracy:
        result["mlm_correct"] = correct
    return result


def nsp_loss(
    model: BertForPreTraining, pooled_output: Tensor, next_sentence_label: Tensor
) -> dict[str, Tensor]:
    """Next-sentence-prediction loss (mean over the batch) and correct-prediction count."""
    logits = model.cls.seq_relationship(pooled_output).float()
    loss = F.cross_entropy(logits, next_sentence_label.reshape(-1))
    with torch.no_grad():
        correct = (logits.argmax(-1) == next_sentence_label.reshape(-1)).sum()
    return {
        "nsp_loss": loss,
        "nsp_correct": correct,
        "nsp_count": next_sentence_label.new_tensor(next_sentence_label.numel()),
    }


def pretraining_losses(
    model: BertForPreTraining,
    batch: dict[str, Tensor],
    objective: str = "mlm_nsp",
    sparse: bool = True,
    pad_masked_to: int = 8,
    accuracy: bool = True,
    fused: bool = True,
) -> dict[str, Tensor]:
    """Run the encoder and the heads on a batch; `loss` is mlm_loss (+ nsp_loss with mlm_nsp).

    accuracy=False skips the MLM argmax over the vocabulary (a few % of a CPU step).
    """
    outputs = model.bert(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        token_type_ids=batch.get("token_type_ids"),
        return_dict=True,
    )
    result = mlm_loss(
        model, outputs.last_hidden_state, batch["labels"], sparse, pad_masked_to, accuracy, fused,
        positions=batch.get("mlm_positions"),
    )  # fmt: skip
    result["loss"] = result["mlm_loss"]
    if objective == "mlm_nsp":
        if "next_sentence_label" not in batch:
            raise ValueError(
                "model.objective is mlm_nsp but the batch has no next_sentence_label (samples made "
                "with --nsp false?); set model.objective: mlm"
            )
        result.update(nsp_loss(model, outputs.pooler_output, batch["next_sentence_label"]))
        result["loss"] = result["mlm_loss"] + result["nsp_loss"]
    return result
