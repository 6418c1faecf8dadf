"""Budget planning: how many optimizer steps, epochs and hours a token budget costs.

Decisions:
- A budget is counted in sequence slots, `sequences × seq_len`, the way the BERT paper counts
  it ("256 sequences * 512 tokens = 128,000 tokens/batch"). Padding and short sequences are
  inside the count: it measures what the model is fed, not how much of it is real text.
- "The BERT paper budget" (`--target bert`) is the one the paper quotes as its headline: 1,000,000
  steps × 256 sequences × 512 tokens = 131,072,000,000 tokens. The paper actually trained 90% of
  the steps at length 128 and the last 10% at 512 (Devlin et al. 2019, appendix A.2);
  `--target bert-phased` is that schedule's smaller count, 900,000 × 256 × 128 + 100,000 × 256 ×
  512 = 42,598,400,000 tokens. `--target_tokens N` sets any other budget.
- A step is an optimizer step, the unit of Lightning's `trainer.max_steps`: it sees
  `batch_size × accumulate_grad_batches × num_devices × num_nodes` sequences, `batch_size` being
  the per-device micro-batch (`data.batch_size`). Steps round up: the budget is a minimum.
- Epochs are sequences seen over the samples available (`--num_samples`, or read from a samples
  folder's meta.json with `--samples`). The paper's sanity check, "approximately 40 epochs over
  the 3.3 billion word corpus", is 131 billion slots over 3.3 billion words, about 39.7.
- Throughput is for the whole job (all devices and nodes), in the same sequence slots as the
  budget; `--samples_per_second` is converted with `seq_len`.
"""

from __future__ import annotations

import json as json_module
import math
import sys
from pathlib import Path
from typing import Any

# name -> (tokens, description): the budgets `--target` knows.
TARGETS: dict[str, tuple[int, str]] = {
    "bert": (
        1_000_000 * 256 * 512,
        "BERT paper headline budget: 1,000,000 steps x 256 sequences x 512 tokens",
    ),
    "bert-phased": (
        900_000 * 256 * 128 + 100_000 * 256 * 512,
        "BERT paper schedule: 900,000 steps x 256 x 128 then 100,000 steps x 256 x 512",
    ),
}

DEFAULT_SEQ_LEN = 512


def _positive(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"--{name} must be a positive number, got {value!r}")


def _read_samples_meta(samples: str) -> dict[str, Any]:
    """The samples folder's counts, read and checked as the trainer's reader reads them."""
    from bertlab.samples.shard_reader import read_meta

    path = Path(samples)
    folder = path.parent if path.name == "meta.json" else path
    if not (folder / "meta.json").is_file():
        raise ValueError(f"--samples {samples}: no meta.json found (expected a samples folder)")
    try:
        meta = read_meta(folder)
    except ValueError as error:
        raise ValueError(f"--samples {samples}: {error}") from None
    if "num_samples" not in meta:
        raise ValueError(f"--samples {samples}: {folder / 'meta.json'} has no num_samples")
    return {"num_samples": meta["num_samples"], "max_seq_len": meta["max_seq_len"]}


def _duration(seconds: float) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest / 60
    if days:
        return f"{int(days)}d {int(hours)}h {minutes:.0f}m"
    if hours:
        return f"{int(hours)}h {minutes:.0f}m"
    return f"{minutes:.1f}m" if minutes >= 1 else f"{seconds:.1f}s"


def _check_numbers(**values: int | float | None) -> None:
    """Counts and rates positive (when given), layout counts integers, one throughput at most."""
    for name, value in values.items():
        _positive(name, value)
    for name in ("batch_size", "accumulate_grad_batches", "num_devices", "num_nodes"):
        if not isinstance(values[name], int):
            raise ValueError(f"--{name} must be an integer, got {values[name]!r}")
    if values["tokens_per_second"] is not None and values["samples_per_second"] is not None:
        raise ValueError("--tokens_per_second and --samples_per_second: give one, not both")


