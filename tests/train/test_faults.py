"""Faults during `bertlab fit`: kills, Ctrl-C, NaN losses, full or unwritable disks.

Run: .venv/bin/python -m pytest tests/train/test_faults.py -q

Every run is the real `bertlab` command (`bertlab.train.cli.main`) on the English samples, in a
process forked from the test process (tests/faults.py: a real process that can be SIGKILLed, without
a fresh interpreter's ~10 s of imports). Faults come from tests/faults.py through the command line
(`--trainer.callbacks+=`, `--trainer.plugins=`) and fire at fixed steps, so a killed run can be
compared step by step with an uninterrupted one: the TensorBoard `train/loss` of every resumed
run must equal the uninterrupted run's at the same step.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from faults import Forked, forked_bertlab
from tiny import fit_args

from bertlab.train.checkpointing import is_complete_checkpoint

REPO = Path(__file__).resolve().parents[2]


def callback(name: str, **init_args) -> str:
    return "--trainer.callbacks+=" + json.dumps(
        {"class_path": f"faults.{name}", "init_args": init_args}
    )


def plugin(name: str, **init_args) -> str:
    return "--trainer.plugins=" + json.dumps(
        {"class_path": f"faults.{name}", "init_args": init_args}
    )


def losses_by_run(root: Path) -> dict[str, dict[int, float]]:
    """{version folder: {global step: train/loss}} from the TensorBoard logs under root."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {}
    for folder in sorted((root / "lightning_logs").glob("version_*")):
        events = EventAccumulator(str(folder))
        events.Reload()
        if "train/loss" in events.Tags()["scalars"]:
            # Lightning logs a step's loss at x = global step - 1.
            runs[folder.name] = {e.step + 1: e.value for e in events.Scalars("train/loss")}
    return runs


def checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def assert_all_checkpoints_load(root: Path) -> None:
    for path in checkpoints(root):
        assert is_complete_checkpoint(path), path
        state = torch.load(path, weights_only=True, map_location="cpu")
        assert state["global_step"] > 0 and "optimizer_states" in state, path


def run(samples: Path, root: Path, *extra: str, workers: int = 0, expect: int = 0) -> str:
    status, output = forked_bertlab(
        *fit_args(samples, root, *extra, workers=workers), log_path=root.with_suffix(".log")
    )
    assert status == expect, f"exit {status}, expected {expect}:\n{output[-4000:]}"
    return output


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_runs_resume_with_the_losses_of_an_uninterrupted_run(en_samples, tmp_path, workers):
    """Three interruptions in a row, then `--ckpt_path last` to the end, against one clean run.

    workers 0: SIGKILL during validation, then during a checkpoint write, then finish.
    workers 2: SIGKILL between backward and the optimizer step, then Ctrl-C, then finish.
    """
    reference = tmp_path / "reference"
    run(en_samples, reference, workers=workers)
    expected = losses_by_run(reference)["version_0"]
    assert sorted(expected) == list(range(1, 13))

    root = tmp_path / "faulty"
    if workers == 0:
        # Killed in the validation after step 8: the newest checkpoint is step 4's.
        run(en_samples, root, callback("KillAt", step=8, when="validation"), expect=-9)
        # Resumed from 4, killed half-way through writing last.ckpt after step 8's validation:
        # step 8's top-k checkpoint is complete, the half-written file is only a temporary one.
        run(en_samples, root, "--ckpt_path=last", plugin("DieWhileSaving", save=2), expect=-9)
        assert list(root.rglob(".last.ckpt.*.tmp")), "the kill did not hit the write"
        resumed_from = [4, 8]
    else:
        run(en_samples, root, callback("KillAt", step=6, when="step"), workers=2, expect=-9)
        output = run(
            en_samples,
            root,
            "--ckpt_path=last",
            callback("KillAt", step=10, when="interrupt"),
            workers=2,
            expect=128 + signal.SIGINT,
        )
        assert "interrupted by SIGINT at step 10: saved" in output, output[-2000:]
        resumed_from = [4, 10]
    assert_all_checkpoints_load(root)
    output = run(en_samples, root, "--ckpt_path=last", workers=workers)
    assert_all_checkpoints_load(root)

    runs = losses_by_run(root)
    assert len(runs) == 3, runs.keys()
    for name, logged in runs.items():
        for step, loss in logged.items():
            assert loss == pytest.approx(expected[step], abs=1e-6), (name, step)
    starts = [min(logged) - 1 for logged in list(runs.values())[1:]]
    assert starts == resumed_from
    assert max(runs["version_2"]) == 12


