"""DownstreamEvaluation: periodic fine-tuning of a copy of the encoder during pre-training.

Run: .venv/bin/python -m pytest tests/downstream/test_downstream.py -q

A tiny masked-LM pre-training loop (a LightningModule holding a BertForPreTraining as `model`,
masking with the global torch RNG, dropout on, a shuffling DataLoader that crosses an epoch) is
run with and without the callback: the losses, final weights and random states must be
bit-identical, and the callback must log the downstream accuracy at the right steps. The task is
tests/downstream/test_finetune.py's English-vs-Japanese sentences from the shared data.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import Logger
from test_finetune import labelled, language_task
from transformers import AutoTokenizer, BertConfig, BertForPreTraining

import bertlab.downstream.during_pretraining
from bertlab.downstream.during_pretraining import DownstreamEvaluation

MAX_STEPS = 8
EVERY = 3
TASK = dict(max_seq_len=64, batch_size=16, lr=5e-3, max_epochs=3)


class MemoryLogger(Logger):
    """Keeps every log_metrics call: [(step, {tag: value})]."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))


class TinyPretraining(pl.LightningModule):
    """Masked LM on a tiny BertForPreTraining; masking draws from the global torch RNG."""

    def __init__(self, tokenizer: str, vocab_size: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            hidden_dropout_prob=0.1,
        )
        self.model = BertForPreTraining(config)
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        (input_ids,) = batch
        attention_mask = (input_ids != 0).long()
        chosen = (torch.rand(input_ids.shape) < 0.15) & (input_ids > 4)
        labels = torch.where(chosen, input_ids, -100)
        logits = self.model(
            input_ids=torch.where(chosen, 4, input_ids), attention_mask=attention_mask
        ).prediction_logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        self.losses.append(loss.item())
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("downstream")
    texts = language_task(shared_data, root, size=160)
    for split, (start, stop) in {"train": (0, 100), "valid": (100, 130)}.items():
        items = labelled(texts, start, stop, seed=len(split))
        lines = "".join(f"{lang}\t{text}\n" for lang, text in items)
        (root / f"{split}.tsv").write_text(lines, encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    corpus = texts["en"][130:] + texts["ja"][130:]  # 60 sentences, not in the task
    ids = tokenizer(corpus, truncation=True, max_length=32, padding="max_length")["input_ids"]
    return {
        "tokenizer": str(root / "tokenizer"),
        "vocab_size": len(tokenizer),
        "data": torch.utils.data.TensorDataset(torch.tensor(ids)),
        "train": str(root / "train.tsv"),
        "valid": str(root / "valid.tsv"),
    }


def pretrain(setup: dict, callbacks: list) -> dict:
    """Run MAX_STEPS of tiny pre-training; the losses, weights, logs and the next random draws."""
    pl.seed_everything(0, verbose=False)
    module = TinyPretraining(setup["tokenizer"], setup["vocab_size"])
    # Epochs of 5 batches (limit_train_batches): the second epoch's order is drawn from the
    # global RNG after the callback has run at step 3.
    loader = torch.utils.data.DataLoader(setup["data"], batch_size=8, shuffle=True)
    logger = MemoryLogger()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=MAX_STEPS,
        limit_train_batches=5,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, loader)
    return {
        "losses": module.losses,
        "state": module.model.state_dict(),
        "records": logger.records,
        "draws": (torch.rand(3).tolist(), random.random(), float(np.random.rand())),
        "trainer": trainer,
    }


@pytest.fixture(scope="module")
def plain(setup: dict) -> dict:
    return pretrain(setup, [])


@pytest.fixture(scope="module")
def evaluated(setup: dict) -> dict:
    callback = DownstreamEvaluation(
        train_file=setup["train"],
        valid_file=setup["valid"],
        every_n_steps=EVERY,
        at_start=True,
        **TASK,
    )
    return pretrain(setup, [callback])


