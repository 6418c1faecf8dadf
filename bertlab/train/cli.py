"""`bertlab fit|validate|test --config configs/X.yaml`: LightningCLI over BertPretraining.

Decisions:
- One LightningCLI with BertPretraining and BertDataModule; `python -m bertlab` is the same.
  The config sections are LightningCLI's (`model`, `data`, `trainer`, `optimizer`,
  `lr_scheduler`) plus `checkpoint`, `throughput`, `nonfinite_guard`, `interrupt`,
  `preflight` and `heldout` (off until given texts): the default callbacks are parser
  arguments, not `trainer.callbacks` entries, so every run has them, a recipe tunes them by
  key, and `bertlab test --config C --ckpt_path K` with the config that trained never meets a
  duplicate callback. `trainer.callbacks` stays free for extra ones.
- `model.tokenizer` is linked from the data module once it exists (the tokenizer of the samples'
  meta.json unless `data.tokenizer` says otherwise), so a user states it once; then the data
  checks that the model fits it (sequence length, NSP labels, vocabulary size).
- Defaults: a TensorBoard logger under `trainer.default_root_dir` (Lightning's default logger),
  a progress bar, LearningRateMonitor, Checkpoint (top 3 by val_loss after each validation,
  plus last.ckpt, also at the end of fit), ThroughputMonitor, and the reliability parts:
  NonFiniteLossGuard (bertlab.train.guards; batches carry their source lines for its message),
  GracefulInterrupt (Ctrl-C / SIGTERM during training save and exit 130 / 143; at any other
  moment the command stops at once with the same statuses, bertlab.signals), Preflight
  (writable checkpoint folders with room, a precision the device runs), AtomicCheckpointIO
  (never a half-written checkpoint) and `--ckpt_path last` resolved across earlier runs
  (bertlab.train.checkpointing); seed 0.
- Before anything is built, the parsed config is checked (bertlab.train.run_config_checks): a
  run of 0 batches, a run folder inside its samples or another command's output, an object-store
  run folder that cannot be written are refused in one line.
- A user's mistake ends as one line, `error: ...`, and exit status 2, with no usage dump and no
  traceback (made readable by bertlab.train.messages): jsonargparse's parse errors (unknown key,
  wrong type), ValueError from our code, Lightning's MisconfigurationException, a missing file.
  Set BERTLAB_DEBUG=1 for the traceback. A run refused after it began removes the log folder it
  made (bertlab.files.output_folder.remove_unused).
- The optimizer is the model's (`model.lr`, `model.weight_decay`, ..., bertlab.model.optim). A
  user's `optimizer:` / `lr_scheduler:` section replaces it wholesale, as LightningCLI does: one
  parameter group over all parameters (frozen ones have no gradient, so AdamW skips them).
- The `speed` section (bertlab.speed.settings) is resolved before anything is built, from the device
  the trainer will use: each `auto` there, and `trainer.precision` when the config leaves it unset,
  is replaced in the parsed config by its resolved value (so config.yaml beside the logs holds
  what ran), and the choices with their reasons are logged in one line. Speed reaches the model
  and the data by links, never through the model's hyperparameters, so checkpoints do not carry
  it; the speed keys older checkpoints kept under `model` are dropped when one is read.
- With `--ckpt_path` the model is the checkpoint's (LightningCLI reads its hyperparameters into
  `model`); a model key the user set to another value is refused and the values taken from the
  checkpoint are logged in one line (bertlab.model.resume).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError
from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from bertlab.command import USER_ERRORS as COMMAND_USER_ERRORS
from bertlab.command import os_error_line
from bertlab.data.datamodule import BertDataModule
from bertlab.downstream.heldout_monitor import HeldoutEvaluation
from bertlab.files import remote
from bertlab.files.artefacts import read_json_object
from bertlab.files.output_folder import new_folders, remove_unused
from bertlab.model.module import BertPretraining
from bertlab.model.network import SHAPE_KEYS
from bertlab.model.resume import TRAINING_ONLY, check_resume, data_changes
from bertlab.signals import Interrupted, stop_on_signals
from bertlab.speed.settings import (
    Speed,
    check_precision,
    count_processes,
    probe_device,
    resolve,
    strip_legacy,
)
from bertlab.train.checkpointing import (
    AtomicCheckpointIO,
    Checkpoint,
    read_run_checkpoint,
    resolve_checkpoint,
)
from bertlab.train.guards import NonFiniteLossGuard
from bertlab.train.interrupt import GracefulInterrupt, exit_status
from bertlab.train.messages import check_config_files, moved_key_hint, one_line, unknown_key_hint
from bertlab.train.preflight import Preflight
from bertlab.train.run_config_checks import (
    check_remote_folders,
    check_steps_left,
    refuse_escaping_filename,
    refuse_outputs_in_inputs,
    refuse_zero_batches,
    warn_no_checkpoint,
    warn_unlogged_fit,
    warn_unreached_validation,
)
from bertlab.train.throughput import ThroughputMonitor

USER_ERRORS = (*COMMAND_USER_ERRORS, ArgumentError, MisconfigurationException)
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


def _padding_of(speed: Speed) -> int:
    return speed.pad_to_multiple_of


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
        parser.add_lightning_class_args(GracefulInterrupt, "interrupt")
        parser.add_lightning_class_args(Preflight, "preflight")
        parser.add_lightning_class_args(HeldoutEvaluation, "heldout")
        # The guard names the source lines of a bad batch: batches carry them.
        parser.set_defaults({"data.with_source": True})
        parser.link_arguments(
            "data", "model.tokenizer", compute_fn=_tokenizer_of, apply_on="instantiate"
        )
        parser.add_class_arguments(Speed, "speed")
        parser.link_arguments("speed", "model.speed", apply_on="instantiate")
        parser.link_arguments(
            "speed", "data.pad_to_multiple_of", compute_fn=_padding_of, apply_on="instantiate"
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._given_args = args  # what the user stated, for the resume check
        super().parse_arguments(parser, args)
        # Before LightningCLI reads the checkpoint's hyperparameters: `last` is found among
        # every earlier run's checkpoints, and a missing or truncated file is a one-line error.
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path"):
            config = self.config[subcommand]
            root = config.trainer.default_root_dir
            folders = [config.checkpoint.dirpath, root or "lightning_logs"]
            config.ckpt_path = resolve_checkpoint(config.ckpt_path, folders, subcommand == "fit")

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters into `model`; older checkpoints kept
        # the speed switches there, which are no longer model arguments.
        subcommand = self.config.get("subcommand")
        ckpt_path = subcommand and self.config[subcommand].get("ckpt_path")
        if not ckpt_path:
            return
        checkpoint = read_run_checkpoint(ckpt_path)
        if checkpoint is None:
            return
        if subcommand == "fit":
            check_steps_left(ckpt_path, checkpoint, self.config[subcommand].trainer)
        hparams = checkpoint.get("hyper_parameters")
        if hparams is not None and not isinstance(hparams, dict):
            raise ValueError(f"--ckpt_path {ckpt_path}: its hyper_parameters are not a mapping")
        hparams = dict(hparams or {})
        hparams.pop("_instantiator", None)
        hparams = strip_legacy(hparams)
        if not hparams:  # the model's shape unknown: a size-mismatch traceback, or flags unchecked
            raise ValueError(
                f"--ckpt_path {ckpt_path}: not a checkpoint of bertlab fit (no hyper_parameters: "
                "the model's settings are not in it); give a .ckpt from a run's checkpoints folder"
            )
        if subcommand == "fit" and "loops" not in checkpoint:  # Lightning restarts at step 0
            raise ValueError(
                f"--ckpt_path {ckpt_path} holds no loop state (saved with weights only): a resume "
                "would restart at step 0; give a full checkpoint, or export it and start a new "
                "run with --model.from_pretrained"
            )
        current = self.config[subcommand].get("model")
        current = current.as_dict() if hasattr(current, "as_dict") else dict(current or {})
        explicit = self._explicit(subcommand, "model")
        if subcommand != "fit":  # scoring reads weights: how they were trained changes nothing
            explicit = {k: v for k, v in explicit.items() if k not in TRAINING_ONLY}
        line = check_resume(ckpt_path, hparams, explicit, current)
        if line:
            rank_zero_info(line)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        saved_data = checkpoint.get("datamodule_hyper_parameters")
        if subcommand == "fit" and isinstance(saved_data, dict):
            current = self.config[subcommand].get("data")
            current = current.as_dict() if hasattr(current, "as_dict") else dict(current or {})
            line = data_changes(ckpt_path, saved_data, self._explicit(subcommand, "data"), current)
            if line:
                print(line, file=sys.stderr)

    def _check_model_start(self, model: Any) -> None:
        """A shape set beside from_pretrained, which brings its own, is refused naming both;
        training only some weights of a model nobody trained is said in one line."""
        start, trainable = model.get("from_pretrained"), model.get("trainable", "all")
        if start and Path(start, "config.json").is_file():
            saved = read_json_object(Path(start, "config.json"), "--model.from_pretrained")
            explicit = self._explicit("fit", "model")
            for key in SHAPE_KEYS:
                if key in explicit and key in saved and explicit[key] != saved[key]:
                    raise ValueError(
                        f"--model.{key} {explicit[key]} contradicts --model.from_pretrained "
                        f"{start} ({key} {saved[key]}): its shape is the folder's; leave "
                        f"--model.{key} out"
                    )
        if not start and trainable not in ("all", ["all"]):
            print(
                f"warning: --model.trainable {trainable} without --model.from_pretrained trains "
                "those weights of a randomly initialised model, the rest left random",
                file=sys.stderr,
            )

    def _explicit(self, subcommand: str, section: str) -> dict[str, Any]:
        """The keys of `section` (model, data) the user set, on the command line or in a
        --config file."""
        args = getattr(self, "_given_args", None)
        if args is not None and not isinstance(args, (list, tuple)):
            return {}  # a dict or Namespace from Python: no way to tell defaults apart
        given = self.parser.parse_args(args, defaults=False)
        values = given.get(subcommand) and given[subcommand].get(section)
        return values.as_dict() if hasattr(values, "as_dict") else dict(values or {})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        refuse_zero_batches(self.subcommand, trainer)
        data = config.get("data") or {}
        for subcommand, key in (("validate", "val_files"), ("test", "test_files")):
            if self.subcommand == subcommand and not data.get(key):
                raise ValueError(f"bertlab {subcommand} needs --data.{key}: nothing to score")
        if self.subcommand == "fit" and not config.get("ckpt_path"):
            self._check_model_start(config.get("model") or {})
        checkpoint = config.get("checkpoint")
        # validate and test write their logs there too: never into another command's folder
        refuse_outputs_in_inputs(trainer.get("default_root_dir"), checkpoint, data)
        if self.subcommand == "fit":
            refuse_escaping_filename(checkpoint)
            warn_no_checkpoint(checkpoint)
        # Scored all the same, but the figures are of random weights: said in one line.
        trained = config.get("ckpt_path") or (config.get("model") or {}).get("from_pretrained")
        if self.subcommand in ("test", "validate") and not trained:
            print(
                f"warning: bertlab {self.subcommand} without a checkpoint scores weights "
                "nobody trained; give --ckpt_path (a .ckpt file, or last)",
                file=sys.stderr,
            )
        check_remote_folders(trainer.default_root_dir, config.get("checkpoint"))
        facts = probe_device(str(trainer.accelerator))
        processes = count_processes(trainer.devices, trainer.num_nodes, facts)
        resolution = resolve(Speed(**vars(config.speed)), facts, trainer.precision, processes)
        for key, value in resolution.speed.as_dict().items():
            config.speed[key] = value
        trainer.precision = resolution.precision
        check_precision(trainer.precision, trainer.accelerator)
        torch.set_float32_matmul_precision(resolution.speed.float32_matmul_precision)
        rank_zero_info(resolution.summary())

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # Checkpoints are written atomically unless the config brings its own CheckpointIO.
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        # The logger's root, not its log_dir: asking for log_dir would fix the version early.
        root = getattr(trainer.logger, "root_dir", None)
        self._log_root = None
        if root is not None and not remote.is_remote(str(root)):
            before = {p.name for p in Path(root).iterdir()} if Path(root).is_dir() else set()
            self._log_root = (Path(root), new_folders(root), before)
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            self._run_checked(subcommand)
        except (*USER_ERRORS, Interrupted) as error:
            # A refusal from inside the run, or a stop before its first step (or during a test):
            # the log folder it made for itself goes with it. Logs of steps trained stay.
            run_root = getattr(self, "_log_root", None)
            trained = subcommand == "fit" and self.trainer.global_step > 0
            if isinstance(error, Interrupted) and trained:
                raise
            if run_root is not None and self.trainer.is_global_zero:
                root, parents, before = run_root
                log_dir = Path(self.trainer.logger.log_dir)
                if log_dir.parent == root and log_dir.name not in before:
                    remove_unused([log_dir, *parents])
            raise

    def _run_checked(self, subcommand: str) -> None:
        """The subcommand, with a checkpoint whose weights do not fit its own settings (a key
        missing from its state_dict) as one line naming it, not torch's traceback."""
        try:
            super()._run_subcommand(subcommand)
        except RuntimeError as error:
            if "Error(s) in loading state_dict" not in str(error):
                raise
            ckpt = self.config[subcommand].get("ckpt_path")
            reason = " ".join(str(error).split())[:200]
            raise ValueError(
                f"--ckpt_path {ckpt} is damaged: its weights do not fit the model its settings "
                f"describe ({reason})"
            ) from None

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
            raise ValueError(f"--seed_everything {seed} must be in [0, 2**32) (numpy's seeds)")
        super()._set_seed()

    def before_fit(self) -> None:
        # Said when the run really starts: a refusal while building it stays the only line.
        validates = bool(self.datamodule.hparams.get("val_files"))
        if validates:
            warn_unreached_validation(self.config["fit"].trainer)
        fit = self.config["fit"]
        warn_unlogged_fit(fit.trainer, fit.get("checkpoint"), validates)

    def after_instantiate_classes(self) -> None:
        # Lightning merges the model's and the data's hparams for the logger and refuses a key
        # with two values (model.tokenizer is the resolved data.tokenizer, which may be null):
        # the logger gets the model's; config.yaml beside the logs keeps the whole config.
        self.datamodule._log_hyperparams = False
        config = self.model.model.config
        self.datamodule.check_model(
            config.max_position_embeddings, self.model.hparams.objective, config.vocab_size
        )


