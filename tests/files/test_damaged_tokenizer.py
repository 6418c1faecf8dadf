"""Damaged tokenizer vocabularies: vocab.txt (WordPiece) and sentencepiece.model (SentencePiece)
truncated, emptied, overwritten with random bytes or with other text, at every command that reads
a tokenizer folder, are one `error:` line naming the file, exit status 2, never a traceback, and
nothing written.

Run: .venv/bin/python -m pytest tests/files/test_damaged_tokenizer.py -q

The style is tests/files/test_damaged.py's: a tiny real pipeline made once per tokenizer kind
(corpus, tokenizer, samples, an untrained checkpoint shaped as `bertlab fit` writes it, its export);
every case damages one file of a fresh copy and runs a command in-process as its tool does. These
files matter although AutoTokenizer never reads them beside tokenizer.json: they ship with the
model, and other tools load them.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest
from test_damaged import TEXT, finetune_args, fit_args

from bertlab.command import run
from bertlab.downstream.finetune import finetune
from bertlab.downstream.heldout import evaluate_mlm
from bertlab.export.fill_mask import fill_mask
from bertlab.export.hub import push_to_hub
from bertlab.export.model import export_model
from bertlab.samples.prepare import prepare_samples
from bertlab.tokenizer.training import convert_tokenizer
from bertlab.train.cli import main

# kind -> (the raw vocabulary's file, how train_tokenizer makes the tokenizer)
KINDS = {
    "wordpiece": ("vocab.txt", {"model_type": "wordpiece", "vocab_size": 150}),
    "unigram": ("sentencepiece.model", {"model_type": "unigram", "vocab_size": 50}),
}
DAMAGES = {
    "vocab.txt": ("truncated", "empty", "random", "no_mask", "duplicate"),
    "sentencepiece.model": ("truncated", "empty", "random", "text", "fewer_pieces"),
}


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    """corpus/, and per kind: tok-KIND/, samples-KIND/{train,valid}/, KIND.ckpt, model-KIND/."""
    from tiny import handmade_checkpoint

    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.tokenizer.training import train_tokenizer

    root = tmp_path_factory.mktemp("artefacts")
    (root / "raw.txt").write_text(TEXT, encoding="utf-8")
    prepare_corpus(input=[str(root / "raw.txt")], output_dir=str(root / "corpus"),
                   valid_docs=5, test_docs=5)  # fmt: skip
    for kind, (_, how) in KINDS.items():
        tok = root / f"tok-{kind}"
        train_tokenizer(str(root / "corpus" / "train.txt"), str(tok), **how)
        for split in ("train", "valid"):
            prepare_samples(str(root / "corpus" / f"{split}.txt"), str(tok),
                            str(root / f"samples-{kind}" / split), max_seq_len=32, num_shards=1,
                            dupe_factor=1)  # fmt: skip
        handmade_checkpoint(tok, root / f"{kind}.ckpt")
        export_model(str(root / f"{kind}.ckpt"), str(root / f"model-{kind}"), language="en")
    (root / "task.tsv").write_text(
        "".join(f"{i % 2}\tsentence number {i} about cats\n" for i in range(20)), encoding="utf-8"
    )
    return root


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    if how == "truncated":
        damaged = data[: len(data) // 2]
    elif how == "empty":
        damaged = b""
    elif how == "random":  # same length
        damaged = random.Random(0).randbytes(len(data))
    elif how == "no_mask":  # the line of [MASK] deleted: every later id one lower
        damaged = "".join(line for line in lines if line.strip() != "[MASK]").encode()
    elif how == "duplicate":  # same number of lines, one token twice
        damaged = "".join(lines[:20] + lines[19:20] + lines[21:]).encode()
    elif how == "fewer_pieces":  # a valid model, cut at a piece: SentencePiece loads it
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        proto = model_pb2.ModelProto.FromString(data)
        del proto.pieces[-3:]
        damaged = proto.SerializeToString()
    else:  # "text": another file under the model's name, as a careless copy makes
        damaged = TEXT[:2000].encode()
    assert damaged != data
    path.write_bytes(damaged)


def samples_fit_args(w: Path, kind: str, *extra: str) -> list[str]:
    args = fit_args(w, *extra)
    return [a.replace(str(w / "samples"), str(w / f"samples-{kind}")) for a in args]


def recorded_fit_args(w: Path, kind: str) -> list[str]:
    """fit without --data.tokenizer, the copy's samples recording the copy's tokenizer (as if
    they had been made in w)."""
    for split in ("train", "valid"):
        meta_file = w / f"samples-{kind}" / split / "meta.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        meta["tokenizer"]["path"] = str(w / f"tok-{kind}")
        meta_file.write_text(json.dumps(meta), encoding="utf-8")
    return samples_fit_args(w, kind)


# command -> (the folder whose vocabulary file is damaged, how to run the command on copy w)
COMMANDS = {
    "prepare_samples": ("tok", lambda w, k: (prepare_samples, [
        "--input", str(w / "corpus" / "valid.txt"), "--tokenizer", str(w / f"tok-{k}"),
        "--output_dir", str(w / "out")])),
    "bertlab fit --data.tokenizer": ("tok", lambda w, k: (main, samples_fit_args(
        w, k, f"--data.tokenizer={w / f'tok-{k}'}"))),
    "bertlab fit (meta.json's tokenizer)": ("tok", lambda w, k: (main, recorded_fit_args(w, k))),
    "export_model": ("tok", lambda w, k: (export_model, [
        "--ckpt_path", str(w / f"{k}.ckpt"), "--output_dir", str(w / "out"),
        "--tokenizer", str(w / f"tok-{k}")])),
    "convert_tokenizer": ("tok", lambda w, k: (convert_tokenizer, [
        "--spm_model", str(w / f"tok-{k}" / "sentencepiece.model"),
        "--output_dir", str(w / "out")])),
    "fill_mask": ("model", lambda w, k: (fill_mask, [
        "--model", str(w / f"model-{k}"), "--text", "a [MASK] b"])),
    "finetune": ("model", lambda w, k: (finetune, finetune_args(
        w / f"model-{k}", w, "--max_seq_len", "64", "--output_json", str(w / "out.json")))),
    "evaluate_mlm": ("model", lambda w, k: (evaluate_mlm, [
        "--model", str(w / f"model-{k}"), "--text", str(w / "corpus" / "test.txt"),
        "--output", str(w / "out.json")])),
    "push_to_hub --dry_run": ("model", lambda w, k: (push_to_hub, [
        "--model_dir", str(w / f"model-{k}"), "--repo_id", "me/tiny", "--dry_run"])),
}  # fmt: skip
CASES = [
    (kind, command, how)
    for kind, (name, _) in KINDS.items()
    for command in COMMANDS
    if kind == "unigram" or command != "convert_tokenizer"  # converts SentencePiece models only
    for how in DAMAGES[name]
    # A model of fewer pieces is a valid model to convert: only beside tokenizer.json is it wrong.
    if (command, how) != ("convert_tokenizer", "fewer_pieces")
]


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("kind", "command", "how"), CASES, ids=[f"{k}-{c}-{h}".replace(" ", "_") for k, c, h in CASES]
)
def test_damaged_vocabulary_is_one_line_naming_it(
    artefacts, tmp_path, capsys, monkeypatch, kind, command, how
):
    monkeypatch.setattr(sys, "argv", ["bertlab"])  # LightningCLI must not see pytest's arguments
    name = KINDS[kind][0]
    folder, make = COMMANDS[command]
    w = tmp_path / "w"
    shutil.copytree(artefacts, w)
    damaged = w / f"{folder}-{kind}" / name
    damage(damaged, how)
    fn, argv = make(w, kind)
    before = snapshot(w)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv) if fn is main else run(fn, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1, err[-3000:]
    assert str(damaged) in errors[0], errors[0]
    assert snapshot(w) == before, sorted(snapshot(w) ^ before)
