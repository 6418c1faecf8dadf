"""The tokenizer half of an export: the right tokenizer, copied, proven to tokenize alike.

Decisions:
- The tokenizer folder's files are copied byte for byte (tokenizer.json, tokenizer_config.json,
  vocab.txt, sentencepiece.model, ...), not re-saved through transformers:
  bertlab.tokenizer.training chose what they hold (a class name both transformers 4 and 5 load,
  BERT's lowercase flags), and a re-save by whatever transformers is installed could change that.
  Only the files a tokenizer consists of are copied, never a stray file of the folder.
- The tokenizer must be the model's: its size must equal the embedding matrix's rows, and when the
  training samples' meta.json records a fingerprint, the folder must have it (a same-sized
  tokenizer of another corpus loads fine and makes every prediction wrong).
- Checks on the exported copy, loaded with `AutoTokenizer` as Hub users will: the ids equal the
  source folder's on the check texts, and bertlab's parity check against the raw model
  (`sentencepiece.model`, or tokenizer.json run by `tokenizers`) finds no difference.
- Check texts are the first lines of the training corpus named in the samples' meta.json (a
  prefix, not a sample: real corpora are gigabytes and the export must not read them whole),
  else built-in sentences in several scripts.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "sentencepiece.model",
)
NUM_CHECK_LINES = 200
FALLBACK_TEXTS = [
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog, doesn't it?",
    "日本の首都は東京です。",
    "Berlin ist die Hauptstadt von Deutschland.",
    "Numbers like 3.14159 and 2,718 appear in text too.",
    "Ünïcödé àccents, “quotes” and emoji 🙂 are text as well.",
]


def load_source_tokenizer(folder: Path):
    """The tokenizer as bertlab loads it (AutoTokenizer, special tokens checked)."""
    from bertlab.tokenizer.training import load_tokenizer

    return load_tokenizer(str(folder))


def check_tokenizer(folder: Path, vocab_size: int, samples_meta: dict[str, Any]):
    """Load the tokenizer folder and check that it is the one the model was trained with."""
    if not (folder / "tokenizer_config.json").is_file():
        raise ValueError(f"tokenizer folder {folder} has no tokenizer_config.json")
    tokenizer = load_source_tokenizer(folder)
    if len(tokenizer) != vocab_size:
        raise ValueError(
            f"tokenizer {folder} has {len(tokenizer)} tokens but the model's vocabulary is "
            f"{vocab_size}; pass the --tokenizer the model was trained with"
        )
    if tokenizer.mask_token is None:
        raise ValueError(f"tokenizer {folder} has no mask token")
    recorded = (samples_meta.get("tokenizer") or {}).get("fingerprint")
    if recorded:
        from bertlab.tokenizer.training import tokenizer_fingerprint

        actual = tokenizer_fingerprint(str(folder))
        if actual != recorded:
            raise ValueError(
                f"tokenizer {folder} (fingerprint {actual}) is not the one the training samples "
                f"were made with (fingerprint {recorded}); pass that --tokenizer"
            )
    return tokenizer


def check_folder_tokenizer(tok, chosen: str, folder: Path, vocab_size: int) -> None:
    """A --tokenizer given with a model folder must be the folder's own vocabulary: ids of
    another one index the wrong embeddings (silently) or beyond them."""
    from transformers import AutoTokenizer

    if len(tok) > vocab_size:
        raise ValueError(
            f"--tokenizer {chosen} has {len(tok)} tokens but --model {folder} embeds "
            f"{vocab_size}; give the tokenizer the model was trained with"
        )
    if Path(chosen).resolve() == folder.resolve() or not any(
        (folder / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")
    ):
        return  # nothing of its own to compare with
    own = AutoTokenizer.from_pretrained(folder)
    if own.get_vocab() != tok.get_vocab():
        raise ValueError(
            f"--tokenizer {chosen} is another vocabulary than --model {folder}'s own tokenizer "
            f"({len(tok)} and {len(own)} tokens); leave --tokenizer out to use the model's"
        )


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
            copied.append(name)
    return copied


def check_texts(samples_meta: dict[str, Any]) -> tuple[list[tuple[int, str]], str]:
    """Numbered lines to check the tokenizer and the logits on, and where they come from."""
    from bertlab.tokenizer.special import iter_lines

    for source in samples_meta.get("source_files") or []:
        if Path(source).is_file():
            try:
                lines = list(itertools.islice(iter_lines(source, "corpus"), NUM_CHECK_LINES))
            except ValueError:
                continue
            if len(lines) >= 2:
                return lines, f"the first {len(lines)} lines of {Path(source).name}"
    lines = list(enumerate(FALLBACK_TEXTS, start=1))
    return lines, f"{len(lines)} built-in sentences (the training corpus was not found)"


def tokenizer_info(folder: Path, source: Path, tokenizer) -> dict[str, Any]:
    """What the card says about the tokenizer, read from the exported copy."""
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    info: dict[str, Any] = {"class": config.get("tokenizer_class") or type(tokenizer).__name__}
    model_type, lowercase = None, config.get("do_lower_case")
    if (folder / "tokenizer.json").is_file():
        backend = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model_type = (backend.get("model") or {}).get("type")
        normalizer = json.dumps(backend.get("normalizer"))
        if lowercase is None and '"lowercase": true' in normalizer:
            lowercase = True
    has_spm = (folder / "sentencepiece.model").is_file()
    kind = {"Unigram": "SentencePiece Unigram", "BPE": "BPE", "WordPiece": "WordPiece"}
    described = kind.get(model_type, model_type or info["class"])
    if model_type == "BPE" and has_spm:
        described = "SentencePiece BPE"
    try:
        from bertlab.tokenizer.training import tokenizer_fingerprint

        fingerprint = tokenizer_fingerprint(str(source))
    except (ValueError, OSError):  # a folder without its files: the card says none
        fingerprint = None
    info.update(
        type=described,
        vocab_size=len(tokenizer),
        lowercase=bool(lowercase),
        mask_token=tokenizer.mask_token,
        fingerprint=fingerprint,
        sentencepiece_model="sentencepiece.model" if has_spm else "none (not SentencePiece)",
    )
    return info


def verify_tokenizer_folder(folder: Path, source, lines: list[tuple[int, str]], where: str) -> str:
    """AutoTokenizer on the copy gives the source's ids and has parity with the raw model."""
    from transformers import AutoTokenizer

    from bertlab.tokenizer.parity import compare_lines

    texts = [text for _, text in lines]
    copy = AutoTokenizer.from_pretrained(str(folder))
    if copy(texts)["input_ids"] != source(texts)["input_ids"]:
        raise ValueError(
            f"export check failed: the exported tokenizer tokenizes {where} differently from "
            "the source folder"
        )
    report = compare_lines(str(folder), lines, where)
    if not report.ok:
        raise ValueError(f"export check failed: tokenizer {report.summary()}")
    return f"AutoTokenizer reload: same ids as the source folder; {report.summary()} ({where})"
