"""One measured training run of tools/benchmark.py: the Hugging Face Trainer recipe or bertlab.

Each run is a fresh process (`python -m bertlab.research.benchmark_runs SPEC.json RESULT.json`), so
its peak resident memory is its own and no run inherits another's allocator, threads or compiled
kernels. bertlab.research.benchmark starts these processes and turns their results into JSON lines.

Decisions:
- Both systems are timed by the same clock (`StepClock`): a timestamp when a training step
  starts (the batch is in hand) and when it ends. Throughput is over a steady-state window, from
  the end of step `warmup_steps` to the end of the last step, so data loading is included and
  start-up, first-step allocation and compilation are not. The data time is the gap between a
  step's end and the next one's start: the loop waiting on the data loader.
- Each run also reports `cpu_share`, its process's CPU time over wall time and threads: on a
  busy machine it falls well below 1 and says which figures were disturbed.
- Tokens are real tokens (attention_mask == 1), counted from the very batches that trained.
  Useful FLOPs are bertlab.speed.flops' (6·N per real token for the encoder's non-embedding weights,
  12·L·d·l² for the attention of a sequence of l real tokens, 6·d·V per predicted token).
  The same formula scores both systems, so a dense MLM head earns no credit for the 85% of its
  decoder work that predicts nothing.
- The Hugging Face recipe is what BERT pre-training notebooks write: `BertForMaskedLM`,
  `DataCollatorForLanguageModeling` (15% masking, 80/10/10, padding per batch to the longest
  sample) and a stock `Trainer` (its default optimizer, AdamW fused on torch >= 2.8, gradient
  clipping at 1.0, a shuffled map-style dataset, no loader workers). Its data is the very token
  ids bertlab trains on, held as flat numpy arrays (as a `datasets` Arrow table would be, not as
  millions of Python ints) and handed out as lists with `special_tokens_mask`, which notebooks
  get from `tokenizer(..., return_special_tokens_mask=True)`.
- bertlab runs its real path: `BertPretraining` and `BertDataModule` through `pl.Trainer`, with
  the spec's explicit `speed` settings and every other one `auto`, resolved for this process's
  device exactly as `bertlab fit` resolves it (the result says what was chosen); the
  ThroughputMonitor callback runs beside the clock over the same window, so its MFU and data
  fraction are checked against the benchmark's own.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertlab.speed.flops import measure_peak_flops, model_training_flops
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


def _finish(clock: StepClock, spec: dict, model: torch.nn.Module, extra: dict) -> dict:
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


# ------------------------------------------------------------------------ the Hugging Face recipe
class TokenIdsDataset(torch.utils.data.Dataset):
    """The samples' token ids as a map-style dataset of dicts of lists (what `datasets` yields)."""

    def __init__(self, samples_dir: str, special_ids: list[int], limit: int | None = None):
        from bertlab.samples.shard_reader import read_lines, resolve_samples

        ids, types, offsets = [], [], [0]
        for shard in resolve_samples(samples_dir, "samples").shards:
            for _, raw in read_lines(shard.path, shard.num_samples):
                sample = json.loads(raw)
                ids.extend(sample["input_ids"])
                types.extend(sample["token_type_ids"])
                offsets.append(len(ids))
                if limit is not None and len(offsets) > limit:
                    break
        self.ids = np.asarray(ids, dtype=np.int32)
        self.types = np.asarray(types, dtype=np.int8)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.special = np.zeros(int(self.ids.max()) + 1 if len(ids) else 1, dtype=bool)
        self.special[[i for i in special_ids if i < len(self.special)]] = True

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict:
        lo, hi = self.offsets[index], self.offsets[index + 1]
        ids = self.ids[lo:hi]
        return {
            "input_ids": ids.tolist(),
            "token_type_ids": self.types[lo:hi].tolist(),
            "special_tokens_mask": self.special[ids].astype(np.int64).tolist(),
        }


