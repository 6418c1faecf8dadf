"""The house's layout: each room of bertlab imports only the rooms its docstring allows.

Run: .venv/bin/python -m pytest tests/test_layout.py -q

The dependency direction (bertlab/__init__.py): tools -> bertlab; train -> model, data, speed;
data -> samples (the format); export -> model; nothing imports research or tools. Each
subpackage's `__init__.py` says "May import: ..." and this test holds the code to it, by reading
every `import` of every module (not by importing them).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "bertlab"
ROOMS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
TOP = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def room_of(module: str) -> str:
    """`bertlab.model.heads` -> `model`; a top-level module is `bertlab.<name>`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else ".".join(parts[:2])


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n == "bertlab" or n.startswith("bertlab.")}


def allowed(room: str) -> set[str]:
    """The rooms a subpackage's docstring allows ("May import: a, b (why), bertlab.x.")."""
    doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
    found = re.search(r"May import: (.*?)\.\s*$", doc or "", re.S)
    assert found, f"bertlab/{room}/__init__.py says what it may import"
    text = re.sub(r"\([^)]*\)", "", found.group(1))
    if text.startswith("any room"):
        return set(ROOMS) | {f"bertlab.{m}" for m in TOP}
    if text.startswith("nothing else"):
        return set()
    return {part.strip() for part in text.replace("\n", " ").split(",")}


def test_the_package_is_rooms_with_few_modules_at_the_top():
    assert len(TOP) <= 4, TOP
    assert {"corpus", "tokenizer", "samples", "data", "model", "train", "export"} <= set(ROOMS)


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_imports_only_what_its_docstring_allows(room):
    permitted = allowed(room) | {room}
    unknown = permitted - set(ROOMS) - {f"bertlab.{m}" for m in TOP}
    assert not unknown, f"bertlab/{room}/__init__.py names no such room: {unknown}"
    wrong = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for name in imports_of(path):
            target = room_of(name)
            if target != "bertlab" and target not in permitted:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_research_or_tools():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "research"):
            continue
        wrong += [f"{path.relative_to(REPO)} imports {n}" for n in imports_of(path)
                  if room_of(n) == "research"]  # fmt: skip
        if re.search(r"^\s*(from|import) tools\b", path.read_text(), re.M):
            wrong.append(f"{path.relative_to(REPO)} imports tools")
    assert not wrong, "\n".join(wrong)


def test_the_dependency_graph_has_no_cycle():
    graph = {room: allowed(room) & set(ROOMS) - {room} for room in ROOMS}
    done: set[str] = set()

    def visit(room: str, path: tuple[str, ...]) -> None:
        assert room not in path, f"a cycle: {' -> '.join((*path, room))}"
        if room not in done:
            for other in graph[room]:
                visit(other, (*path, room))
            done.add(room)

    for room in ROOMS:
        visit(room, ())


def test_tests_mirror_the_rooms():
    folders = {
        p.name for p in (REPO / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))
    }
    assert folders == set(ROOMS), folders ^ set(ROOMS)