def test_nan_loss_stops_with_a_checkpoint_and_the_batch_lines(en_samples, tmp_path):
    root = tmp_path / "run"
    output = run(
        en_samples,
        root,
        callback("InjectNaN", steps=[3]),
        "--nonfinite_guard.action=stop",
        expect=2,
    )
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert "NaN or infinite at step 3" in errors[0]
    saved = root / "lightning_logs" / "version_0" / "checkpoints" / "nonfinite-step=3.ckpt"
    assert str(saved) in errors[0]
    # The batch's 8 samples, named by shard and line, and real lines of those shards.
    named = errors[0].split("the batch's samples: ")[1].split("; ")
    lines = [
        (path, int(n))
        for part in named
        for path, ns in [part.rsplit(":", 1)]
        for n in ns.split(",")
    ]
    assert len(lines) == 8
    assert all(Path(path).parent == en_samples / "train" and n >= 1 for path, n in lines)
    state = torch.load(saved, weights_only=True, map_location="cpu")
    assert state["global_step"] == 3


def read_state(path: Path) -> tuple[dict, dict]:
    state = torch.load(path, weights_only=True, map_location="cpu")
    return state["state_dict"], state["optimizer_states"][0]["state"]


@pytest.mark.parametrize(
    "implementation, log_every", [("fused", 2), ("foreach", 1)], ids=["fused", "foreach"]
)
def test_nan_loss_skips_the_update_without_touching_adamw(
    en_samples, tmp_path, implementation, log_every
):
    """Step 3's update is dropped: weights and AdamW's moments and step count stay those of
    step 2, the run goes on to the end, and the count survives in the checkpoints. Fused AdamW
    skips on the device and the flags are read at logging steps; foreach drops the gradients."""
    root = tmp_path / "run"
    every_step = [
        "--checkpoint.monitor=null",
        "--checkpoint.save_top_k=-1",
        "--checkpoint.every_n_train_steps=1",
        "--checkpoint.filename=step={step}",
    ]
    output = run(
        en_samples,
        root,
        callback("InjectNaN", steps=[3]),
        *every_step,
        "--trainer.max_steps=5",
        f"--speed.optimizer_implementation={implementation}",
        f"--trainer.log_every_n_steps={log_every}",
    )
    assert "non-finite training loss or gradients at step 3: the update was skipped" in output
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    weights2, adam2 = read_state(folder / "step=2.ckpt")
    weights3, adam3 = read_state(folder / "step=3.ckpt")
    weights4, adam4 = read_state(folder / "step=4.ckpt")
    for name, value in weights2.items():
        assert torch.equal(value, weights3[name]), name
    assert any(not torch.equal(value, weights4[name]) for name, value in weights3.items())
    for index, moments in adam2.items():
        for key, value in moments.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(adam3[index][key])), key
    assert int(adam4[0]["step"]) == int(adam3[0]["step"]) + 1 == 3
    for name, step in (("step=3.ckpt", 3), ("last.ckpt", 5)):
        state = torch.load(folder / name, weights_only=True, map_location="cpu")
        guard = next(v for k, v in state["callbacks"].items() if "NonFiniteLossGuard" in k)
        assert guard["skipped"] == 1 and state["global_step"] == step
    last = torch.load(folder / "last.ckpt", weights_only=True, map_location="cpu")
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_no_space_is_an_error_before_training(en_samples, tmp_path):
    root = tmp_path / "run"
    output = run(en_samples, root, "--preflight.min_free_mb=1e12", expect=2)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MiB free, but checkpoints of this model need" in errors[0]
    assert "Traceback" not in output
    assert not checkpoints(root)
    assert not losses_by_run(root)  # not one step


