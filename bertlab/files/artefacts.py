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
  data leave the header whole: the format has no checksum, so the folder's marker records the
  SHA-256 of each weights file its command wrote (bertlab.files.output_folder.write_marker) and
  the weights check compares it. A folder without one (downloaded, hand-made) is read as it is.
- The tokenizer's raw vocabularies are checked too, because nothing else would notice them: with
  tokenizer.json in the folder, AutoTokenizer never reads vocab.txt or sentencepiece.model, yet
  they ship with the model and are what other tools (BertTokenizer's slow class, the original
  BERT code, SentencePiece users) load. vocab.txt must be UTF-8, one distinct token a line, hold
  the special tokens the config declares, and list tokenizer.json's WordPiece vocabulary in id
  order; sentencepiece.model must parse and load in SentencePiece and hold tokenizer.json's
  pieces in id order. Comparing with tokenizer.json is what catches a file cut at a line or
  message boundary, which parses fine.
- Only the first line of a library's message is kept (the rest is advice for its own developers).
- The checks are cheap (headers, JSON files, vocabularies), so every command that reads a
  folder runs them, including a dry run that would otherwise report a broken folder as fine.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bertlab.files.output_folder import file_sha256, read_marker

TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VOCAB_FILE = "vocab.txt"
SPM_FILE = "sentencepiece.model"
SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask")
# BertTokenizer's own defaults: what a vocab.txt must hold when no config declares other tokens.
BERT_SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


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


def check_readable(path: Path, flag: str) -> None:
    """A file this user may not read is refused as that: the libraries' own errors for it read
    as damage ("not a complete safetensors file (No such file or directory)", "not a
    checkpoint torch.load can read")."""
    try:
        open(path, "rb").close()  # noqa: SIM115 (opened only to be refused or not)
    except PermissionError:
        raise ValueError(
            f"{flag}: {path} cannot be read by this user (permission denied); fix its "
            "permissions, e.g. chmod a+r"
        ) from None
    except OSError:
        return  # missing or not a file: the caller's own check says which


def check_checkpoint_bytes(path: Path, flag: str) -> None:
    """A torch.save archive whose stored bytes no longer match the zip's CRC-32 (junk written
    inside a tensor) loads without a word: torch does not check. Read and checked here; one
    pass over the file, a second or so a GB."""
    import zipfile

    check_readable(path, flag)

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, ValueError, zipfile.BadZipFile):
        return  # not a zip at all: torch.load's own refusal names it
    if bad is not None:
        raise ValueError(
            f"{flag} {path} is damaged: {bad} does not match its checksum; take another "
            "checkpoint (--ckpt_path last takes the newest complete one)"
        )