def run_hf_trainer(spec: dict) -> dict:
    """Train with the notebook recipe; return the clock's summary and the run's facts."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from bertlab.tokenizer.training import load_tokenizer

    tokenizer = load_tokenizer(spec["tokenizer"])
    shape = spec["shape"]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape["hidden_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        intermediate_size=shape["intermediate_size"],
        max_position_embeddings=shape["max_position_embeddings"],
        hidden_dropout_prob=spec["dropout"],
        attention_probs_dropout_prob=spec["dropout"],
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    need = spec["steps"] * shape["batch_size"]
    dataset = TokenIdsDataset(spec["samples"], tokenizer.all_special_ids, limit=4 * need)
    gpu = spec.get("device") == "cuda"
    clock = StepClock(sync_at=_window_ends(spec) if gpu else frozenset())
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    def counting_collator(examples: list[dict]) -> dict:
        batch = collator(examples)
        clock.add_batch(batch["attention_mask"], batch["labels"])
        return batch

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.begin()

        def on_step_end(self, args, state, control, **kwargs):
            clock.end()

    callbacks = [Clock()]
    heldout = HeldoutPoints(spec["heldout"], tokenizer) if spec.get("heldout") else None
    if heldout is not None:

        class Evaluate(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                heldout.maybe_evaluate(model, state.global_step, spec["steps"], clock)

        callbacks.append(Evaluate())

    with tempfile.TemporaryDirectory(prefix="bertlab-bench-hf-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=shape["batch_size"],
            max_steps=spec["steps"],
            learning_rate=spec["lr"],
            warmup_steps=spec["warmup_steps"],
            weight_decay=0.01,
            bf16=spec["precision"] == "bf16",
            use_cpu=not gpu,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=counting_collator,
            callbacks=callbacks,
        )
        heldout and heldout.start()
        trainer.train()
        optimizer = str(args.optim.value if hasattr(args.optim, "value") else args.optim)
    extra = {"optimizer": optimizer} | ({"heldout": heldout.points} if heldout else {})
    return _finish(clock, spec, model, extra)


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


# --------------------------------------------------------------------------------------- bertlab
def run_bertlab(spec: dict) -> dict:
    """Train through BertPretraining + BertDataModule + pl.Trainer with the spec's switches."""
    import pytorch_lightning as pl

    from bertlab.data.datamodule import BertDataModule
    from bertlab.model.module import BertPretraining
    from bertlab.speed.settings import Speed, probe_device, resolve
    from bertlab.train.throughput import ThroughputMonitor

    shape, options = spec["shape"], spec["options"]
    processes = options.get("processes", 1)
    gpu = spec.get("device") == "cuda"
    if processes > 1 and not gpu:
        # Data parallel on one machine: each process gets its share of the cores and the batch.
        torch.set_num_threads(max(1, torch.get_num_threads() // processes))
    clock = StepClock(sync_at=_window_ends(spec) if gpu else frozenset())

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            clock.begin()
            clock.add_batch(batch["attention_mask"], batch["labels"])

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clock.end()

    profiled: dict = {}
    profile_from, profile_steps = spec["warmup_steps"], spec.get("profile_steps", 0)

    class ProfileSteps(pl.Callback):
        """torch.profiler over `profile_steps` steps after the warm-up (a run that is not timed)."""

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == profile_from:
                self.profiler = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU]
                )
                self.profiler.__enter__()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == profile_from + profile_steps - 1:
                self.profiler.__exit__(None, None, None)
                profiled["top_ops"] = top_ops(self.profiler, profile_steps)

    window = spec["steps"] - spec["warmup_steps"]
    monitor = ThroughputMonitor(
        peak_flops=spec.get("peak_flops") or None, window=window, log_every_n_steps=spec["steps"]
    )
    pl.seed_everything(0, verbose=False)
    facts = probe_device("cuda" if gpu else "cpu")
    resolution = resolve(Speed(**spec.get("speed", {})), facts, spec.get("precision"), processes)
    model = BertPretraining(
        tokenizer=spec["tokenizer"],
        hidden_size=shape["hidden_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        intermediate_size=shape["intermediate_size"],
        max_position_embeddings=shape["max_position_embeddings"],
        hidden_dropout_prob=spec["dropout"],
        attention_probs_dropout_prob=spec["dropout"],
        objective=options["objective"],
        lr=spec["lr"],
        warmup_steps=spec["warmup_steps"],
        speed=resolution.speed,
    )
    data = BertDataModule(
        train_files=spec["samples"],
        batch_size=shape["batch_size"] // processes,
        num_workers=options["num_workers"],
        pad_to_multiple_of=resolution.speed.pad_to_multiple_of,
        shuffle_buffer_size=10000,
        seed=0,
    )
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        precision=resolution.precision,
        max_steps=spec["steps"],
        gradient_clip_val=1.0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock(), monitor] + ([ProfileSteps()] if profile_steps else []),
    )
    trainer.fit(model, datamodule=data)
    callback = {
        "callback_" + k.split("/", 1)[1]: v
        for k, v in monitor.last.items()
        if k.split("/", 1)[1] in ("mfu", "tokens_per_sec", "data_fraction")
    }
    callback["callback_peak_flops"] = monitor.peak_flops
    optimizer = type(trainer.optimizers[0]).__name__
    defaults = trainer.optimizers[0].defaults
    for flag in ("fused", "foreach"):
        if defaults.get(flag):
            optimizer += f" ({flag})"
    if trainer.global_rank != 0:
        return {}
    chosen = {"speed": resolution.speed.as_dict(), "precision": resolution.precision}
    chosen["compute_dtype"] = "bf16" if model.compute_dtype == torch.bfloat16 else "fp32"
    if resolution.precision.startswith("bf16"):
        chosen["compute_dtype"] = "bf16"
    extra = {"optimizer": optimizer, **callback, **profiled, **chosen}
    result = _finish(clock, spec, model.model, extra)
    if processes > 1:
        # Every process trained as many batches of the same size; the clock saw rank 0's.
        for key in ("samples_per_s", "tokens_per_s", "useful_flops_per_s"):
            result[key] *= processes
        result["processes"] = processes
    return result


