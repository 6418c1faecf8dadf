"""The one output rule (bertlab.files.output_folder) at every command that writes a folder.

Run: .venv/bin/python -m pytest tests/files/test_output_folder.py -q

Each command is run as its tools/*.py script runs it (`bertlab.command.run` on the same
function, in-process to stay fast; the issue's own example goes through the real script in a
subprocess) against: an output that is an input's folder, an input's parent, a folder of other
files, a file; then its own earlier output, replaced only with --overwrite, a user's file added to
it, another command's output and an output from before the marker. Every refusal is one line
naming the flag and the path, exit 2, and leaves every file as it was.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_tool

from bertlab.command import run
from bertlab.corpus.prepare import prepare_corpus
from bertlab.export.model import export_model
from bertlab.files.output_folder import MARKER, check_inputs, read_marker
from bertlab.research.plots import plot_runs
from bertlab.samples.prepare import prepare_samples
from bertlab.tokenizer.training import convert_tokenizer, train_tokenizer

TEXT = "".join(
    f"Document {i} has a first sentence.\nIt also has a second sentence about topic {i % 7}.\n\n"
    for i in range(40)
)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders): to prove nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def refused(capsys, fn: Callable, argv: list, *fragments: str) -> str:
    """Run fn as its tool does; assert exit 2 and one `error:` line holding `fragments`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(fn, [str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def succeeds(capsys, fn: Callable, argv: list) -> None:
    capsys.readouterr()
    run(fn, [str(a) for a in argv])
    capsys.readouterr()


def check_rule(
    capsys,
    tmp_path: Path,
    fn: Callable,
    argv: Callable[[Path], list],
    input_file: Path,
    input_flag: str,
    command: str,
    out_flag: str = "--output_dir",
) -> Path:
    """The four wrong outputs, then the command's own earlier output; returns that output."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    cases = [
        (input_file.parent, [out_flag, f"holds {input_flag}"]),
        (input_file.parent.parent, [out_flag, f"holds {input_flag}"]),
        (other, [out_flag, str(other), "notes.txt", "new or empty folder"]),
        (a_file, [out_flag, str(a_file), "is a file"]),
    ]
    for out, fragments in cases:
        refused(capsys, fn, argv(out), *fragments)
        refused(capsys, fn, [*argv(out), "--overwrite"], *fragments)  # no flag makes it right
    assert snapshot(tmp_path) == before

    out = tmp_path / "out"
    succeeds(capsys, fn, argv(out))
    marker = read_marker(out)
    assert marker is not None and marker["command"] == command
    assert set(marker["entries"]) == {p.name for p in out.iterdir()} - {MARKER}
    written = snapshot(out)
    refused(capsys, fn, argv(out), out_flag, str(out), "--overwrite")
    assert snapshot(out) == written
    succeeds(capsys, fn, [*argv(out), "--overwrite"])
    assert read_marker(out)["command"] == command

    (out / "notes.txt").write_text("mine", encoding="utf-8")
    refused(capsys, fn, [*argv(out), "--overwrite"], str(out), "did not write", "notes.txt")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    (out / "notes.txt").unlink()

    # Written before the marker existed: recognised by its files, replaced only with --overwrite.
    (out / MARKER).unlink()
    refused(capsys, fn, argv(out), "--overwrite")
    succeeds(capsys, fn, [*argv(out), "--overwrite"])
    assert read_marker(out)["command"] == command
    return out


@pytest.fixture()
def corpus_file(tmp_path: Path) -> Path:
    """tmp/data/corpus/train.txt: an input with a folder and a parent inside tmp_path."""
    path = tmp_path / "data" / "corpus" / "train.txt"
    path.parent.mkdir(parents=True)
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_prepare_corpus(capsys, tmp_path, corpus_file):
    def argv(out):
        return ["--input", corpus_file, "--output_dir", out, "--valid_docs", 2, "--test_docs", 2]

    out = check_rule(
        capsys, tmp_path, prepare_corpus, argv, corpus_file, "--input", "prepare_corpus"
    )
    assert sorted(read_marker(out)["entries"]) == ["test.txt", "train.txt", "valid.txt"]
    # An input folder holding the output is refused too (its outputs would be read next time).
    refused(capsys, prepare_corpus, ["--input", tmp_path, "--output_dir", tmp_path / "c"],
            "is inside --input")  # fmt: skip
    # Another command's output is not prepare_corpus's.
    (out / MARKER).write_text(json.dumps({"command": "prepare_samples", "entries": []}))
    refused(capsys, prepare_corpus, [*argv(out), "--overwrite"], "output of prepare_samples")


def test_prepare_corpus_leftovers_and_download_cache(capsys, tmp_path, corpus_file):
    """A killed run's hidden temporary files are its own; a raw/ folder is its own download cache
    only when --download puts it there (tests/corpus/test_download.py), else someone else's
    files."""
    out = tmp_path / "corpus"
    (out / "raw").mkdir(parents=True)
    (out / "raw" / "notes.txt").write_text("mine")
    (out / ".spool-123.tmp").write_text("a killed run's spool")
    argv = ["--input", corpus_file, "--output_dir", out, "--valid_docs", 2, "--test_docs", 2]
    refused(capsys, prepare_corpus, argv, "holds no output of prepare_corpus (raw)")
    shutil.rmtree(out / "raw")
    succeeds(capsys, prepare_corpus, argv)
    assert (out / ".spool-123.tmp").exists()  # not prepare_corpus's to delete either
    assert sorted(read_marker(out)["entries"]) == ["test.txt", "train.txt", "valid.txt"]


def test_train_tokenizer_through_the_real_script(tmp_path, corpus_file):
    """The issue's example: `--output_dir data` one component short deleted the whole tree."""
    data = corpus_file.parent.parent
    (data / "samples").mkdir()
    (data / "samples" / "meta.json").write_text("{}")
    before = snapshot(tmp_path)
    result = run_tool(
        "train_tokenizer.py", "--train_file", corpus_file, "--output_dir", data,
        "--model_type", "wordpiece", "--vocab_size", 100, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --output_dir {data} holds --train_file {corpus_file}; choose another folder"
    ]
    assert snapshot(tmp_path) == before


def test_train_tokenizer(capsys, tmp_path, corpus_file):
    def argv(out):
        return ["--train_file", corpus_file, "--output_dir", out, "--model_type", "wordpiece",
                "--vocab_size", 100]  # fmt: skip

    out = check_rule(capsys, tmp_path, train_tokenizer, argv, corpus_file, "--train_file",
                     "train_tokenizer")  # fmt: skip
    assert "tokenizer.json" in read_marker(out)["entries"]


def test_convert_tokenizer(capsys, tmp_path, ja_unigram):
    model = tmp_path / "spm" / "sp" / "sentencepiece.model"
    model.parent.mkdir(parents=True)
    shutil.copyfile(ja_unigram / "sentencepiece.model", model)

    def argv(out):
        return ["--spm_model", model, "--output_dir", out]

    out = check_rule(capsys, tmp_path, convert_tokenizer, argv, model, "--spm_model",
                     "convert_tokenizer")  # fmt: skip
    # A tokenizer folder of the other tokenizer command is not convert_tokenizer's to replace.
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "command": "train_tokenizer"}))
    refused(capsys, convert_tokenizer, [*argv(out), "--overwrite"], "output of train_tokenizer")


