"""Every shipped recipe in configs/ parses with `bertlab fit --config X --print_config`.

Run: .venv/bin/python -m pytest tests/train/test_configs.py -q

In-process (`bertlab.train.cli.main`, the function behind the `bertlab` command): parsing needs no
data, so the recipes are checked without their data or pretrained models existing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from bertlab.train.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
RECIPES = {
    "tiny",
    "bert-mini",
    "bert-base",
    "minibert-3L",
    "minibert-6L",
    "wordemb-transfer",
    "continue-mlm",
}


@pytest.fixture(autouse=True)
def command_line(monkeypatch):
    """The arguments go to main(); pytest's own must not look like a second command line."""
    monkeypatch.setattr(sys, "argv", ["bertlab"])


def print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_all_recipes_are_shipped():
    assert RECIPES.issubset(path.stem for path in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_is_documented(path: Path, capsys):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [line for line in lines[:12] if line.startswith("#")]
    assert len(header) >= 4 and header[0].startswith(f"# {path.name}:"), "document the recipe"
    config = print_config(capsys, "--config", str(path))
    assert config["trainer"]["max_steps"] > 0  # the linear schedule needs it
    assert config["model"]["warmup_steps"] < config["trainer"]["max_steps"]
    assert config["checkpoint"]["monitor"] == "val_loss"
    assert config["checkpoint"]["save_last"] is True
    assert config["data"]["train_files"]


def test_recipe_facts(capsys):
    base = print_config(capsys, "--config", "configs/bert-base.yaml")
    assert base["data"]["batch_size"] == 8
    assert base["trainer"]["accumulate_grad_batches"] == 32
    assert base["trainer"]["gradient_clip_val"] == 1.0
    assert base["trainer"]["precision"] is None  # resolved from the device when the run starts
    assert base["model"]["lr"] == 1e-4 and base["model"]["warmup_steps"] == 10000
    # Every 10,000 optimizer steps: val_check_interval counts batches.
    assert base["trainer"]["val_check_interval"] == 10000 * 32
    assert base["checkpoint"]["save_top_k"] == 3
    transfer = print_config(capsys, "--config", "configs/wordemb-transfer.yaml")
    assert transfer["model"]["trainable"] == "word_embeddings"
    assert transfer["model"]["objective"] == "mlm" and transfer["model"]["from_pretrained"]
    mini = {n: print_config(capsys, "--config", f"configs/minibert-{n}L.yaml") for n in (3, 6)}
    assert [mini[n]["model"]["num_hidden_layers"] for n in (3, 6)] == [3, 6]
    assert [mini[n]["data"]["batch_size"] for n in (3, 6)] == [128, 64]
    assert {mini[n]["model"]["hidden_size"] for n in (3, 6)} == {256}


def test_command_line_overrides_the_config(capsys):
    config = print_config(
        capsys,
        "--config",
        "configs/tiny.yaml",
        "--model.hidden_size",
        "64",
        "--trainer.max_steps=7",
    )
    assert config["model"]["hidden_size"] == 64 and config["trainer"]["max_steps"] == 7


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("fit", "validate", "test"))
