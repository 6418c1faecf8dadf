"""Resuming with `--ckpt_path`: explicit model settings against the checkpoint
(bertlab.model.resume).

Run: .venv/bin/python -m pytest tests/model/test_resume.py -q

A two-step tiny run makes the checkpoint (in-process); the resumed runs go through the real
`bertlab fit` in a subprocess: a contradicting setting is one `error:` line naming both values
(exit 2, nothing trained), values taken from the checkpoint are logged in one line, and data
settings other than the checkpoint run's are one warning line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import run_tool
from tiny import data_args, small_run, tiny_model

from bertlab.model.resume import check_resume, data_changes, same
from bertlab.train.cli import run_cli

MODEL = [*tiny_model(), "--model.warmup_steps=1"]  # the checkpoint's settings, but its 1 layer


@pytest.fixture(scope="module")
def tiny_ckpt(en_samples: Path, tmp_path_factory) -> Path:
    """last.ckpt of a 64-wide, 1-layer run of two steps over configs/tiny.yaml."""
    root = tmp_path_factory.mktemp("resume")
    argv = sys.argv
    sys.argv = ["bertlab"]  # LightningCLI must not read pytest's own arguments
    try:
        run_cli(["fit", *small_run(en_samples, root, steps=2), *MODEL,
                 "--model.num_hidden_layers=1"])  # fmt: skip
    finally:
        sys.argv = argv
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["hidden_size"] == 64
    return ckpt


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_explicit_model_settings_that_contradict_the_checkpoint(en_samples, tiny_ckpt, tmp_path):
    root = tmp_path / "run"
    result = run_tool(
        "bertlab", "fit", *small_run(en_samples, root, steps=4), *MODEL,
        "--model.hidden_size=256", "--model.num_hidden_layers=3", f"--ckpt_path={tiny_ckpt}",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert line.startswith(f"error: --ckpt_path {tiny_ckpt}: "), line
    assert "model.hidden_size is set to 256 but the checkpoint has 64" in line
    assert "model.num_hidden_layers is set to 3 but the checkpoint has 1" in line
    assert "drop these settings, or train a new run without --ckpt_path" in line
    assert not list(root.rglob("*.ckpt"))


def test_a_config_file_setting_counts_as_explicit(en_samples, tiny_ckpt, tmp_path):
    """tiny.yaml says 2 layers; the checkpoint has 1: the config is the user's statement too."""
    result = run_tool(
        "bertlab", "fit", *small_run(en_samples, tmp_path / "run", steps=4), *MODEL,
        f"--ckpt_path={tiny_ckpt}", check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result)
    assert "model.num_hidden_layers is set to 2 but the checkpoint has 1" in line
    assert "hidden_size" not in line  # 64 on both sides


def test_values_taken_from_the_checkpoint_are_logged(en_samples, tiny_ckpt, tmp_path):
    """No config, no model flag: the checkpoint's model is used and said so in one line."""
    root = tmp_path / "run"
    result = run_tool(
        "bertlab", "fit", *data_args(en_samples), "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.max_steps=3", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}", "--model.lr=5e-3", f"--ckpt_path={tiny_ckpt}",
        "--data.mlm_probability=0.3",
    )  # fmt: skip
    # Data settings are this run's, not the checkpoint's: a change is one warning line.
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: --ckpt_path {tiny_ckpt}: resuming with other data "), (
        warning
    )
    assert "data.mlm_probability 0.15 -> 0.3 (set)" in warning
    assert "shuffle_buffer_size" not in warning  # data_args gives the run's 500 again
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "taken from" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert f"--ckpt_path {tiny_ckpt}: model settings taken from the checkpoint: " in lines[0]
    for taken in ("hidden_size=64", "num_hidden_layers=1", "max_position_embeddings=64"):
        assert taken in lines[0], lines[0]
    assert "lr=" not in lines[0].replace("_lr=", "")  # set, and equal to the checkpoint's
    (last,) = root.rglob("last.ckpt")
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 3 and resumed["hyper_parameters"]["hidden_size"] == 64


def test_values_compare_as_plain_data():
    assert same((0.9, 0.999), [0.9, 0.999]) and same(1e-3, 0.001) and same(64, 64.0)
    assert not same(True, 1.0) and not same("mlm", "mlm_nsp")
    checkpoint = {"hidden_size": 64, "tokenizer": "/old/tok", "betas": (0.9, 0.999)}
    assert (
        check_resume("k.ckpt", checkpoint, {"tokenizer": "/new/tok"}, {"betas": [0.9, 0.999]})
        is None
    )
    with pytest.raises(
        ValueError, match=r"model\.hidden_size is set to 32 but the checkpoint has 64"
    ):
        check_resume("k.ckpt", checkpoint, {"hidden_size": 32}, {"hidden_size": 32})


def test_data_changes_name_both_values_set_or_default():
    saved = {"mlm_probability": 0.4, "whole_word_masking": False, "batch_size": 16}
    line = data_changes("k.ckpt", saved, {}, {"mlm_probability": 0.15, "batch_size": 8})
    assert line == (
        "warning: --ckpt_path k.ckpt: resuming with other data settings than the checkpoint's "
        "run: data.mlm_probability 0.4 -> 0.15 (the default); give the run's values to keep them"
    )  # batch_size: the loader's saved position refuses it
    assert data_changes("k.ckpt", saved, {}, {"mlm_probability": 0.4}) is None


def test_a_fresh_run_never_replaces_an_earlier_runs_last_checkpoint(
    en_samples, tmp_path, capsys, monkeypatch
):
    """Two runs sharing checkpoint.dirpath: the second must resume, not overwrite last.ckpt."""
    from bertlab.train.cli import main

    monkeypatch.setattr(sys, "argv", ["bertlab"])
    folder = tmp_path / "checkpoints"

    def fit(root: str, steps: int, *extra: str) -> None:
        main(["fit", *small_run(en_samples, tmp_path / root, steps=steps), *MODEL,
              f"--checkpoint.dirpath={folder}", *extra])  # fmt: skip

    fit("first", 2)
    last = (folder / "last.ckpt").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        fit("second", 3)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert f"checkpoint folder {folder} holds last.ckpt of an earlier run" in line
    assert "--ckpt_path last" in line
    assert (folder / "last.ckpt").read_bytes() == last
    fit("second", 3, "--ckpt_path=last")
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3


def test_fewer_steps_than_the_checkpoint_is_refused_the_same_number_logged(
    en_samples, tiny_ckpt, tmp_path
):
    """max_steps below the checkpoint's step would exit 0 having trained nothing."""
    for steps, status in ((1, 2), (2, 0)):
        root = tmp_path / f"run{steps}"
        result = run_tool(
            "bertlab", "fit", *small_run(en_samples, root, steps=steps), *MODEL,
            "--model.num_hidden_layers=1", f"--ckpt_path={tiny_ckpt}", check=False,
        )  # fmt: skip
        assert result.returncode == status, result.stderr[-3000:]
        if status == 2:
            (line,) = error_lines(result)
            assert "--trainer.max_steps 1 is below the step of --ckpt_path" in line
            assert "(2): nothing to train" in line
        else:
            assert "at trainer.max_steps, nothing to train" in result.stdout + result.stderr
