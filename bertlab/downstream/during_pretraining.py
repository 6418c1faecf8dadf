"""DownstreamEvaluation: during pre-training, fine-tune a copy of the encoder and log its accuracy.

The "accuracy against pre-training time" experiment (Li et al. 2020, "Train Large, Then
Compress"): every `every_n_steps` optimizer steps, a copy of the current encoder is fine-tuned on
a small classification task and its validation accuracy (and F1 for two classes) is logged
against the global step, with the seconds since the fit started.

Decisions:
- The pre-training run must not notice: the encoder's weights are copied (under no_grad) into a
  new classifier, so the original's parameters, gradients, train/eval mode, optimizer and
  scheduler are never touched; the torch (CPU and every initialised CUDA device), Python and
  NumPy random states are saved before and restored after, so dropout, masking and shuffling
  draw the same numbers as without the callback; and the fine-tuning has its own seed, so the
  same encoder always gets the same score.
- The fine-tuning is a plain PyTorch loop, not a nested Trainer: a Trainer inside a Trainer would
  share loggers, callbacks, progress bars and global state with the outer one.
- It runs on global rank 0 only, on the module's device; the other ranks go on and wait at their
  next collective. Task files are read and tokenised on every rank at fit start, so a mistake
  in them stops the run before it trains rather than hours in.
- The score is that of the weights after the budget (`max_epochs`, capped by `max_steps`), not the
  best epoch: the budget is part of the experiment's definition.
- Metrics go straight to the trainer's loggers at step = trainer.global_step (`self.log` would be
  dropped on steps that are not a multiple of log_every_n_steps) and into
  `trainer.callback_metrics`, so a ModelCheckpoint may monitor `downstream/accuracy`. Besides
  `accuracy` and `f1`, `seconds` (wall-clock since the fit started, carried over a resume through
  the callback's state) and `pretrain_seconds` (the same, less the time spent in these
  evaluations: the pre-training time an accuracy was bought with) are logged.
- The tokenizer: `tokenizer`, else the module's `tokenizer` hyperparameter (BertPretraining's,
  linked from the data by the CLI), else the datamodule's `tokenizer_path`.
- `name` makes the tags `downstream/<name>/accuracy`, for several tasks in one run; each
  instance keeps its own state in checkpoints.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from bertlab.downstream.classifier import (
    FineTuning,
    classifier_from_encoder,
    optimizer_and_schedule,
)
from bertlab.downstream.tasks import (
    check_compatible,
    classification_metrics,
    collate,
    degenerate_split,
    encode,
    label_mapping,
    read_examples,
)
from bertlab.model.conversion import encoder_config_and_state


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore the torch, CUDA, Python and NumPy random states on exit, whatever ran inside."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        random.setstate(python_state)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)


def train_and_score(
    model: torch.nn.Module,
    train: list[dict],
    valid: list[dict],
    num_labels: int,
    pad_id: int,
    settings: FineTuning,
    max_steps: int | None,
    seed: int,
    autocast_dtype: torch.dtype | None,
) -> dict[str, float]:
    """Fine-tune `model` in place on `train` (plain PyTorch), return its scores on `valid`."""
    batch_size, max_seq_len = settings.batch_size, settings.max_seq_len
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout; the caller restores the random state
    steps_per_epoch = -(-len(train) // batch_size)
    total = settings.max_epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    optimizer, scheduler = optimizer_and_schedule(
        model, settings.lr, settings.weight_decay, settings.warmup_ratio, total
    )
    autocast = torch.autocast(
        device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    )

    def batches(features: list[dict], order: list[int]):
        for start in range(0, len(order), batch_size):
            batch = collate(
                [features[i] for i in order[start : start + batch_size]], pad_id, max_seq_len
            )
            yield {k: v.to(device) for k, v in batch.items()}

    def logits(batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with autocast:
            return model(**inputs).logits.float()

    model.train()
    step = 0
    while step < total:
        order = torch.randperm(len(train), generator=generator).tolist()
        for batch in batches(train, order):
            loss = F.cross_entropy(logits(batch), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= total:
                break
    model.eval()
    predictions, labels = [], []
    with torch.no_grad():
        for batch in batches(valid, list(range(len(valid)))):
            predictions.append(logits(batch).argmax(-1).cpu())
            labels.append(batch["labels"].cpu())
    return classification_metrics(torch.cat(predictions), torch.cat(labels), num_labels)


class DownstreamEvaluation(pl.Callback):
    """Every N pre-training steps, fine-tune a copy of the encoder on a task and log its accuracy.

    Args:
        train_file: Task training examples (TSV or JSON Lines, as tools/finetune.py reads them).
        valid_file: Task validation examples: the logged scores.
        every_n_steps: Evaluate when the global step is a multiple of this.
        tokenizer: Tokenizer folder (default: the module's tokenizer, else the datamodule's).
        name: Tag infix: `downstream/<name>/accuracy` (default: `downstream/accuracy`).
        label_column: As tools/finetune.py's --label_column.
        text_columns: As tools/finetune.py's --text_columns.
        max_seq_len: Longest task input in tokens.
        batch_size: Task examples per step.
        lr: Peak learning rate of the fine-tuning (warmup, then linear decay to 0).
        weight_decay: AdamW weight decay of the fine-tuning.
        warmup_ratio: Fraction of the fine-tuning steps spent warming up.
        max_epochs: Fine-tuning epochs per evaluation.
        max_steps: Caps the fine-tuning steps per evaluation (None: max_epochs decides).
        seed: Seed of the classification head, the task's data order and dropout.
        precision: 32 or bf16-mixed for the fine-tuning; None follows the trainer (bf16-mixed
            when it trains in bf16, else 32).
        at_start: Also evaluate before the first step (the starting point of the curve).
        at_end: Also evaluate at the end of training when the last step was not a multiple.
    """

    def __init__(
        self,
        train_file: str,
        valid_file: str,
        every_n_steps: int = 1000,
        tokenizer: str | None = None,
        name: str | None = None,
        label_column: str = "label",
        text_columns: list[str] | None = None,
        max_seq_len: int = 128,
        batch_size: int = 32,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        max_epochs: int = 1,
        max_steps: int | None = None,
        seed: int = 0,
        precision: Literal["32", "bf16-mixed"] | None = None,
        at_start: bool = False,
        at_end: bool = True,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(
                f"DownstreamEvaluation.every_n_steps must be >= 1, got {every_n_steps}"
            )
        self.settings = FineTuning(
            max_seq_len, batch_size, lr, weight_decay, warmup_ratio, max_epochs
        )
        self.settings.check("DownstreamEvaluation.")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"DownstreamEvaluation.max_steps {max_steps} must be at least 1")
        if precision not in (None, "32", "bf16-mixed"):
            raise ValueError(f"DownstreamEvaluation.precision: 32 or bf16-mixed, got {precision!r}")
        self.train_file, self.valid_file = train_file, valid_file
        self.every_n_steps = every_n_steps
        self.tokenizer = tokenizer
        self.name = name
        self.prefix = f"downstream/{name}" if name else "downstream"
        self.label_column, self.text_columns = str(label_column), text_columns
        self.max_seq_len, self.max_steps, self.seed = max_seq_len, max_steps, seed
        self.precision = precision
        self.at_start, self.at_end = at_start, at_end
        # Carried across a resume (state_dict): seconds before this fit, the last evaluated step.
        self.seconds_before = 0.0
        self.evaluation_seconds = 0.0
        self.last_step: int | None = None
        self._fit_started = 0.0
        self._task: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, train_file=self.train_file)

    def state_dict(self) -> dict[str, Any]:
        return {
            "seconds": self._seconds(),
            "evaluation_seconds": self.evaluation_seconds,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds_before = float(state_dict["seconds"])
        self.evaluation_seconds = float(state_dict["evaluation_seconds"])
        self.last_step = state_dict["last_step"]
        self._fit_started = time.perf_counter()

    def _seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self._fit_started)

    # ---------------------------------------------------------------------------------- setup
    def _resolve_tokenizer(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        if self.tokenizer:
            return self.tokenizer
        hparams = getattr(pl_module, "hparams", {})
        if hparams.get("tokenizer"):
            return str(hparams["tokenizer"])
        datamodule = getattr(trainer, "datamodule", None)
        if getattr(datamodule, "tokenizer_path", None):
            return str(datamodule.tokenizer_path)
        raise ValueError(
            "DownstreamEvaluation: no tokenizer (the model has no tokenizer hyperparameter and "
            "the data module no tokenizer_path); set the callback's init_args.tokenizer"
        )

    def _load_task(self, tokenizer_path: str) -> dict[str, Any]:
        from bertlab.tokenizer.loading import open_tokenizer

        train = read_examples(self.train_file, self.label_column, self.text_columns)
        valid = read_examples(self.valid_file, self.label_column, self.text_columns)
        mapping = label_mapping(train, self.train_file)
        check_compatible(valid, train, mapping)
        # Logged all the same (the file is valid), but said once, before the run trains.
        flag = f"DownstreamEvaluation.valid_file {self.valid_file}"
        if reason := degenerate_split(valid, mapping, flag):
            print(f"warning: {reason}", file=sys.stderr)
        tokenizer = open_tokenizer(tokenizer_path, "DownstreamEvaluation.tokenizer")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"DownstreamEvaluation.tokenizer {tokenizer_path}: no padding token")
        return {
            "num_labels": len(mapping),
            "pad_id": tokenizer.pad_token_id,
            "train": encode(tokenizer, train, mapping, self.max_seq_len),
            "valid": encode(tokenizer, valid, mapping, self.max_seq_len),
        }

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started = time.perf_counter()
        if not hasattr(pl_module, "model") or not hasattr(pl_module.model, "base_model"):
            raise ValueError(
                "DownstreamEvaluation needs a module whose `model` is a transformers model "
                "(BertPretraining's BertForPreTraining)"
            )
        limit = pl_module.model.config.max_position_embeddings
        if self.max_seq_len > limit:
            raise ValueError(
                f"DownstreamEvaluation.max_seq_len {self.max_seq_len} exceeds the model's "
                f"{limit} positions"
            )
        with preserved_rng_state():
            self._task = self._load_task(self._resolve_tokenizer(trainer, pl_module))

    # ---------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_start and self.last_step != trainer.global_step:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end on the same global step: one evaluation.
        if step > 0 and step % self.every_n_steps == 0 and self.last_step != step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_end and self.last_step != trainer.global_step:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------------------- evaluate
    def _autocast_dtype(self, trainer: pl.Trainer) -> torch.dtype | None:
        precision = self.precision
        if precision is None:
            precision = "bf16-mixed" if str(trainer.precision).startswith("bf16") else "32"
        return torch.bfloat16 if precision == "bf16-mixed" else None

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Fine-tune a copy of the encoder now and log its scores (rank 0; {} elsewhere)."""
        step = trainer.global_step
        self.last_step = step
        if not trainer.is_global_zero:
            return {}
        assert self._task is not None, "on_fit_start has not run"
        began = time.perf_counter()
        source = pl_module.model
        with preserved_rng_state():
            with torch.no_grad():
                config, state = encoder_config_and_state(source)
                encoder = {k: v.detach().clone() for k, v in state.items()}
            copy = classifier_from_encoder(config, encoder, self._task["num_labels"], self.seed).to(
                pl_module.device
            )
            del encoder
            with torch.enable_grad():
                scores = train_and_score(
                    copy,
                    self._task["train"],
                    self._task["valid"],
                    num_labels=self._task["num_labels"],
                    pad_id=self._task["pad_id"],
                    settings=self.settings,
                    max_steps=self.max_steps,
                    seed=self.seed,
                    autocast_dtype=self._autocast_dtype(trainer),
                )
            del copy
        self.evaluation_seconds += time.perf_counter() - began
        seconds = self._seconds()
        metrics = {f"{self.prefix}/{key}": value for key, value in scores.items()}
        metrics[f"{self.prefix}/seconds"] = seconds
        metrics[f"{self.prefix}/pretrain_seconds"] = seconds - self.evaluation_seconds
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        for key, value in metrics.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        return metrics
