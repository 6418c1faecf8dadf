"""Checkpoint files that are never half-written, and `--ckpt_path last` that finds them.

Decisions:
- `AtomicCheckpointIO` (Lightning's CheckpointIO plugin, a TorchCheckpointIO) streams
  `torch.save` into a temporary file beside the target (`.last.ckpt.<random>.tmp`, same folder,
  so same file system), fsyncs it, renames it over the target and fsyncs the folder
  (bertlab.files.atomic.atomic_write). A kill at any moment leaves either the previous file or the
  new one under the `.ckpt` name, never a truncated one. Lightning's own writer serialises the whole
  checkpoint into memory, writes it to the system temp folder and moves it across file systems
  (a copy, not a rename) without fsync; a kill during that copy leaves a truncated checkpoint.
- A failed write (disk full, quota, I/O error) deletes its temporary file and raises an OSError
  naming the checkpoint; the file it would have replaced is untouched, and ModelCheckpoint deletes
  older checkpoints only after a new one is written, so the previous good checkpoint survives.
- Temporary files a killed run left behind are never read (their names do not end in `.ckpt`)
  and are removed: from the folder a run is about to write to, at its start
  (bertlab.train.preflight), and from every folder `--ckpt_path last` searches once they are an hour
  old (a live writer, say another run sharing the folder, keeps touching its file).
- Remote paths (`s3://...`, any fsspec URL but file://) go to Lightning's writer unchanged: an
  object store's put is atomic on close (the object appears whole or not at all), so the temporary
  file and rename are for local folders only.
- `resolve_checkpoint("last", ...)`: Lightning looks for last.ckpt only in the new run's
  `version_N/checkpoints`, which is empty after a restart, and silently starts from scratch. bertlab
  resolves `last` itself: the most recently written complete checkpoint under the checkpoint
  directory or `default_root_dir`, every earlier `version_*` included. Most recent by
  modification time, as Lightning's `last`: after a deliberate rewind (resuming from an older
  checkpoint), the rewound run's checkpoints are the last ones, not the higher-step ones it
  abandoned (a copy of a run folder should keep its times: `cp -a`, `rsync -a`). "Complete"
  means a readable zip archive with its end record (torch.save's format) that loads with
  `weights_only=True` (the tensors memory-mapped, not read) and holds a global step, so a
  truncated file left by some other writer, or an exported weights-only file, is skipped with
  a warning. In an object store (`trainer.default_root_dir s3://bucket/runs`) `last` is found the
  same way, through bertlab.files.remote: a fresh listing (s3fs caches them) of every `*.ckpt`
  under the folder, newest by the store's modification time; the store counts whole seconds, so
  among checkpoints of the same second the highest global step wins, last.ckpt on a tie. Only the
  zip directory and the pickle of a candidate are read (its tensors are loaded on the `meta`
  device), not the whole object. With no checkpoint at all, `last` starts from scratch (as in
  Lightning), so a preemptible job can always pass `--ckpt_path last`.
- An explicit `--ckpt_path FILE` (or URL) that is missing or truncated is a one-line ValueError
  before anything is built, not a traceback from torch.load.
- `Checkpoint` is Lightning's ModelCheckpoint plus one thing: when fit ends between two
  validations, the final weights are still written as last.ckpt (export reads that).
"""

from __future__ import annotations

import contextlib
import logging
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.callbacks import ModelCheckpoint
from typing_extensions import override

from bertlab.files import remote
from bertlab.files.artefacts import check_checkpoint_bytes, refuse_nonfinite, torch_load_reason
from bertlab.files.atomic import atomic_write

log = logging.getLogger(__name__)
TEMPORARY_PATTERN = ".*.ckpt.*.tmp"  # atomic_write's `.{name}.{random}.tmp`
STALE_SECONDS = 3600.0


