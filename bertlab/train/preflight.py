"""Checks that fail a run before its first step instead of hours into it.

Decisions:
- `Preflight` (a callback, `on_fit_start`: the model, the checkpoint folders and a restored
  checkpoint all exist, nothing has trained yet) makes each checkpoint folder, writes, fsyncs and
  deletes a probe file in it, removes temporary files a killed run left there, and demands free
  space for `free_checkpoints` checkpoints of this model (weights, buffers and AdamW's moments:
  bertlab.train.checkpointing.checkpoint_size_estimate) plus `min_free_mb`. Two checkpoints by
  default: the new file is written beside the one it replaces. Rank 0 checks (it writes the
  checkpoints) and broadcasts the verdict, so every process fails together instead of hanging.
- A fresh run (no `--ckpt_path`) refuses a checkpoint folder that already holds a `last.ckpt`:
  it would replace an earlier run's newest checkpoint (bertlab.files.output_folder's rule: never
  replace what this run did not write). Lightning's own folders are new per run
  (`version_N/checkpoints`), so only a shared `checkpoint.dirpath` meets this; the user resumes
  with `--ckpt_path last` or chooses another folder.
- A failure is an OSError whose one line names the folder, the free and needed space, and the
  keys that change them; it is raised before any step, so no checkpoint of this run exists yet.
- A checkpoint folder in an object store (`s3://...`, bertlab.files.remote) is checked by writing
  and deleting a probe object (a missing bucket, missing credentials or no write access fail
  here, in one line naming the folder); a store has no free space to measure.
- Free space can still run out later (other writers); then the atomic checkpoint writer fails
  that save alone and keeps the previous checkpoint (bertlab.train.checkpointing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from bertlab.files import remote
from bertlab.files.atomic import atomic_write
from bertlab.train.checkpointing import checkpoint_size_estimate, remove_temporary_files

MIB = 2**20


class Preflight(Callback):
    """Before the first step: checkpoint folders writable, with room for new checkpoints.

    Args:
        free_checkpoints: Free space to demand in each checkpoint folder, in checkpoints of this
            model (0 turns the space check off).
        min_free_mb: Extra free space (MiB) to demand on top.
    """

    def __init__(self, free_checkpoints: float = 2.0, min_free_mb: float = 0.0) -> None:
        if free_checkpoints < 0 or min_free_mb < 0:
            raise ValueError(
                "--preflight.free_checkpoints and --preflight.min_free_mb must be >= 0"
            )
        self.free_checkpoints = free_checkpoints
        self.min_free_mb = min_free_mb

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        error = None
        if trainer.is_global_zero:
            folders = {str(c.dirpath) for c in trainer.checkpoint_callbacks if c.dirpath}
            needed = self.free_checkpoints * checkpoint_size_estimate(pl_module)
            needed += self.min_free_mb * MIB
            error = next(filter(None, (check_folder(f, needed) for f in sorted(folders))), None)
            if error is None and trainer.ckpt_path is None:
                error = next(filter(None, map(earlier_run, sorted(folders))), None)
        error = trainer.strategy.broadcast(error)
        if error:
            raise OSError(error)


def earlier_run(folder: str | Path) -> str | None:
    """Why a fresh run must not write into `folder` (None when it may)."""
    if remote.is_remote(folder):
        if not remote.exists(remote.join(folder, "last.ckpt")):
            return None
    elif not (Path(folder) / "last.ckpt").exists():
        return None
    return (
        f"checkpoint folder {folder} holds last.ckpt of an earlier run, which this run would "
        "replace; resume that run with --ckpt_path last, or set checkpoint.dirpath to a new folder"
    )


def check_folder(folder: str | Path, needed_bytes: float) -> str | None:
    """Why checkpoints cannot be written to `folder` (None when they can)."""
    if remote.is_remote(folder):
        try:
            remote.check_writable(str(folder))
        except ValueError as error:
            return f"checkpoint folder {error}; set checkpoint.dirpath or trainer.default_root_dir"
        return None
    folder = Path(folder)
    hint = "set checkpoint.dirpath or trainer.default_root_dir to a writable folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / ".bertlab-write-test", "wb") as f:
            f.write(b"bertlab")
        (folder / ".bertlab-write-test").unlink()
        remove_temporary_files(folder)
        free = shutil.disk_usage(folder).free
    except OSError as error:
        return f"checkpoint folder {folder} is not writable: {error.strerror or error}; {hint}"
    if free < needed_bytes:
        return (
            f"checkpoint folder {folder} has {free / MIB:.0f} MiB free, but checkpoints of this "
            f"model need about {needed_bytes / MIB:.0f} MiB (preflight.free_checkpoints, "
            f"preflight.min_free_mb); free some space or {hint}"
        )
    return None