def test_logs_accuracy_at_the_right_steps(evaluated):
    logged = [(step, m) for step, m in evaluated["records"] if "downstream/accuracy" in m]
    # at_start (0), every 3 steps, and at the end (8 is not a multiple of 3).
    assert [step for step, _ in logged] == [0, 3, 6, MAX_STEPS]
    for _, metrics in logged:
        assert set(metrics) == {
            "downstream/accuracy",
            "downstream/f1",
            "downstream/seconds",
            "downstream/pretrain_seconds",
        }
        assert 0.0 <= metrics["downstream/accuracy"] <= 1.0
        assert 0.0 <= metrics["downstream/pretrain_seconds"] <= metrics["downstream/seconds"]
    seconds = [m["downstream/seconds"] for _, m in logged]
    assert seconds == sorted(seconds)
    # The task is learnable from a barely trained encoder: clearly above chance (0.5).
    assert logged[-1][1]["downstream/accuracy"] >= 0.8, logged
    callback_metrics = evaluated["trainer"].callback_metrics
    assert float(callback_metrics["downstream/accuracy"]) == logged[-1][1]["downstream/accuracy"]


def test_does_not_disturb_pretraining(plain, evaluated):
    assert len(plain["losses"]) == MAX_STEPS
    assert evaluated["losses"] == plain["losses"]  # exact: same masks, dropout, data order
    for key, value in plain["state"].items():
        assert torch.equal(evaluated["state"][key], value), key
    assert evaluated["draws"] == plain["draws"]
    theirs = [(s, m) for s, m in evaluated["records"] if not any("downstream" in k for k in m)]
    assert len(theirs) == MAX_STEPS and theirs == plain["records"]


def test_the_check_would_catch_a_disturbance(setup, plain, monkeypatch):
    """Without restoring the random state, the same run's losses change: the check has teeth."""
    monkeypatch.setattr(
        bertlab.downstream.during_pretraining, "preserved_rng_state", contextlib.nullcontext
    )
    callback = DownstreamEvaluation(
        train_file=setup["train"],
        valid_file=setup["valid"],
        every_n_steps=EVERY,
        **{**TASK, "max_epochs": 1},
    )
    disturbed = pretrain(setup, [callback])
    assert disturbed["losses"][:EVERY] == plain["losses"][:EVERY]
    assert disturbed["losses"][EVERY:] != plain["losses"][EVERY:]


def test_tokenizer_and_names(setup, tmp_path):
    module = TinyPretraining(setup["tokenizer"], setup["vocab_size"])
    trainer = SimpleNamespace(datamodule=None)
    named = DownstreamEvaluation(setup["train"], setup["valid"], name="lang", max_seq_len=64)
    named.on_fit_start(trainer, module)  # the tokenizer comes from the module's hyperparameter
    assert named.prefix == "downstream/lang"
    assert named.state_key != DownstreamEvaluation(setup["train"], setup["valid"]).state_key
    module.hparams.tokenizer = None
    with pytest.raises(ValueError, match="no tokenizer"):
        named.on_fit_start(trainer, module)
    trainer.datamodule = SimpleNamespace(tokenizer_path=setup["tokenizer"])
    named.on_fit_start(trainer, module)
    with pytest.raises(ValueError, match="max_seq_len 512 exceeds the model's 128"):
        too_long = DownstreamEvaluation(setup["train"], setup["valid"], max_seq_len=512)
        too_long.on_fit_start(trainer, module)
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\tfine\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv line 2"):
        DownstreamEvaluation(setup["train"], str(bad), max_seq_len=64).on_fit_start(trainer, module)


def test_a_degenerate_validation_split_is_warned_in_one_line(setup, tmp_path, capsys):
    """One example, or one label: the logged accuracy would mislead, so fit start says so."""
    module = TinyPretraining(setup["tokenizer"], setup["vocab_size"])
    trainer = SimpleNamespace(datamodule=None)
    lines = Path(setup["valid"]).read_text(encoding="utf-8").splitlines()
    one = tmp_path / "one.tsv"
    one.write_text(lines[0] + "\n", encoding="utf-8")
    label = lines[0].split("\t")[0]
    same = tmp_path / "same.tsv"
    same.write_text("".join(f"{x}\n" for x in lines if x.startswith(label + "\t")), "utf-8")
    for valid, expected in ((one, "1 example"), (same, f"have label {label!r}")):
        DownstreamEvaluation(setup["train"], str(valid), max_seq_len=64).on_fit_start(
            trainer, module
        )
        warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
        assert len(warnings) == 1 and str(valid) in warnings[0] and expected in warnings[0]
    DownstreamEvaluation(setup["train"], setup["valid"], max_seq_len=64).on_fit_start(
        trainer, module
    )
    assert "warning:" not in capsys.readouterr().err