def read_json_object(path: Path, flag: str) -> dict[str, Any]:
    """The JSON object in `path`; a ValueError naming it if it is missing or damaged."""
    if not path.is_file():
        raise ValueError(f"{flag}: {path} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:  # unreadable is not damaged: say which
        raise ValueError(f"{flag}: {path} cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        raise ValueError(f"{flag}: {path} is damaged: not UTF-8 text ({_reason(error)})") from None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{flag}: {path} is damaged: not valid JSON ({_reason(error)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: {path} is damaged: not a JSON object")
    return value


def check_safetensors(path: Path, flag: str) -> None:
    """ValueError naming `path` unless its header is complete and names its tensors."""
    from safetensors import safe_open

    check_readable(path, flag)
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
    check_tokenizer_files(folder, flag)


def check_tokenizer_files(folder: Path, flag: str) -> None:
    """Check each tokenizer file of `folder` that is there: the JSON files parse as objects,
    vocab.txt and sentencepiece.model are whole and hold the vocabulary tokenizer.json holds."""
    configs = {
        name: read_json_object(folder / name, flag)
        for name in TOKENIZER_JSON
        if (folder / name).is_file()
    }
    model = configs.get("tokenizer.json", {}).get("model")
    model = model if isinstance(model, dict) else {}
    if (folder / VOCAB_FILE).is_file():
        check_vocab_txt(folder / VOCAB_FILE, flag, _declared_special(configs), _wordpiece(model))
    if (folder / SPM_FILE).is_file():
        check_sentencepiece_model(folder / SPM_FILE, flag, _pieces(model))


def _declared_special(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """role -> token of the special tokens the folder's configs declare (BERT's when none do)."""
    declared: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        for role in SPECIAL_ROLES:
            value = configs.get(name, {}).get(f"{role}_token")
            if isinstance(value, dict):  # an AddedToken as transformers saves it
                value = value.get("content")
            if isinstance(value, str) and value:
                declared.setdefault(role, value)
    return declared or dict(BERT_SPECIAL)


def _wordpiece(model: dict[str, Any]) -> list[str] | None:
    """tokenizer.json's WordPiece vocabulary in id order; None when it has none to compare."""
    vocab = model.get("vocab")
    if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
        return None
    order = sorted(vocab, key=lambda token: vocab[token])
    return order if [vocab[t] for t in order] == list(range(len(order))) else None


def _pieces(model: dict[str, Any]) -> list[tuple[str, float | None]] | None:
    """tokenizer.json's pieces (with Unigram scores) in id order; None when it has none."""
    vocab = model.get("vocab")
    if model.get("type") == "Unigram" and isinstance(vocab, list):
        try:
            return [(str(piece), float(score)) for piece, score in vocab]
        except (TypeError, ValueError):
            return None
    if model.get("type") == "BPE" and isinstance(vocab, dict):
        order = sorted(vocab, key=lambda piece: vocab[piece])
        if [vocab[p] for p in order] == list(range(len(order))):
            return [(piece, None) for piece in order]
    return None


def check_vocab_txt(
    path: Path, flag: str, special: dict[str, str], expected: list[str] | None = None
) -> None:
    """ValueError naming `path` unless it is UTF-8, one distinct token a line, holds the
    `special` tokens and, given tokenizer.json's vocabulary `expected`, lists exactly it."""
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{flag}: {path} is damaged: empty file (0 bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{flag}: {path} is damaged: not UTF-8 text (invalid byte at offset {error.start})"
        ) from None
    # BertTokenizer reads a token a line (universal newlines): line n (from 1) is id n - 1.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    tokens = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    seen: dict[str, int] = {}
    for line, token in enumerate(tokens, 1):
        if token in seen:
            raise ValueError(
                f"{flag}: {path} is damaged: token {token!r} is on lines {seen[token]} and "
                f"{line} (one token with two ids)"
            )
        seen[token] = line
    for role, token in special.items():
        if token not in seen:
            raise ValueError(  # the config declares the special tokens: which one changed?
                f"{flag}: {path} has no {token} line, the {role} token "
                f"{path.with_name('tokenizer_config.json').name} declares: one of the two is "
                "damaged or was edited; train or convert the tokenizer again"
            )
    if expected is not None and tokens != expected:
        if len(tokens) != len(expected):
            detail = f"{len(tokens)} tokens, tokenizer.json's vocabulary has {len(expected)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(tokens, expected, strict=True)) if a != b)
            detail = f"line {i + 1} is {tokens[i]!r}, tokenizer.json has {expected[i]!r} at id {i}"
        raise ValueError(f"{flag}: {path} is damaged: it disagrees with tokenizer.json ({detail})")


def check_sentencepiece_model(
    path: Path, flag: str, expected: list[tuple[str, float | None]] | None = None
) -> None:
    """ValueError naming `path` unless SentencePiece loads it and, given tokenizer.json's pieces
    `expected` (with Unigram scores, or None), it holds exactly those in id order."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    data = path.read_bytes()
    if not data:
        raise ValueError(f"{flag}: {path} is damaged: empty file (0 bytes)")
    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(data)
        spm.SentencePieceProcessor(model_proto=data)
    except Exception as error:  # protobuf's DecodeError, sentencepiece's RuntimeError, ...
        raise ValueError(
            f"{flag}: {path} is damaged: not a SentencePiece model ({_reason(error)})"
        ) from None
    if expected is None:
        return
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if len(pieces) != len(expected):
        detail = f"{len(pieces)} pieces, tokenizer.json's vocabulary has {len(expected)}"
    else:
        detail = ""
        for i, ((piece, score), (their_piece, their_score)) in enumerate(
            zip(pieces, expected, strict=True)
        ):
            if piece != their_piece:
                detail = f"id {i} is {piece!r}, tokenizer.json has {their_piece!r}"
            elif their_score is not None and not math.isclose(score, their_score, abs_tol=1e-5):
                detail = f"{piece!r} scores {score:g}, in tokenizer.json {their_score:g}"
            if detail:
                break
    if detail:
        raise ValueError(f"{flag}: {path} is damaged: it disagrees with tokenizer.json ({detail})")


# The tensors that pin a BERT-like config's shape (any prefix: bert., roformer., ...), and the
# config fields each dimension is. A model of another architecture has none of them: skipped.
SHAPE_TENSORS = {
    "embeddings.word_embeddings.weight": ("vocab_size", "hidden_size"),
    "embeddings.position_embeddings.weight": ("max_position_embeddings", "hidden_size"),
    "encoder.layer.0.intermediate.dense.weight": ("intermediate_size", "hidden_size"),
}


def refuse_nonfinite(tensors: Any, where: str) -> None:
    """ValueError naming `where` when a floating tensor of `tensors` ((name, tensor) pairs) holds
    NaN or infinity: every reader of such weights would report nan, or train on from nan."""
    import torch

    for name, tensor in tensors:
        # A remote checkpoint's pickle is read with its tensors left in the store (meta tensors).
        floating = torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.is_meta
        if floating and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{where} is damaged: its weight {name} holds NaN or infinite values (a run "
                "that diverged?); take an earlier checkpoint"
            )


def _recorded_digests(folder: Path) -> dict[str, str]:
    """The weights files' SHA-256 the folder's marker records (none for a hand-made folder)."""
    digests = (read_marker(folder) or {}).get("sha256")
    if not isinstance(digests, dict):
        return {}
    return {name: digest for name, digest in digests.items() if isinstance(digest, str)}


def check_model_weights(folder: Path, flag: str) -> None:
    """ValueError naming the file unless the folder's weights agree with config.json's shape
    and hold only finite values. (from_pretrained's own errors for either: a size-mismatch
    traceback, layers drawn at random without a word, or a model that reports nan.)"""
    from safetensors import safe_open

    config_path = folder / "config.json"
    config = read_json_object(config_path, flag) if config_path.is_file() else {}
    every_name: list[str] = []
    files = sorted(folder.glob("*.safetensors"))
    for weights in files:
        check_safetensors(weights, flag)
        with safe_open(str(weights), "pt") as f:
            names = list(f.keys())  # noqa: SIM118 (safe_open is no mapping)
            for name in names:
                suffix = next((s for s in SHAPE_TENSORS if name.endswith(s)), None)
                if suffix is None:
                    continue
                shape = tuple(f.get_slice(name).get_shape())
                for field, size in zip(SHAPE_TENSORS[suffix], shape, strict=False):
                    if isinstance(config.get(field), int) and config[field] != size:
                        raise ValueError(
                            f"{flag}: {config_path} says {field} {config[field]}, but "
                            f"{weights.name} has {size} ({name} is {list(shape)}): the config "
                            "is not these weights'; export the folder again"
                        )
            refuse_nonfinite(((name, f.get_tensor(name)) for name in names), f"{flag}: {weights}")
        every_name += names
    # Layers a config has beyond the weights would be drawn at random, without a word.
    layer = r"(?:encoder|transformer)\.layers?\.(\d+)\."
    found = {int(m[1]) for n in every_name if (m := re.search(layer, n))}
    layers = config.get("num_hidden_layers")
    if files and not found and isinstance(layers, int) and layers > 0:
        raise ValueError(  # e.g. an embeddings-only export's file in a model folder
            f"{flag}: {config_path} says num_hidden_layers {layers}, but the weights hold no "
            "encoder layer: the config is not these weights'; export the folder again"
        )
    if found and isinstance(layers, int) and layers != len(found):
        raise ValueError(
            f"{flag}: {config_path} says num_hidden_layers {layers}, but the weights hold "
            f"{len(found)} layers: the config is not these weights'; export the folder again"
        )
    # Last, so that what is wrong with changed weights (NaN, a shape) is said when it can be.
    recorded = _recorded_digests(folder)
    for weights in files:
        if weights.name in recorded and file_sha256(weights) != recorded[weights.name]:
            raise ValueError(
                f"{flag}: {weights} is damaged: its bytes are not the ones "
                f"{read_marker(folder)['command']} wrote (SHA-256 differs); export it again"
            )


def not_a_file(path: str | Path) -> str:
    """Why `path` cannot be read as a file, in a few words: "no such file", "a folder, not a
    file", "not a regular file (a FIFO or a device)" (never "no such file" for what exists)."""
    file = Path(path)
    if file.is_dir():
        return "a folder, not a file; give a file in it"
    if file.exists():
        return "not a regular file (a FIFO, a socket or a device); give a file"
    return "no such file"


def never_trained_weights(folder: Path) -> bool:
    """Whether every LayerNorm of the folder's weights still has its initial scale 1 and shift
    0: weights nobody trained (the first optimizer step moves them all)."""
    import torch
    from safetensors import safe_open

    norms = 0
    for weights in sorted(folder.glob("*.safetensors")):
        with safe_open(str(weights), "pt") as f:
            for name in [n for n in f.keys() if "LayerNorm." in n]:  # noqa: SIM118
                norms += 1
                value, initial = f.get_tensor(name), 1.0 if name.endswith("weight") else 0.0
                if not bool(torch.all(value == initial)):
                    return False
    return norms > 0
