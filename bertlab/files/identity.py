"""Whether two names are one file: a relative and an absolute path, a symbolic or a hard link.

Decisions:
- A file is its device and inode: two spellings of a path, a symbolic link and a hard link all
  share them, so a reader that compares inputs (a corpus named twice, a validation file that is
  the training file, a unigram corpus that is the held-out text) sees through every one.
- A name that cannot be stat'ed (missing, a URL) is compared by its resolved path instead; its
  reader refuses it on its own terms.
"""

from __future__ import annotations

import os
from pathlib import Path


def file_identity(path: str | os.PathLike) -> tuple[int, int] | str:
    """(device, inode) of the file `path` names, or its resolved path when it has none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        try:
            return str(Path(path).resolve())
        except (OSError, RuntimeError):  # a symbolic link loop
            return str(path)
    return (info.st_dev, info.st_ino)
