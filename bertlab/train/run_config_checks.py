"""Checks of a parsed run config (`bertlab fit|validate|test`) before anything is built.

Decisions:
- Each check reads the parsed sections (plain dicts or namespaces) and raises ValueError naming
  the flag, so the CLI ends a user's mistake in one line before a model or a logger exists.
- A run of 0 batches is refused (it would exit 0 having reported nothing, or saved weights
  nobody trained); so are arguments Lightning divides by (accumulate_grad_batches,
  val_check_interval) and a negative clipping value.
- The run's folders never lie inside a samples folder it reads, nor inside another command's
  output folder (its marker says whose), except the folders of the commands that hold runs
  (bertlab.files.output_folder.HOLDERS).
- A validation interval beyond the last batch is warned of, not refused: a short smoke run of a
  long recipe's config meets it.
- A run folder in an object store is checked writable by a probe object: Lightning's logger
  would otherwise create a missing bucket or fail mid-setup.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from bertlab.files import remote
from bertlab.files.output_folder import HOLDERS, read_marker

ZERO_BATCH_KEYS = {
    "fit": ("limit_train_batches", "max_steps", "max_epochs"),
    "validate": ("limit_val_batches",),
    "test": ("limit_test_batches",),
}


def refuse_zero_batches(subcommand: str | None, trainer: Any) -> None:
    """A run of 0 batches reports nothing (test, validate) or saves weights nobody trained (fit),
    and exits 0: refused before anything is built."""
    for key in ZERO_BATCH_KEYS.get(subcommand or "", ()):
        if trainer.get(key) == 0:
            what = (
                "would train on no batch and save weights nobody trained"
                if subcommand == "fit"
                else "would run no batch and report nothing"
            )
            raise ValueError(f"--trainer.{key} 0: bertlab {subcommand} {what}")
    max_time = trainer.get("max_time")
    if subcommand == "fit" and _is_zero_time(max_time):
        raise ValueError(
            f"--trainer.max_time {max_time}: bertlab fit would train for no time and save "
            "nothing; give DD:HH:MM:SS above zero"
        )
    devices = trainer.get("devices")
    # Lightning takes auto, a count, or "0,1" (indices) as strings; any other word ends in its
    # TypeError traceback at Trainer(), after the model is built.
    wrong_word = isinstance(devices, str) and not re.fullmatch(
        r"auto|-?\d+|(\d+\s*,\s*)*\d+\s*,?", devices.strip()
    )
    if (
        wrong_word
        or str(devices).strip() in ("0", "-0", "[]")
        or (isinstance(devices, int) and devices < -1)
    ):
        raise ValueError(  # Lightning's own words name Trainer(devices='0'), not the flag
            f"--trainer.devices {devices}: give a number of devices of at least 1, a list of "
            "device indices, -1 (all) or auto"
        )
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:  # Lightning divides by it mid-step
        raise ValueError(f"--trainer.accumulate_grad_batches {accumulate} must be at least 1")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        raise ValueError(  # Lightning divides by it at the first step
            f"--trainer.val_check_interval {interval} must be positive (batches, or a fraction)"
        )
    clip = trainer.get("gradient_clip_val")
    if isinstance(clip, (int, float)) and clip < 0:
        raise ValueError(f"--trainer.gradient_clip_val {clip} must be >= 0 (0: no clipping)")
    refuse_unusable_trainer(trainer)


def refuse_unusable_trainer(trainer: Any) -> None:
    """Trainer settings Lightning fails on later, in its own words (or with a traceback)."""
    every = trainer.get("check_val_every_n_epoch")
    if isinstance(every, int) and not isinstance(every, bool) and every < 1:
        raise ValueError(  # Lightning divides by it
            f"--trainer.check_val_every_n_epoch {every} must be at least 1, or null (bertlab's "
            "runs validate every trainer.val_check_interval steps)"
        )
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and interval < 1 and every is None:
        raise ValueError(
            f"--trainer.val_check_interval {interval}: a fraction of an epoch needs "
            "--trainer.check_val_every_n_epoch; bertlab's runs are step-based: give a number "
            "of batches (e.g. 1000)"
        )
    if trainer.get("enable_checkpointing") is False:
        raise ValueError(
            "--trainer.enable_checkpointing false: bertlab's checkpoint callback is part of "
            "every run; to keep no checkpoint set --checkpoint.save_last false and "
            "--checkpoint.save_top_k 0"
        )
    if trainer.get("logger") is False:
        raise ValueError(
            "--trainer.logger false: bertlab's learning-rate, throughput and held-out figures "
            "are logged to TensorBoard; keep the logger (its events are small)"
        )


def warn_no_checkpoint(checkpoint: Any) -> None:
    """A fit that keeps no checkpoint at all (no last.ckpt, no best ones) is said in one line."""
    if checkpoint is None or checkpoint.get("save_last") is not False:
        return
    if checkpoint.get("save_top_k") == 0:
        print(
            "warning: --checkpoint.save_last false with --checkpoint.save_top_k 0: the run "
            "keeps no checkpoint (nothing to resume, test or export)",
            file=sys.stderr,
        )


def _is_zero_time(max_time: Any) -> bool:
    """Whether a trainer.max_time (DD:HH:MM:SS, or a dict of days, hours, ...) is zero."""
    try:
        if isinstance(max_time, str):
            return all(float(part) == 0 for part in max_time.split(":"))
        if isinstance(max_time, dict):
            return all(float(value) == 0 for value in max_time.values())
    except ValueError:
        return False  # Lightning names what it cannot read
    return False


def refuse_outputs_in_inputs(root: Any, checkpoint: Any, data: Any) -> None:
    """The run's folders never a samples folder it reads, nor inside one, nor another
    command's output folder (its marker says whose): its logs and checkpoints would mix with
    them. A root above the samples is fine (Lightning writes only lightning_logs/ there), and so
    is a root inside the folder of a command that holds runs (output_folder.HOLDERS)."""
    inputs = []
    for key in ("train_files", "val_files", "test_files"):
        value = data.get(key)
        for item in [value] if isinstance(value, str) else list(value or []):
            if not remote.is_remote(str(item)) and Path(item).is_dir():
                inputs.append((f"--data.{key}", item, Path(item).resolve()))
    dirpath = checkpoint.get("dirpath") if checkpoint is not None else None
    for flag, folder in (("--trainer.default_root_dir", root), ("--checkpoint.dirpath", dirpath)):
        if not folder or remote.is_remote(str(folder)):
            continue
        out = Path(folder).resolve()
        for key, item, source in inputs:
            if out == source or source in out.parents:
                raise ValueError(
                    f"{flag} {folder} is inside {key} {item}: the run's files would mix with "
                    "the samples; choose a folder outside it"
                )
        for owner in (out, *out.parents):  # another command's output folder, or inside one
            marker = read_marker(owner) if owner.is_dir() else None
            if marker is not None and not (owner != out and marker["command"] in HOLDERS):
                raise ValueError(
                    f"{flag} {folder} is inside {owner} ({marker['command']}'s output): the "
                    "run's files would mix with it; choose a folder outside it"
                    if owner != out
                    else f"{flag} {folder} holds the output of {marker['command']}: the run's "
                    "files would mix with it; choose another folder"
                )


def check_steps_left(ckpt_path: str, checkpoint: dict, trainer: Any) -> None:
    """A resume's trainer.max_steps against the checkpoint's step: below it Lightning would stop
    at once and exit 0, having done nothing (refused); at it, nothing is trained (said)."""
    step, max_steps = checkpoint.get("global_step"), trainer.get("max_steps")
    if not isinstance(step, int) or max_steps in (None, -1):
        return
    if max_steps < step:
        raise ValueError(
            f"--trainer.max_steps {max_steps} is below the step of --ckpt_path {ckpt_path} "
            f"({step}): nothing to train; give more steps, or use bertlab validate/test"
        )
    if max_steps == step:
        print(  # exit 0 is right (the run is complete), but it trains nothing
            f"warning: --ckpt_path {ckpt_path}: at trainer.max_steps, nothing to train; raise "
            "--trainer.max_steps to train on",
            file=sys.stderr,
        )


def refuse_escaping_filename(checkpoint: Any) -> None:
    """checkpoint.filename is a name inside the checkpoint folder: an absolute path or a `..`
    would put checkpoints outside the run, where `--ckpt_path last` never looks."""
    name = checkpoint.get("filename") if checkpoint is not None else None
    if name and (Path(name).is_absolute() or ".." in Path(name).parts):
        raise ValueError(
            f"--checkpoint.filename {name} leaves the checkpoint folder; give a file name "
            "(e.g. {step}-{val_loss:.2f}), and set --checkpoint.dirpath for the folder"
        )


def warn_unreached_validation(trainer: Any) -> None:
    """A validation interval beyond the run's last batch means no validation at all and no
    val_loss for the checkpoint to monitor: said in one line (a short smoke run of a long
    recipe's config meets this, so it is not refused)."""
    interval, max_steps = trainer.get("val_check_interval"), trainer.get("max_steps")
    accumulate = trainer.get("accumulate_grad_batches") or 1
    if (
        not isinstance(interval, int)
        or isinstance(interval, bool)
        or not isinstance(max_steps, int)
    ):
        return
    if max_steps > 0 and isinstance(accumulate, int) and interval > max_steps * accumulate:
        batches = max_steps * accumulate
        print(
            f"warning: --trainer.val_check_interval {interval} is beyond the run's last batch "
            f"(--trainer.max_steps {max_steps} x accumulate_grad_batches {accumulate} = "
            f"{batches}): no validation will run; give at most {batches} to validate",
            file=sys.stderr,
        )


def warn_unlogged_fit(trainer: Any, checkpoint: Any, validates: bool) -> None:
    """Settings Lightning takes without a word that leave a fit without the figures a user reads
    (no validation, hence no best checkpoint; no training curves), each said in one line."""
    if validates and trainer.get("limit_val_batches") == 0:
        monitor = (checkpoint or {}).get("monitor") if checkpoint is not None else None
        kept = (
            f": --checkpoint.monitor {monitor} is never logged, so no best checkpoint is kept"
            if monitor
            else ""
        )
        print(
            f"warning: --trainer.limit_val_batches 0: no validation will run{kept}",
            file=sys.stderr,
        )
    if trainer.get("log_every_n_steps") == 0:
        print(
            "warning: --trainer.log_every_n_steps 0: no training loss, learning rate or "
            "throughput will be logged (plot_runs has no training curve to draw); the default "
            "is 50",
            file=sys.stderr,
        )


def check_remote_folders(root: str | None, checkpoint: Any) -> None:
    """A run folder in an object store must be writable before anything is built: Lightning's
    logger would otherwise create a missing bucket (s3fs's makedirs does) or fail mid-setup."""
    dirpath = checkpoint.get("dirpath") if checkpoint is not None else None
    for flag, folder in (("trainer.default_root_dir", root), ("checkpoint.dirpath", dirpath)):
        if folder and remote.is_remote(folder):
            try:
                remote.check_writable(str(folder))
            except ValueError as error:
                raise ValueError(f"--{flag} {error}") from None