# subcommand -> the trainer keys that, at 0, leave it no batch to run.
def run_cli(args: list[str] | None = None) -> BertLabCLI:
    """Parse `args` (default sys.argv[1:]), build everything, run the subcommand; return the CLI."""
    return BertLabCLI(
        BertPretraining,
        BertDataModule,
        args=args,
        seed_everything_default=0,
        trainer_defaults={"callbacks": [LearningRateMonitor(logging_interval="step")]},
        save_config_kwargs={"overwrite": True},
    )


def main(args: list[str] | None = None) -> None:
    """The `bertlab` command: run_cli with a user's mistake as one line and exit status 2.

    A run stopped by SIGINT / SIGTERM exits with 128 + the signal number: fit's training after
    saving (bertlab.train.interrupt), any other moment at once (bertlab.signals).
    """
    try:
        check_config_files(list(sys.argv[1:] if args is None else args))
        with stop_on_signals():
            cli = run_cli(args)
    except USER_ERRORS as error:
        if os.environ.get("BERTLAB_DEBUG"):
            raise
        given = list(sys.argv[1:] if args is None else args)
        hints = moved_key_hint(str(error)) + unknown_key_hint(str(error), given)
        line = one_line(error)
        if isinstance(error, OSError) and error.filename and line.startswith("[Errno"):
            line = os_error_line(error, given)  # the flag whose path it was, not a bare errno
        print(f"error: {line}{hints}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        print(stop.line(), file=sys.stderr)
        sys.exit(stop.exit_status)
    status = exit_status(cli.trainer)
    if status:
        sys.exit(status)
