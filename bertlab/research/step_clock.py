"""The one clock of a measured training run, the same for the Hugging Face recipe and bertlab.

Decisions:
- A timestamp when a training step starts (the batch is in hand) and when it ends. Throughput is
  over a steady-state window, from the end of step `warmup_steps` to the end of the last step, so
  data loading is included and start-up, first-step allocation and compilation are not. The data
  time is the gap between a step's end and the next one's start: the loop waiting on the loader.
- Not Lightning's ThroughputMonitor (bertlab.train.throughput): the recipe runs in a stock
  `Trainer`, which has no Lightning callbacks, and only one clock for both systems makes their
  figures comparable; bertlab's runs report the callback's figures beside this clock's, so the
  two are checked against each other.
- Each run also reports `cpu_share`, its process's CPU time over wall time and threads: on a
  busy machine it falls well below 1 and says which figures were disturbed.
- Useful FLOPs are bertlab.speed.flops' (6·N per real token for the encoder's non-embedding
  weights, 12·L·d·l² for the attention of a sequence of l real tokens, 6·d·V per predicted
  token): the same formula scores both systems, so a dense MLM head earns no credit for the 85%
  of its decoder work that predicts nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch

from bertlab.speed.flops import model_training_flops
from bertlab.speed.memory import peak_memory_mb, peak_rss_mb


@dataclass
class StepClock:
    """Start and end times of training steps and the counts of the batch each one trained on."""

    begins: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    cpu_ends: list[float] = field(default_factory=list)
    counts: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    # Steps (0-based) whose end waits for the GPU: the two ends of the measured window, so the
    # window holds the device's work and no step in it waits where it would not otherwise.
    sync_at: frozenset[int] = frozenset()

    def begin(self) -> None:
        self.begins.append(time.perf_counter())

    def end(self) -> None:
        if len(self.ends) in self.sync_at:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def add_batch(self, attention_mask: torch.Tensor, labels: torch.Tensor) -> None:
        """Record (samples, real tokens, sum of squared lengths, predicted tokens, padded)."""
        lengths = attention_mask.sum(1)
        self.counts.append(
            (
                int(attention_mask.size(0)),
                int(lengths.sum()),
                int((lengths * lengths).sum()),
                int((labels != -100).sum()),
                int(attention_mask.numel()),
            )
        )

    @property
    def tokens(self) -> int:
        """Real tokens of the batches seen so far."""
        return sum(count[1] for count in self.counts)

    def summary(self, warmup_steps: int) -> dict:
        steps = min(len(self.begins), len(self.ends))
        if steps <= warmup_steps:
            raise ValueError(f"--steps must exceed --warmup_steps (ran {steps} steps)")
        assert warmup_steps >= 1 and len(self.counts) >= steps
        window = range(warmup_steps, steps)
        elapsed = self.ends[steps - 1] - self.ends[warmup_steps - 1]
        data = sum(self.begins[i] - self.ends[i - 1] for i in window)
        samples, tokens, squares, predicted, padded = np.sum(
            [self.counts[i] for i in window], axis=0
        ).tolist()
        cpu = self.cpu_ends[steps - 1] - self.cpu_ends[warmup_steps - 1] if self.cpu_ends else 0
        return {
            "measured_steps": len(window),
            # CPU seconds of this process per wall second and thread: well below 1 means the
            # run shared its cores with other work, and its wall-clock figures are pessimistic.
            "cpu_share": cpu / elapsed / torch.get_num_threads(),
            "cpu_s_per_step": cpu / len(window),
            "seconds": elapsed,
            "step_s": elapsed / len(window),
            "samples_per_s": samples / elapsed,
            "tokens_per_s": tokens / elapsed,
            "padding_efficiency": tokens / padded,
            "data_fraction": data / elapsed,
            "tokens": tokens,
            "sum_squared_lengths": squares,
            "predicted_tokens": predicted,
        }


def finish(clock: StepClock, spec: dict, model: torch.nn.Module, extra: dict) -> dict:
    result = clock.summary(spec["warmup_steps"])
    flops = model_training_flops(
        model, result["tokens"], result["sum_squared_lengths"], result["predicted_tokens"]
    )
    result["useful_flops_per_s"] = flops / result["seconds"]
    result["attn_implementation"] = model.config._attn_implementation
    result["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available() and spec.get("device") == "cuda":
        result["peak_gpu_mb"] = round(peak_memory_mb(torch.device("cuda")), 1)
    return result | extra | peak_rss_mb()


def top_ops(profiler, steps: int, limit: int = 15) -> list[dict]:
    """The operators that took most of the profiled steps' time (self CPU time), with shares."""
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [
        {
            "op": e.key,
            "share": round(e.self_cpu_time_total / total, 4),
            "ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
            "calls_per_step": round(e.count / steps, 2),
        }
        for e in events[:limit]
    ]


class HeldoutPoints:
    """The held-out evaluator at steps of a recipe run: its figures, training seconds apart."""

    def __init__(self, settings: dict, tokenizer) -> None:
        from bertlab.downstream.heldout import make_blocks, unigram_log_probs

        self.every = settings["every_n_steps"]
        self.blocks = [
            make_blocks(text, tokenizer, settings["max_len"], settings["max_blocks"])
            for text in settings["texts"]
        ]
        self.unigram = unigram_log_probs(settings["unigram_corpus"], tokenizer)
        self.points: list[dict] = []
        self.evaluating = 0.0
        self.started = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def maybe_evaluate(self, model, step: int, last: int, clock: StepClock) -> None:
        from bertlab.downstream.heldout import evaluate_masked_lm

        if step % self.every and step != last:
            return
        began = time.perf_counter()
        point = {
            "step": step,
            "tokens": clock.tokens,
            "train_seconds": round(began - self.started - self.evaluating, 2),
        }
        for blocks in self.blocks:
            point[blocks.name] = evaluate_masked_lm(model, blocks, self.unigram)
        self.points.append(point)
        self.evaluating += time.perf_counter() - began


def window_ends(spec: dict) -> frozenset[int]:
    """The steps that open and close the measured window (see StepClock.sync_at)."""
    return frozenset({spec["warmup_steps"] - 1, spec["steps"] - 1})


class ClockCallback(pl.Callback):
    """Feeds a StepClock from Lightning's batch hooks: the batch in hand, then the step's end."""

    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.clock.begin()
        self.clock.add_batch(batch["attention_mask"], batch["labels"])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clock.end()


class ProfileSteps(pl.Callback):
    """torch.profiler over `steps` steps from batch `start` (a run that is not timed); the top
    operators go into `into["top_ops"]`."""

    def __init__(self, start: int, steps: int, into: dict):
        self.start, self.steps, self.into = start, steps, into

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.start + self.steps - 1:
            self.profiler.__exit__(None, None, None)
            self.into["top_ops"] = top_ops(self.profiler, self.steps)


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """`AdamW (fused)`: the class and the implementation it runs."""
    name = type(optimizer).__name__
    for flag in ("fused", "foreach"):
        if optimizer.defaults.get(flag):
            name += f" ({flag})"
    return name
