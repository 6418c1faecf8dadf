"""Atomic outputs: a file or folder appears under its final name only once it is complete.

Every tool writes through these helpers so that a crash, a kill or a user's mistake halfway never
leaves an output that looks finished: data goes to a temporary name beside the target (same file
system, so the final rename is atomic), is flushed and fsynced, then renamed into place. A
target that is a symbolic link is written where the link points, and the link stays: renaming
over the link would replace the user's link with a file and leave the old output beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _target(path: str | os.PathLike) -> Path:
    """The path an output is renamed to: a symbolic link's target, the link kept."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it to `path`."""
    path = _target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; outputs are meant to be shared like any other file.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` as a whole.

    With overwrite=False an existing non-empty `path` is a ValueError (before anything is written).
    """
    path = _target(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory")
    if not overwrite and path.exists() and any(path.iterdir()):
        raise ValueError(f"{path} exists and is not empty (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        if path.exists():
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        # A signal (bertlab.signals.Interrupted) can land between the two renames: the earlier
        # output goes back under its name, or, once the new one is in place, is removed.
        if old.exists():
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
