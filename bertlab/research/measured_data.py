"""The data a measurement runs on: the shared English sample through bertlab's own pipeline,
built once and cached by the settings that made it.

Decisions:
- Input: the shared English sample (../shared/data, or $BERTLAB_SHARED_DATA); where it is absent
  (a contributor's clone, a GPU machine without ../shared) the repository's slice of the same
  dump (tests/text, 58 articles), so every measuring tool runs on real text anywhere.
- Corpus, tokenizer and samples are each cached under `work_dir` in a folder named by a hash of
  the settings that made it (and of the input file's size and mtime), written atomically, so a
  rerun starts measuring at once and a changed setting never reuses a stale folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bertlab.files.atomic import atomic_dir

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = os.environ.get("BERTLAB_SHARED_DATA", str(REPO.parent / "shared" / "data"))
DEFAULT_INPUT = next(
    (
        str(p)
        for p in (
            Path(SHARED_DATA) / "enwiki-sample.xml.bz2",
            REPO / "tests" / "text" / "enwiki-sample.xml.bz2",
        )
        if p.is_file()
    ),
    str(Path(SHARED_DATA) / "enwiki-sample.xml.bz2"),
)


def settings_key(settings: dict) -> str:
    """A short stable name for a set of settings."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def cached(folder: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """Build `folder` with build(tmp) unless a complete one (holding `marker`) exists."""
    if not (folder / marker).exists():
        with atomic_dir(folder) as tmp:
            build(tmp)
    return folder


@dataclass
class PipelineData:
    """Paths of a cached corpus folder, tokenizer folder and one samples folder per split."""

    corpus: Path
    tokenizer: Path
    samples: dict[str, Path] = field(default_factory=dict)

    def meta(self, split: str = "train") -> dict:
        return json.loads((self.samples[split] / "meta.json").read_text(encoding="utf-8"))


def _corpus(source: Path, output_dir: Path, valid_docs: int, test_docs: int) -> None:
    """prepare_corpus of the benchmark's --input; its split sizes are the benchmark's own
    choice, so a dump too small for them is the --input's fault, said so."""
    from bertlab.corpus.prepare import prepare_corpus

    try:
        prepare_corpus(input=[str(source)], output_dir=str(output_dir), lang="en",
                       valid_docs=valid_docs, test_docs=test_docs)  # fmt: skip
    except ValueError as error:
        if "leave no training documents" not in str(error):
            raise
        raise ValueError(
            f"--input {source} is too small: the benchmark holds out {valid_docs + test_docs} "
            "documents for validation and test, and it has no more; give a larger dump"
        ) from None


def cached_pipeline(
    input: str,
    work_dir: str,
    *,
    prefix: str,
    valid_docs: int,
    test_docs: int,
    vocab_size: int,
    splits: tuple[str, ...] = ("train",),
    **sample_args,
) -> PipelineData:
    """prepare_corpus (English) -> a WordPiece of `vocab_size` -> prepare_samples(**sample_args)
    of each split, each stage cached under work_dir as `<prefix>corpus-<hash>`, ..."""
    from bertlab.samples.prepare import prepare_samples
    from bertlab.tokenizer.training import train_tokenizer

    source = Path(input)
    if not source.is_file():
        raise ValueError(f"--input {input}: no such file")
    work, stat = Path(work_dir), source.stat()
    corpus_settings = {
        "input": str(source.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime),
        "lang": "en", "valid_docs": valid_docs, "test_docs": test_docs, "seed": 0,
    }  # fmt: skip
    made = not work.exists()
    try:
        corpus = cached(
            work / f"{prefix}corpus-{settings_key(corpus_settings)}",
            "train.txt",
            lambda tmp: _corpus(source, tmp, valid_docs, test_docs),
        )
        tokenizer_settings = {"corpus": corpus.name, "type": "wordpiece", "vocab": vocab_size}
        tokenizer = cached(
            work / f"{prefix}tokenizer-{settings_key(tokenizer_settings)}",
            "tokenizer.json",
            lambda tmp: train_tokenizer(
                str(corpus / "train.txt"), str(tmp), model_type="wordpiece", vocab_size=vocab_size
            ),
        )
        data = PipelineData(corpus, tokenizer)
        for split in splits:
            settings = {"corpus": corpus.name, "tokenizer": tokenizer.name, "split": split}
            data.samples[split] = cached(
                work / f"{prefix}samples-{settings_key(settings | sample_args)}",
                "meta.json",
                lambda tmp, split=split: prepare_samples(
                    str(corpus / f"{split}.txt"), str(tokenizer), str(tmp), **sample_args
                ),
            )
    except BaseException:
        if made and work.is_dir() and not any(work.iterdir()):  # a failed first stage: no cache
            work.rmdir()
        raise
    return data
