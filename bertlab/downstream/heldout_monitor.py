"""HeldoutEvaluation: the independent held-out evaluator (bertlab.downstream.heldout) during
`bertlab fit`.

The CLI's `heldout:` section. With `texts` set, the model is scored every `every_n_steps`
optimizer steps and when training ends on held-out text, all masked positions [MASK], beside a
unigram model of `unigram_corpus`: the figure that says whether a run has left the unigram
plateau, which the training loss (80/10/10 masking, its own samples) does not show.

Decisions:
- Off by default (no texts): evaluation costs a forward pass over `max_blocks` blocks per text.
- Rank 0 evaluates the fp32 weights (with the bf16 working copy, the master: what a checkpoint
  and an export hold); the other processes wait for it at their next collective.
- Each evaluation is logged to the run's loggers as `heldout/<text>/loss`, `.../accuracy`,
  `.../unigram_loss` and `.../below_unigram`, and appended as one JSON line to `output` (default
  `heldout.jsonl` in the run's log folder) with the step, the real tokens trained on, and the
  training seconds so far not counting the evaluations themselves: loss against time and steps,
  what tools/quality_benchmark.py plots.
- The tokenizer is the data's (`data.tokenizer`, linked from the samples' meta.json) unless set.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from bertlab.downstream.heldout import (
    HeldoutBlocks,
    _load_tokenizer,
    describe,
    evaluate_masked_lm,
    make_blocks,
    unigram_log_probs,
)
from bertlab.files.artefacts import not_a_file
from bertlab.files.identity import file_identity
from bertlab.files.output_folder import check_output_file


class HeldoutEvaluation(Callback):
    """Score the model on held-out text (every masked position [MASK]) beside a unigram model.

    Args:
        texts: Held-out text files (corpus format: a sentence or paragraph a line, blank lines
            between documents): e.g. the corpus's test.txt and text of another domain. Empty: off.
        unigram_corpus: The training corpus (train.txt), whose unigram model is the baseline.
        every_n_steps: Optimizer steps between evaluations (0: only when training ends).
        max_blocks: Blocks of each text evaluated (the first ones).
        max_len: Tokens per block (default: 128, or the model's positions if fewer).
        seed: Seed of the masked positions (the same for every evaluation and every model).
        tokenizer: Tokenizer folder (default: the data's).
        output: JSON-lines file of the evaluations (default: heldout.jsonl in the log folder).
    """

    def __init__(
        self,
        texts: list[str] | None = None,
        unigram_corpus: str | None = None,
        every_n_steps: int = 500,
        max_blocks: int = 128,
        max_len: int | None = None,
        seed: int = 0,
        tokenizer: str | None = None,
        output: str | None = None,
    ) -> None:
        self.texts = list(texts or [])
        self.unigram_corpus = unigram_corpus
        if every_n_steps < 0:
            raise ValueError(f"heldout.every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        if max_blocks < 1:
            raise ValueError(f"--heldout.max_blocks {max_blocks} must be at least 1")
        self.max_blocks = max_blocks
        self.max_len = max_len
        if seed < 0:
            raise ValueError(f"--heldout.seed {seed} must be 0 or more")
        self.seed = seed
        self.tokenizer = tokenizer
        self.output = output
        for path in [*self.texts, *([unigram_corpus] if unigram_corpus else [])]:
            if not Path(path).is_file():
                flag = "heldout.texts" if path in self.texts else "heldout.unigram_corpus"
                raise ValueError(f"{flag}: {path}: {not_a_file(path)}")
        if output is not None:
            # Appended to: a resumed run continues its own record, never another file.
            inputs = [("--heldout.texts", t) for t in self.texts] + (
                [("--heldout.unigram_corpus", unigram_corpus)] if unigram_corpus else []
            )  # fmt: skip
            check_output_file(output, "held-out evaluations", inputs, flag="--heldout.output",
                              recognise=_is_record, appends=True)  # fmt: skip
        self.results: list[dict[str, Any]] = []
        self._blocks: list[HeldoutBlocks] = []
        self._unigram: torch.Tensor | None = None
        self._started = 0.0
        self._evaluating = 0.0
        self._last_step = -1
        self._tokens = 0

    def _resolve_tokenizer(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, own: bool = True
    ) -> str | None:
        for candidate in (
            self.tokenizer if own else None,
            getattr(trainer.datamodule, "tokenizer", None) if trainer.datamodule else None,
            pl_module.hparams.get("tokenizer"),
        ):
            if candidate:
                return str(candidate)
        if not own:
            return None
        raise ValueError("heldout.tokenizer: no tokenizer known for this run; set it")

    def _check_tokenizer(
        self, tokenizer, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """A heldout.tokenizer set beside the data's must be the same vocabulary: the model
        reads token ids, so another vocabulary (even of the same size) gives meaningless figures."""
        data = self._resolve_tokenizer(trainer, pl_module, own=False)
        if self.tokenizer is None or data is None:
            return
        if Path(data).resolve() == Path(self.tokenizer).resolve():
            return
        if tokenizer.get_vocab() != _load_tokenizer(data, "data.tokenizer").get_vocab():
            raise ValueError(
                f"--heldout.tokenizer {self.tokenizer} is another vocabulary than the data's "
                f"tokenizer {data}, which the model reads: its figures would mean nothing; "
                "leave heldout.tokenizer out"
            )

    def _warn_of_training_text(self, trainer: pl.Trainer) -> None:
        """A held-out text the training samples were made from: valid, but not held out."""
        sets = getattr(trainer.datamodule, "sets", None) or {}
        if "train" not in sets:
            return
        sources = sets["train"].source_files
        for text in self.texts:
            if file_identity(text) in sources:
                print(
                    f"warning: --heldout.texts {text} is a text the training samples were made "
                    "from: its loss is not held-out",
                    file=sys.stderr,
                )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.texts or not trainer.is_global_zero:
            return
        tokenizer = _load_tokenizer(self._resolve_tokenizer(trainer, pl_module))
        self._check_tokenizer(tokenizer, trainer, pl_module)
        self._warn_of_training_text(trainer)
        positions = pl_module.model.config.max_position_embeddings
        max_len = self.max_len or min(128, positions)
        if max_len > positions:
            raise ValueError(f"heldout.max_len {max_len}: the model takes {positions} positions")
        self._blocks = [
            make_blocks(text, tokenizer, max_len, self.max_blocks, seed=self.seed)
            for text in self.texts
        ]
        if self.unigram_corpus:
            self._unigram = unigram_log_probs(
                self.unigram_corpus, tokenizer, "--heldout.unigram_corpus"
            )
        if self.output is None and trainer.log_dir:
            self.output = str(Path(trainer.log_dir) / "heldout.jsonl")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._evaluating = 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self._blocks:
            return
        # Summed on the device: an int() here would wait for a GPU at every training step.
        self._tokens = batch["attention_mask"].sum() + self._tokens
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._blocks and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Score the model now on every text; log, record and return the figures."""
        began = time.perf_counter()
        step = trainer.global_step
        self._last_step = step
        record: dict[str, Any] = {
            "step": step,
            "tokens": int(self._tokens) * trainer.world_size,
            "train_seconds": round(began - self._started - self._evaluating, 2),
        }
        metrics: dict[str, float] = {}
        for blocks in self._blocks:
            result = evaluate_masked_lm(pl_module.model, blocks, self._unigram)
            record[blocks.name] = result
            for key in ("loss", "accuracy", "unigram_loss", "below_unigram"):
                if key in result:
                    metrics[f"heldout/{blocks.name}/{key}"] = result[key]
            rank_zero_info(f"step {step}: {describe(result)}")
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.output:
            with open(self.output, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.results.append(record)
        self._evaluating += time.perf_counter() - began
        return record


def _is_record(path: Path) -> bool:
    """Whether `path` holds records this callback wrote (JSON lines, each with a step)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return all("step" in json.loads(line) for line in lines if line.strip())
    except (OSError, ValueError, TypeError):
        return False
