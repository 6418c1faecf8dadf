"""Damaged artefacts: each kind of file truncated, corrupted and emptied, at every command that
reads it, is one `error:` line naming the file, exit status 2, never a traceback.

Run: .venv/bin/python -m pytest tests/files/test_damaged.py -q

The artefacts are a tiny real pipeline made once (corpus, WordPiece tokenizer, samples, an
untrained checkpoint shaped as `bertlab fit` writes it, its export); every case damages one file
of a fresh copy and runs a command as its tool does (bertlab.command.run, bertlab.train.cli.main),
in-process to stay fast. Shards have their own tests (tests/train/test_bad_input.py).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bertlab.command import run
from bertlab.downstream.finetune import finetune
from bertlab.export.fill_mask import fill_mask
from bertlab.export.hub import push_to_hub
from bertlab.export.model import export_model
from bertlab.samples.prepare import prepare_samples
from bertlab.train.cli import main

TEXT = "".join(
    f"Document {i} has a first sentence about {word}.\n"
    f"It also has a second sentence on topic {i % 7} and {word}.\n\n"
    for i, word in enumerate(["cats", "dogs", "birds", "fish", "trees", "rivers", "stars"] * 10)
)
DAMAGES = ("truncated", "corrupted", "empty")


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    from tiny import handmade_checkpoint

    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.tokenizer.training import train_tokenizer

    root = tmp_path_factory.mktemp("artefacts")
    (root / "raw.txt").write_text(TEXT, encoding="utf-8")
    prepare_corpus(input=[str(root / "raw.txt")], output_dir=str(root / "corpus"),
                   valid_docs=5, test_docs=5)  # fmt: skip
    train_tokenizer(str(root / "corpus" / "train.txt"), str(root / "tok"),
                    model_type="wordpiece", vocab_size=150)  # fmt: skip
    for split in ("train", "valid"):
        prepare_samples(str(root / "corpus" / f"{split}.txt"), str(root / "tok"),
                        str(root / "samples" / split), max_seq_len=32, num_shards=1,
                        dupe_factor=1)  # fmt: skip
    handmade_checkpoint(root / "tok", root / "tiny.ckpt")
    export_model(str(root / "tiny.ckpt"), str(root / "model"), language="en")
    (root / "task.tsv").write_text(
        "".join(f"{i % 2}\tsentence number {i} about cats\n" for i in range(20)), encoding="utf-8"
    )
    return root


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "corrupted":  # same length, bytes overwritten near the start (headers live there)
        path.write_bytes(data[:8] + b"\xff" * 32 + data[40:])
    else:
        path.write_bytes(b"")


def fit_args(w: Path, *extra: str) -> list[str]:
    return [
        "fit", f"--data.train_files={w / 'samples' / 'train'}",
        f"--data.val_files={w / 'samples' / 'valid'}", "--data.test_files=null",
        "--data.batch_size=4", "--model.hidden_size=32", "--model.num_hidden_layers=1",
        "--model.num_attention_heads=2", "--model.intermediate_size=64",
        "--model.max_position_embeddings=64", "--model.warmup_steps=1", "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={w / 'runs'}", *extra,
    ]  # fmt: skip


def finetune_args(model: Path, w: Path, *extra: str) -> list[str]:
    task = w / "task.tsv"
    return ["--model", str(model), "--train_file", str(task), "--valid_file", str(task),
            "--max_epochs", "1", *extra]  # fmt: skip


def recording_samples(w: Path) -> Path:
    """The checkpoint, recording w's samples as `bertlab fit` does (export reads their meta)."""
    import torch

    checkpoint = torch.load(w / "tiny.ckpt", weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = {"train_files": str(w / "samples" / "train")}
    torch.save(checkpoint, w / "run.ckpt")
    return w / "run.ckpt"


# (damaged file, command name, how to run it on the copy w)
CASES = [
    ("tiny.ckpt", "export_model",
     lambda w: (export_model, ["--ckpt_path", str(w / "tiny.ckpt"), "--output_dir",
                               str(w / "out"), "--tokenizer", str(w / "tok")])),
    ("tiny.ckpt", "finetune",
     lambda w: (finetune, finetune_args(w / "tiny.ckpt", w, "--tokenizer", str(w / "tok")))),
    ("tiny.ckpt", "bertlab fit", lambda w: (main, fit_args(w, f"--ckpt_path={w / 'tiny.ckpt'}"))),
    ("tiny.ckpt", "bertlab test",
     lambda w: (main, ["test", *fit_args(w, f"--ckpt_path={w / 'tiny.ckpt'}")[1:]])),
    ("samples/train/meta.json", "bertlab fit", lambda w: (main, fit_args(w))),
    ("samples/train/meta.json", "export_model",
     lambda w: (export_model, ["--ckpt_path", str(recording_samples(w)), "--output_dir",
                               str(w / "out")])),
    ("tok/tokenizer.json", "prepare_samples",
     lambda w: (prepare_samples, ["--input", str(w / "corpus" / "valid.txt"), "--tokenizer",
                                  str(w / "tok"), "--output_dir", str(w / "s")])),
    ("tok/tokenizer.json", "export_model",
     lambda w: (export_model, ["--ckpt_path", str(w / "tiny.ckpt"), "--output_dir",
                               str(w / "out"), "--tokenizer", str(w / "tok")])),
    ("tok/tokenizer.json", "bertlab fit",
     lambda w: (main, fit_args(w, f"--data.tokenizer={w / 'tok'}"))),
    ("tok/tokenizer_config.json", "prepare_samples",
     lambda w: (prepare_samples, ["--input", str(w / "corpus" / "valid.txt"), "--tokenizer",
                                  str(w / "tok"), "--output_dir", str(w / "s")])),
    *[
        (f"model/{name}", command, make)
        for name in ("config.json", "model.safetensors", "tokenizer.json")
        for command, make in (
            ("fill_mask", lambda w: (fill_mask, ["--model", str(w / "model"), "--text",
                                                 "a [MASK] b"])),
            ("finetune", lambda w: (finetune, finetune_args(w / "model", w))),
            ("push_to_hub", lambda w: (push_to_hub, ["--model_dir", str(w / "model"),
                                                     "--repo_id", "me/tiny", "--dry_run"])),
        )
    ],
]  # fmt: skip


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize(
    ("name", "command", "make"), CASES, ids=[f"{name}-{command}" for name, command, _ in CASES]
)
def test_damaged_file_is_one_line_naming_it(
    artefacts, tmp_path, capsys, monkeypatch, name, command, make, how
):
    monkeypatch.setattr(sys, "argv", ["bertlab"])  # LightningCLI must not see pytest's arguments
    w = tmp_path / "w"
    shutil.copytree(artefacts, w)
    damage(w / name, how)
    fn, argv = make(w)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv) if fn is main else run(fn, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1, err[-3000:]
    # The damaged file is named: the checkpoint by its flag's path, the others by their own.
    assert str(w / name) in errors[0], errors[0]
    assert not (w / "out").exists() and not (w / "s").exists()


def test_bytes_changed_inside_a_tensor_are_refused_by_every_reader(artefacts, tmp_path, capsys):
    """The header stays whole, so only the export's recorded SHA-256 tells."""
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.files.output_folder import MARKER

    w = tmp_path / "w"
    shutil.copytree(artefacts, w)
    weights = w / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # the last tensor's last bytes: still a complete safetensors file
    weights.write_bytes(bytes(data))
    commands = [
        (fill_mask, ["--model", w / "model", "--text", "a [MASK] b"]),
        (evaluate_mlm, ["--model", w / "model", "--text", w / "corpus" / "test.txt"]),
        (push_to_hub, ["--model_dir", w / "model", "--repo_id", "me/tiny", "--dry_run"]),
        (finetune, finetune_args(w / "model", w)),
    ]
    for fn, argv in commands:
        with pytest.raises(SystemExit) as exit_info:
            run(fn, [str(a) for a in argv])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert exit_info.value.code == 2 and len(errors) == 1, err[-3000:]
        assert f"{weights} is damaged: its bytes are not the ones export_model wrote" in errors[0]
    (w / "model" / MARKER).unlink()  # a hand-made folder: nothing recorded, read as it is
    run(fill_mask, ["--model", str(w / "model"), "--text", "a [MASK] b"])
    assert "error:" not in capsys.readouterr().err
