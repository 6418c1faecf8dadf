"""The budget planner against the BERT paper's own numbers.

Run: .venv/bin/python -m pytest tests/research/test_budget.py -q
"""

from __future__ import annotations

import json

import pytest
from conftest import run_tool

from bertlab.research.budget import plan_budget

BERT_TOKENS = 1_000_000 * 256 * 512  # the paper's 1M steps of 256 sequences of 512 tokens
# What prepare_samples' meta.json holds that plan_budget reads (the reader checks the rest).
SAMPLES_META = {
    "format": "bertlab.samples", "format_version": 1,
    "tokenizer": {"path": "tok", "fingerprint": "0123456789abcdef"},
    "num_samples": 1000, "max_seq_len": 128, "shards": [{"file": "shard-00000.jsonl.gz",
    "num_samples": 1000}],
}  # fmt: skip


@pytest.mark.parametrize(
    "layout",
    [
        {"batch_size": 256},
        {"batch_size": 32, "accumulate_grad_batches": 8},
        {"batch_size": 64, "num_devices": 4},
        {"batch_size": 8, "accumulate_grad_batches": 4, "num_devices": 4, "num_nodes": 2},
    ],
)
def test_bert_budget_is_one_million_steps_of_256_sequences(layout):
    plan = plan_budget(seq_len=512, target="bert", **layout)
    assert plan["target_tokens"] == 131_072_000_000 == BERT_TOKENS
    assert plan["sequences_per_step"] == 256
    assert plan["steps"] == 1_000_000
    assert plan["micro_batches_per_device"] == 1_000_000 * layout.get("accumulate_grad_batches", 1)


def test_paper_forty_epochs_over_its_corpus():
    # "1,000,000 steps, which is approximately 40 epochs over the 3.3 billion word corpus".
    plan = plan_budget(batch_size=256, num_samples=3_300_000_000 // 512)
    assert 39 < plan["epochs"] < 41


def test_shorter_sequences_and_phased_schedule():
    # The same token budget at length 128 needs four times the steps.
    assert plan_budget(batch_size=256, seq_len=128)["steps"] == 4_000_000
    phased = plan_budget(batch_size=256, seq_len=128, target="bert-phased")
    assert phased["target_tokens"] == 900_000 * 256 * 128 + 100_000 * 256 * 512
    # A budget that does not divide evenly rounds up: it is a minimum.
    assert plan_budget(batch_size=3, seq_len=10, target_tokens=100)["steps"] == 4


def test_wall_clock_from_throughput():
    plan = plan_budget(batch_size=256, tokens_per_second=131_072)
    assert plan["seconds"] == pytest.approx(1_000_000)
    same = plan_budget(batch_size=256, samples_per_second=256)
    assert same["seconds"] == pytest.approx(plan["seconds"])


def test_samples_meta_gives_count_and_length(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps(SAMPLES_META))
    plan = plan_budget(batch_size=100, target_tokens=128 * 2500, samples=str(tmp_path))
    assert plan["seq_len"] == 128 and plan["steps"] == 25 and plan["epochs"] == pytest.approx(2.5)


def test_tool_prints_the_plan():
    text = run_tool(
        "plan_budget.py", "--batch_size", "32", "--accumulate_grad_batches", "8",
        "--num_samples", "6445312", "--tokens_per_second", "250000",
    ).stdout  # fmt: skip
    assert "1,000,000 optimizer steps" in text and "39.72" in text and "hours" in text
    plan = json.loads(
        run_tool("plan_budget.py", "--batch_size", "64", "--num_devices", "4", "--json").stdout
    )
    assert plan["steps"] == 1_000_000 and plan["epochs"] is None


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--batch_size", "0"], "--batch_size"),
        (["--batch_size", "-4"], "--batch_size"),
        (["--batch_size", "8", "--accumulate_grad_batches", "0"], "--accumulate_grad_batches"),
        (["--batch_size", "8", "--seq_len", "-1"], "--seq_len"),
        (["--batch_size", "8", "--num_devices", "0"], "--num_devices"),
        (["--batch_size", "8", "--num_samples", "0"], "--num_samples"),
        (["--batch_size", "8", "--tokens_per_second", "0"], "--tokens_per_second"),
        (["--batch_size", "8", "--target", "gpt3"], "--target"),
        (["--batch_size", "8", "--samples", "/nonexistent/samples"], "--samples"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(args, flag):
    result = run_tool("plan_budget.py", *args, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.stderr


def test_a_flag_that_contradicts_the_samples_is_refused(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps(SAMPLES_META))
    for flag, value, key in (("--seq_len", "512", "max_seq_len 128"),
                             ("--num_samples", "5", "num_samples 1000")):  # fmt: skip
        result = run_tool("plan_budget.py", "--batch_size", "8", "--samples", tmp_path, flag,
                          value, check=False)  # fmt: skip
        assert result.returncode == 2
        assert result.stderr == (
            f"error: {flag} {value} contradicts --samples {tmp_path} ({key}); give one of them\n"
        )
    same = run_tool("plan_budget.py", "--batch_size", "8", "--samples", tmp_path, "--seq_len",
                    "128", "--json")  # fmt: skip
    assert json.loads(same.stdout)["seq_len"] == 128
