"""The GPU image's recipe: pins that agree with setup.py and with each other, hadolint clean.

Run: .venv/bin/python -m pytest tests/test_docker.py -q

There is no Docker engine on the development and CI machines, so the image is checked as text:
its pinned versions against setup.py's ranges (and the installed packages' own requirements,
when the venv holds the pinned versions), and the Dockerfile against hadolint.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def setup_requirements() -> dict[str, Requirement]:
    """setup.py's install_requires, read from its syntax tree (setup.py is never executed)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "install_requires":
                    requirements = map(Requirement, ast.literal_eval(keyword.value))
                    return {canonicalize_name(r.name): r for r in requirements}
    raise AssertionError("setup.py has no setup(install_requires=[...])")


def image_pins() -> dict[str, Requirement]:
    """Every `name==version` that a `pip install` of the Dockerfile installs."""
    pins: dict[str, Requirement] = {}
    for instruction, arguments in instructions():
        if instruction != "RUN" or "pip install" not in arguments:
            continue
        for word in shlex.split(arguments):
            if word.startswith("-") or "==" not in word:
                continue
            try:
                requirement = Requirement(word)
            except InvalidRequirement:
                continue
            assert canonicalize_name(requirement.name) not in pins, f"{word} is pinned twice"
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def pinned_version(requirement: Requirement) -> Version:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} must be pinned with =="
    return Version(specifier.version)


def test_every_runtime_dependency_is_pinned_inside_setup_py_range():
    required, pins = setup_requirements(), image_pins()
    assert required, "setup.py lists no dependencies"
    missing = sorted(set(required) - set(pins))
    assert not missing, f"setup.py dependencies not pinned in docker/Dockerfile: {missing}"
    for name, requirement in required.items():
        pin = pins[name]
        version = pinned_version(pin)
        assert requirement.specifier.contains(version, prereleases=True), (
            f"docker/Dockerfile pins {pin}, outside setup.py's {requirement}"
        )
        assert requirement.extras <= pin.extras, f"{pin} lacks setup.py's extras {requirement}"


def test_base_image_is_a_pinned_cuda_runtime_with_the_pinned_torch():
    (base,) = [arguments for instruction, arguments in instructions() if instruction == "FROM"]
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime", base)
    assert match, f"FROM {base}: expected a pinned pytorch/pytorch CUDA runtime tag"
    torch = image_pins()["torch"]
    assert pinned_version(torch) == Version(match.group(1)), f"FROM {base} but pip pins {torch}"


def test_pins_agree_with_each_other():
    """Each pinned package's own requirements accept the other pins (where the venv has it)."""
    pins = image_pins()
    checked = []
    for name, pin in pins.items():
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(distribution.version).public != pinned_version(pin).public:
            continue  # the venv holds another version: its metadata says nothing about the pin
        for line in distribution.requires or []:
            requirement = Requirement(line)
            other = pins.get(canonicalize_name(requirement.name))
            extras = pin.extras or {""}
            applies = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in extras
            )
            if other is None or not applies:
                continue
            assert requirement.specifier.contains(pinned_version(other), prereleases=True), (
                f"{pin} requires {requirement}, but docker/Dockerfile pins {other}"
            )
            checked.append(f"{name} -> {requirement}")
    if not checked:
        pytest.skip("no pinned package is installed at its pinned version here")


def test_image_runs_bertlab_as_an_unprivileged_user():
    pairs = instructions()
    last = {instruction: arguments for instruction, arguments in pairs}
    assert json.loads(last["ENTRYPOINT"]) == ["bertlab"]
    user = last["USER"].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert "6006" in last["EXPOSE"].split()
    volumes = json.loads(last["VOLUME"])
    assert any("data" in v for v in volumes) and any("outputs" in v for v in volumes)
    assert "WORKDIR" in last


def test_dockerignore_keeps_local_state_out_and_sources_in():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".venv", "demo", "runs", "**/__pycache__"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    copied = [
        source
        for instruction, arguments in instructions()
        if instruction == "COPY"
        for source in shlex.split(arguments)[:-1]
        if not source.startswith("--")
    ]
    assert copied, "the Dockerfile copies nothing from the build context"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        excluded = [p for p in patterns if fnmatch.fnmatch(source.rstrip("/"), p.lstrip("/"))]
        assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        found = shutil.which("hadolint")
        assert found, "hadolint not installed (make test installs it through the dev extra)"
        hadolint = Path(found)
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"hadolint docker/Dockerfile:\n{result.stdout}{result.stderr}"