def test_prepare_samples(capsys, tmp_path, corpus_file, en_wordpiece):
    tokenizer = tmp_path / "tok" / "en"
    shutil.copytree(en_wordpiece, tokenizer)

    def argv(out):
        return ["--input", corpus_file, "--tokenizer", tokenizer, "--output_dir", out,
                "--max_seq_len", 32, "--num_shards", 1, "--dupe_factor", 1]  # fmt: skip

    out = check_rule(capsys, tmp_path, prepare_samples, argv, corpus_file, "--input",
                     "prepare_samples")  # fmt: skip
    assert sorted(read_marker(out)["entries"]) == ["meta.json", "shard-00000.jsonl.gz"]
    refused(capsys, prepare_samples, argv(tokenizer / "samples"), "is inside --tokenizer")
    refused(capsys, prepare_samples, argv(tokenizer.parent), "holds --tokenizer")


def test_export_model(capsys, tmp_path, en_wordpiece):
    from tiny import handmade_checkpoint

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    handmade_checkpoint(en_wordpiece, ckpt)

    def argv(out):
        return ["--ckpt_path", ckpt, "--output_dir", out, "--embeddings_only"]

    out = check_rule(capsys, tmp_path, export_model, argv, ckpt, "--ckpt_path", "export_model")
    assert "word_embeddings.safetensors" in read_marker(out)["entries"]
    # The recorded tokenizer (not given on the command line) is an input too; a marked one is
    # refused as another command's output first.
    refused(capsys, export_model, argv(en_wordpiece / "model"), "(train_tokenizer's output)")


def test_plot_runs(capsys, tmp_path):
    from tiny import write_run

    log = tmp_path / "runs" / "small" / "lightning_logs" / "version_0"
    write_run(log, seconds_per_step=5, downstream=False)
    logdir = tmp_path / "runs" / "small"

    def argv(out):
        return ["--logdir", logdir, "--output_dir", out]

    out = check_rule(capsys, tmp_path, plot_runs, argv, logdir, "--logdir", "plot_runs")
    assert "loss_step.png" in read_marker(out)["entries"]
    refused(capsys, plot_runs, argv(logdir / "plots"), "is inside --logdir")


def test_paths_are_compared_resolved(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(ValueError, match="--output_dir .* holds --input"):
        check_inputs(tmp_path / "link", [("--input", tmp_path / "a" / "in.txt")])
    with pytest.raises(ValueError, match="is --input"):
        check_inputs(
            tmp_path / "a" / ".." / "a" / "in.txt", [("--input", tmp_path / "link/in.txt")]
        )
    check_inputs(tmp_path / "b", [("--input", tmp_path / "a" / "in.txt"), ("--config", None)])


def test_soak_refuses_before_it_starts(capsys, tmp_path):
    """soak's refusals come before the (long) fit; its own earlier folder needs --overwrite."""
    from bertlab.research.soak import soak

    config = tmp_path / "configs" / "tiny.yaml"
    config.parent.mkdir()
    config.write_text("trainer: {}\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    earlier = tmp_path / "soak"
    earlier.mkdir()
    (earlier / "fit.log").write_text("a soak from before the marker")
    before = snapshot(tmp_path)
    for out, fragment in [
        (config.parent, "holds --config"),
        (other, "holds no output of soak (notes.txt)"),
        (config, "is --config"),
        (earlier, "holds an earlier output of soak; pass --overwrite"),
    ]:
        refused(capsys, soak, ["--output_dir", out, "--config", config], "--output_dir", fragment)
    assert snapshot(tmp_path) == before
