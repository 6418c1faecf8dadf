"""`bertlab fit` on an object store: samples streamed from s3://, checkpoints and logs written
there, `--ckpt_path last` found in the bucket, and the resumed run exactly the uninterrupted one.

Run: .venv/bin/python -m pytest tests/train/test_object_store.py -q

The store is moto's S3 API server on 127.0.0.1 (tests/conftest.py: s3_endpoint, s3_bucket), found
through AWS_ENDPOINT_URL and the AWS_* credentials, as a user's S3-compatible store would be.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fsspec
import pytest
import torch
from conftest import run_tool, upload
from tiny import small_run, tiny_model

from bertlab.files.tensorboard_logs import read_scalars
from bertlab.train.cli import main, run_cli

COMMON = [
    *tiny_model(),
    "--model.lr_schedule=constant",
    "--trainer.limit_val_batches=2",
    "--trainer.val_check_interval=100",
    "--trainer.log_every_n_steps=1",
    "--data.num_workers=1",  # a forked DataLoader worker streams the shards too
    "--speed.bf16_working_copy=false",  # not decided by a timing that differs per process
]


@pytest.fixture(autouse=True)
def command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bertlab"])


def run_args(samples: str | Path, root: str | Path, steps: int) -> list[str]:
    # small_run joins with pathlib, which would fold `s3://` into `s3:/`: give it the URL whole.
    args = small_run(Path("SAMPLES"), Path("ROOT"), steps=steps)
    args = [a.replace("SAMPLES", str(samples)).replace("ROOT", str(root)) for a in args]
    return ["fit", *args, *COMMON]


def losses(folder: Path) -> dict[int, float]:
    return {e.step: e.value for e in read_scalars(folder)["train/loss"]}


def test_fit_streams_from_s3_writes_there_and_resumes_from_last_in_the_bucket(
    en_samples, s3_bucket, tmp_path
):
    """fit 8 steps locally == fit 4 steps from and to s3://, then `--ckpt_path last` to 8 (a new
    process, which finds the checkpoint in the bucket): the same weights, bit for bit, and the
    same logged losses."""
    samples = upload(en_samples, f"{s3_bucket}/samples")
    runs = f"{s3_bucket}/runs"
    run_cli(run_args(en_samples, tmp_path / "straight", 8))
    run_cli(run_args(samples, runs, 4))
    run_tool("bertlab", *run_args(samples, runs, 8), "--ckpt_path=last")

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    logs = f"{runs.removeprefix('s3://')}/lightning_logs"
    written = sorted(p.removeprefix(logs + "/") for p in fs.find(logs))
    for version in ("version_0", "version_1"):
        assert f"{version}/checkpoints/last.ckpt" in written, written
        assert f"{version}/config.yaml" in written, written
        assert any(p.startswith(f"{version}/events.out.tfevents") for p in written), written
    assert not [p for p in written if p.endswith(".tmp")], written  # no temporary files there
    fs.get(logs + "/", str(tmp_path / "bucket"), recursive=True)
    bucket = tmp_path / "bucket"

    straight_dir = tmp_path / "straight" / "lightning_logs" / "version_0"
    straight = torch.load(straight_dir / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(bucket / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == straight["global_step"] == 8
    for name, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    expected = losses(straight_dir)
    assert sorted(expected) == list(range(8))
    got = {**losses(bucket / "version_0"), **losses(bucket / "version_1")}
    assert got == expected


def test_a_missing_bucket_is_one_line_naming_the_url(en_samples, s3_bucket, tmp_path, capsys):
    missing = "s3://bertlab-no-such-bucket"
    for args in (
        run_args(f"{missing}/samples", tmp_path / "run", 2),
        run_args(en_samples, f"{missing}/runs", 2),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert missing in err and "bucket" in err, err
        assert "Traceback" not in err


def test_last_in_a_bucket_is_the_newest_complete_checkpoint(s3_bucket, tmp_path):
    """A store's times count seconds: within one, the highest step wins; a truncated object and
    a file without a global step are skipped; an explicit missing URL is one line."""
    from bertlab.train.checkpointing import resolve_checkpoint

    fs = fsspec.filesystem("s3")
    folder = f"{s3_bucket}/runs/lightning_logs/version_0/checkpoints"
    saves = (
        ("step=8-val_loss=1.0.ckpt", {"global_step": 8}),
        ("last.ckpt", {"global_step": 8}),
        ("step=4-val_loss=2.0.ckpt", {"global_step": 4}),
        ("weights.ckpt", {"state_dict": {}}),
    )
    for name, state in saves:
        torch.save({**state, "w": torch.zeros(3)}, tmp_path / name)
    for _ in range(10):  # the uploads within one second of the store's clock, as the test says
        for name, _state in saves:
            fs.put_file(str(tmp_path / name), f"{folder}/{name}")
        fs.invalidate_cache()
        seconds = {
            int(fs.info(f"{folder}/{name}")["LastModified"].timestamp()) for name, _ in saves
        }
        if len(seconds) == 1:
            break
    data = (tmp_path / "last.ckpt").read_bytes()
    fs.pipe_file(f"{folder}/zz-truncated.ckpt", data[: len(data) // 2])
    assert resolve_checkpoint("last", [None, f"{s3_bucket}/runs"]) == f"{folder}/last.ckpt"
    assert resolve_checkpoint("last", [f"{s3_bucket}/elsewhere"]) is None  # from scratch
    url = f"{folder}/step=4-val_loss=2.0.ckpt"
    assert resolve_checkpoint(url, []) == url
    with pytest.raises(ValueError, match=r"^--ckpt_path s3://\S+/nope.ckpt: no such file"):
        resolve_checkpoint(f"{folder}/nope.ckpt", [])
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(f"{folder}/zz-truncated.ckpt", [])
