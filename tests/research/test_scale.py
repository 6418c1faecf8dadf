"""tools/scale_benchmark.py: the data path against corpus size, end to end on tiny sizes.

Run: .venv/bin/python -m pytest tests/research/test_scale.py -x -q

Nothing here is timed (BENCHMARKS.md holds the figures): this checks that the command a user runs
measures every stage on every size, in processes of their own, and projects from them.
"""

from __future__ import annotations

import json
import random

import pytest
from conftest import run_tool

from bertlab.research.scale import build_corpus, source_documents
from bertlab.research.scale_report import _amdahl, project


def test_scale_benchmark_measures_every_stage_and_projects(en_corpus, tmp_path):
    output = tmp_path / "records.jsonl"
    work = tmp_path / "work"
    result = run_tool(
        "scale_benchmark.py", "--input", en_corpus / "valid.txt", "--sizes_mb", "0.3", "0.6",
        "--work_dir", work, "--vocab_size", "800", "--num_shards", "2", "--output", output,
    )  # fmt: skip
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    measured = [r for r in records if not r.get("projection")]
    stages = {(r["size_mb"], r["stage"], r.get("num_proc", r.get("threads"))) for r in measured}
    for size in (0.3, 0.6):
        for stage, processes in (("prepare_corpus", 1), ("prepare_corpus", 2),
                                 ("train_tokenizer", None), ("tokenizer", 1),
                                 ("prepare_samples", 1), ("prepare_samples", 2)):  # fmt: skip
            if processes is None:
                assert any(s[:2] == (size, stage) for s in stages)
            else:
                assert (size, stage, processes) in stages, stages
    for r in measured:
        assert r["seconds"] > 0 and r["peak_mb"] > 20  # a Python process with its imports
    samples = [r for r in measured if r["stage"] == "prepare_samples"]
    tokenizer = {r["size_mb"]: r["corpus_tokens"] for r in measured if r["stage"] == "tokenizer"}
    for r in samples:  # the same corpus tokens, counted by two different programs
        assert r["corpus_tokens"] == tokenizer[r["size_mb"]]
        assert r["bytes_per_token"] > 1 and r["sample_tokens"] > r["corpus_tokens"]
    small, large = (tokenizer[0.3], tokenizer[0.6])
    assert 1.6 < large / small < 2.4  # sizes in MB of real text: about twice the tokens
    projected = {(p["stage"], p["num_proc"]) for p in records if p.get("projection")}
    assert ("prepare_samples", 64) in projected and ("train_tokenizer", 1) in projected
    assert (output.with_suffix(".png")).stat().st_size > 10_000
    assert "x2 = " in result.stdout and "the raw tokenizer on one thread" in result.stdout
    assert not list(work.glob("raw-*.txt"))  # the built corpora go once measured
    again = run_tool("scale_benchmark.py", "--input", en_corpus / "valid.txt", "--work_dir", work,
                     check=False)  # fmt: skip
    assert again.returncode == 2 and "pass --overwrite" in again.stderr.strip().splitlines()[-1]


def test_scale_benchmark_refuses_bad_sizes_and_folders_it_did_not_make(en_corpus, tmp_path):
    def error(*args) -> str:
        result = run_tool("scale_benchmark.py", "--input", en_corpus / "valid.txt", *args,
                          check=False)  # fmt: skip
        assert result.returncode == 2, result.stderr
        return result.stderr.strip().splitlines()[-1]

    assert error("--sizes_mb", "0", "--work_dir", tmp_path / "w") == (
        "error: --sizes_mb [0.0]: sizes must be positive"
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n", encoding="utf-8")
    assert "holds no output of scale_benchmark (notes.txt)" in error(
        "--work_dir", mine, "--overwrite"
    )
    inside = error("--work_dir", tmp_path / "w", "--output", tmp_path / "w" / "r.jsonl")
    assert "--output" in inside and "--work_dir" in inside
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me\n"
    assert not (tmp_path / "w").exists()


def test_corpora_are_whole_documents_reshuffled_each_round(en_corpus, tmp_path):
    documents = source_documents(en_corpus)
    one_round = sum(len((d + "\n\n").encode("utf-8")) for d in documents)
    path = tmp_path / "big.txt"
    written = build_corpus(documents, 2.5 * one_round / 1e6, path)
    assert written == path.stat().st_size >= 2.5 * one_round
    built = path.read_text(encoding="utf-8").split("\n\n")[:-1]
    first, second = built[: len(documents)], built[len(documents) : 2 * len(documents)]
    assert sorted(first) == sorted(second) == sorted(documents)
    order = list(documents)
    random.Random(1).shuffle(order)
    assert second == order and first != second


def test_projection_is_linear_in_size_and_amdahl_in_cores():
    assert _amdahl(10.0, 6.0, 2) == pytest.approx(6.0)
    assert _amdahl(10.0, 6.0, 64) == pytest.approx(2.0 + 8.0 / 64)
    records = [
        {"stage": "prepare_samples", "num_proc": n, "size_mb": size, "seconds": t, "peak_mb": m}
        for n, size, t, m in (
            (1, 100, 30, 350),
            (1, 400, 120, 350),
            (2, 100, 20, 350),
            (2, 400, 80, 360),
        )  # fmt: skip
    ]
    (one, two, many) = project(records, 1000, [64])
    assert one["seconds"] == pytest.approx(300) and one["peak_mb"] == pytest.approx(350)
    assert two["seconds"] == pytest.approx(200) and two["total_mb"] == pytest.approx(3 * 380)
    assert many["num_proc"] == 64 and many["seconds"] == pytest.approx(100 + 200 / 64)