def _from_samples(samples: str, num_samples: int | None, seq_len: int | None) -> tuple[int, int]:
    """num_samples and seq_len of a samples folder; a given value must agree with it."""
    meta = _read_samples_meta(samples)
    for flag, given, recorded in (("num_samples", num_samples, meta["num_samples"]),
                                  ("seq_len", seq_len, meta["max_seq_len"])):  # fmt: skip
        if given is not None and given != recorded:  # which one the plan is of is unclear
            key = "max_seq_len" if flag == "seq_len" else flag
            raise ValueError(
                f"--{flag} {given} contradicts --samples {samples} ({key} {recorded}); "
                f"give one of them"
            )
    return num_samples or meta["num_samples"], seq_len or meta["max_seq_len"]


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as the few lines a person reads."""
    lines = [
        f"target:   {plan['target']} = {plan['target_tokens']:,} tokens",
        f"per step: {plan['sequences_per_step']:,} sequences x {plan['seq_len']} tokens"
        f" = {plan['tokens_per_step']:,} tokens",
        f"steps:    {plan['steps']:,} optimizer steps (--trainer.max_steps {plan['steps']}),"
        f" {plan['micro_batches_per_device']:,} micro-batches per device",
    ]
    if plan["epochs"] is not None:
        lines.append(
            f"epochs:   {plan['epochs']:,.2f} over {plan['num_samples']:,} samples"
            f" ({plan['sequences']:,} sequences seen)"
        )
    else:
        lines.append("epochs:   unknown (give --num_samples or --samples)")
    if plan["seconds"] is not None:
        lines.append(
            f"time:     {_duration(plan['seconds'])} at {plan['tokens_per_second']:,.0f} tokens/s"
            f" ({plan['seconds'] / 3600:,.1f} hours)"
        )
    else:
        lines.append(
            "time:     unknown (give a measured --tokens_per_second or --samples_per_second)"
        )
    return "\n".join(lines)


def plan_budget(
    batch_size: int,
    accumulate_grad_batches: int = 1,
    seq_len: int | None = None,
    num_samples: int | None = None,
    num_devices: int = 1,
    num_nodes: int = 1,
    target_tokens: int | None = None,
    target: str | None = None,
    tokens_per_second: float | None = None,
    samples_per_second: float | None = None,
    samples: str | None = None,
    json: bool = False,
) -> dict[str, Any]:
    """Print the optimizer steps, epochs and wall-clock time needed to train on a token budget.

    The budget counts sequences x seq_len, padding included, as the BERT paper does. `--target
    bert` is its 1,000,000 steps x 256 sequences x 512 tokens (131,072,000,000 tokens);
    `--target bert-phased` the schedule it really ran (90% of steps at 128 tokens, 10% at 512).

    Args:
        batch_size: sequences per device per forward pass (data.batch_size).
        accumulate_grad_batches: micro-batches per optimizer step (trainer.accumulate_grad_batches).
        seq_len: tokens per sequence; default 512, or max_seq_len from --samples.
        num_samples: samples in the training set, for the number of epochs.
        num_devices: devices per node (trainer.devices).
        num_nodes: nodes (trainer.num_nodes).
        target_tokens: a budget in tokens (instead of --target).
        target: a named budget: bert or bert-phased (default: bert).
        tokens_per_second: measured throughput of the whole job, for the wall-clock time.
        samples_per_second: the same throughput in sequences per second.
        samples: a samples folder (or its meta.json): reads num_samples and max_seq_len.
        json: print the plan as one JSON object instead of text.
    """
    _check_numbers(
        batch_size=batch_size, accumulate_grad_batches=accumulate_grad_batches, seq_len=seq_len,
        num_samples=num_samples, num_devices=num_devices, num_nodes=num_nodes,
        target_tokens=target_tokens, tokens_per_second=tokens_per_second,
        samples_per_second=samples_per_second,
    )  # fmt: skip
    if samples is not None:
        num_samples, seq_len = _from_samples(samples, num_samples, seq_len)
    seq_len = seq_len or DEFAULT_SEQ_LEN
    if seq_len < 8:  # prepare_samples' own floor: [CLS] and two [SEP] leave nothing below it
        raise ValueError(f"--seq_len {seq_len} is too small (needs >= 8, as prepare_samples)")
    if target_tokens is not None and target is not None:
        raise ValueError(
            f"--target {target} and --target_tokens {target_tokens} are two budgets; give one"
        )
    target = target or "bert"
    if target_tokens is not None:
        budget, description = int(target_tokens), f"{int(target_tokens):,} tokens (--target_tokens)"
    elif target in TARGETS:
        budget, description = TARGETS[target]
    else:
        raise ValueError(f"--target {target!r} is unknown; known targets: {', '.join(TARGETS)}")

    sequences_per_step = batch_size * accumulate_grad_batches * num_devices * num_nodes
    tokens_per_step = sequences_per_step * seq_len
    steps = math.ceil(budget / tokens_per_step)
    if num_samples and sequences_per_step > num_samples:  # one step more than the data
        print(
            f"warning: a step of {sequences_per_step:,} sequences is more than the "
            f"{num_samples:,} samples: every step repeats the data",
            file=sys.stderr,
        )
    if budget < tokens_per_step:  # the plan is one step, whatever the budget: said
        print(
            f"warning: the budget of {budget:,} tokens is less than one step's "
            f"{tokens_per_step:,}: the plan is one step; is --target_tokens in tokens?",
            file=sys.stderr,
        )
    sequences = steps * sequences_per_step
    plan: dict[str, Any] = {
        "target": description,
        "target_tokens": budget,
        "seq_len": seq_len,
        "sequences_per_step": sequences_per_step,
        "tokens_per_step": tokens_per_step,
        "steps": steps,
        "micro_batches_per_device": steps * accumulate_grad_batches,
        "sequences": sequences,
        "tokens": sequences * seq_len,
        "num_samples": num_samples,
        "epochs": sequences / num_samples if num_samples else None,
    }
    if samples_per_second is not None:
        tokens_per_second = samples_per_second * seq_len
    plan["tokens_per_second"] = tokens_per_second
    plan["seconds"] = plan["tokens"] / tokens_per_second if tokens_per_second else None

    print(json_module.dumps(plan) if json else format_plan(plan))
    return plan