def test_state_survives_a_checkpoint(setup):
    callback = DownstreamEvaluation(setup["train"], setup["valid"])
    callback.last_step, callback.evaluation_seconds = 300, 12.5
    restored = DownstreamEvaluation(setup["train"], setup["valid"])
    restored.load_state_dict(callback.state_dict())
    assert (restored.last_step, restored.evaluation_seconds) == (300, 12.5)
    assert restored._seconds() >= callback.state_dict()["seconds"] - 1e-3


def test_configured_from_yaml(setup):
    """The LightningCLI way: trainer.callbacks with class_path and init_args."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    config = parser.parse_string(
        f"""
callbacks:
  - class_path: bertlab.downstream.during_pretraining.DownstreamEvaluation
    init_args:
      train_file: {setup["train"]}
      valid_file: {setup["valid"]}
      every_n_steps: 500
      text_columns: [sentence1, sentence2]
      max_steps: 200
      precision: bf16-mixed
"""
    )
    (callback,) = parser.instantiate_classes(config).callbacks
    assert isinstance(callback, DownstreamEvaluation)
    assert (callback.every_n_steps, callback.max_steps) == (500, 200)
    assert callback.text_columns == ["sentence1", "sentence2"]
    assert callback.precision == "bf16-mixed"


def test_with_bertpretraining(setup):
    """bertlab's own module: the encoder is `model.bert`, the tokenizer its hyperparameter."""
    from bertlab.model.module import BertPretraining

    (input_ids,) = setup["data"][:16]
    chosen = (torch.rand(input_ids.shape, generator=torch.Generator().manual_seed(0)) < 0.15) & (
        input_ids > 4
    )
    batch = {
        "input_ids": torch.where(chosen, 4, input_ids),
        "attention_mask": (input_ids != 0).long(),
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.where(chosen, input_ids, -100),
    }
    module = BertPretraining(
        tokenizer=setup["tokenizer"],
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        objective="mlm",
        lr_schedule="constant",
        warmup_steps=0,
    )
    logger = MemoryLogger()
    callback = DownstreamEvaluation(
        setup["train"], setup["valid"], every_n_steps=2, **{**TASK, "max_steps": 5}
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader([batch] * 2, batch_size=None))
    logged = [(step, m) for step, m in logger.records if "downstream/accuracy" in m]
    assert [step for step, _ in logged] == [2]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lr": 0.0}, "DownstreamEvaluation.lr 0.0 must be positive"),
        ({"batch_size": 0}, "DownstreamEvaluation.batch_size must be positive, got 0"),
        ({"warmup_ratio": 2.0}, "DownstreamEvaluation.warmup_ratio 2.0 must be in [0, 1]"),
        ({"max_steps": 0}, "DownstreamEvaluation.max_steps 0 must be at least 1"),
    ],
)
def test_fine_tuning_settings_are_refused_as_finetune_refuses_them(setting, message):
    """The callback and `finetune` share their settings' checks (downstream.classifier)."""
    with pytest.raises(ValueError) as error:
        DownstreamEvaluation(train_file="t.tsv", valid_file="v.tsv", **setting)
    assert str(error.value) == message


def test_a_learning_rate_above_one_is_warned_of(capsys):
    DownstreamEvaluation(train_file="t.tsv", valid_file="v.tsv", lr=1000.0)
    assert capsys.readouterr().err.startswith(
        "warning: DownstreamEvaluation.lr 1000 is far above any AdamW learning rate"
    )
