"""Ctrl-C and SIGTERM at every phase of a run: the exit status and the checkpoint README promises.

Run: .venv/bin/python -m pytest tests/train/test_signals.py -q

Each case is the real command (`bertlab fit`, `bertlab test`, tools/export_model.py's main) in a
process forked from the test process, in its own process group (tests/faults.py's `Forked`). A
fault from tests/faults.py prints `PHASE <name>` when the phase begins and waits until the test
creates a file; the test reads that marker from the log, sends the signal, then creates the file,
so the signal lands inside the phase every time (no sleeps guessing how long start-up takes).
SIGINT goes to the process group, as a terminal's Ctrl-C does (DataLoader workers get it too);
SIGTERM to the main process only, as a scheduler's or `docker stop` does.

What every case asserts: the exit status is 128 + the signal (130, 143), never 0 and never a
traceback. Fit interrupted after its first step has a `last.ckpt` that loads and holds the step
the run says it stopped at; before the first step nothing is saved (there is nothing to resume).
No case leaves a half-written checkpoint, a temporary file, or a partial export folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from faults import Forked, forked_bertlab, paused_export
from test_faults import assert_all_checkpoints_load, callback, plugin
from tiny import fit_args

from bertlab.train.checkpointing import is_complete_checkpoint

SIGNALS = [signal.SIGINT, signal.SIGTERM]
IDS = ["SIGINT", "SIGTERM"]
WAIT_SECONDS = 120.0


def wait_for(run: Forked, text: str) -> None:
    """Wait until the run's log holds `text` (a phase marker); fail if the run ends first."""
    deadline = time.monotonic() + WAIT_SECONDS
    while text not in run.output:
        if not run.process.is_alive() or time.monotonic() > deadline:
            run.wait(1)
            raise AssertionError(f"never printed {text!r}:\n{run.output[-3000:]}")
        time.sleep(0.02)


def send(run: Forked, signum: int) -> None:
    """Ctrl-C to the whole process group (a terminal), SIGTERM to the main process (a scheduler)."""
    if signum == signal.SIGINT:
        os.killpg(run.pid, signum)  # Forked's child called setsid: its pid is its group
    else:
        os.kill(run.pid, signum)


def interrupt_at(run: Forked, phase: str, signum: int, go: Path) -> int:
    """Signal the run once `phase` has begun, let the phase go on, return the exit status."""
    wait_for(run, f"PHASE {phase}\n")
    send(run, signum)
    go.touch()
    return run.wait(WAIT_SECONDS)


def assert_interrupted(run: Forked, status: int, signum: int) -> None:
    output = run.output
    assert status == 128 + signum, f"exit {status}, expected {128 + signum}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]


def assert_no_debris(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]
    assert not left, left


def global_step(path: Path) -> int:
    assert is_complete_checkpoint(path), path
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


# -- bertlab fit ---------------------------------------------------------------------------------

# phase -> the step last.ckpt holds afterwards (None: nothing may be saved)
FIT_PHASES = {
    "startup": None,
    "sanity": None,
    "training": 3,  # signalled at the start of step 3: step 3 finishes and is saved
    "validation": 5,  # the validation after step 4 finishes; the run stops after step 5
    "saving": 9,  # while last.ckpt of step 8 is written over step 4's
}


def fit_fault(phase: str, go: Path) -> str:
    if phase == "saving":
        return plugin("PauseWhileSaving", go=str(go), step=8)
    return callback(
        "Pause", phase=phase, go=str(go), step={"training": 3, "validation": 4}.get(phase, 0)
    )


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
@pytest.mark.parametrize("phase", list(FIT_PHASES))
def test_fit_interrupted_exits_128_plus_the_signal_with_its_checkpoint(
    en_samples, tmp_path, phase, signum
):
    root, go = tmp_path / "run", tmp_path / "go"
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    run = Forked(fit_args(en_samples, root, fit_fault(phase, go), workers=2), tmp_path / "fit.log")
    if phase == "saving":
        wait_for(run, "PHASE saving\n")
        # Half of the new last.ckpt is written: the file under that name is still step 4's.
        assert global_step(folder / "last.ckpt") == 4
    status = interrupt_at(run, phase, signum, go)
    assert_interrupted(run, status, signum)
    assert_no_debris(root)
    stopped = FIT_PHASES[phase]
    name = signal.Signals(signum).name
    if stopped is None:
        assert not list(root.rglob("*.ckpt")), "a checkpoint before the first step"
        # Nothing of this run is saved: not even the log folder it made for itself.
        assert not (root / "lightning_logs" / "version_0").exists()
        assert f"interrupted by {name}: stopped before the first training step" in run.output
        return
    assert f"interrupted by {name} at step {stopped}: saved {folder / 'last.ckpt'}" in run.output
    assert global_step(folder / "last.ckpt") == stopped
    assert_all_checkpoints_load(root)
    if phase in ("validation", "saving"):
        # The validation running (or saving) when the signal came completed: its top-k file.
        validated = {"validation": 4, "saving": 8}[phase]
        assert list(folder.glob(f"step={validated}-val_loss=*.ckpt")), sorted(folder.iterdir())


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_a_signal_during_the_final_save_lets_the_run_complete(en_samples, tmp_path, signum):
    """After the last step nothing is left to stop: the final last.ckpt is written whole, exit 0."""
    root, go = tmp_path / "run", tmp_path / "go"
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    args = fit_args(en_samples, root, plugin("PauseWhileSaving", go=str(go), step=10))
    run = Forked([*args, "--trainer.max_steps=10"], tmp_path / "fit.log")  # no validation at 10
    status = interrupt_at(run, "saving", signum, go)
    assert status == 0, run.output[-3000:]
    assert "Traceback" not in run.output
    assert global_step(folder / "last.ckpt") == 10
    assert_all_checkpoints_load(root)
    assert_no_debris(root)


