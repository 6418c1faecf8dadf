"""The Hugging Face Trainer recipe as a measured run: what BERT pre-training notebooks write.

Decisions:
- `BertForMaskedLM`, `DataCollatorForLanguageModeling` (15% masking, 80/10/10, padding per batch
  to the longest sample) and a stock `Trainer` (its default optimizer, AdamW fused on torch >=
  2.8, gradient clipping at 1.0, a shuffled map-style dataset, no loader workers).
- Its data is the very token ids bertlab trains on, held as flat numpy arrays (as a `datasets`
  Arrow table would be, not as millions of Python ints) and handed out as lists with
  `special_tokens_mask`, which notebooks get from `tokenizer(..., return_special_tokens_mask=True)`.
- Timed by bertlab.research.step_clock, as bertlab's runs are.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from bertlab.model.network import SHAPE_KEYS
from bertlab.research.step_clock import HeldoutPoints, StepClock, finish, window_ends


class TokenIdsDataset(torch.utils.data.Dataset):
    """The samples' token ids as a map-style dataset of dicts of lists (what `datasets` yields)."""

    def __init__(self, samples_dir: str, special_ids: list[int], limit: int | None = None):
        from bertlab.samples.shard_reader import parse_sample, read_lines, resolve_samples

        ids, types, offsets = [], [], [0]
        samples = resolve_samples(samples_dir, "samples")
        for shard in samples.shards:
            for number, raw in read_lines(shard.path, shard.num_samples):
                # Checked as bertlab's loader checks them: both sides refuse the same bad line.
                sample = parse_sample(raw, shard.path, number, samples.max_seq_len,
                                      samples.vocab_size, samples.nsp)  # fmt: skip
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


def _model(spec: dict, tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    shape = spec["shape"]
    config = BertConfig(
        vocab_size=len(tokenizer),
        **{key: shape[key] for key in SHAPE_KEYS},
        hidden_dropout_prob=spec["dropout"],
        attention_probs_dropout_prob=spec["dropout"],
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return BertForMaskedLM(config)


def _callbacks(clock: StepClock, heldout: HeldoutPoints | None, steps: int) -> list:
    """The clock, and the held-out evaluations, as Trainer callbacks."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.begin()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            clock.end()
            if heldout is not None:
                heldout.maybe_evaluate(model, state.global_step, steps, clock)

    return [Clock()]


def run_hf_trainer(spec: dict) -> dict:
    """Train with the notebook recipe; return the clock's summary and the run's facts."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from bertlab.tokenizer.training import load_tokenizer

    tokenizer = load_tokenizer(spec["tokenizer"])
    shape, gpu = spec["shape"], spec.get("device") == "cuda"
    model = _model(spec, tokenizer)
    need = spec["steps"] * shape["batch_size"]
    dataset = TokenIdsDataset(spec["samples"], tokenizer.all_special_ids, limit=4 * need)
    clock = StepClock(sync_at=window_ends(spec) if gpu else frozenset())
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    def counting_collator(examples: list[dict]) -> dict:
        batch = collator(examples)
        clock.add_batch(batch["attention_mask"], batch["labels"])
        return batch

    heldout = HeldoutPoints(spec["heldout"], tokenizer) if spec.get("heldout") else None
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
            callbacks=_callbacks(clock, heldout, spec["steps"]),
        )
        heldout and heldout.start()
        trainer.train()
        optimizer = str(args.optim.value if hasattr(args.optim, "value") else args.optim)
    extra = {"optimizer": optimizer} | ({"heldout": heldout.points} if heldout else {})
    return finish(clock, spec, model, extra)
