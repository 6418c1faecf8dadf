"""`bertlab fit|validate|test --config configs/X.yaml`: LightningCLI over BertPretraining.

Decisions:
- One LightningCLI with BertPretraining and BertDataModule; `python -m bertlab` is the same.
  The config sections are LightningCLI's (`model`, `data`, `trainer`, `optimizer`,
  `lr_scheduler`) plus `checkpoint`, `throughput` and `nonfinite_guard`: the default callbacks
  are parser arguments, not `trainer.callbacks` entries, so every run has them, a recipe tunes
  them by key, and `bertlab test --config C --ckpt_path K` with the config that trained never
  meets a duplicate callback. `trainer.callbacks` stays free for extra ones.
- `model.tokenizer` is linked from the data module once it exists (the tokenizer of the samples'
  meta.json unless `data.tokenizer` says otherwise), so a user states it once; then the data
  checks that the model fits it (sequence length, NSP labels, vocabulary size).
- Defaults: a TensorBoard logger under `trainer.default_root_dir` (Lightning's default logger),
  a progress bar, LearningRateMonitor, Checkpoint (top 3 by val_loss after each validation,
  plus last.ckpt, also at the end of fit), ThroughputMonitor, NonFiniteLossGuard; seed 0.
- A user's mistake ends as one line, `error: ...`, and exit status 2, with no usage dump and no
  traceback: jsonargparse's parse errors (unknown key, wrong type), ValueError from our code,
  Lightning's MisconfigurationException, a missing file. Set BERTLAB_DEBUG=1 for the traceback.
- The optimizer is the model's (`model.lr`, `model.weight_decay`, ..., bertlab.optim). A user's
  `optimizer:` / `lr_scheduler:` section replaces it wholesale, as LightningCLI does: one
  parameter group over all parameters (frozen ones have no gradient, so AdamW skips them).
- On a GPU, float32 matrix products may use TF32 (`high`): a speed switch Lightning recommends
  and that does not touch bf16/fp16 runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from jsonargparse import ArgumentError
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from bertlab.callbacks import Checkpoint, NonFiniteLossGuard, ThroughputMonitor
from bertlab.data import BertDataModule
from bertlab.module import BertPretraining

USER_ERRORS = (
    ArgumentError,
    ValueError,
    OSError,
    MisconfigurationException,
    FloatingPointError,
)
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val_loss",
    "checkpoint.mode": "min",
    "checkpoint.save_top_k": 3,
    "checkpoint.save_last": True,
    "checkpoint.filename": "step={step}-val_loss={val_loss:.4f}",
    "checkpoint.auto_insert_metric_name": False,
}


def _tokenizer_of(data: BertDataModule) -> str:
    return data.tokenizer_path


class BertLabCLI(LightningCLI):
    """LightningCLI with bertlab's default callbacks, links and data/model checks."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs["exit_on_error"] = False  # main() prints parse errors as one line
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(ThroughputMonitor, "throughput")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite_guard")
        parser.link_arguments(
            "data", "model.tokenizer", compute_fn=_tokenizer_of, apply_on="instantiate"
        )

    def after_instantiate_classes(self) -> None:
        # Lightning merges the model's and the data's hparams for the logger and refuses a key
        # with two values (model.tokenizer is the resolved data.tokenizer, which may be null):
        # the logger gets the model's; config.yaml beside the logs keeps the whole config.
        self.datamodule._log_hyperparams = False
        config = self.model.model.config
        self.datamodule.check_model(
            config.max_position_embeddings, self.model.hparams.objective, config.vocab_size
        )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def run_cli(args: list[str] | None = None) -> BertLabCLI:
    """Parse `args` (default sys.argv[1:]), build everything, run the subcommand; return the CLI."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    return BertLabCLI(
        BertPretraining,
        BertDataModule,
        args=args,
        seed_everything_default=0,
        trainer_defaults={"callbacks": [LearningRateMonitor(logging_interval="step")]},
        save_config_kwargs={"overwrite": True},
    )


def main(args: list[str] | None = None) -> None:
    """The `bertlab` command: run_cli with a user's mistake as one line and exit status 2."""
    try:
        run_cli(args)
    except USER_ERRORS as error:
        if os.environ.get("BERTLAB_DEBUG"):
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)
