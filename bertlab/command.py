"""Run a typed function as a command-line tool: the shared front door of every script in tools/.

Decisions:
- `fire` builds the command from the function: its docstring is `--help`, its parameters are the
  flags. Nothing else describes a command, so help and behaviour cannot drift apart.
- fire has no `--flag a b c`; list-typed flags gather the words that follow them, so
  `--input a.txt b.txt` works as the README's commands show.
- fire parses values as Python literals (`--date 20240101` becomes an int, `--nsp false` a string),
  so values are coerced to the annotated type before the call.
- A user's mistake (ValueError, a missing or unreadable file) ends as one line on stderr,
  `error: ...`, and exit status 2, never a traceback. Bugs (AssertionError, anything else) keep
  their traceback.
- Ctrl-C and SIGTERM stop the command at once with exit status 130 / 143 and one line, after the
  clean-up that leaves no half-written output (bertlab.signals).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fire

from bertlab.signals import Interrupted, stop_on_signals

# A user's mistake, said in one line; anything else is bertlab's own and keeps its traceback.
# bertlab fit adds its parser's and Lightning's configuration errors (bertlab.train.cli).
USER_ERRORS = (ValueError, OSError, EOFError, FloatingPointError)


def _annotation_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_list(annotation: Any) -> bool:
    sequences = (list, tuple, Sequence)
    return any(typing.get_origin(a) in sequences for a in _annotation_args(annotation))


# Flags that name files and folders (--text is one for evaluate_mlm, a sentence for fill_mask).
PATH_FLAGS = {"input", "output", "model", "tokenizer", "logdir", "config", "samples",
              "unigram_corpus", "spm_model"}  # fmt: skip


def _is_path_flag(name: str) -> bool:
    """Whether a flag names files: its name says so."""
    return name in PATH_FLAGS or name.endswith(("_dir", "_file", "_files", "_path"))


def _expand_home(value: Any) -> Any:
    """A quoted `~/x` is the home folder's x, as the shell and `bertlab fit` read it, not a
    folder named `~` here."""
    if isinstance(value, str) and (value == "~" or value.startswith("~/")):
        return os.path.expanduser(value)
    if isinstance(value, (list, tuple)):
        return [_expand_home(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    options = _annotation_args(annotation)
    if value is None or annotation is inspect.Parameter.empty:
        return value
    if value is True and bool not in options:
        # fire turns a flag given no value (`--input` at the end of the line) into True.
        raise ValueError(f"--{name} needs a value")
    if bool in options and isinstance(value, int) and not isinstance(value, bool):
        if value in (0, 1):  # fire reads `--lowercase 0` as the number
            return bool(value)
        raise ValueError(f"--{name} expects true or false, got {value!r}")
    if bool in options and isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"--{name} expects true or false, got {value!r}")
    if _is_list(annotation):
        if isinstance(value, str) and str not in options:
            value = [v for v in value.split(",") if v]
        elif not isinstance(value, (list, tuple, str)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        # Each item as its type says (fire leaves `--sizes 25 100` items as it read them).
        item_types = set(_list_item_types(annotation))
        if len(item_types) == 1 and item_types <= {str, int, float}:
            (item_type,) = item_types
            return [_coerce(v, item_type, name) for v in value]
        return list(value)
    already_number = (int in options and isinstance(value, int)) or (
        float in options and isinstance(value, float)
    )
    if str in options and isinstance(value, (list, tuple)):
        # fire reads `--language en,ja` as a tuple; a str flag wants the words back.
        return ",".join(map(str, value))
    if str in options and not isinstance(value, (str, bool)) and not already_number:
        return str(value)
    if float in options and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"--{name} expects a finite number, got {value!r}")
    if float in options and isinstance(value, int) and not isinstance(value, bool):
        return value if int in options else float(value)
    if int in options and isinstance(value, str) and str not in options:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"--{name} expects an integer, got {value!r}") from None
    if int in options and float not in options and isinstance(value, float):
        # fire reads `--vocab_size 1e3` or `--num_shards 2.5` as a float.
        raise ValueError(f"--{name} expects an integer, got {value!r}")
    if float in options and isinstance(value, str) and str not in options:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--{name} expects a number, got {value!r}") from None
        if not math.isfinite(number):  # `--lr inf`: no setting means infinity or NaN
            raise ValueError(f"--{name} expects a finite number, got {value!r}")
        return number
    return value


def _list_item_types(annotation: Any) -> tuple[Any, ...]:
    items: list[Any] = []
    for a in _annotation_args(annotation):
        if typing.get_origin(a) in (list, tuple, Sequence):
            items.extend(typing.get_args(a))
    return tuple(items)


def _join_flag_values(argv: list[str], flags: set[str], value_flags: set[str]) -> list[str]:
    """`--overrides '--data.x a --model.y b'`, `--equal_args --model.lr=1e-3`: a word after a
    flag that takes a value, starting with -- but naming none of the command's `flags` (a
    dotted name, `bertlab fit`'s, or one with spaces before any =: no tool's flag is either),
    is that flag's value, joined to it as `--overrides=...`. A misspelt flag of the command
    stays a flag, refused as unknown."""
    out: list[str] = []
    for word in argv:
        name = word[2:].split("=", 1)[0]
        previous = out[-1] if out else ""
        takes_value = (
            previous.startswith("--")
            and "=" not in previous
            and previous[2:].replace("-", "_") in value_flags
        )
        foreign = name.replace("-", "_") not in flags and (
            "." in name or any(c.isspace() for c in name)
        )
        if word.startswith("--") and takes_value and foreign:
            out[-1] = f"{previous}={word}"
            continue
        out.append(word)
    return out


def _gather_lists(argv: list[str], list_flags: set[str]) -> list[str]:
    """Turn `--input a b c` into `--input=[a,b,c]`-like values fire understands (as one string)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        name = word[2:].split("=", 1)[0].replace("-", "_") if word.startswith("--") else None
        if name in list_flags and "=" not in word:
            values = []
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if not values:
                raise ValueError(f"--{name} needs a value")
            listed = values[0].startswith("[") and values[0].endswith("]") and "," in values[0]
            if len(values) == 1 and listed:  # `--text '[MASK]'` is a text, not a list
                # fire's own list syntax, `--datasets '[a,b]'` or '["a", "b"]': the same list
                values = [v.strip().strip("'\"") for v in values[0][1:-1].split(",")]
                values = [v for v in values if v]
            repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if repeated is not None:  # twice the same file, dataset or size: a slip, not a wish
                raise ValueError(f"--{name} names {repeated!r} twice; give each value once")
            # A JSON-ish list of quoted strings survives fire's literal parsing intact.
            out.append(f"--{name}=" + repr([str(v) for v in values]))
            continue
        out.append(word)
        i += 1
    return out


