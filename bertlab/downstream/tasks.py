"""Downstream task files: reading (TSV, GLUE TSV, JSON Lines), labels, encoding, batches, metrics.

Used by bertlab.downstream.finetune (tools/finetune.py) and bertlab.downstream.during_pretraining
(the DownstreamEvaluation callback).

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
- A validation or test split of one example, or of one label only, is scored (the file is
  valid) but named as misleading by `degenerate_split`: accuracy over one example is 0 or 1,
  accuracy over one label is only how often the model predicts that label (a constant
  classifier scores 1), and the F1 of a positive label the split lacks is 0 whatever the model.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

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
    # utf-8-sig: a file saved by an editor that writes a byte-order mark reads as its text
    # (the mark would otherwise join the first label, a class of its own).
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


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
        if int(label_column) >= len(first):
            raise ValueError(
                f"{path} line {lines[0][0]}: --label_column {label_column} is a column position, "
                f"but the line has {len(first)} tab-separated field(s) (positions 0 to "
                f"{len(first) - 1})"
            )
        if not text_columns:
            raise ValueError(
                f"{path}: --label_column {label_column} is a column position, so give the text "
                "columns' positions too with --text_columns (e.g. 3 or 1,2)"
            )
        if not all(name.isdigit() for name in names):
            raise ValueError(
                f"{path}: --label_column {label_column} is a column position, so --text_columns "
                f"must be positions too (e.g. 3 or 1,2), got {names}"
            )
        indices = [int(label_column)] + [int(name) for name in names]
        expected = None
        rows = lines
    elif text_columns is not None and label_column == "label":
        raise ValueError(
            f"{path} line 1: --text_columns {','.join(text_columns)} needs a header line naming "
            f"them, or a --label_column position too (e.g. --label_column 0); the first line "
            f"is {first}"
        )
    elif label_column != "label":
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
        if has_header and fields == first:  # two files joined: the header read as an example
            raise ValueError(f"{where}: the header line again (two files joined?); remove it")
        if expected is not None and len(fields) != expected:
            raise ValueError(
                f"{where}: {len(fields)} tab-separated field(s), expected {expected}"
                + (" (no tab)" if len(fields) == 1 else "")
            )
        if max(indices) >= len(fields):
            flag = "--label_column" if indices[0] >= len(fields) else "--text_columns"
            raise ValueError(f"{where}: {len(fields)} field(s), no column {max(indices)} ({flag})")
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
                kind = "null" if value is None else f"a JSON {type(value).__name__}"
                raise ValueError(f"{where}: {key!r} is {kind}, not text")
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
    if not text.strip() or (text_pair is not None and not text_pair.strip()):
        raise ValueError(f"{where}: empty text (the model would learn the label from nothing)")
    return Example(label=label.strip(), text=text, text_pair=text_pair, where=where)


def read_examples(
    path: str, label_column: str = "label", text_columns: list[str] | str | None = None
) -> list[Example]:
    """Labelled examples of a TSV or JSON Lines file (see the module docstring for the layouts)."""
    file = Path(path)
    columns = _split_columns(text_columns)
    if columns and str(label_column) in columns:  # the model would read its own answer
        raise ValueError(
            f"--text_columns {','.join(columns)} includes the --label_column {label_column}"
        )
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


def degenerate_split(examples: list[Example], mapping: dict[str, int], flag: str) -> str | None:
    """Why scores over the evaluation split `examples` (given as `flag`) mislead, or None."""
    labels = sorted({e.label for e in examples}, key=mapping.__getitem__)
    if len(examples) == 1:
        return f"{flag}: 1 example: its accuracy can only be 0 or 1"
    if len(labels) > 1:
        return None
    reason = (
        f"{flag}: all {len(examples)} examples have label {labels[0]!r}: accuracy is only how "
        "often the model predicts it (a classifier that always does scores 1.0)"
    )
    positive = next(label for label, i in mapping.items() if i == 1)
    if len(mapping) == 2 and labels[0] != positive:
        reason += f", and the F1 of {positive!r} is 0 whatever the model"
    return reason


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
