"""Downstream classification: fine-tune a BERT on a sentence or sentence-pair task, report accuracy.

Decisions:
- Inputs are what users have: headerless TSV (`label<TAB>text` or `label<TAB>text_a<TAB>text_b`),
  GLUE's own TSV with a header line (columns named by `--label_column` / `--text_columns`, with
  GLUE's usual names found by themselves), or JSON Lines (`label`, `text`, optional `text_pair`).
  A file ending in .jsonl/.json/.ndjson (optionally .gz) is JSON Lines; anything else is TSV. A
  TSV has a header when its first line holds the label column's name; digits as column names
  (`--label_column 1 --text_columns 3`, CoLA's layout) mean positions in a headerless file.
  Fields are split on tabs only, never unquoted: GLUE's files are read the same way.
- Every reading mistake is a ValueError naming the file and line (and the flag where one helps);
  all files are read and checked before any model is loaded.
- Labels are strings (JSON numbers and booleans become their text) mapped to ids in sorted order,
  numerically when every label is an integer, so `0/1` map to 0/1 and the mapping never depends
  on which label comes first. For two classes F1 is that of the positive class, the SECOND label
  in sorted order (`1` for 0/1 labels). A validation or test label the training file lacks is an
  error: the classifier could never predict it.
- The model is an exported folder or a bertlab checkpoint (.ckpt), read and rebuilt by
  bertlab.export (same checks, same tokenizer resolution: `--tokenizer`, else what the run
  recorded). Only the encoder is reused; the classification head is drawn afresh from `seed`
  with its own generator, so both routes give bit-identical starting weights, and the same seed
  gives the same result.
- Training is a LightningModule on the ordinary Trainer (one device: these tasks are small):
  AdamW without decay on biases and norms, linear warmup over the first `warmup_ratio` of the
  steps then linear decay to 0, gradient clipping at 1, dynamic padding to a multiple of 8.
- EarlyStopping watches validation accuracy (`patience` epochs without a strict improvement);
  the best epoch's weights are kept in memory (no checkpoint files), and the reported validation
  and test scores are those of the best epoch's weights. `best_epoch` counts from 1.
- The result is one JSON object on stdout (Lightning's chatter goes to stderr) and optionally in
  `output_json`, written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from bertlab.atomic import atomic_write
from bertlab.optim import adamw_implementation, build_adamw, lr_multiplier, parameter_groups

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
# GLUE's text columns, tried in this order when --text_columns is not given.
GLUE_TEXT_COLUMNS = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("#1 String", "#2 String"),
    ("text", "text_pair"),
    ("sentence",),
    ("text",),
)
INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Example:
    label: str
    text: str
    text_pair: str | None
    where: str  # "file line N", for error messages


# ------------------------------------------------------------------------------------ reading
def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for the non-blank lines of path, line endings removed."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with _open_text(path) as f:
            lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, start=1)]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    lines = [(n, line) for n, line in lines if line.strip()]
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    return lines


def _split_columns(text_columns: list[str] | str | None) -> list[str] | None:
    if text_columns is None:
        return None
    items = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    names = [name.strip() for item in items for name in str(item).split(",") if name.strip()]
    if not 1 <= len(names) <= 2:
        raise ValueError(f"--text_columns takes one or two columns, got {names}")
    return names


def _read_tsv(path: Path, label_column: str, text_columns: list[str] | None) -> list[Example]:
    lines = _lines(path)
    first = lines[0][1].split("\t")
    by_position = label_column.isdigit()
    has_header = not by_position and label_column in first
    if has_header:
        header, rows = first, lines[1:]
        if text_columns is None:
            found = [c for c in GLUE_TEXT_COLUMNS if all(name in header for name in c)]
            if not found:
                raise ValueError(
                    f"{path} line 1: no known text column in the header {header}; "
                    "name them with --text_columns"
                )
            text_columns = list(found[0])
        for name in text_columns:
            if name not in header:
                raise ValueError(
                    f"{path} line 1: unknown column {name!r} (--text_columns); columns: {header}"
                )
        indices = [header.index(label_column)] + [header.index(name) for name in text_columns]
        expected = len(header)
    elif by_position:
        names = text_columns or []
        if not names or not all(name.isdigit() for name in names):
            raise ValueError(
                f"{path}: --label_column {label_column} is a column position, so --text_columns "
                f"must be positions too (e.g. 3 or 1,2), got {names}"
            )
        indices = [int(label_column)] + [int(name) for name in names]
        expected = None
        rows = lines
    elif text_columns is not None or label_column != "label":
        raise ValueError(
            f"{path} line 1: no header line with a {label_column!r} column (--label_column); "
            f"the first line is {first}; for a file without a header give column positions"
        )
    else:
        if len(first) not in (2, 3):
            raise ValueError(
                f"{path} line {lines[0][0]}: expected label<TAB>text or "
                f"label<TAB>text_a<TAB>text_b, found {len(first)} field(s)"
                + (" (no tab)" if len(first) == 1 else "")
            )
        indices, expected, rows = list(range(len(first))), len(first), lines
    examples = []
    for number, line in rows:
        fields = line.split("\t")
        where = f"{path} line {number}"
        if expected is not None and len(fields) != expected:
            raise ValueError(
                f"{where}: {len(fields)} tab-separated field(s), expected {expected}"
                + (" (no tab)" if len(fields) == 1 else "")
            )
        if max(indices) >= len(fields):
            raise ValueError(f"{where}: {len(fields)} field(s), no column {max(indices)}")
        values = [fields[i] for i in indices]
        examples.append(_example(values[0], values[1], (values[2:] or [None])[0], where))
    return examples


def _read_jsonl(path: Path, label_column: str, text_columns: list[str] | None) -> list[Example]:
    examples = []
    for number, line in _lines(path):
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if text_columns is None:
            text_columns = ["text", "text_pair"] if "text_pair" in record else ["text"]
        values = []
        for key in [label_column, *text_columns]:
            if key not in record:
                raise ValueError(f"{where}: no {key!r} field (fields: {sorted(record)})")
            values.append(record[key])
        for key, value in zip(text_columns, values[1:], strict=True):
            if not isinstance(value, str):
                raise ValueError(f"{where}: {key!r} is {type(value).__name__}, not text")
        label = values[0]
        if isinstance(label, bool):
            label = str(label).lower()
        if not isinstance(label, (str, int, bool)):
            raise ValueError(f"{where}: label {label!r} is not a string or an integer")
        examples.append(_example(str(label), values[1], (values[2:] or [None])[0], where))
    return examples


def _example(label: str, text: str, text_pair: str | None, where: str) -> Example:
    if not label.strip():
        raise ValueError(f"{where}: empty label")
    return Example(label=label.strip(), text=text, text_pair=text_pair, where=where)


def read_examples(
    path: str, label_column: str = "label", text_columns: list[str] | str | None = None
) -> list[Example]:
    """Labelled examples of a TSV or JSON Lines file (see the module docstring for the layouts)."""
    file = Path(path)
    columns = _split_columns(text_columns)
    name = file.name[:-3] if file.name.endswith(".gz") else file.name
    if name.endswith(JSONL_SUFFIXES):
        examples = _read_jsonl(file, str(label_column), columns)
    else:
        examples = _read_tsv(file, str(label_column), columns)
    if not examples:
        raise ValueError(f"{path}: no examples (only a header line)")
    paired = {e.text_pair is not None for e in examples}
    assert len(paired) == 1, f"{path}: a mix of single sentences and pairs"
    return examples


def label_mapping(train: list[Example], train_file: str) -> dict[str, int]:
    """label -> id, in sorted order (numeric when all labels are integers)."""
    labels = {e.label for e in train}
    if len(labels) < 2:
        raise ValueError(f"{train_file}: needs at least two different labels, found {labels}")
    numeric = all(INTEGER.fullmatch(label) for label in labels)
    ordered = sorted(labels, key=int) if numeric else sorted(labels)
    return {label: i for i, label in enumerate(ordered)}


def check_compatible(examples: list[Example], train: list[Example], mapping: dict[str, int]):
    """A ValueError where an evaluation file cannot be scored by a model trained on train."""
    for example in examples:
        if example.label not in mapping:
            raise ValueError(
                f"{example.where}: label {example.label!r} does not occur in the training file "
                f"(labels: {', '.join(mapping)})"
            )
    if (examples[0].text_pair is None) != (train[0].text_pair is None):
        kinds = ("single sentences", "sentence pairs")
        raise ValueError(
            f"{examples[0].where}: {kinds[examples[0].text_pair is not None]}, but the training "
            f"file has {kinds[train[0].text_pair is not None]}"
        )


# ------------------------------------------------------------------------------------- tensors
def encode(tokenizer, examples: list[Example], mapping: dict[str, int], max_seq_len: int):
    """Token ids, token type ids and label id of each example (no padding)."""
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    encoded = tokenizer(
        [e.text for e in examples],
        pairs,
        truncation=True,
        max_length=max_seq_len,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    return [
        {"input_ids": ids, "token_type_ids": types, "label": mapping[e.label]}
        for ids, types, e in zip(
            encoded["input_ids"], encoded["token_type_ids"], examples, strict=True
        )
    ]


def collate(features: list[dict], pad_id: int, max_seq_len: int) -> dict[str, Tensor]:
    """A batch padded to its longest sequence rounded up to a multiple of 8 (<= max_seq_len)."""
    longest = max(len(f["input_ids"]) for f in features)
    length = min(-(-longest // 8) * 8, max(max_seq_len, longest))
    input_ids = torch.full((len(features), length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    attention_mask = torch.zeros_like(input_ids)
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        input_ids[row, :n] = torch.tensor(feature["input_ids"])
        token_type_ids[row, :n] = torch.tensor(feature["token_type_ids"])
        attention_mask[row, :n] = 1
    labels = torch.tensor([f["label"] for f in features], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "labels": labels,
    }


def classification_metrics(predictions: Tensor, labels: Tensor, num_labels: int) -> dict:
    """Accuracy, and for two classes the F1 of class 1 (the second label in sorted order)."""
    metrics = {"accuracy": float((predictions == labels).float().mean())}
    if num_labels == 2:
        tp = int(((predictions == 1) & (labels == 1)).sum())
        wrong = int((predictions != labels).sum())
        metrics["f1"] = 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0
    return metrics


# --------------------------------------------------------------------------------------- model
def classifier_from_encoder(config, encoder_state: dict[str, Tensor], num_labels: int, seed: int):
    """A sequence classifier with the given encoder weights and a head drawn from `seed`."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = num_labels
    config.id2label = {i: str(i) for i in range(num_labels)}
    config.label2id = {str(i): i for i in range(num_labels)}
    model = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = model.base_model.load_state_dict(encoder_state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    _draw_head(model, seed)
    return model.float()


def _draw_head(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    base = {id(p) for p in model.base_model.parameters()}
    with torch.no_grad():
        for parameter in model.parameters():
            if id(parameter) in base:
                continue
            if parameter.ndim >= 2:
                values = torch.randn(parameter.shape, generator=generator) * std
                parameter.copy_(values.to(parameter.dtype))
            else:
                parameter.zero_()


def load_model(model: str, num_labels: int, tokenizer: str | None, seed: int):
    """(classifier, tokenizer) from an exported folder or a bertlab .ckpt checkpoint."""
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {model}: not a model folder (no config.json)")
        encoder = AutoModel.from_pretrained(path)
        config, state = encoder.config, encoder.state_dict()
        tokenizer = tokenizer or str(path)
    elif path.is_file():
        # One reader and one builder of bertlab checkpoints: export's.
        from bertlab.export import load_checkpoint, rebuild_model, resolve_tokenizer
        from bertlab.run_facts import collect_run_facts

        try:
            checkpoint = load_checkpoint(model)
        except ValueError as error:
            raise ValueError(str(error).replace("--ckpt_path", "--model", 1)) from None
        tokenizer = str(resolve_tokenizer(tokenizer, collect_run_facts(checkpoint, path)))
        pretraining = rebuild_model(checkpoint, tokenizer)
        config, state = pretraining.config, pretraining.base_model.state_dict()
    else:
        raise ValueError(f"--model {model}: no such folder or checkpoint file")
    if not Path(tokenizer).is_dir():
        raise ValueError(f"--tokenizer {tokenizer}: no such tokenizer folder")
    return classifier_from_encoder(config, state, num_labels, seed), AutoTokenizer.from_pretrained(
        tokenizer
    )


def optimizer_and_schedule(model, lr: float, weight_decay: float, warmup_ratio: float, total: int):
    """AdamW (no decay on biases and norms), warmup then linear decay to 0 over `total` steps."""
    device = next(model.parameters()).device
    optimizer = build_adamw(
        parameter_groups(model, weight_decay), lr, (0.9, 0.999), 1e-8, adamw_implementation(device)
    )
    warmup = min(int(warmup_ratio * total), max(total - 1, 0))
    schedule = lr_multiplier(warmup, max(total, 1), "linear")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class SequenceClassifier(pl.LightningModule):
    """Cross-entropy fine-tuning; keeps the best validation epoch's weights and scores."""

    def __init__(
        self, model, num_labels: int, lr: float, weight_decay: float, warmup_ratio: float
    ) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.scores: dict | None = None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits.float()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train_loss", loss, batch_size=batch["labels"].size(0))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
        self.outputs.append((logits.argmax(-1).cpu(), batch["labels"].cpu(), loss.cpu()))

    test_step = validation_step

    def _scores(self) -> dict:
        predictions, labels, losses = zip(*self.outputs, strict=True)
        predictions, labels = torch.cat(predictions), torch.cat(labels)
        scores = classification_metrics(predictions, labels, self.num_labels)
        scores["loss"] = float(torch.stack(losses).sum() / len(labels))
        self.outputs.clear()
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self._scores()
        self.log("val_accuracy", scores["accuracy"])
        epoch = self.current_epoch + 1
        self.history.append({"epoch": epoch, **scores})
        if self.best is None or scores["accuracy"] > self.best["accuracy"]:
            self.best = {"epoch": epoch, **scores}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def on_test_epoch_end(self) -> None:
        self.scores = self._scores()

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches)
        optimizer, scheduler = optimizer_and_schedule(
            self.model, self.lr, self.weight_decay, self.warmup_ratio, total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _loader(features: list[dict], pad_id: int, args: dict, shuffle: bool, seed: int):
    return torch.utils.data.DataLoader(
        features,
        batch_size=args["batch_size"],
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        collate_fn=lambda batch: collate(batch, pad_id, args["max_seq_len"]),
    )


def finetune(
    model: str,
    train_file: str,
    valid_file: str,
    test_file: str | None = None,
    label_column: str = "label",
    text_columns: list[str] | None = None,
    tokenizer: str | None = None,
    max_seq_len: int = 128,
    batch_size: int = 32,
    lr: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_epochs: int = 3,
    patience: int | None = 2,
    seed: int = 0,
    accelerator: str = "auto",
    precision: str = "32-true",
    output_json: str | None = None,
) -> dict:
    """Fine-tune a model on a classification task; print accuracy (and F1 for two classes) as JSON.

    Files are TSV (label<TAB>text, label<TAB>text_a<TAB>text_b, or GLUE's TSV with a header line
    and named columns) or JSON Lines (.jsonl with label, text and optionally text_pair). Labels
    map to ids in sorted order; with two classes the F1 is the second label's. The JSON result
    holds labels (label -> id), positive_label, the sizes, best_epoch (from 1), the valid and
    test scores of the best epoch's weights (accuracy, f1 for two classes, mean loss) and the
    per-epoch history.

    Args:
        model: An exported model folder (config.json, weights, tokenizer) or a bertlab .ckpt.
        train_file: Training examples (TSV or JSON Lines).
        valid_file: Validation examples in the same layout, for early stopping and the scores.
        test_file: Optional test examples (with labels), scored with the best epoch's weights.
        label_column: Label column name (a header's or a JSON field), or its position (0, 1, ...)
            in a headerless TSV.
        text_columns: One or two text columns (names or positions), e.g. sentence1,sentence2.
            By default GLUE's usual names, or text and text_pair, or the columns after the label.
        tokenizer: Tokenizer folder (default: the model folder, or the checkpoint's tokenizer).
        max_seq_len: Longest input in tokens; longer inputs are truncated.
        batch_size: Examples per optimizer step.
        lr: Peak learning rate (linear warmup, then linear decay to 0).
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        warmup_ratio: Fraction of the training steps spent warming up.
        max_epochs: Most epochs to train.
        patience: Stop after this many epochs without a better validation accuracy (None: never).
        seed: Seed of the classification head, the data order and dropout.
        accelerator: Lightning accelerator (auto, cpu, gpu, ...); one device is used.
        precision: Lightning precision (32-true, bf16-mixed, 16-mixed).
        output_json: Also write the result to this file.
    """
    began = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"--batch_size must be positive, got {batch_size}")
    if max_seq_len < 8:
        raise ValueError(f"--max_seq_len {max_seq_len} is too small (needs >= 8)")
    if max_epochs < 1 or (patience is not None and patience < 0):
        raise ValueError("--max_epochs must be >= 1 and --patience >= 0")
    train = read_examples(train_file, label_column, text_columns)
    mapping = label_mapping(train, train_file)
    splits = {"train": train, "valid": read_examples(valid_file, label_column, text_columns)}
    if test_file is not None:
        splits["test"] = read_examples(test_file, label_column, text_columns)
    for name in ("valid", "test"):
        if name in splits:
            check_compatible(splits[name], train, mapping)

    # Seeded before loading (weights a folder lacks, e.g. a masked-LM export's pooler, are drawn)
    # and again after: building a model from a checkpoint draws weights it then overwrites,
    # loading a folder does not, and dropout must not depend on the route.
    pl.seed_everything(seed, workers=True, verbose=False)
    classifier, tok = load_model(model, len(mapping), tokenizer, seed)
    limit = classifier.config.max_position_embeddings
    if max_seq_len > limit:
        raise ValueError(f"--max_seq_len {max_seq_len} exceeds the model's {limit} positions")
    if tok.pad_token_id is None:
        raise ValueError(f"--tokenizer {tokenizer or model}: no padding token")
    features = {name: encode(tok, ex, mapping, max_seq_len) for name, ex in splits.items()}
    args = {"batch_size": batch_size, "max_seq_len": max_seq_len}
    loaders = {
        name: _loader(f, tok.pad_token_id, args, shuffle=name == "train", seed=seed)
        for name, f in features.items()
    }
    module = SequenceClassifier(classifier, len(mapping), lr, weight_decay, warmup_ratio)
    pl.seed_everything(seed, workers=True, verbose=False)
    callbacks = []
    if patience is not None:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience)
        )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=max_epochs,
        gradient_clip_val=1.0,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, loaders["train"], loaders["valid"])
        assert module.best is not None and module.best_state is not None
        module.load_state_dict(module.best_state)
        test_scores = None
        if "test" in loaders:
            trainer.test(module, loaders["test"], verbose=False)
            test_scores = module.scores
    labels = list(mapping)
    result = {
        "model": model,
        "train_file": train_file,
        "valid_file": valid_file,
        "test_file": test_file,
        "num_labels": len(mapping),
        "labels": mapping,
        "positive_label": labels[1] if len(labels) == 2 else None,
        "train_size": len(train),
        "valid_size": len(splits["valid"]),
        "test_size": len(splits["test"]) if test_file is not None else None,
        "pairs": train[0].text_pair is not None,
        "best_epoch": module.best["epoch"],
        "epochs_run": len(module.history),
        "valid": {k: v for k, v in module.best.items() if k != "epoch"},
        "test": test_scores,
        "history": module.history,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "max_seq_len": max_seq_len,
        "seconds": round(time.perf_counter() - began, 2),
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if output_json:
        with atomic_write(output_json) as f:
            f.write(text + "\n")
    print(text)
    return result