def test_unwritable_checkpoint_folder_is_an_error_before_training(en_samples, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    output = run(en_samples, tmp_path / "run", f"--checkpoint.dirpath={blocker / 'ckpt'}", expect=2)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"checkpoint folder {blocker / 'ckpt'} is not writable" in errors[0]
    assert not losses_by_run(tmp_path / "run")


def test_a_failed_save_keeps_the_previous_checkpoint(en_samples, tmp_path):
    """From step 6 no file may exceed 300 kB (a full disk for this 1.4 MB checkpoint): the save
    after step 8 fails with a one-line error, step 4's checkpoints stay whole, no debris."""
    root = tmp_path / "run"
    output = run(en_samples, root, callback("FileSizeLimit", step=6, max_bytes=300_000), expect=2)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not write checkpoint" in errors[0], output[-3000:]
    assert "File too large" in errors[0] and "are intact" in errors[0]
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[0] == "last.ckpt" and names[1].startswith("step=4-"), names
    assert_all_checkpoints_load(root)
    assert all(torch.load(p, weights_only=True)["global_step"] == 4 for p in checkpoints(root))


def test_truncated_checkpoint_path_is_a_one_line_error(en_samples, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 half a zip")
    output = run(en_samples, tmp_path / "run", f"--ckpt_path={broken}", expect=2)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: --ckpt_path {broken} is not a complete checkpoint (truncated or not written by "
        "torch.save); use --ckpt_path last to take the newest complete one"
    ]


def test_sigterm_from_outside_saves_and_exits_143(en_samples, tmp_path):
    """A scheduler's SIGTERM at an arbitrary moment: the run stops at a step end with last.ckpt."""
    root = tmp_path / "run"
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    process = Forked(
        fit_args(en_samples, root, "--trainer.max_steps=400", workers=2), root.with_suffix(".log")
    )
    deadline = time.monotonic() + 120
    # Any checkpoint, not step=4's: with save_top_k 1 the next validation may replace it
    # between two looks, and the run would finish its 400 steps before the signal.
    while not list(folder.glob("*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    status = process.wait(120)
    assert status == 128 + signal.SIGTERM, process.output[-3000:]
    step = torch.load(folder / "last.ckpt", weights_only=True)["global_step"]
    assert 4 <= step < 400
    assert f"interrupted by SIGTERM at step {step}: saved {folder / 'last.ckpt'}" in process.output


@pytest.mark.slow
def test_killed_at_random_moments_until_done(en_samples, tmp_path):
    """SIGKILL at random moments (steps, validation, saves, start-up) until the run completes;
    every checkpoint loads and every logged loss equals the uninterrupted run's."""
    import random

    reference = tmp_path / "reference"
    steps = ["--trainer.max_steps=24", "--trainer.val_check_interval=2"]
    run(en_samples, reference, *steps, workers=2)
    expected = losses_by_run(reference)["version_0"]
    root, rng, kills = tmp_path / "faulty", random.Random(0), 0
    for attempt in range(40):
        process = Forked(
            fit_args(en_samples, root, "--ckpt_path=last", *steps, workers=2),
            tmp_path / f"attempt{attempt}.log",
        )
        process.process.join(rng.uniform(2.0, 8.0))
        if not process.process.is_alive():
            assert process.wait() == 0, process.output[-3000:]
            break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        assert_all_checkpoints_load(root)
    else:
        raise AssertionError("the run never finished")
    assert kills >= 3
    assert_all_checkpoints_load(root)
    for name, logged in losses_by_run(root).items():
        for step, loss in logged.items():
            assert loss == pytest.approx(expected[step], abs=1e-6), (name, step)


def test_last_is_the_newest_complete_training_checkpoint(tmp_path):
    """Newer files that are truncated or not training checkpoints are skipped; stale
    temporary files are removed, fresh ones (a live writer's) are not."""
    from bertlab.train.checkpointing import resolve_checkpoint

    old, new = tmp_path / "version_0" / "a.ckpt", tmp_path / "version_1" / "b.ckpt"
    for i, path in enumerate((old, new)):
        path.parent.mkdir()
        torch.save({"global_step": 10 * (i + 1), "state_dict": {}}, path)
        os.utime(path, (1000 + i, 1000 + i))
    truncated = tmp_path / "version_1" / "c.ckpt"
    truncated.write_bytes(new.read_bytes()[:100])
    weights_only = tmp_path / "version_1" / "d.ckpt"
    torch.save({"state_dict": {}}, weights_only)
    stale, fresh = (
        tmp_path / "version_1" / ".b.ckpt.x.tmp",
        tmp_path / "version_1" / ".b.ckpt.y.tmp",
    )
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1000, 1000))
    assert resolve_checkpoint("last", [tmp_path]) == str(new)
    assert not stale.exists() and fresh.exists()
    assert resolve_checkpoint("last", [tmp_path / "empty"]) is None  # starts from scratch
    with pytest.raises(ValueError, match="no such file"):
        resolve_checkpoint(str(tmp_path / "missing.ckpt"), [])
