"""Figures from TensorBoard logs: two runs written here, plotted through the real tool.

Run: .venv/bin/python -m pytest tests/research/test_plots.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_tool
from tiny import START, write_run

from bertlab.research.plots import plot_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    small = root / "small" / "lightning_logs" / "version_0"
    large = root / "large"
    write_run(small, seconds_per_step=5, downstream=True)
    write_run(large, seconds_per_step=20, downstream=False, lr_groups=1)
    return root / "small", large


def check_png(path: Path, width: int, height: int) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0, f"{path} is blank"


def test_tool_overlays_two_runs(two_runs, tmp_path):
    small, large = two_runs
    out = tmp_path / "plots"
    result = run_tool(
        "plot_runs.py", "--logdir", small, large, "--names", "small", "large",
        "--output_dir", out, "--smoothing", "0.5",
    )  # fmt: skip
    manifest = json.loads(result.stdout)
    figures = manifest["figures"]
    assert set(figures) == {
        "loss_step.png",
        "loss_time.png",
        "lr_step.png",
        "throughput_step.png",
        "downstream_time.png",
    }
    losses = {f"{run}: {tag}" for run in ("small", "large") for tag in (
        "train/loss", "train/mlm_loss", "val_loss", "val/mlm_loss")}  # fmt: skip
    assert set(figures["loss_step.png"]) == losses == set(figures["loss_time.png"])
    # Two AdamW parameter groups with the same schedule are one curve.
    assert figures["lr_step.png"] == ["small: lr-AdamW/pg1", "large: lr-AdamW/pg1"]
    assert set(figures["throughput_step.png"]) == {
        "small: train/tokens_per_sec",
        "large: train/tokens_per_sec",
    }
    assert figures["downstream_time.png"] == ["small: downstream/accuracy"]
    notes = "\n".join(manifest["notes"])
    assert "mfu_step.png skipped" in notes
    assert "downstream_time.png: large has no tag" in notes
    assert "pg2 is identical to lr-AdamW/pg1" in notes
    for name in figures:
        check_png(out / name, 800, 500)
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # the marker
    assert written == sorted(figures), "stray files in output_dir"


def test_several_versions_under_one_logdir_are_separate_runs(two_runs, tmp_path):
    small, _ = two_runs
    write_run(small / "lightning_logs" / "version_1", seconds_per_step=5, downstream=False)
    try:
        manifest = plot_runs([str(small)], str(tmp_path), dpi=50)
    finally:
        for file in (small / "lightning_logs" / "version_1").iterdir():
            file.unlink()
        (small / "lightning_logs" / "version_1").rmdir()
    runs = {label.split(": ")[0] for label in manifest["figures"]["loss_step.png"]}
    assert runs == {f"{small}/lightning_logs/version_0", f"{small}/lightning_logs/version_1"}
    check_png(tmp_path / "loss_step.png", 400, 250)


def test_patterns_select_other_tags(two_runs, tmp_path):
    _, large = two_runs
    manifest = plot_runs(
        [str(large)], str(tmp_path), names=["L"], patterns={"loss": r"^train/loss$"}
    )
    assert manifest["figures"]["loss_step.png"] == ["L: train/loss"]


def test_non_finite_values_are_left_out_and_noted(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "run"))
    for step, value in enumerate([3.0, 2.5, float("nan"), float("inf"), 2.0]):
        writer.add_scalar("train/loss", value, step, walltime=START + step)
    writer.close()
    manifest = plot_runs([str(tmp_path / "run")], str(tmp_path / "out"))
    assert manifest["figures"]["loss_step.png"] == [f"{tmp_path / 'run'}: train/loss"]
    assert any("2 non-finite values left out" in note for note in manifest["notes"])


@pytest.mark.parametrize(
    ("make_args", "flag"),
    [
        (lambda tmp, runs: ["--logdir", tmp / "empty", "--output_dir", tmp / "o"], "--logdir"),
        (lambda tmp, runs: ["--logdir", tmp / "missing", "--output_dir", tmp / "o"], "--logdir"),
        (
            lambda tmp, runs: ["--logdir", *runs, "--names", "one", "--output_dir", tmp / "o"],
            "--names",
        ),
        (
            lambda tmp, runs: ["--logdir", runs[1], "--output_dir", tmp / "o", "--smoothing", "1"],
            "--smoothing",
        ),
        (
            lambda tmp, runs: [
                "--logdir",
                runs[1],
                "--output_dir",
                tmp / "o",
                "--patterns",
                '{"los": "x"}',
            ],
            "--patterns",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_naming_the_flag(two_runs, tmp_path, make_args, flag):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no events here")
    result = run_tool("plot_runs.py", *make_args(tmp_path, two_runs), check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_plots_of_a_real_tiny_run(en_samples, tmp_path):
    """The logs of a real `bertlab fit` (not hand-written events) give every training figure."""
    from bertlab.train.cli import run_cli

    root = tmp_path / "run"
    run_cli(
        ["fit", "--config=configs/tiny.yaml",
         f"--data.train_files={en_samples / 'train'}", f"--data.val_files={en_samples / 'valid'}",
         f"--data.test_files={en_samples / 'test'}",
         "--data.batch_size=16", "--data.shuffle_buffer_size=200",
         "--model.hidden_size=32", "--model.num_hidden_layers=1",
         "--model.num_attention_heads=2", "--model.intermediate_size=64",
         "--model.max_position_embeddings=64", "--model.warmup_steps=2",
         "--trainer.max_steps=20", "--trainer.val_check_interval=10",
         "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=2",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         f"--trainer.default_root_dir={root}"]
    )  # fmt: skip
    out = tmp_path / "plots"
    result = run_tool("plot_runs.py", "--logdir", root, "--names", "tiny", "--output_dir", out)
    figures = json.loads(result.stdout)["figures"]
    for figure in ("loss_step.png", "loss_time.png", "lr_step.png", "throughput_step.png"):
        assert figures.get(figure), f"{figure} has no series: {figures}"
        check_png(out / figure, 800, 500)
    losses = " ".join(figures["loss_step.png"])
    assert "train/loss" in losses and "val" in losses


def test_a_series_of_a_single_point_is_noted(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "run"))
    writer.add_scalar("train/loss", 5.0, 1, walltime=START)
    for step in (1, 2, 3):
        writer.add_scalar("lr-AdamW/pg1", 1e-4 * step, step, walltime=START + step)
    writer.close()
    manifest = plot_runs([str(tmp_path / "run")], str(tmp_path / "out"), names=["r"], dpi=50)
    assert manifest["figures"]["loss_step.png"] == ["r: train/loss"]  # drawn all the same
    single = [note for note in manifest["notes"] if "single point" in note]
    assert single == [
        f"{figure}: r: train/loss has a single point (step 1): no curve, one value"
        for figure in ("loss_step.png", "loss_time.png")
    ]
