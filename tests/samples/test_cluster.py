"""prepare_samples on a Dask cluster (--scheduler, bertlab.workers): the files of a local run.

Run: .venv/bin/python -m pytest tests/samples/test_cluster.py -q

A LocalCluster of two worker processes on 127.0.0.1 stands in for a real cluster (the same
scheduler protocol; its workers see this machine's filesystem, as a real cluster's see a shared
one). The tool runs as a user runs it, in a subprocess given the scheduler's address.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_tool


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
        host="127.0.0.1",
    ) as local:  # fmt: skip
        yield local.scheduler_address


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_a_dask_cluster_writes_the_files_of_a_local_run(en_corpus, en_wordpiece, tmp_path, cluster):
    common = ["--input", en_corpus / "train.txt", "--tokenizer", en_wordpiece,
              "--max_seq_len", 64, "--dupe_factor", 2, "--num_shards", 3]  # fmt: skip
    run_tool("prepare_samples.py", *common, "--output_dir", tmp_path / "local")
    done = run_tool(
        "prepare_samples.py", *common, "--output_dir", tmp_path / "dask", "--scheduler", cluster
    )
    assert "prepare_samples:" in done.stdout
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "dask")
    assert sorted(local) == ["meta.json", "shard-00000.jsonl.gz", "shard-00001.jsonl.gz",
                             "shard-00002.jsonl.gz"]  # fmt: skip
    assert remote == local  # byte for byte: the same tasks, consumed in the same order
    from distributed import Client

    with Client(cluster) as client:  # the tasks really ran there, not in the tool's process
        prefixes = client.run_on_scheduler(lambda dask_scheduler: [*dask_scheduler.task_prefixes])
    assert "run_on_dask" in prefixes, prefixes  # its key names bertlab.workers._run_on_dask


def test_scheduler_mistakes_are_one_line(en_corpus, en_wordpiece, tmp_path, cluster):
    common = ["--input", en_corpus / "valid.txt", "--tokenizer", en_wordpiece]
    for extra, message in (
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler tcp://127.0.0.1:9: no Dask scheduler"),
        (["--scheduler", cluster, "--num_proc", 2], "--num_proc and --scheduler: give one"),
    ):
        out = tmp_path / "out"
        result = run_tool("prepare_samples.py", *common, "--output_dir", out, *extra, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), result.stderr
        assert "Traceback" not in result.stderr and not out.exists()
