"""BertPretraining: the LightningModule that pre-trains a `transformers.BertForPreTraining`.

Decisions:
- The network is a stock `BertForPreTraining` (bertlab.model.network: built from sizes, or loaded
  with `from_pretrained` from a local folder), so a checkpoint's `state_dict` minus the `model.`
  prefix is a Hugging Face state dict and export needs no conversion. The losses are computed in
  `bertlab.model.heads` (sparse MLM head), what trains and the optimizer in `bertlab.model.optim`.
- The vocabulary size and the padding id come from the tokenizer folder (`tokenizer`, which the
  CLI links from the data, so a user states it once); `vocab_size` is for runs without one.
- Hyperparameters are saved as plain values (`save_hyperparameters`), and the checkpoint also
  holds `bert_config` (the model's `config.to_dict()`), so a checkpoint loads with
  `torch.load(weights_only=True)` and export can rebuild the model without reading our args.
- Metrics per stage (`train/`, `val/`, `test/`): loss, mlm_loss, mlm_accuracy, perplexity, and
  nsp_loss, nsp_accuracy with the NSP objective. `val_loss` (= val/loss) is the checkpoint
  monitor. Epoch values are token-weighted (MLM) / sample-weighted (NSP) means over all batches
  and processes, and perplexity is exp of the epoch's mean MLM loss, not a mean of exps.
- How fast the model trains is not a hyperparameter: `speed` (bertlab.speed.settings.Speed, the
  CLI's `speed:` section) is resolved from the device, used, and left out of `save_hyperparameters`
  and so out of checkpoints. A module built without it (tests, tools) resolves `auto` itself for
  the device it will most likely train on. The bf16 working copy (bertlab.speed.bf16) is what trains
  when `speed.bf16_working_copy` is on; validation, checkpoints and export see the fp32 master.
  The training MLM accuracy is computed only on the steps that log it. Dropout is a modelling
  choice (recent recipes train with 0).
- On a CPU, fitting sets glibc's allocator to keep freed memory (`speed.keep_freed_memory`,
  bertlab.speed.allocator): otherwise the step's large temporaries are fresh mmaps whose page faults
  cost 4-12% of a bf16 step (BENCHMARKS.md's ablation; a profiled loop).
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics.aggregation import MeanMetric
from transformers import BertForPreTraining

from bertlab.model.heads import pretraining_losses
from bertlab.model.network import build_network
from bertlab.model.optim import (
    BUDGET_WARMUP_SHARE,
    build_adamw,
    lr_multiplier,
    parameter_groups,
    select_trainable,
    warn_of_lr,
)
from bertlab.model.time_budget import BudgetClock, budget_seconds
from bertlab.speed.allocator import keep_freed_memory
from bertlab.speed.bf16 import Bf16WorkingCopy
from bertlab.speed.dropout import use_fast_dropout
from bertlab.speed.flops import model_training_flops
from bertlab.speed.settings import Speed, probe_device, resolve

OBJECTIVES = ("mlm_nsp", "mlm")


def _compile(model: BertForPreTraining, fused_mlm_loss: bool) -> None:
    # In place: the state-dict keys stay those of the Hugging Face model. The fused loss runs
    # the head's transform itself and the decoder in its own function, which is not compiled.
    model.bert.compile(dynamic=False)
    head = model.cls.predictions
    (head.transform if fused_mlm_loss else head).compile(dynamic=False)


def _refuse_nulls(**numbers: float | None) -> None:
    """`lr: null` in a config reaches the model as None: a TypeError at the first comparison."""
    for key, value in numbers.items():
        if value is None:
            raise ValueError(f"--model.{key} is null; give a number (or leave it out)")


class BertPretraining(pl.LightningModule):
    """Pre-train a Hugging Face BertForPreTraining: masked LM, optionally next-sentence prediction.

    Args:
        tokenizer: Tokenizer folder; gives the vocabulary size and the padding id. Linked from
            data.tokenizer by the `bertlab` command.
        hidden_size: Width of the model (ignored with from_pretrained, as are the other sizes).
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer (must divide hidden_size).
        intermediate_size: Width of the feed-forward layers.
        max_position_embeddings: Longest sequence the model can take.
        hidden_dropout_prob: Dropout on embeddings and layer outputs (0 skips the masks' cost).
        attention_probs_dropout_prob: Dropout on attention probabilities.
        objective: mlm_nsp (masked LM + next-sentence prediction, as the original BERT) or mlm.
        trainable: all, word_embeddings (the word embeddings, tied to the MLM decoder, and the MLM
            output bias), or parameter-name patterns (fnmatch, or `re:` + a regular expression).
        from_pretrained: Local folder of a Hugging Face BERT to continue from.
        reinit_word_embeddings: With from_pretrained, draw new word embeddings (a new vocabulary).
        vocab_size: Vocabulary size when no tokenizer is given (benchmarks, tests).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Optimizer steps of linear warmup.
        lr_schedule: linear (decay to 0 at trainer.max_steps, or at the end of trainer.max_time
            when max_steps is -1: a time budget) or constant after warmup.
        speed: How the run computes (bertlab.speed.settings.Speed; the CLI's `speed:` section,
            linked here): not a hyperparameter, not saved in checkpoints. None or `auto` values are
            resolved for the device this process would train on.
        initializer_range: Standard deviation of the initial weights.
        layer_norm: post (transformers' BERT) or pre (LayerNorm before each sublayer; exported
            as RobertaPreLayerNorm; objective mlm).
        position_init: random or sinusoidal initial values of the absolute position table.
        position_embedding: absolute (BERT's learned position vectors) or rotary (queries and
            keys rotated by position, as RoFormer; exported as RoFormerForMaskedLM; objective
            mlm, post-LN): the one change measured to leave the MLM plateau early.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 1024,
        max_position_embeddings: int = 512,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        objective: Literal["mlm_nsp", "mlm"] = "mlm_nsp",
        trainable: str | list[str] = "all",
        from_pretrained: str | None = None,
        reinit_word_embeddings: bool = False,
        vocab_size: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        warmup_steps: int = 10000,
        lr_schedule: Literal["linear", "constant"] = "linear",
        initializer_range: float = 0.02,
        layer_norm: Literal["post", "pre"] = "post",
        position_init: Literal["random", "sinusoidal"] = "random",
        position_embedding: Literal["absolute", "rotary"] = "absolute",
        speed: Speed | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["speed"])
        speed = speed or Speed()
        # Settings the user left to `auto` may be changed once the trainer is known (precision).
        self._explicit_speed = speed.explicit()
        if not speed.is_resolved():
            speed = resolve(speed, probe_device()).speed
        self.speed = speed
        if objective not in OBJECTIVES:
            raise ValueError(f"model.objective must be one of {OBJECTIVES}, got {objective!r}")
        if position_init not in ("random", "sinusoidal"):
            raise ValueError(
                f"model.position_init must be random or sinusoidal, got {position_init!r}"
            )
        if layer_norm not in ("post", "pre"):
            raise ValueError(f"model.layer_norm must be post or pre, got {layer_norm!r}")
        if position_embedding not in ("absolute", "rotary"):
            raise ValueError(
                f"model.position_embedding must be absolute or rotary, got {position_embedding!r}"
            )
        if position_embedding == "rotary" and (objective != "mlm" or layer_norm != "post"):
            raise ValueError(
                "model.position_embedding rotary exports to transformers' RoFormerForMaskedLM, "
                "which is post-LN and has no next-sentence head: set model.objective mlm and "
                "model.layer_norm post"
            )
        if position_embedding == "rotary" and position_init != "random":
            raise ValueError("model.position_init sets absolute positions: not with rotary")
        if layer_norm == "pre" and objective != "mlm":
            raise ValueError(
                "model.layer_norm pre exports to transformers' RobertaPreLayerNorm classes, "
                "which have no next-sentence head: set model.objective mlm"
            )
        _refuse_nulls(lr=lr, weight_decay=weight_decay, eps=eps, warmup_steps=warmup_steps,
                      hidden_dropout_prob=hidden_dropout_prob, initializer_range=initializer_range,
                      attention_probs_dropout_prob=attention_probs_dropout_prob)  # fmt: skip
        lr_multiplier(warmup_steps, None, "constant")  # validates warmup_steps early
        for key, p in (("hidden_dropout_prob", hidden_dropout_prob),
                       ("attention_probs_dropout_prob", attention_probs_dropout_prob)):  # fmt: skip
            if not 0 <= p < 1:  # torch's own message names no key
                raise ValueError(f"model.{key} must be in [0, 1), got {p}")
        if not lr > 0:  # 0 trains nothing and saves the initial weights; below, torch's message
            raise ValueError(f"model.lr must be positive, got {lr}")
        warn_of_lr(lr, "--model.lr")
        if not weight_decay >= 0:  # AdamW would grow the weights, silently
            raise ValueError(f"--model.weight_decay {weight_decay} must be >= 0 (0: no decay)")
        if lr_schedule not in ("linear", "constant"):
            raise ValueError(f"model.lr_schedule must be linear or constant, got {lr_schedule!r}")
        self.model = build_network(self.hparams, speed.attn_implementation)
        if speed.fast_dropout:
            use_fast_dropout(self.model)
        self.trainable_names = select_trainable(self.model, trainable, objective)
        self._compiled = False
        self._working: Bf16WorkingCopy | None = None
        self._budget_clock: BudgetClock | None = None
        self.val_mlm = MeanMetric()
        self.test_mlm = MeanMetric()

    def setup(self, stage: str) -> None:
        # With the bf16 working copy, the copy is what trains: it is compiled instead.
        speed = self.speed
        if speed.compile and not speed.bf16_working_copy and not self._compiled:
            _compile(self.model, speed.fused_mlm_loss)
            self._compiled = True

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """bf16 when this fit trains the bf16 working copy (the module's own dtype), else None."""
        return torch.bfloat16 if self._uses_working_copy() else None

    def on_fit_start(self) -> None:
        if self.speed.keep_freed_memory and self.device.type == "cpu":
            keep_freed_memory()

    def _uses_working_copy(self) -> bool:
        """Whether this fit trains the bf16 working copy (raises on an explicit contradiction)."""
        if not self.speed.bf16_working_copy:
            return False
        explicit = "bf16_working_copy" in self._explicit_speed
        if self.trainer.world_size > 1:
            # A speed switch, not a result: DDP reduces the gradients of the parameters it wraps,
            # which the working copy bypasses, so several processes train as configured without it.
            if explicit:
                rank_zero_warn(
                    "speed.bf16_working_copy works in one process and is off in this "
                    f"{self.trainer.world_size}-process run (trainer.precision bf16-mixed is the "
                    "multi-process bf16)"
                )
            return False
        if str(self.trainer.precision) != "32-true":
            if not explicit:
                return False  # `auto` chose it for the default precision; this run casts itself
            raise ValueError(
                "speed.bf16_working_copy does its own bf16: set trainer.precision 32-true "
                f"(got {self.trainer.precision})"
            )
        return True

    def on_train_start(self) -> None:
        # Built here, after a checkpoint is restored and the model is on its device.
        if not self._uses_working_copy():
            return
        self._working = Bf16WorkingCopy(self.model)
        if self.speed.compile:
            _compile(self._working.module, self.speed.fused_mlm_loss)

    def on_train_end(self) -> None:
        self._working = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._budget_clock is not None:
            self._budget_clock.update(self.trainer.global_step)

    def on_after_backward(self) -> None:
        if self._working is not None:
            self._working.grads_to_master()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self._working is not None:
            self._working.refresh()

    # -------------------------------------------------------------------------------- forward
    def forward(self, batch: dict[str, Tensor], accuracy: bool = True) -> dict[str, Tensor]:
        """Losses and counts of a batch (see bertlab.model.heads.pretraining_losses)."""
        training_copy = self._working is not None and self.training
        return pretraining_losses(
            self._working.module if training_copy else self.model,
            batch,
            objective=self.hparams.objective,
            sparse=self.speed.sparse_mlm_head,
            pad_masked_to=self.speed.pad_masked_to,
            accuracy=accuracy,
            fused=self.speed.fused_mlm_loss,
        )

    # What self.log records, so what a ModelCheckpoint can monitor (bertlab.train.checkpointing).
    LOGGED_METRICS = (
        "val_loss", "val/loss", "val/mlm_loss", "val/mlm_accuracy", "val/nsp_loss",
        "val/nsp_accuracy", "val/perplexity", "train/loss", "train/mlm_loss", "train/perplexity",
        "train/mlm_accuracy", "train/nsp_loss", "train/nsp_accuracy", "train/skipped_steps",
    )  # fmt: skip

    def _logs_this_step(self) -> bool:
        every = self.trainer.log_every_n_steps
        return bool(every) and (self.trainer.global_step + 1) % every == 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # The MLM accuracy's argmax over the vocabulary is only paid on the steps that log it.
        out = self(batch, accuracy=self._logs_this_step())
        size = batch["input_ids"].size(0)
        log = {
            "train/loss": out["loss"],
            "train/mlm_loss": out["mlm_loss"],
            "train/perplexity": torch.exp(out["mlm_loss"].detach().clamp(max=30)),
        }
        if "mlm_correct" in out:
            log["train/mlm_accuracy"] = out["mlm_correct"] / out["mlm_count"].clamp(min=1)
        if "nsp_loss" in out:
            log["train/nsp_loss"] = out["nsp_loss"]
            log["train/nsp_accuracy"] = out["nsp_correct"] / out["nsp_count"]
        self.log_dict(log, batch_size=size)
        self.log("loss", out["loss"], prog_bar=True, logger=False, batch_size=size)
        return out["loss"]

    def _evaluation_step(self, batch: dict[str, Tensor], stage: str, mean: MeanMetric) -> Tensor:
        out = self(batch)
        masked = max(int(out["mlm_count"]), 1)
        size = batch["input_ids"].size(0)
        kwargs = {"on_step": False, "on_epoch": True, "sync_dist": True}
        self.log(f"{stage}/loss", out["loss"], batch_size=size, **kwargs)
        self.log(f"{stage}/mlm_loss", out["mlm_loss"], batch_size=masked, **kwargs)
        accuracy = out["mlm_correct"] / masked
        self.log(f"{stage}/mlm_accuracy", accuracy, batch_size=masked, **kwargs)
        mean.update(out["mlm_loss"].detach(), weight=masked)
        if "nsp_loss" in out:
            self.log(f"{stage}/nsp_loss", out["nsp_loss"], batch_size=size, **kwargs)
            nsp_accuracy = out["nsp_correct"] / out["nsp_count"]
            self.log(f"{stage}/nsp_accuracy", nsp_accuracy, batch_size=size, **kwargs)
        if stage == "val":
            self.log("val_loss", out["loss"], batch_size=size, prog_bar=True, **kwargs)
        return out["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluation_step(batch, "val", self.val_mlm)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluation_step(batch, "test", self.test_mlm)

    def _log_perplexity(self, stage: str, mean: MeanMetric) -> None:
        if mean.update_count:
            value = mean.compute()
            self.log(f"{stage}/perplexity", torch.exp(value.clamp(max=30)), sync_dist=False)
        mean.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val", self.val_mlm)

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test", self.test_mlm)

    # ------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        trainer = self.trainer
        budget = budget_seconds(trainer)
        used = None
        if budget is not None:
            self._budget_clock = clock = BudgetClock(trainer)
            used = lambda: clock.used  # noqa: E731 (a function: LambdaLR does not save it)
            rank_zero_info(
                f"lr schedule: {hp.warmup_steps} warm-up steps (or the first "
                f"{BUDGET_WARMUP_SHARE:.0%} of the budget, if shorter), then "
                + (
                    f"linear decay to 0 at the end of trainer.max_time ({budget:.0f} s; no "
                    "trainer.max_steps)"
                    if hp.lr_schedule == "linear"
                    else "constant until trainer.max_time"
                )
            )
        multiplier = lr_multiplier(hp.warmup_steps, trainer.max_steps, hp.lr_schedule, used)
        implementation = self.speed.optimizer_implementation
        fp16_scaling = str(trainer.precision).startswith("16")
        if implementation == "fused" and fp16_scaling and trainer.gradient_clip_val:
            if "optimizer_implementation" in self._explicit_speed:
                raise ValueError(
                    "speed.optimizer_implementation fused cannot clip gradients under fp16 loss "
                    "scaling: use foreach, or trainer.precision bf16-mixed"
                )
            implementation = "foreach"
        optimizer = build_adamw(
            parameter_groups(self.model, hp.weight_decay), hp.lr, hp.betas, hp.eps, implementation
        )
        if implementation == "fused" and not fp16_scaling:
            # The flag tells a GradScaler that step() unscales gradients itself; Lightning's
            # mixed-precision plugin then refuses gradient clipping even in bf16, where no
            # scaler exists and nothing is scaled. Without fp16 scaling the flag means nothing.
            optimizer._step_supports_amp_scaling = False
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    # ----------------------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bert_config"] = self.model.config.to_dict()
        checkpoint["trainable"] = list(self.trainable_names)

    def training_flops(
        self, num_tokens: float, sum_squared_lengths: float, num_predictions: float
    ) -> float:
        """Useful FLOPs of training steps over these counts, for MFU (bertlab.speed.flops)."""
        return model_training_flops(self.model, num_tokens, sum_squared_lengths, num_predictions)