def _check_flags(argv: list[str], signature: inspect.Signature, command: str) -> None:
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    names = set(signature.parameters)
    for word in argv:
        if word in ("--help", "-h") or not word.startswith("--") or accepts_kwargs:
            continue
        name = word[2:].split("=", 1)[0]
        if name.replace("-", "_") not in names and name.startswith("no") is False:
            raise ValueError(
                f"{command}: unknown flag --{name}; known flags: "
                + ", ".join(f"--{n}" for n in signature.parameters)
            )


def _check_words(argv: list[str]) -> None:
    """Refuse a word no flag takes and a flag given twice (after _gather_lists).

    fire binds a stray word to the next parameter not yet given (`--input a.txt b.txt` to a
    one-file flag makes b.txt the --seed), and keeps the last of two values of one flag: both
    would run something the user did not ask for.
    """
    seen: dict[str, str] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("--help", "-h", "--"):
            return
        if not word.startswith("--"):
            before = f" after {argv[i - 1]}" if i else ""
            raise ValueError(
                f"unexpected argument {word!r}{before}: each value follows its own flag "
                "(--flag value), and only list flags (such as --input a b) take several"
            )
        name, has_value, value = word[2:].partition("=")
        name = name.replace("-", "_")
        if not has_value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 1
        if name in seen:
            raise ValueError(
                f"--{name} is given twice ({seen[name]!r} and {value!r}); give it once"
            )
        seen[name] = value
        i += 1