def test_second_ctrl_c_while_saving_stops_at_once_keeping_the_old_checkpoint(en_samples, tmp_path):
    root, go = tmp_path / "run", tmp_path / "go"
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    run = Forked(
        fit_args(en_samples, root, plugin("PauseWhileSaving", go=str(go), step=8), workers=2),
        tmp_path / "fit.log",
    )
    wait_for(run, "PHASE saving\n")
    send(run, signal.SIGINT)
    wait_for(run, "SIGINT received: stopping after this training step")
    send(run, signal.SIGINT)
    status = run.wait(WAIT_SECONDS)
    go.touch()
    assert_interrupted(run, status, signal.SIGINT)
    assert "interrupted by SIGINT" in run.output
    # The write in progress was abandoned whole: last.ckpt is still step 4's, nothing truncated.
    assert global_step(folder / "last.ckpt") == 4
    assert_all_checkpoints_load(root)
    assert_no_debris(root)


# -- bertlab test --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(en_samples, tmp_path_factory) -> Path:
    """last.ckpt of a finished 4-step run."""
    root = tmp_path_factory.mktemp("trained")
    args = fit_args(en_samples, root, "--trainer.max_steps=4")
    status, output = forked_bertlab(*args, log_path=root / "fit.log")
    assert status == 0, output[-3000:]
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_test_interrupted_exits_128_plus_the_signal(en_samples, trained, tmp_path, signum):
    before = digest(trained)
    go = tmp_path / "go"
    args = [
        "test",
        *fit_args(en_samples, tmp_path / "test-run", workers=2)[1:],
        f"--ckpt_path={trained}",
        callback("Pause", phase="test", go=str(go)),
    ]
    run = Forked(args, tmp_path / "test.log")
    status = interrupt_at(run, "test", signum, go)
    assert_interrupted(run, status, signum)
    assert f"interrupted by {signal.Signals(signum).name}" in run.output
    assert digest(trained) == before  # test reads the checkpoint, never writes it
    assert_no_debris(tmp_path)
    assert not (tmp_path / "test-run" / "lightning_logs" / "version_0").exists()  # nothing written


# -- export_model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """A complete earlier export of `trained`."""
    from bertlab.export.model import export_model

    out = tmp_path_factory.mktemp("exported") / "model"
    export_model(ckpt_path=str(trained), output_dir=str(out))
    return out


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("earlier", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_export_interrupted_leaves_no_partial_folder(trained, exported, tmp_path, signum, earlier):
    """Interrupted with the model written into its temporary folder: the output folder is absent
    (a new export) or the earlier export, whole; no temporary folder is left beside it."""
    out, go = tmp_path / "out" / "model", tmp_path / "go"
    args = [f"--ckpt_path={trained}", f"--output_dir={out}"]
    if earlier:
        shutil.copytree(exported, out)
        args.append("--overwrite")
    before = snapshot(out) if earlier else None
    run = Forked(args, tmp_path / "export.log", main=paused_export(go))
    status = interrupt_at(run, "export", signum, go)
    assert_interrupted(run, status, signum)
    assert "export_model: wrote" not in run.output
    if earlier:
        assert snapshot(out) == before
    else:
        assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == (["model"] if earlier else [])


@pytest.mark.parametrize("after", [1, 2], ids=["between-the-renames", "after-the-renames"])
def test_a_signal_while_an_output_folder_replaces_the_earlier_one(tmp_path, monkeypatch, after):
    """The replacement is two renames (earlier output aside, new one in): an interrupt after the
    first leaves the earlier output in place, after the second the new one; never no folder, and
    no hidden leftover beside it."""
    import bertlab.files.atomic
    from bertlab.files.atomic import atomic_dir
    from bertlab.signals import Interrupted

    out = tmp_path / "out"
    out.mkdir()
    (out / "file.txt").write_text("earlier")
    rename = os.replace
    calls = []

    def interrupted_rename(src, dst) -> None:
        rename(src, dst)
        calls.append(dst)
        if len(calls) == after:
            raise Interrupted(signal.SIGTERM)  # as bertlab.signals' handler raises it

    monkeypatch.setattr(bertlab.files.atomic.os, "replace", interrupted_rename)
    with pytest.raises(Interrupted), atomic_dir(out) as tmp:
        (tmp / "file.txt").write_text("new")
    assert (out / "file.txt").read_text() == ("earlier" if after == 1 else "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
