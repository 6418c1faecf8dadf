"""DDP with 2 CPU processes over uneven shards: each sample once, equal steps, no hang, resume.

Run: .venv/bin/python -m pytest tests/train/test_ddp.py -q

`python -m bertlab fit --trainer.strategy ddp --trainer.accelerator cpu --trainer.devices 2` (gloo)
as real subprocesses (Lightning starts rank 1 by re-running the command), 2 DataLoader workers
per rank, over 3 shards of very different sizes: fewer shards than the 4 readers. A callback from
tests/faults.py writes every batch's `path:line` sources per rank. The run is killed (both ranks,
SIGKILL) mid-epoch, resumed with `--ckpt_path last`, and crosses into the second epoch; the
batches each rank trained on, stitched at the checkpoint, must be exactly the ones the data
module plans for that rank (computed here without Lightning), so within an epoch no sample is
read twice and every rank takes the same number of steps.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import callback

from bertlab.data.datamodule import BertDataModule

REPO = Path(__file__).resolve().parents[2]
SHARD_SIZES = [150, 20, 10]  # 4 readers x 45 samples: 5 batches of 8 each, 10 a rank an epoch
STEPS = 14  # epoch 0 (10 steps) and 4 steps into epoch 1
BATCHES_PER_EPOCH = 10


@pytest.fixture(scope="module")
def uneven(en_samples, tmp_path_factory) -> Path:
    """The first 180 English training samples re-cut into shards of 150, 20 and 10 lines."""
    source = en_samples / "train"
    meta = json.loads((source / "meta.json").read_text())
    with gzip.open(source / meta["shards"][0]["file"], "rb") as f:
        lines = [next(f) for _ in range(sum(SHARD_SIZES))]
    target = tmp_path_factory.mktemp("uneven") / "train"
    target.mkdir()
    shards, start = [], 0
    for i, size in enumerate(SHARD_SIZES):
        name = f"shard-{i:05d}.jsonl.gz"
        (target / name).write_bytes(gzip.compress(b"".join(lines[start : start + size])))
        shards.append({"file": name, "num_samples": size, "num_tokens": 0})
        start += size
    meta.update(shards=shards, num_samples=sum(SHARD_SIZES))
    (target / "meta.json").write_text(json.dumps(meta))
    return target


def planned_batches(train: Path, rank: int) -> list[list[str]]:
    """The sources of the batches rank `rank` of 2 should train on, epoch 0 then epoch 1."""
    dm = BertDataModule(
        train_files=str(train), batch_size=8, num_workers=2, shuffle_buffer_size=100,
        with_source=True,
    )  # fmt: skip
    loader = dm.train_dataloader()
    loader.distributed = (rank, 2)
    epoch0 = [dm.sources(batch) for batch in loader]
    epoch1 = [dm.sources(batch) for batch in loader]
    assert len(epoch0) == len(epoch1) == BATCHES_PER_EPOCH
    return epoch0 + epoch1


def ddp_fit(train: Path, valid: Path, root: Path, *extra: str, timeout: float = 300) -> int:
    """Run a 2-process DDP fit; kill the whole process group on timeout (a hang fails)."""
    command = [
        sys.executable, "-m", "bertlab", "fit",
        f"--config={REPO / 'configs' / 'tiny.yaml'}",
        f"--data.train_files={train}", f"--data.val_files={valid}", "--data.test_files=null",
        "--data.batch_size=8", "--data.shuffle_buffer_size=100", "--data.num_workers=2",
        "--model.hidden_size=32", "--model.num_hidden_layers=1", "--model.num_attention_heads=2",
        "--model.intermediate_size=64", "--model.max_position_embeddings=64",
        "--model.warmup_steps=2", "--speed.bf16_working_copy=false",
        "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2",
        f"--trainer.max_steps={STEPS}", "--trainer.val_check_interval=4",
        "--trainer.limit_val_batches=2", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--throughput.peak_flops=0", f"--trainer.default_root_dir={root}",
        callback("RecordSources", folder=str(root / "sources")), *extra,
    ]  # fmt: skip
    # PYTHONFAULTHANDLER: on a hang every process (ranks, loader workers) prints its threads'
    # stacks when SIGABRT reaches the group, so the failure says where it waited.
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "tests"), PYTHONFAULTHANDLER="1"
    )
    log = root.with_suffix(f".{len(list(root.parent.glob(root.name + '.*.log')))}.log")
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"DDP run hung:\n{log.read_text()[-12000:]}") from None
        finally:  # rank 1 and the workers, should anything outlive rank 0
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert status in (0, -signal.SIGKILL), f"exit {status}:\n{log.read_text()[-4000:]}"
    return status


def recorded(root: Path, rank: int) -> list[tuple[int, list[str]]]:
    text = (root / "sources" / f"rank{rank}.txt").read_text()
    return [
        (int(step), lines.split()) for step, lines in (r.split("\t") for r in text.splitlines())
    ]


def test_ddp_reads_each_sample_once_and_resumes_after_a_kill(en_samples, uneven, tmp_path):
    root = tmp_path / "run"
    valid = en_samples / "valid"
    # Both ranks SIGKILL themselves in step 7 (after backward, before the update).
    ddp_fit(uneven, valid, root, callback("KillAt", step=7, when="step"))
    checkpoints = list(root.rglob("*.ckpt"))
    assert checkpoints and all("step=4" in p.name or p.name == "last.ckpt" for p in checkpoints)
    killed = {rank: recorded(root, rank) for rank in (0, 1)}
    (root / "sources").rename(root / "sources-killed")
    assert ddp_fit(uneven, valid, root, "--ckpt_path=last") == 0

    epoch0_samples = []
    for rank in (0, 1):
        before = [lines for step, lines in killed[rank] if step < 4]
        after = recorded(root, rank)
        assert [step for step, _ in after] == list(range(4, STEPS)), "resumed at step 4"
        trained = before + [lines for _, lines in after]
        assert trained == planned_batches(uneven, rank)[:STEPS], f"rank {rank}"
        epoch0_samples += [s for lines in trained[:BATCHES_PER_EPOCH] for s in lines]
    # Each sample at most once in the epoch; what is left out is each reader's partial batch.
    assert len(epoch0_samples) == len(set(epoch0_samples)) == 2 * BATCHES_PER_EPOCH * 8
    assert sum(SHARD_SIZES) - len(epoch0_samples) == 4 * (45 % 8)
