"""What every bertlab tokenizer shares: the fixed special tokens and the corpus lines it reads.

Decisions:
- The five BERT special tokens have FIXED ids in every tokenizer, whatever its algorithm:
  [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4. Samples, masking and export rely on them.
- Training and parity text is the corpus format (one sentence a line, blank lines between
  documents): blank lines carry no text and are skipped. A line keeps its own spaces (only the
  newline goes), so parity is checked on exactly what a user's file holds.
- Lines are decoded one by one so a file that is not UTF-8 fails naming the line and byte offset.
- A sample of `size` lines is a reservoir sample (one pass, memory bounded by the sample, seeded),
  returned in file order so that training input does not depend on how the sample was drawn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from bertlab.files.output_folder import refuse_foreign_text

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPECIAL_IDS: dict[str, int] = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
# Real text in a tokenizer's own language has well under 1% [UNK]: above 5% the text is not
# (another language or script), and what a model does with it says little. Every reader warns.
MAX_UNKNOWN_SHARE = 0.05


# A file's first bytes -> its compression: the tokenizer trainers read plain text only.
COMPRESSED_MAGIC = (("gzip", b"\x1f\x8b"), ("xz", b"\xfd7zXZ\x00")) + tuple(
    ("bzip2", f"BZh{level}".encode()) for level in range(1, 10)
)


def compression_of(path: Path) -> str | None:
    """gzip, xz or bzip2 when the file's first bytes say it is compressed; None for text."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for name, magic in COMPRESSED_MAGIC if head.startswith(magic)), None)


def iter_lines(path: str, flag: str = "--train_file") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for every non-blank line of a UTF-8 text file."""
    file = Path(path)
    if not file.exists():
        raise ValueError(f"{flag} {path} does not exist")
    if not file.is_file():
        raise ValueError(f"{flag} {path} is not a file")
    refuse_foreign_text(file, flag)  # a vocab.txt or meta.json read as text trains nonsense
    offset = 0
    kind = compression_of(file)
    with open(file, "rb") as f:
        if kind is not None:
            raise ValueError(
                f"{flag} {path} is {kind}-compressed: give the plain text (prepare_corpus's "
                "train.txt, or the file decompressed)"
            )
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{flag} {path} is not UTF-8: line {number}, byte offset {offset + error.start}"
                ) from None
            offset += len(raw)
            text = text.rstrip("\r\n")
            if text.strip():
                yield number, text


def sample_lines(
    path: str, size: int | None = None, seed: int = 0, flag: str = "--train_file"
) -> tuple[list[tuple[int, str]], int]:
    """Return (a seeded sample of at most `size` non-blank lines in file order, lines in the file).

    `size` None or 0 keeps every line.
    """
    rng = random.Random(seed)
    sample: list[tuple[int, str]] = []
    count = 0
    lines = tqdm(iter_lines(path, flag), desc=f"reading {Path(path).name}", unit=" lines",
                 disable=None, leave=False)  # fmt: skip
    for count, item in enumerate(lines, 1):
        if not size or count <= size:
            sample.append(item)
        else:
            slot = rng.randrange(count)
            if slot < size:
                sample[slot] = item
    if count == 0:
        raise ValueError(f"{flag} {path} has no text (it is empty or holds only blank lines)")
    sample.sort()
    return sample, count