def typed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap fn so values fire parsed are coerced to fn's annotations before the call."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    # fire reports a missing required flag in its own multi-line form; with a default of None
    # the wrapper names it in one line instead.
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    required = [
        n for n, p in signature.parameters.items() if p.default is p.empty and p.kind in kinds
    ]
    loose = signature.replace(
        parameters=[
            p.replace(default=None) if p.name in required else p
            for p in signature.parameters.values()
        ]
    )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        bound = loose.bind(*args, **kwargs)
        for name in required:
            if bound.arguments.get(name) is None:
                raise ValueError(f"--{name} is required (see --help)")
        for name, value in list(bound.arguments.items()):
            default = loose.parameters[name].default
            if isinstance(value, str) and not value.strip() and value != default:  # `--input=`
                raise ValueError(f"--{name} is empty; give a value (see --help)")
            bound.arguments[name] = _coerce(value, hints.get(name, inspect.Parameter.empty), name)
            if _is_path_flag(name):  # `--output_dir '~/x'` (quoted): the home folder, as fit's
                bound.arguments[name] = _expand_home(bound.arguments[name])
            listed = bound.arguments[name]
            if isinstance(listed, (list, tuple)):  # `--input ''` would read the current folder
                empty = [i for i, v in enumerate(listed, 1) if isinstance(v, str) and not v.strip()]
                if empty:
                    raise ValueError(
                        f"--{name}: value {empty[0]} is empty; give a value (see --help)"
                    )
            seed = bound.arguments[name]
            if name == "seed" and isinstance(seed, int) and not 0 <= seed < 2**32:
                # numpy's and torch's seeds; a negative one fails later, or is silently folded
                raise ValueError(f"--seed {seed} must be in [0, 2**32)")
        fn(*bound.args, **bound.kwargs)

    wrapper.__signature__ = loose  # type: ignore[attr-defined]
    return wrapper


def _flag_values(argv: list[str]) -> list[tuple[str, str]]:
    """(--flag, value) for each value on the command line, list flags' values one by one."""
    pairs = []
    for i, word in enumerate(argv):
        if not word.startswith("--"):
            continue
        name, has_value, value = word.partition("=")
        if not has_value:
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
        pairs.append((name, value))
    return pairs


def os_error_line(error: OSError, argv: list[str]) -> str:
    """`[Errno 13] Permission denied: 'ro/.t2.x.tmp'` as the flag whose path it is: the file
    itself, a file inside its folder, or the hidden temporary written beside it."""
    failed = Path(error.filename).absolute()
    reason = (error.strerror or type(error).__name__).lower()
    for flag, value in _flag_values(argv):
        if not value:
            continue
        given = Path(value).expanduser().absolute()
        beside = failed.parent == given.parent and failed.name.startswith(f".{given.name}.")
        if failed == given or given in failed.parents or beside:
            return f"{flag} {value}: {reason} ({error.filename})"
    return f"{error.filename}: {reason}"


def _imported(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run(fn: Callable[..., Any] | str, argv: list[str] | None = None) -> None:
    """Run fn as this process's command; user errors exit 2 with one line on stderr.

    `fn` may be named as "module:function": it is then imported with Ctrl-C and SIGTERM already
    handled, so a command stopped during its seconds of imports (torch, Lightning) ends with one
    line and 130 / 143, not a KeyboardInterrupt traceback from inside torch.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:  # help, whatever else was typed (fire would run it)
        argv = ["--help"]
    try:
        with stop_on_signals():
            fn = _imported(fn) if isinstance(fn, str) else fn
            signature = inspect.signature(fn)
            hints = typing.get_type_hints(fn)
            list_flags = {name for name in signature.parameters if _is_list(hints.get(name))}
            value_flags = {n for n in signature.parameters if hints.get(n) is not bool}
            argv = _join_flag_values(argv, set(signature.parameters), value_flags)
            _check_flags(argv, signature, fn.__name__)
            gathered = _gather_lists(argv, list_flags)
            _check_words(gathered)
            fire.Fire(typed(fn), command=gathered, name=fn.__name__)
    except USER_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if isinstance(error, OSError) and error.filename and message.startswith("[Errno"):
            message = os_error_line(error, argv)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        print(stop.line(), file=sys.stderr)
        sys.exit(stop.exit_status)
    except KeyboardInterrupt:  # raised by a handler someone else installed
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def bertlab_main() -> None:
    """The `bertlab` command (bertlab.train.cli.main), imported with Ctrl-C and SIGTERM handled."""
    try:
        with stop_on_signals():
            _imported("bertlab.train.cli:main")()
    except Interrupted as stop:
        print(stop.line(), file=sys.stderr)
        sys.exit(stop.exit_status)