def _is_local(path: _PATH) -> bool:
    return not remote.is_remote(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes to a temporary file, fsyncs and renames it into place."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(str(path).removeprefix("file://"))
        try:
            with atomic_write(path, "wb") as f:
                self.write(checkpoint, f)
        except (OSError, RuntimeError) as error:
            # torch.save's zip writer reports a failed write() as a RuntimeError whose context
            # is the OSError (ENOSPC, EFBIG, EIO); other RuntimeErrors are bugs, not the disk.
            if isinstance(error, RuntimeError):
                if not isinstance(error.__context__, OSError):
                    raise
                error = error.__context__
            reason = error.strerror or str(error)
            failure = OSError(
                f"could not write checkpoint {path}: {reason}; the checkpoints already in "
                f"{path.parent} are intact"
            )
            failure.errno = error.errno
            raise failure from error

    def write(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        """Serialise `checkpoint` into the open temporary file (the seam tests use to kill it)."""
        torch.save(checkpoint, file)


def remove_temporary_files(
    folder: str | Path, older_than: float = 0.0, recursive: bool = False
) -> list[Path]:
    """Delete temporary checkpoint files killed runs left in `folder`; return them.

    older_than: seconds since the file last changed (a live writer keeps touching its file).
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        now = time.time()
        found = folder.rglob(TEMPORARY_PATTERN) if recursive else folder.glob(TEMPORARY_PATTERN)
        for path in found:
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime >= older_than:
                    path.unlink()
                    removed.append(path)
    return removed


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a whole torch.save archive (a truncated one has no zip end record)."""
    if not _is_local(path):
        try:
            with remote.open_read(str(path)) as f, zipfile.ZipFile(f) as archive:
                return bool(archive.namelist())
        except (OSError, ValueError, zipfile.BadZipFile):
            return False
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, ValueError, zipfile.BadZipFile):  # a garbled directory: UnicodeDecodeError
        return False


def checkpoint_step(path: str | Path) -> int | None:
    """The global step a training checkpoint holds; None when it is incomplete or not one.

    The file is memory-mapped, so only its small pickle is read, not the tensors (a remote one is
    read onto the `meta` device: its zip directory and pickle only).
    """
    if not is_complete_checkpoint(path):
        return None
    try:
        if _is_local(path):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        else:
            state = read_remote_checkpoint(str(path))
    except Exception:  # any file torch cannot read safely is simply not a candidate
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def read_run_checkpoint(ckpt_path: str) -> dict[str, Any] | None:
    """The checkpoint a resume or a test reads, checked: a Lightning checkpoint, readable, its
    weights finite. None for a path that is no local file nor URL (Lightning's keywords)."""
    try:
        if remote.is_remote(ckpt_path):  # its pickle only: the tensors stay in the store
            checkpoint = read_remote_checkpoint(ckpt_path)
        elif Path(ckpt_path).is_file():
            check_checkpoint_bytes(Path(ckpt_path), "--ckpt_path")
            checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        else:
            return None
    except Exception as error:  # damaged inside: resolve_checkpoint only sees truncation
        raise ValueError(
            f"--ckpt_path {ckpt_path} is damaged: torch.load cannot read it "
            f"({torch_load_reason(error)}); use --ckpt_path last to take the newest complete one"
        ) from None
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint:
        raise ValueError(
            f"--ckpt_path {ckpt_path}: not a checkpoint of bertlab fit (no Lightning "
            "checkpoint keys in it); give a .ckpt from a run's checkpoints folder"
        )
    refuse_nonfinite(dict(checkpoint.get("state_dict") or {}).items(), f"--ckpt_path {ckpt_path}")
    return checkpoint


def read_remote_checkpoint(url: str) -> dict[str, Any]:
    """A remote checkpoint's contents with its tensors on the `meta` device (not downloaded)."""
    with remote.open_read(url) as f, remote.errors(url, "reading the checkpoint"):
        state = torch.load(f, map_location="meta", weights_only=True)
    return state if isinstance(state, dict) else {}


def newest_checkpoint(folders: Iterable[str | Path]) -> Path | str | None:
    """The most recently written complete training checkpoint (`*.ckpt`) under `folders`,
    recursively; None when there is none. A URL folder gives a URL."""
    folders = [f for f in folders if f]
    urls = [str(f) for f in folders if not _is_local(f)]
    found: set[Path] = set()
    for folder in (Path(f) for f in folders if _is_local(f)):
        if folder.is_dir():
            found.update(p for p in folder.rglob("*.ckpt") if p.is_file())
    if urls:
        return _newest_remote(urls, found)
    for path in sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        if checkpoint_step(path) is not None:
            return path
        log.warning("skipping %s: not a complete training checkpoint", path)
    return None


def _newest_remote(urls: list[str], local: set[Path]) -> Path | str | None:
    """newest_checkpoint over URL folders (and local files): newest second first, then within
    it the highest step, last.ckpt on a tie (a store's times count whole seconds)."""
    seconds: dict[int, list[Path | str]] = {}
    for path in local:
        seconds.setdefault(int(path.stat().st_mtime), []).append(path)
    for url in urls:
        for found, info in remote.files_under(url, "*.ckpt"):
            seconds.setdefault(int(info["mtime"]), []).append(found)
    for second in sorted(seconds, reverse=True):
        steps = []
        for path in seconds[second]:
            step = checkpoint_step(path)
            if step is None:
                log.warning("skipping %s: not a complete training checkpoint", path)
                continue
            name = path.name if isinstance(path, Path) else remote.name(path)
            steps.append((step, name == "last.ckpt", str(path), path))
        if steps:
            return max(steps, key=lambda item: item[:3])[3]
    return None


def resolve_checkpoint(
    ckpt_path: str | None, folders: Iterable[str | Path], missing_ok: bool = True
) -> str | None:
    """`--ckpt_path` as fit should get it: `last` resolved in `folders`, a file checked.

    `hpc` passes unchanged; a URL is checked like a file. `best` is refused: Lightning means the
    best checkpoint of a fit in the same process, which a command never has.
    """
    if ckpt_path == "best":
        raise ValueError(
            "--ckpt_path best: a new bertlab process knows no best checkpoint (Lightning keeps it "
            "only within one fit); give the checkpoint file (its name carries val_loss) or last"
        )
    if ckpt_path is None or ckpt_path == "hpc":
        return ckpt_path
    if ckpt_path == "last":
        folders = [Path(f) if _is_local(f) else str(f) for f in folders if f]
        for folder in folders:
            if isinstance(folder, Path):
                remove_temporary_files(folder, older_than=STALE_SECONDS, recursive=True)
        found = newest_checkpoint(folders)
        if found is None:
            where = ", ".join(str(f) for f in folders)
            if not missing_ok:  # validate / test: random weights are no answer
                raise ValueError(f"--ckpt_path last: no checkpoint in {where} to score")
            log.warning("--ckpt_path last: no checkpoint in %s yet; starting from scratch", where)
            return None
        log.info("--ckpt_path last: resuming from %s", found)
        return str(found)
    if not _is_local(ckpt_path):
        if not remote.is_file(ckpt_path):
            raise ValueError(f"--ckpt_path {ckpt_path}: {remote.missing(ckpt_path)}")
    elif Path(ckpt_path).is_dir():
        shown = next(iter(sorted(Path(ckpt_path).glob("*.ckpt"))), None)
        hint = f" such as {shown}" if shown else ""
        raise ValueError(
            f"--ckpt_path {ckpt_path} is a folder; give a checkpoint file{hint}, or "
            "--ckpt_path last"
        )
    elif not Path(ckpt_path).is_file():
        raise ValueError(f"--ckpt_path {ckpt_path}: no such file")
    if not is_complete_checkpoint(ckpt_path):
        raise ValueError(
            f"--ckpt_path {ckpt_path} is not a complete checkpoint (truncated or not written by "
            "torch.save); use --ckpt_path last to take the newest complete one"
        )
    return ckpt_path


def checkpoint_size_estimate(module: torch.nn.Module) -> int:
    """Bytes a full training checkpoint of `module` takes: weights, buffers, AdamW's two moments.

    Weights and buffers at their stored size, plus two fp32 moments per trainable parameter, plus
    1 MiB for the rest (loop and data state, hyperparameters, the zip directory).
    """
    state = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    moments = sum(2 * 4 * p.numel() for p in module.parameters() if p.requires_grad)
    return state + moments + 2**20


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves last.ckpt when fit ends between two validations, and
    refuses a `monitor` bertlab never logs before training (Lightning's own check comes only at
    the first validation's end, after the training it cost)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        names = getattr(pl_module, "LOGGED_METRICS", None)
        if self.monitor is not None and names is not None and self.monitor not in names:
            raise ValueError(
                f"--checkpoint.monitor {self.monitor}: bertlab logs no metric of that name; "
                f"give one of {', '.join(names)}"
            )
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
