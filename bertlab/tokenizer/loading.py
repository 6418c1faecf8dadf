"""Opening a tokenizer folder with AutoTokenizer: every way it can fail is one line naming it.

Decisions:
- Every command that reads a tokenizer folder (prepare_samples, fit's data and model, the
  held-out evaluator, fine-tuning, export) opens it here, so a folder is judged the same way
  wherever it is given, with the user's flag in the message.
- Before AutoTokenizer: the path must be a folder, hold a tokenizer file, and its files must be
  whole (bertlab.files.artefacts names a damaged one; transformers' JSON errors name none). Another
  command's folder given by mistake (samples, a corpus) is named for what it is, by its marker.
- AutoTokenizer raises many types for a folder it cannot read (OSError, ValueError, and for a
  tokenizer.json of the wrong structure an AttributeError about a 'str'): each becomes one line
  with its first line of text. A reason ending in ':' ("...from one of:") keeps its list.
- Whether the tokenizer has BERT's special tokens at bertlab's fixed ids is the caller's check
  (bertlab.tokenizer.training.load_tokenizer): other models' tokenizers are opened here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertlab.files.artefacts import check_model_folder
from bertlab.files.output_folder import read_marker

# Any one of these makes a folder a tokenizer folder AutoTokenizer may load.
LOADABLE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.model", "spiece.model",
)  # fmt: skip


def open_tokenizer(path: str | Path, flag: str) -> Any:
    """AutoTokenizer.from_pretrained(path), or a ValueError starting with `flag` and `path`."""
    import transformers
    from transformers import AutoTokenizer

    folder = Path(path)
    where = f"{flag} {path}"
    if folder.is_file():
        raise ValueError(f"{where} is a file; give the folder that holds tokenizer.json")
    if not folder.is_dir():
        raise ValueError(f"{where} does not exist")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        present = [name for name in LOADABLE_FILES if (folder / name).is_file()]
        if present:  # AutoTokenizer would guess a class and fail mid-sentence about tiktoken
            raise ValueError(
                f"{where} holds {', '.join(present)} but no tokenizer.json or "
                "tokenizer_config.json; give a folder train_tokenizer or export_model wrote "
                "(tools/convert_tokenizer.py makes one from a SentencePiece model)"
            )
    if not any((folder / name).is_file() for name in LOADABLE_FILES):
        marker = read_marker(folder)
        hint = (
            f"it is {marker['command']}'s output; give the folder train_tokenizer or "
            "export_model wrote"
            if marker
            else "give a folder train_tokenizer or export_model wrote"
        )
        raise ValueError(f"{where} holds no tokenizer files (tokenizer.json); {hint}")
    check_model_folder(folder, where)  # a damaged file named, not a traceback
    transformers.logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:  # transformers raises many types for a folder it cannot read
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = (lines or [type(error).__name__])[0]
        if isinstance(error, (AttributeError, TypeError, KeyError)):
            reason = f"its tokenizer.json is not the structure transformers reads ({reason})"
        elif reason.endswith(":"):  # "...from one of:" and a list: keep the list, on one line
            reason = " ".join(lines)[:300]
        raise ValueError(f"{where} cannot be loaded as a tokenizer: {reason}") from None
