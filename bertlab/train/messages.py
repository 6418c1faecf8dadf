"""`bertlab fit|validate|test`'s user errors as one line: the flag first, the file named.

Decisions:
- jsonargparse's type errors become `--key value: expected ...`. Its Union errors list every
  subtype's failure ("Subtypes: [...] Errors: - ..."), which buries what the user needs at the
  end of a 600-character line: a union of literals becomes the list of values allowed, any other
  union the first failure that is not "Expected a NoneType".
- A DataLoader worker's error arrives wrapped in Lightning's "Caught ValueError in DataLoader
  worker process 0 ... Original Traceback": the message is unwrapped.
- A --config file that is not YAML, empty, or not a mapping of sections is named with the line
  and column, before jsonargparse says `Problems parsing config ... in "<unicode string>"`.
- A config written for an older bertlab gets a hint where its speed switch went.
"""

from __future__ import annotations

import os
import re

from bertlab.files.yaml_config import read_yaml
from bertlab.speed.settings import LEGACY_MODEL_KEYS


def one_line(error: BaseException) -> str:
    text = str(error)
    # A DataLoader worker's error arrives wrapped ("Caught ValueError in DataLoader worker
    # process 0.\nOriginal Traceback ...\nValueError: <message>"): the user needs the message.
    wrapped = f"\n{type(error).__name__}: "
    if text.startswith("Caught ") and "\nOriginal Traceback" in text and wrapped in text:
        text = text[text.rindex(wrapped) + len(wrapped) :]
    return _readable(" ".join(text.split())) or type(error).__name__


_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)": (?P<rest>.*)$')
_GOT = re.compile(
    r'(?:Parser key "(?P<key>[^"]+)": )?Expected a (?P<type>.+?)\. Got value: (?P<v>.*)'
)
_UNION = re.compile(
    r"Does not validate against any of the Union subtypes Subtypes: \[(?P<subtypes>.*)\] "
    r"Errors: (?P<errors>.*?) Given value type: .*? Given value: (?P<v>.*)$"
)
_LITERAL = re.compile(r"typing\.Literal\[([^\]]*)\]")
_NONE = "<class 'NoneType'>"


def _kind(annotation: str) -> str:
    return re.sub(r"<class '([^']+)'>", r"\1", annotation)


def _not_finite(value: str) -> bool:
    return value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")


def _readable(message: str) -> str:
    """jsonargparse's type errors as `--key value: expected ...`, the flag first.

    Its Union errors list every subtype's failure ("Subtypes: [...] Errors: - ..."), which buries
    what the user needs (the values allowed, or the one failure that matters) at the end of a
    600-character line: a union of literals becomes the list of values allowed, any other union
    the first failure that is not "Expected a NoneType".
    """
    match = _PARSER_KEY.match(message)
    if not match:
        return message
    key, rest = match.group("key"), match.group("rest")
    union = _UNION.search(rest)
    if union:
        subtypes, value = union.group("subtypes"), union.group("v")
        if _not_finite(value):
            return f"--{key} {value}: expected a finite number"
        others = _LITERAL.sub("", subtypes).replace(_NONE, "")
        if not re.search(r"\w", others):  # only literals (and None): say which values
            choices = [
                c.strip().strip("'") for group in _LITERAL.findall(subtypes)
                for c in group.split(",") if c.strip()
            ]  # fmt: skip
            choices += ["null"] if _NONE in subtypes else []
            return f"--{key} {value}: expected one of {', '.join(dict.fromkeys(choices))}"
        errors = [e.strip() for e in re.split(r"(?:^| )- ", union.group("errors")) if e.strip()]
        errors = [e for e in errors if e != f"Expected a {_NONE}"]
        kinds = [m.group(1) for e in errors if (m := re.fullmatch(r"Expected a (<class '.+'>)", e))]
        if errors and len(kinds) == len(errors):  # bool | int: name them all, not the first
            return f"--{key} {value}: expected {' or '.join(_kind(k) for k in kinds)}"
        first = errors[0] if errors else "not a valid value"
        inner = _GOT.search(first)
        if inner and inner.group("key"):
            first = first[: inner.start()] + (
                f"--{inner.group('key')} {inner.group('v')}: expected {_kind(inner.group('type'))}"
            )
        return f"--{key} {value}: {first}"
    got = _GOT.match(rest)
    if got:
        literal = _LITERAL.fullmatch(got.group("type"))
        if literal:
            choices = ", ".join(c.strip().strip("'") for c in literal.group(1).split(","))
            return f"--{key} {got.group('v')}: expected one of {choices}"
        if _not_finite(got.group("v")):
            return f"--{key} {got.group('v')}: expected a finite number"
        return f"--{key} {got.group('v')}: expected {_kind(got.group('type'))}"
    return message


