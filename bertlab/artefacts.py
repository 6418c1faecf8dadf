"""Damaged artefacts: a truncated or corrupt file bertlab reads is one error line naming the file.

The libraries that read model folders raise their own errors for a damaged file, and not always
ones a user can act on: safetensors' `SafetensorError: incomplete metadata, file not fully
covered` names no file and ends in a traceback; torch.load of a truncated checkpoint can raise a
bare `[Errno 22] Invalid argument`. The checks here read each file the way its library will, before
the library does, and turn any failure into a ValueError naming the flag, the file and the reason.

Decisions:
- A model folder is checked file by file: config.json and the tokenizer's JSON files must parse
  as JSON objects, each *.safetensors file must open with a complete header (the header lists
  every tensor's byte range, so a truncated file fails here). Corrupt bytes inside a tensor's
  data are not detectable without a checksum the format does not have; the export's own reload
  checks are what catch those at export time.
- Only the first line of a library's message is kept (the rest is advice for its own developers).
- The checks are cheap (headers and small JSON files), so every command that reads a folder runs
  them, including a dry run that would otherwise report a broken folder as fine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def torch_load_reason(error: BaseException) -> str:
    """What a failed `torch.load(weights_only=True)` says about the file, in a few words.

    torch's first line for any refused pickle is advice to load with weights_only=False ("will
    likely succeed, but it can result in arbitrary code execution"): for a damaged or foreign
    file that is both wrong and unsafe to pass on. The unpickler's own reason follows it.
    """
    text = " ".join(str(error).split())
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0]
        detail = detail.strip().rstrip(".")
        if detail.startswith("Unsupported global"):
            return f"it holds Python objects a safe load refuses ({detail})"
        return f"not a PyTorch checkpoint, or damaged (unpickler: {detail})"
    return _reason(error)


def read_json_object(path: Path, flag: str) -> dict[str, Any]:
    """The JSON object in `path`; a ValueError naming it if it is missing or damaged."""
    if not path.is_file():
        raise ValueError(f"{flag}: {path} is missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{flag}: {path} is damaged: not valid JSON ({_reason(error)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: {path} is damaged: not a JSON object")
    return value


def check_safetensors(path: Path, flag: str) -> None:
    """ValueError naming `path` unless its header is complete and names its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as error:  # SafetensorError is not exported under a stable name
        raise ValueError(
            f"{flag}: {path} is damaged: not a complete safetensors file ({_reason(error)})"
        ) from None


def check_model_folder(folder: Path, flag: str) -> None:
    """Check config.json, the weights' headers and the tokenizer's JSON files of a model folder
    (each one that is there: whether the folder has what it needs is the caller's check)."""
    if (folder / "config.json").is_file():
        config = read_json_object(folder / "config.json", flag)
        if "model_type" not in config:  # transformers: "Unrecognized model in ...", no flag
            raise ValueError(
                f"{flag}: {folder / 'config.json'} has no model_type: not the config of a "
                "transformers model (export one with tools/export_model.py)"
            )
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights, flag)
    for name in TOKENIZER_JSON:
        if (folder / name).is_file():
            read_json_object(folder / name, flag)
