"""Downstream classification: fine-tune a BERT on a sentence or sentence-pair task, report accuracy.

Decisions:
- Task files are read, checked, encoded and batched by bertlab.downstream.tasks.
- The model is an exported folder or a bertlab checkpoint (.ckpt), read and rebuilt by
  bertlab.export.model (same checks, same tokenizer resolution: `--tokenizer`, else what the run
  recorded); a --tokenizer must be the model's vocabulary. The classifier on its encoder, its
  optimiser and schedule, and the best epoch kept: bertlab.downstream.classifier.
- Training is that LightningModule on the ordinary Trainer (one device: these tasks are small),
  gradient clipping at 1, dynamic padding to a multiple of 8; a precision or accelerator the
  machine cannot run is refused before anything is read.
- EarlyStopping watches validation accuracy (`patience` epochs without a strict improvement);
  the reported validation and test scores are those of the best epoch's weights.
- The result is one JSON object on stdout (Lightning's chatter goes to stderr) and optionally in
  `output_json`, written atomically. bertlab.files.output_folder's rule holds for that file, checked
  before any training: never an input (a slip like `--output_json train.tsv`), never inside the
  model folder, and an existing file only when it is an earlier result, with --overwrite.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from bertlab.downstream.classifier import FineTuning, SequenceClassifier, classifier_from_encoder
from bertlab.downstream.tasks import (
    check_compatible,
    collate,
    degenerate_split,
    encode,
    label_mapping,
    read_examples,
)
from bertlab.files.artefacts import check_model_folder, check_model_weights
from bertlab.files.atomic import atomic_write
from bertlab.files.identity import file_identity
from bertlab.files.output_folder import check_output_file
from bertlab.speed.settings import check_precision
from bertlab.tokenizer.export import check_folder_tokenizer, check_tokenizer
from bertlab.tokenizer.loading import open_tokenizer


def load_model(model: str, num_labels: int, tokenizer: str | None, seed: int):
    """(classifier, tokenizer) from an exported folder or a bertlab .ckpt checkpoint."""
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # a bar per load: noise in a result's log
    path = Path(model)
    chosen = tokenizer
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {model}: not a model folder (no config.json)")
        check_model_folder(path, f"--model {model}")  # a damaged file named, not a traceback
        check_model_weights(path, f"--model {model}")
        encoder = AutoModel.from_pretrained(path)
        config, state = encoder.config, encoder.state_dict()
        tokenizer = tokenizer or str(path)
    elif path.is_file():
        # One reader and one builder of bertlab checkpoints: export's.
        from bertlab.export.model import load_checkpoint, rebuild_model, resolve_tokenizer
        from bertlab.export.run_facts import collect_run_facts
        from bertlab.model.conversion import encoder_config_and_state

        try:
            checkpoint = load_checkpoint(model)
        except ValueError as error:
            raise ValueError(str(error).replace("--ckpt_path", "--model", 1)) from None
        facts = collect_run_facts(checkpoint, path)
        tokenizer = str(resolve_tokenizer(tokenizer, facts))
        pretraining = rebuild_model(checkpoint, tokenizer)
        # The vocabulary size and the samples' tokenizer fingerprint, as export checks them.
        check_tokenizer(Path(tokenizer), pretraining.config.vocab_size, facts.samples_meta)
        config, state = encoder_config_and_state(pretraining)
    else:
        raise ValueError(f"--model {model}: no such folder or checkpoint file")
    tok = open_tokenizer(tokenizer, "--tokenizer")
    if path.is_dir() and chosen is not None:
        check_folder_tokenizer(tok, chosen, path, config.vocab_size)
    return classifier_from_encoder(config, state, num_labels, seed), tok


def _is_result(path: Path) -> bool:
    """Whether `path` holds a result finetune wrote (its JSON object with these keys)."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and {"model", "train_file", "best_epoch"} <= result.keys()


def _loader(features: list[dict], pad_id: int, args: dict, shuffle: bool, seed: int):
    return torch.utils.data.DataLoader(
        features,
        batch_size=args["batch_size"],
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        collate_fn=lambda batch: collate(batch, pad_id, args["max_seq_len"]),
    )