def _config_paths(args: list[str]) -> list[str]:
    paths = [b for a, b in zip(args, args[1:], strict=False) if a == "--config"]
    return paths + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


_UNKNOWN_OPTION = re.compile(r"does not accept option '(?P<key>[^']+)'")


def unknown_key_hint(message: str, args: list[str]) -> str:
    """For jsonargparse's "does not accept option 'model.x'": the --config file that holds it."""
    match = _UNKNOWN_OPTION.search(message)
    if not match:
        return ""
    parts = match.group("key").split(".")
    for path in _config_paths(args):
        if _holds(path, parts):
            return f" (in --config {path}; `bertlab fit --help` lists the keys)"
    return ""


def _holds(path: str, parts: list[str]) -> bool:
    try:
        data = read_yaml(path)
    except (OSError, ValueError):
        return False
    if isinstance(data, dict) and "fit" in data and parts[0] not in data:
        data = data["fit"]  # a file of several subcommands
    for part in parts[:-1]:
        data = data.get(part) if isinstance(data, dict) else None
    return isinstance(data, dict) and parts[-1] in data


def check_config_files(args: list[str]) -> None:
    """A --config file that is not YAML, or not a mapping of sections, named in one line.

    jsonargparse reports it as `Problems parsing config: ... in "<unicode string>"`, without the
    file, and a YAML list as `Unexpected config: - a - b`.
    """
    for path in _config_paths(args):
        if not os.path.isfile(path):
            continue  # jsonargparse names a missing file itself
        loaded = read_yaml(path)
        if loaded is None:  # jsonargparse's message would be "Unexpected config:" and nothing
            raise ValueError(
                f"--config {path} is empty (no settings); give a config such as "
                "configs/tiny.yaml, or leave --config out"
            )
        if not isinstance(loaded, dict):
            raise ValueError(
                f"--config {path}: a YAML {type(loaded).__name__}, not a mapping of sections "
                "(model:, data:, trainer:, ...)"
            )
        _check_sections(loaded, path)
    _refuse_flags_before_configs(args)


def _refuse_flags_before_configs(args: list[str]) -> None:
    """jsonargparse applies the command line in order: a `--config` after `--trainer.max_steps 2`
    replaces the 2 with the file's value, silently. Refused when the file sets that key."""
    given: list[str] = []
    for i, word in enumerate(args):
        if not word.startswith("--"):
            continue
        key = word[2:].split("=", 1)[0]
        if key != "config":
            given.append(key)
            continue
        path = word.split("=", 1)[1] if "=" in word else (args[i + 1] if i + 1 < len(args) else "")
        for earlier in given:
            if path and os.path.isfile(path) and _holds(path, earlier.split(".")):
                raise ValueError(
                    f"--{earlier} comes before --config {path}, which sets {earlier} too: the "
                    "file's value would replace yours; put --config first"
                )


# Top-level keys of a config that hold one value; every other one is a section of settings.
SCALAR_KEYS = {"seed_everything", "ckpt_path", "config"}


def _check_sections(loaded: dict, path: str, prefix: str = "") -> None:
    """A section that is not a mapping (`model: [1, 2]`) is ignored by the parser or refused
    without the file's name: refused here, naming it."""
    for key, value in loaded.items():
        if key in ("fit", "validate", "test") and isinstance(value, dict) and not prefix:
            _check_sections(value, path, f"{key}.")  # a file of several subcommands
        elif key not in SCALAR_KEYS and value is not None and not isinstance(value, dict):
            raise ValueError(
                f"--config {path}: {prefix}{key} is a YAML {type(value).__name__}, not a "
                f"section of settings (indented `name: value` lines under `{key}:`)"
            )


def moved_key_hint(message: str) -> str:
    """For a config written for an older bertlab: where a speed switch went."""
    for old, new in {**LEGACY_MODEL_KEYS, "pad_to_multiple_of": "pad_to_multiple_of"}.items():
        if f"'{old}'" in message or f"model.{old}" in message or f"data.{old}" in message:
            return f" (speed settings moved out of model and data: use speed.{new})"
    return ""
