"""The fine-tuning model: a sequence classifier on a pre-trained encoder, as a LightningModule.

Decisions:
- Only the encoder is reused; the classification head is drawn afresh from the seed with its own
  generator, so a model folder and a checkpoint of the same weights give bit-identical starting
  weights, and the same seed gives the same result.
- AdamW without decay on biases and norms, linear warmup over the first `warmup_ratio` of the
  steps then linear decay to 0 (bertlab.model.optim, the pre-training's own pieces).
- The best validation epoch's weights and scores are kept in memory (no checkpoint files): the
  reported validation and test scores are those of the best epoch's weights. Epochs count from 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from bertlab.downstream.tasks import classification_metrics
from bertlab.model.optim import (
    adamw_implementation,
    build_adamw,
    lr_multiplier,
    parameter_groups,
    warn_of_lr,
)


@dataclass(frozen=True)
class FineTuning:
    """How a classifier is fine-tuned: the options `finetune` and DownstreamEvaluation share.

    Each command keeps its own flags (their docstrings are its --help and config keys); both
    gather them here, so the meaning, the limits and the message of each is written once.
    """

    max_seq_len: int = 128  # tokens per example, [CLS] and [SEP] included
    batch_size: int = 32  # examples per optimizer step
    lr: float = 5e-5  # peak learning rate (linear warmup, then linear decay to 0)
    weight_decay: float = 0.01  # AdamW's, not on biases and LayerNorm weights
    warmup_ratio: float = 0.1  # the share of the steps spent warming up
    max_epochs: int = 3  # the most epochs to train

    def check(self, flag: str) -> None:
        """A ValueError naming the flag (`flag` + the field: `--lr`, `Callback.lr`) of the first
        value that means nothing."""
        if self.batch_size < 1:
            raise ValueError(f"{flag}batch_size must be positive, got {self.batch_size}")
        if self.max_seq_len < 8:
            raise ValueError(f"{flag}max_seq_len {self.max_seq_len} is too small (needs >= 8)")
        if self.max_epochs < 1:
            raise ValueError(f"{flag}max_epochs {self.max_epochs} must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"{flag}lr {self.lr} must be positive")
        warn_of_lr(self.lr, f"{flag}lr")
        if not self.weight_decay >= 0:
            raise ValueError(f"{flag}weight_decay {self.weight_decay} must be >= 0 (0: no decay)")
        if not 0 <= self.warmup_ratio <= 1:  # a share of the steps: 2 would warm up past the end
            raise ValueError(f"{flag}warmup_ratio {self.warmup_ratio} must be in [0, 1]")


def classifier_from_encoder(config, encoder_state: dict[str, Tensor], num_labels: int, seed: int):
    """A sequence classifier with the given encoder weights and a head drawn from `seed`."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = num_labels
    config.id2label = {i: str(i) for i in range(num_labels)}
    config.label2id = {str(i): i for i in range(num_labels)}
    model = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = model.base_model.load_state_dict(encoder_state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    _draw_head(model, seed)
    return model.float()


def _draw_head(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    base = {id(p) for p in model.base_model.parameters()}
    with torch.no_grad():
        for parameter in model.parameters():
            if id(parameter) in base:
                continue
            if parameter.ndim >= 2:
                values = torch.randn(parameter.shape, generator=generator) * std
                parameter.copy_(values.to(parameter.dtype))
            else:
                parameter.zero_()


def optimizer_and_schedule(model, lr: float, weight_decay: float, warmup_ratio: float, total: int):
    """AdamW (no decay on biases and norms), warmup then linear decay to 0 over `total` steps."""
    device = next(model.parameters()).device
    optimizer = build_adamw(
        parameter_groups(model, weight_decay), lr, (0.9, 0.999), 1e-8, adamw_implementation(device)
    )
    warmup = min(int(warmup_ratio * total), max(total - 1, 0))
    schedule = lr_multiplier(warmup, max(total, 1), "linear")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class SequenceClassifier(pl.LightningModule):
    """Cross-entropy fine-tuning; keeps the best validation epoch's weights and scores."""

    def __init__(
        self, model, num_labels: int, lr: float, weight_decay: float, warmup_ratio: float
    ) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.scores: dict | None = None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits.float()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train_loss", loss, batch_size=batch["labels"].size(0))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
        self.outputs.append((logits.argmax(-1).cpu(), batch["labels"].cpu(), loss.cpu()))

    test_step = validation_step

    def _scores(self) -> dict:
        predictions, labels, losses = zip(*self.outputs, strict=True)
        predictions, labels = torch.cat(predictions), torch.cat(labels)
        scores = classification_metrics(predictions, labels, self.num_labels)
        scores["loss"] = float(torch.stack(losses).sum() / len(labels))
        self.outputs.clear()
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self._scores()
        self.log("val_accuracy", scores["accuracy"])
        epoch = self.current_epoch + 1
        self.history.append({"epoch": epoch, **scores})
        if self.best is None or scores["accuracy"] > self.best["accuracy"]:
            self.best = {"epoch": epoch, **scores}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def on_test_epoch_end(self) -> None:
        self.scores = self._scores()

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches)
        optimizer, scheduler = optimizer_and_schedule(
            self.model, self.lr, self.weight_decay, self.warmup_ratio, total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