def _window_ends(spec: dict) -> frozenset[int]:
    """The steps that open and close the measured window (see StepClock.sync_at)."""
    return frozenset({spec["warmup_steps"] - 1, spec["steps"] - 1})


def run_peak(spec: dict) -> dict:
    """This process's fp32 and bf16 matrix-product peaks (FLOP/s) and what the resolver sees.

    On a GPU the fp32 peak is with fp32 products as the resolver sets them (TF32 allowed).
    """
    from bertlab.speed.settings import cpu_facts, cuda_facts

    device = spec.get("device", "cpu")
    facts = cuda_facts() if device == "cuda" else cpu_facts()
    seconds = spec.get("seconds", 1.0)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    peaks = {"fp32": measure_peak_flops(torch.float32, seconds, device)}
    if spec.get("bf16", True):
        peaks["bf16"] = measure_peak_flops(torch.bfloat16, seconds, device)
    speedup = facts.bf16_speedup or 0
    if device == "cuda" and "bf16" in peaks:
        speedup = peaks["bf16"] / peaks["fp32"]
    result = {
        "peaks": peaks,
        "describe": facts.describe(),
        "isa": facts.isa,
        "bf16_speedup": round(speedup, 3),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        result |= {"gpu": facts.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1)}
        result["cuda"] = torch.version.cuda
    return result


RUNNERS = {"hf_trainer": run_hf_trainer, "bertlab": run_bertlab, "peak": run_peak}


def main(argv: list[str]) -> None:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    result = RUNNERS[spec["system"]](spec)
    if result:  # other ranks of a data-parallel run report nothing
        Path(result_path).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
