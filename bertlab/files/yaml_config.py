"""A user's YAML config file read strictly: every problem is one line naming the file and line.

Decisions:
- PyYAML keeps the last of two equal keys without a word: a second `model:` section at the end
  of a config replaces the whole first one, so the run trains a shape nobody asked for. A key
  given twice in one mapping is refused here, naming both lines.
- A YAML syntax error is named with its line and column and PyYAML's short problem ("found
  character '\\t' that cannot start any token"), never its multi-line context cut to one line.
- Every reader of a user's config (bertlab fit's --config, export_model's --config) goes
  through read_yaml, so a file is judged the same way wherever it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


class _DuplicateKey(ValueError):
    pass


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise _DuplicateKey(f"key {key!r} is on lines {seen[key]} and {line}; give it once")
        seen.setdefault(key, line)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: str | Path, flag: str = "--config") -> Any:
    """The YAML document in `path`; a ValueError naming `flag`, the file and the line otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {path}: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as error:
        raise ValueError(f"{flag} {path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{flag} {path}: not valid YAML{where}: {problem}") from None