def read_splits(
    files: dict[str, str | None], label_column: str, text_columns: list[str] | None
) -> tuple[dict[str, list], dict[str, int]]:
    """The examples of each given split and the label mapping of the training file.

    A split that is another split's file is scored all the same, with a warning: validating on
    the training file measures memorisation, and a test file that is the validation file (on
    which the best epoch is chosen) gives no test score (a smoke test may mean to do either).
    """
    named = {name: path for name, path in files.items() if path is not None}
    seen: dict[Path, str] = {}
    for name, path in named.items():
        key = file_identity(path)  # another spelling, a symbolic or a hard link: the same file
        if key in seen:
            other = seen[key]
            why = (
                "the best epoch is chosen on it, so its score is no test score"
                if other == "valid"
                else "its scores measure memorisation, not held-out accuracy"
            )
            line = f"warning: --{name}_file {path} is also the --{other}_file: {why}"
            print(line, file=sys.stderr)
        seen.setdefault(key, name)
    train = read_examples(named["train"], label_column, text_columns)
    mapping = label_mapping(train, named["train"])
    splits = {"train": train}
    for name in ("valid", "test"):
        if name not in named:
            continue
        splits[name] = read_examples(named[name], label_column, text_columns)
        check_compatible(splits[name], train, mapping)
        # Scored all the same (the file is valid), but said once, before the slow part.
        if reason := degenerate_split(splits[name], mapping, f"--{name}_file {named[name]}"):
            print(f"warning: {reason}", file=sys.stderr)
    return splits, mapping


def _trainer(accelerator: str, precision: str, max_epochs: int, patience: int | None):
    """One device, no checkpoint files or logger, early stopping on validation accuracy."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    callbacks = []
    if patience is not None:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience)
        )
    try:
        return pl.Trainer(
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
    except MisconfigurationException as error:  # an accelerator or precision Lightning lacks
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"--accelerator {accelerator} --precision {precision}: {first}") from None


def _result(given: dict, splits: dict, mapping: dict, module, test_scores, began: float) -> dict:
    """finetune's JSON object: what was trained on, the sizes, the best epoch's scores."""
    labels = list(mapping)
    return {
        **{key: given[key] for key in ("model", "train_file", "valid_file", "test_file")},
        "num_labels": len(mapping),
        "labels": mapping,
        "positive_label": labels[1] if len(labels) == 2 else None,
        **{
            f"{name}_size": len(splits[name]) if name in splits else None
            for name in ("train", "valid", "test")
        },  # fmt: skip
        "pairs": splits["train"][0].text_pair is not None,
        "best_epoch": module.best["epoch"],
        "epochs_run": len(module.history),
        "valid": {k: v for k, v in module.best.items() if k != "epoch"},
        "test": test_scores,
        "history": module.history,
        **{key: given[key] for key in ("seed", "lr", "batch_size", "max_seq_len")},
        "seconds": round(time.perf_counter() - began, 2),
    }


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
    overwrite: bool = False,
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
        patience: Stop after this many epochs without a better validation accuracy (0: at the
            first epoch that is not better; None: never).
        seed: Seed of the classification head, the data order and dropout.
        accelerator: Lightning accelerator (auto, cpu, gpu, ...); one device is used.
        precision: Lightning precision (32-true, bf16-mixed, 16-mixed).
        output_json: Also write the result to this file (a new one, or an earlier result of
            finetune with --overwrite).
        overwrite: Replace an earlier finetune result at output_json.
    """
    began = time.perf_counter()
    files = {"train": train_file, "valid": valid_file, "test": test_file}
    for name, path in files.items():
        if path and Path(path).is_dir():
            raise ValueError(f"--{name}_file {path} is a folder; give a .tsv or .jsonl file")
    if output_json:
        inputs = [(f"--{name}_file", path) for name, path in files.items()]
        inputs += [("--model", model), ("--tokenizer", tokenizer)]
        check_output_file(
            output_json, "finetune", inputs, overwrite, flag="--output_json",
            recognise=_is_result,
        )  # fmt: skip
    settings = FineTuning(max_seq_len, batch_size, lr, weight_decay, warmup_ratio, max_epochs)
    settings.check("--")  # before any file is read
    if not 0 <= seed < 2**32:  # numpy's bound, which it states without the flag
        raise ValueError(f"--seed {seed} must be in [0, 2**32)")
    if patience is not None and patience < 0:
        raise ValueError(f"--patience {patience} must be >= 0 (0: stop at the first worse epoch)")
    check_precision(precision, accelerator, flag="")
    splits, mapping = read_splits(files, label_column, text_columns)

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
    trainer = _trainer(accelerator, precision, max_epochs, patience)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, loaders["train"], loaders["valid"])
        assert module.best is not None and module.best_state is not None
        module.load_state_dict(module.best_state)
        test_scores = None
        if "test" in loaders:
            trainer.test(module, loaders["test"], verbose=False)
            test_scores = module.scores
    given = dict(model=model, train_file=train_file, valid_file=valid_file, test_file=test_file,
                 seed=seed, lr=lr, batch_size=batch_size, max_seq_len=max_seq_len)  # fmt: skip
    result = _result(given, splits, mapping, module, test_scores, began)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if output_json:
        with atomic_write(output_json) as f:
            f.write(text + "\n")
    print(text)
    return result
