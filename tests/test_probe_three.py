"""The third mistake probe's findings (issue 17), each through the command's real entry point.

.venv/bin/python -m pytest tests/test_probe_three.py -q

Each test is a class of finding: weights that contradict their config or hold NaN, a checkpoint
a resume cannot continue exactly, a config key given twice, a word no flag takes, an output put
inside another command's folder, a message that lost the user's flag or file.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_probe import _run

from bertlab.train.cli import main


def _error(status_err: tuple[int, str]) -> str:
    status, err = status_err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _fit(argv: list[str], capsys) -> tuple[int, str]:
    """`bertlab fit|test ...` in-process: (exit status, stderr)."""
    try:
        main([str(a) for a in argv])
    except SystemExit as exit_info:
        return int(exit_info.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def _tiny_fit(samples: Path, root: Path, *extra: str) -> list[str]:
    from tiny import fit_args

    return fit_args(samples, root, "--trainer.val_check_interval=2", "--model.warmup_steps=1",
                    *extra, steps=2)  # fmt: skip


def _changed_model(source: Path, folder: Path, **config) -> Path:
    shutil.copytree(source, folder)
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**saved, **config}), encoding="utf-8")
    return folder


def _nan_model(source: Path, folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(n for n in weights if n.endswith("attention.self.query.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_weights_that_contradict_their_config_or_hold_nan_are_refused_by_every_reader(
    masked_lm, en_corpus, tmp_path, capsys
):
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.export.fill_mask import fill_mask

    text = en_corpus / "test.txt"
    wider = _changed_model(masked_lm, tmp_path / "vocab", vocab_size=4000)
    deeper = _changed_model(masked_lm, tmp_path / "layers", num_hidden_layers=3)
    nan = _nan_model(masked_lm, tmp_path / "nan")
    for folder, expected in (
        (wider, f"{wider / 'config.json'} says vocab_size 4000, but model.safetensors has"),
        (deeper, f"{deeper / 'config.json'} says num_hidden_layers 3, but the weights hold 1"),
        (nan, "holds NaN or infinite values"),
    ):
        for fn, argv in (
            (evaluate_mlm, ["--model", folder, "--text", text, "--max_blocks", "4"]),
            (fill_mask, ["--model", folder, "--text", "the [MASK] is here"]),
        ):
            error = _error(_run(fn, argv, capsys))
            assert error.startswith(f"error: --model {folder}") and expected in error, error


def test_a_checkpoint_a_resume_cannot_continue_is_refused(
    en_samples, en_wordpiece, tmp_path, capsys
):
    """Without loop state Lightning restarts at step 0; NaN weights would train on from NaN;
    `best` means nothing to a new process."""
    import torch
    from tiny import handmade_checkpoint

    weights_only = handmade_checkpoint(en_wordpiece, tmp_path / "weights.ckpt")
    checkpoint = torch.load(weights_only, weights_only=True)
    checkpoint["loops"] = {}  # a full checkpoint's key, so only the NaN is wrong
    name = next(k for k in checkpoint["state_dict"] if k.endswith("query.weight"))
    checkpoint["state_dict"][name][0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    shape = ["--model.hidden_size=32", "--model.intermediate_size=64"]
    for subcommand, ckpt, expected in (
        ("fit", weights_only, f"--ckpt_path {weights_only} holds no loop state"),
        ("fit", tmp_path / "nan.ckpt", f"its weight {name} holds NaN"),
        ("test", tmp_path / "nan.ckpt", f"its weight {name} holds NaN"),
        ("fit", "best", "--ckpt_path best: a new bertlab process knows no best checkpoint"),
    ):
        argv = _tiny_fit(en_samples, tmp_path / "run", *shape, f"--ckpt_path={ckpt}")
        error = _error(_fit([subcommand, *argv[1:]], capsys))
        assert expected in error, error
    assert not (tmp_path / "run").exists()


def test_fit_refuses_config_mistakes_before_training(en_samples, en_wordpiece, tmp_path, capsys):
    doubled = tmp_path / "doubled.yaml"
    tiny = (REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8")
    doubled.write_text(tiny + "model:\n  hidden_size: 64\n", encoding="utf-8")
    typo = tmp_path / "typo.yaml"
    typo.write_text(tiny.replace("\n  hidden_size:", "\n  hiden_size:", 1), encoding="utf-8")
    assert "hiden_size" in typo.read_text(encoding="utf-8")
    first_model = tiny.splitlines().index("model:") + 1
    cases = (
        ([f"--config={doubled}"], f"--config {doubled}: key 'model' is on lines {first_model}"),
        ([f"--config={typo}"], f"(in --config {typo};"),
        (["--checkpoint.filename=../../escape"], "--checkpoint.filename ../../escape leaves"),
        (["--checkpoint.monitor=nope_loss"], "--checkpoint.monitor nope_loss: bertlab logs no"),
        (["--heldout.texts=[x]", "--heldout.seed=-1"], "--heldout.seed -1 must be 0 or more"),
    )
    for extra, expected in cases:
        error = _error(_fit(_tiny_fit(en_samples, tmp_path / "run", *extra), capsys))
        assert expected in error, error
    assert not list(tmp_path.glob("*.ckpt")) and not (tmp_path / "run").exists()


def test_heldout_tokenizer_of_another_vocabulary_is_refused(
    en_samples, en_corpus, ja_unigram, tmp_path, capsys
):
    argv = _tiny_fit(en_samples, tmp_path / "run", f"--heldout.texts=[{en_corpus / 'test.txt'}]",
                     f"--heldout.tokenizer={ja_unigram}")  # fmt: skip
    error = _error(_fit(argv, capsys))
    assert f"--heldout.tokenizer {ja_unigram} is another vocabulary than the data's" in error


def test_samples_meta_json_counts_and_unlisted_shards(en_samples, tmp_path, capsys):
    from bertlab.research.budget import plan_budget

    train = tmp_path / "train"
    shutil.copytree(en_samples / "train", train)
    meta = json.loads((train / "meta.json").read_text(encoding="utf-8"))
    (train / "meta.json").write_text(json.dumps({**meta, "num_samples": -5}), encoding="utf-8")
    error = _error(_run(plan_budget, ["--batch_size", "8", "--samples", train], capsys))
    assert f"{train / 'meta.json'} is damaged: num_samples -5 is no count" in error
    (train / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    listed = meta["shards"][0]["file"]
    shutil.copy(train / listed, train / "shard-99999.jsonl.gz")
    samples = tmp_path / "samples"
    samples.mkdir()
    for split in ("valid", "test"):
        shutil.copytree(en_samples / split, samples / split)
    (samples / "train").symlink_to(train)
    status, err = _fit(_tiny_fit(samples, tmp_path / "run"), capsys)
    assert status == 0, err
    unlisted = [line for line in err.splitlines() if "shard-99999" in line]
    assert len(unlisted) == 1 and unlisted[0].startswith("warning: "), err
    assert "not listed in" in unlisted[0]


def test_the_front_door_refuses_stray_words_and_repeated_flags(en_corpus, tmp_path, capsys):
    from bertlab.corpus.prepare import prepare_corpus

    text = en_corpus / "test.txt"
    out = tmp_path / "c"
    error = _error(_run(prepare_corpus, ["--input", text, "--output_dir", out, "--output_dir",
                                         tmp_path / "d"], capsys))  # fmt: skip
    assert f"--output_dir is given twice ('{out}' and '{tmp_path / 'd'}')" in error
    error = _error(_run(prepare_corpus, ["--output_dir", out, "stray", "--input", text], capsys))
    assert f"unexpected argument 'stray' after {out}" in error
    assert not out.exists() and not (tmp_path / "d").exists()
    # fire's list syntax is a list, as `--input a b` is
    other = tmp_path / "other.txt"
    other.write_text(text.read_text(encoding="utf-8"), encoding="utf-8")
    argv = ["--input", f"[{text},{other}]", "--output_dir", out, "--valid_docs", "1"]
    status, err = _run(prepare_corpus, [*argv, "--test_docs", "1"], capsys)
    assert status == 0, err
    assert (out / "train.txt").is_file()


def test_no_tool_writes_inside_another_commands_output(
    en_corpus, en_wordpiece, masked_lm, tmp_path, capsys
):
    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.research.benchmark import benchmark

    tok = tmp_path / "tok"
    shutil.copytree(en_wordpiece, tok)
    before = sorted(p.name for p in tok.iterdir())
    text = en_corpus / "test.txt"
    for fn, argv, flag, path in (
        (prepare_corpus, ["--input", text], "--output_dir", tok / "corpus"),
        (evaluate_mlm, ["--model", masked_lm, "--text", text], "--output", tok / "r.json"),
        (benchmark, ["--quick", "--input", text], "--work_dir", tok / "cache"),
    ):
        error = _error(_run(fn, [*argv, flag, path], capsys))
        assert f"{flag} {path} is inside {tok} (train_tokenizer's output)" in error, error
    error = _error(_run(benchmark, ["--quick", "--input", text, "--work_dir", tok], capsys))
    assert f"--work_dir {tok} holds the output of train_tokenizer" in error
    assert sorted(p.name for p in tok.iterdir()) == before
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    error = _error(_run(prepare_corpus, ["--input", text, "--output_dir", link], capsys))
    assert f"--output_dir {link} is a link to {tmp_path / 'nowhere'}, which does not exist" in error


def test_readers_name_the_flag_and_the_file(
    masked_lm, en_samples, en_corpus, en_wordpiece, tmp_path, capsys
):
    import bz2

    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.export.fill_mask import fill_mask
    from bertlab.samples.prepare import prepare_samples

    text = en_corpus / "test.txt"
    base = ["--model", masked_lm, "--max_blocks", "4"]
    packed = tmp_path / "test.txt.bz2"
    packed.write_bytes(bz2.compress(text.read_bytes()))
    samples = en_samples / "train"
    broken = tmp_path / "broken"
    shutil.copytree(en_wordpiece, broken)
    config = json.loads((broken / "tokenizer.json").read_text(encoding="utf-8"))
    (broken / "tokenizer.json").write_text(json.dumps({**config, "model": "x"}), encoding="utf-8")
    for fn, argv, expected in (
        (evaluate_mlm, [*base, "--text", text, "--seed", "-1"], "--seed -1 must be in [0, 2**32)"),
        (evaluate_mlm, [*base, "--text", packed], f"{packed}: bzip2-compressed; give it as"),
        (evaluate_mlm, [*base, "--text", text, "--tokenizer", samples],
         f"--tokenizer {samples} holds no tokenizer files (tokenizer.json); it is prepare_s"),
        (prepare_samples, ["--input", text, "--tokenizer", broken, "--output_dir",
                           tmp_path / "s"], f"tokenizer folder {broken}"),
    ):  # fmt: skip
        error = _error(_run(fn, argv, capsys))
        assert expected in error, error
    assert "'str' object" not in error or "structure" in error
    status, err = _run(fill_mask, ["--model", masked_lm, "--text", "東京は[MASK]です"], capsys)
    assert status == 0
    assert any(line.startswith("warning: --text #1:") and "[UNK]" in line
               for line in err.splitlines()), err  # fmt: skip


def test_plot_runs_and_finetune_refuse_inputs_that_would_mean_nothing(masked_lm, tmp_path, capsys):
    from tiny import write_run

    from bertlab.downstream.finetune import finetune
    from bertlab.research.plots import plot_runs

    write_run(tmp_path / "a", seconds_per_step=0.1, downstream=False)
    write_run(tmp_path / "b", seconds_per_step=0.1, downstream=False)
    runs = ["--logdir", tmp_path / "a", tmp_path / "b", "--output_dir", tmp_path / "plots"]
    assert "--names: value 1 is empty" in _error(_run(plot_runs, [*runs, "--names", "", "b"],
                                                     capsys))  # fmt: skip
    assert "--names names 'x' twice" in _error(_run(plot_runs, [*runs, "--names", "x", "x"],
                                                        capsys))  # fmt: skip
    task = tmp_path / "task.tsv"
    task.write_text("1\tA good film.\n0\tA bad film.\n1\t \n", encoding="utf-8")
    base = ["--model", masked_lm, "--max_epochs", "1"]
    error = _error(_run(finetune, [*base, "--train_file", task, "--valid_file", task], capsys))
    assert f"{task} line 3: empty text" in error
    error = _error(_run(finetune, [*base, "--train_file", tmp_path, "--valid_file", task], capsys))
    assert f"--train_file {tmp_path} is a folder; give a .tsv or .jsonl file" in error


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


EXPORT = [str(REPO / "tools" / "export_model.py"), "--ckpt_path", "x", "--output_dir", "m"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
@pytest.mark.parametrize("command", [["-m", "bertlab", "fit"], EXPORT])
def test_ctrl_c_during_the_imports_is_one_line(command, tmp_path):
    """The signal lands once torch's library is loaded (the imports are then seconds from done):
    a command is stopped at once with 130 and one line, not a KeyboardInterrupt traceback."""
    process = subprocess.Popen([sys.executable, *command], cwd=tmp_path, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not _mapped(process.pid, "libtorch") and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == "interrupted by SIGINT: stopped at once; no output is half-written", err


def test_the_fourth_probes_mistakes_are_one_line(en_corpus, en_wordpiece, tmp_path, capsys):
    """A symlink loop, `--lowercase 0`, a vocabulary of 1e10, a widget longer than the model,
    and an OSError of a temporary file named by the flag whose path it is."""
    from tiny import handmade_checkpoint

    from bertlab.export.model import export_model
    from bertlab.export.model_card import WIDGET_WORDS, widget_sentence
    from bertlab.tokenizer.training import train_tokenizer

    text = en_corpus / "test.txt"
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    out = ["--output_dir", tmp_path / "tok"]
    for argv, expected in (
        (["--train_file", loop, *out], f"--train_file {loop} is a symbolic link that points to"),
        (["--train_file", text, *out, "--vocab_size", "10000000000"], "is beyond any tokenizer"),
        (["--train_file", text, *out, "--lowercase", "2"], "--lowercase expects true or false"),
    ):
        assert expected in _error(_run(train_tokenizer, argv, capsys))
    status, err = _run(train_tokenizer, ["--train_file", text, *out, "--lowercase", "0",
                                         "--model_type", "wordpiece", "--vocab_size", "500"],
                       capsys)  # fmt: skip
    assert status == 0, err
    ckpt = handmade_checkpoint(en_wordpiece, tmp_path / "tiny.ckpt")
    long = " ".join(["word"] * 80) + " [MASK]"
    error = _error(_run(export_model, ["--ckpt_path", ckpt, "--output_dir", tmp_path / "m",
                                       "--widget_text", long], capsys))  # fmt: skip
    assert "--widget_text: the widget sentence is" in error and "than the model's 64" in error
    assert not (tmp_path / "m").exists()
    line = " ".join(f"w{i}" for i in range(100))
    assert len(widget_sentence(None, None, "[MASK]", line).split()) == WIDGET_WORDS

    def writes(output_dir: str) -> None:
        """A command whose temporary file beside its output cannot be written."""
        raise PermissionError(13, "Permission denied", str(Path(output_dir).parent / ".t2.x.tmp"))

    error = _error(_run(writes, ["--output_dir", tmp_path / "t2"], capsys))
    assert error == (f"error: --output_dir {tmp_path / 't2'}: permission denied "
                     f"({tmp_path / '.t2.x.tmp'})")  # fmt: skip


def test_text_readers_refuse_a_shard_and_see_through_links(
    masked_lm, en_samples, en_corpus, tmp_path, capsys
):
    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.downstream.heldout import evaluate_mlm

    shard = next((en_samples / "test").glob("shard-*.jsonl.gz"))
    base = ["--model", masked_lm, "--max_blocks", "4"]
    error = _error(_run(evaluate_mlm, [*base, "--text", shard], capsys))
    assert f"{shard}: a file of prepare_samples's output, not corpus text" in error
    text = en_corpus / "test.txt"
    link = tmp_path / "unigram.txt"
    link.hardlink_to(text)
    status, err = _run(evaluate_mlm, [*base, "--text", text, "--unigram_corpus", link], capsys)
    assert status == 0 and f"warning: --unigram_corpus {link} is also a --text" in err, err
    error = _error(_run(prepare_corpus, ["--input", text, text, "--output_dir", tmp_path / "c"],
                        capsys))  # fmt: skip
    assert f"--input names '{text}' twice; give each value once" in error


def test_the_fourth_probes_silent_inputs_are_refused_or_said(
    masked_lm, en_samples, en_wordpiece, shared_data, tmp_path, capsys
):
    from bertlab.downstream.finetune import finetune
    from bertlab.research.benchmark import benchmark
    from bertlab.research.budget import plan_budget
    from bertlab.research.scale import scale_benchmark

    plan = ["--batch_size", "8", "--seq_len", "64", "--num_samples", "1000"]
    error = _error(_run(plan_budget, [*plan, "--tokens_per_second", "inf"], capsys))
    assert error == "error: --tokens_per_second expects a finite number, got 'inf'"
    train = tmp_path / "train"
    shutil.copytree(en_samples / "train", train)
    meta = json.loads((train / "meta.json").read_text(encoding="utf-8"))
    meta["shards"][0]["num_samples"] += 1
    (train / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    error = _error(_run(plan_budget, ["--batch_size", "8", "--samples", train], capsys))
    assert "is damaged: num_samples" in error and "is not the sum of its shards'" in error
    task = tmp_path / "task.tsv"
    rows = [f"{label}\tA {word} film." for label, word in ((1, "good"), (0, "bad"))] * 4
    task.write_text("label\tsentence\n" + "\n".join(rows) + "\nlabel\tsentence\n", "utf-8")
    base = ["--model", masked_lm, "--max_epochs", "1", "--max_seq_len", "32"]
    error = _error(_run(finetune, [*base, "--train_file", task, "--valid_file", task], capsys))
    assert f"{task} line 10: the header line again" in error
    task.write_text("label\tsentence\n" + "\n".join(rows) + "\n", "utf-8")
    link = tmp_path / "valid.tsv"
    link.hardlink_to(task)
    status, err = _run(finetune, [*base, "--train_file", task, "--valid_file", link], capsys)
    assert status == 0 and f"warning: --valid_file {link} is also the --train_file" in err, err
    tok = tmp_path / "tok"
    shutil.copytree(en_wordpiece, tok)
    error = _error(_run(benchmark, ["--quick", "--output", tok / "b.jsonl"], capsys))
    assert f"--output {tok / 'b.jsonl'} is inside {tok} (train_tokenizer's output)" in error
    error = _error(_run(scale_benchmark, ["--input", shared_data / "enwiki-sample.xml.bz2",
                                          "--work_dir", tmp_path / "sw", "--sizes_mb", "0.2",
                                          "--num_proc", "1"], capsys))  # fmt: skip
    assert "train_tokenizer refused the corpus scaled from --input: --vocab_size" in error
    assert not (tmp_path / "sw").exists()  # a refused run leaves no scratch
    error = _error(_run(scale_benchmark, ["--input", shared_data / "enwiki-sample.xml.bz2",
                                          "--work_dir", tmp_path / "sw", "--vocab_size", "3"],
                        capsys))  # fmt: skip
    assert error == "error: --vocab_size 3 must exceed the 5 special tokens"


def test_the_fourth_probes_fit_findings(en_samples, en_corpus, en_wordpiece, tmp_path, capsys):
    """fit / test: settings refused naming the flag, held-out data that is training data said."""
    from tiny import handmade_checkpoint

    listed = tmp_path / "listed.yaml"
    listed.write_text("model: [1, 2]\n", encoding="utf-8")
    tok = tmp_path / "tok"
    shutil.copytree(en_wordpiece, tok)
    heldout = f"--heldout.texts=[{en_corpus / 'test.txt'}]"
    for extra, expected in (
        ([f"--config={listed}"], f"--config {listed}: model is a YAML list, not a section"),
        (["--model.lr=nan"], "--model.lr nan: expected a finite number"),
        (["--trainer.gradient_clip_val=inf"], "--trainer.gradient_clip_val inf: expected a finite"),
        (["--trainer.devices=0"], "--trainer.devices 0: give a number of devices of at least 1"),
        ([heldout, "--heldout.max_blocks=0"], "--heldout.max_blocks 0 must be at least 1"),
        ([heldout, f"--heldout.output={tok / 'h.jsonl'}"],
         f"--heldout.output {tok / 'h.jsonl'} is inside {tok} (train_tokenizer's output)"),
    ):  # fmt: skip
        error = _error(_fit(_tiny_fit(en_samples, tmp_path / "run", *extra), capsys))
        assert expected in error, error
    argv = _tiny_fit(en_samples, tmp_path / "run", "--ckpt_path=last")
    error = _error(_fit(["test", *argv[1:]], capsys))
    assert "--ckpt_path last: no checkpoint in" in error and "to score" in error
    garbled = tmp_path / "garbled.ckpt"
    data = bytearray(handmade_checkpoint(en_wordpiece, garbled).read_bytes())
    data[-200:-150] = b"\xa2" * 50  # inside the zip's central directory
    garbled.write_bytes(bytes(data))
    argv = _tiny_fit(en_samples, tmp_path / "run", f"--ckpt_path={garbled}")
    error = _error(_fit(["test", *argv[1:]], capsys))
    assert f"--ckpt_path {garbled} is not a complete checkpoint" in error
    # Validation samples copied from the training ones, and the training text as held-out text.
    samples = tmp_path / "samples"
    shutil.copytree(en_samples / "train", samples / "train")
    shutil.copytree(en_samples / "train", samples / "valid")
    shutil.copytree(en_samples / "test", samples / "test")
    source = json.loads((samples / "train" / "meta.json").read_text("utf-8"))["source_files"][0]
    status, err = _fit(_tiny_fit(samples, tmp_path / "run2", f"--heldout.texts=[{source}]",
                                 "--heldout.max_blocks=2"), capsys)  # fmt: skip
    assert status == 0, err
    lines = [line for line in err.splitlines() if "its loss is not held-out" in line]
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), err
    assert f"--data.val_files ({samples / 'valid'}) was made from {source}" in lines[0] + lines[1]


def test_the_fourth_probes_tool_findings(masked_lm, en_corpus, en_samples, tmp_path, capsys):
    from bertlab.downstream.finetune import finetune
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.research.budget import plan_budget

    base = ["--model", masked_lm, "--max_blocks", "4"]
    error = _error(_run(evaluate_mlm, [*base, "--text", en_corpus], capsys))
    assert f"--text {en_corpus}: a folder, not a file" in error
    task = tmp_path / "task.tsv"
    task.write_text("1\tA good film.\n0\tA bad film.\n", encoding="utf-8")
    error = _error(_run(finetune, ["--model", masked_lm, "--train_file", task, "--valid_file",
                                   task, "--seed", "-1"], capsys))  # fmt: skip
    assert "--seed -1 must be in [0, 2**32)" in error
    train = tmp_path / "train"
    shutil.copytree(en_samples / "train", train)
    meta = json.loads((train / "meta.json").read_text(encoding="utf-8"))
    (train / "meta.json").write_text(json.dumps({**meta, "nsp": "yes"}), encoding="utf-8")
    error = _error(_run(plan_budget, ["--batch_size", "8", "--samples", train], capsys))
    assert "is damaged: nsp 'yes' is not true or false" in error


def test_the_fifth_probes_findings(masked_lm, en_corpus, en_wordpiece, tmp_path, capsys):
    """Help whatever else is typed, URLs and other commands' files where a local path or a
    text is wanted, a negative seed anywhere, an export folder that is not one."""
    from tiny import handmade_checkpoint

    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.export.fill_mask import fill_mask
    from bertlab.export.hub import push_to_hub
    from bertlab.export.model import export_model
    from bertlab.research.budget import plan_budget
    from bertlab.samples.prepare import prepare_samples
    from bertlab.tokenizer.training import train_tokenizer

    text = en_corpus / "test.txt"
    status, err = _run(prepare_corpus, ["--input", tmp_path / "nothing.txt", "--help"], capsys)
    assert status == 0 and "error" not in err
    error = _error(_run(prepare_corpus, ["--input", text, "--output_dir", "s3://bucket/c"], capsys))
    assert "is a URL; this command writes a local path" in error
    assert not Path("s3:").exists()
    vocab = en_wordpiece / "vocab.txt"
    error = _error(_run(train_tokenizer, ["--train_file", vocab, "--output_dir", tmp_path / "t"],
                        capsys))  # fmt: skip
    assert f"--train_file {vocab}: a file of train_tokenizer's output, not corpus text" in error
    error = _error(_run(prepare_samples, ["--input", text, "--tokenizer", en_wordpiece,
                                          "--output_dir", tmp_path / "s", "--seed", "-1"],
                        capsys))  # fmt: skip
    assert error == "error: --seed -1 must be in [0, 2**32)"
    status, err = _run(fill_mask, ["--model", masked_lm, "--text", "the [MASK] is here"], capsys)
    assert status == 0 and f"warning: --model {masked_lm}: its weights were never trained" in err
    status, err = _run(plan_budget, ["--batch_size", "8", "--seq_len", "64", "--target_tokens",
                                     "1"], capsys)  # fmt: skip
    assert status == 0 and "warning: the budget of 1 tokens is less than one step's 512" in err
    ckpt = handmade_checkpoint(en_wordpiece, tmp_path / "tiny.ckpt")
    model = tmp_path / "model"
    export_model(str(ckpt), str(model), language="en")
    embeddings = tmp_path / "embeddings"
    export_model(str(ckpt), str(embeddings), language="en", embeddings_only=True)
    capsys.readouterr()
    shutil.copy(embeddings / "word_embeddings.safetensors", model / "model.safetensors")
    with pytest.raises(ValueError, match="the weights hold no encoder layer"):
        push_to_hub(str(model), "someone/tiny-bert", dry_run=True)
    shutil.copy(en_wordpiece / ".bertlab-output", model / ".bertlab-output")
    with pytest.raises(ValueError, match="holds the output of train_tokenizer, not export_model"):
        push_to_hub(str(model), "someone/tiny-bert", dry_run=True)


def test_the_fifth_probes_fit_findings(en_samples, en_wordpiece, masked_lm, tmp_path, capsys):
    from tiny import handmade_checkpoint

    from bertlab.downstream.finetune import finetune

    tiny = REPO / "configs" / "tiny.yaml"
    run = tmp_path / "run"
    error = _error(_fit(["fit", "--trainer.max_steps=2", f"--config={tiny}"], capsys))
    assert f"--trainer.max_steps comes before --config {tiny}, which sets" in error
    for extra, expected in (
        (["--trainer.max_epochs=0"], "--trainer.max_epochs 0: bertlab fit would train on no"),
        (["--trainer.check_val_every_n_epoch=0"], "--trainer.check_val_every_n_epoch 0 must be"),
        (["--trainer.val_check_interval=0.5"], "a fraction of an epoch needs"),
        (["--trainer.logger=false"], "--trainer.logger false: bertlab's learning-rate"),
        (["--trainer.default_root_dir=/dev/null"], "--trainer.default_root_dir /dev/null: not a"),
    ):
        error = _error(_fit(_tiny_fit(en_samples, run, *extra), capsys))
        assert expected in error, error
    status, err = _fit(_tiny_fit(en_samples, run, "--checkpoint.save_last=false",
                                 "--checkpoint.save_top_k=0"), capsys)  # fmt: skip
    assert status == 0 and "warning: --checkpoint.save_last false with" in err, err
    # test scores the checkpoint's weights: how they were trained (warmup) is no contradiction
    ckpt = handmade_checkpoint(en_wordpiece, tmp_path / "tiny.ckpt")
    argv = _tiny_fit(en_samples, tmp_path / "scored", "--model.hidden_size=32",
                     "--model.intermediate_size=64", f"--ckpt_path={ckpt}")  # fmt: skip
    status, err = _fit(["test", *argv[1:]], capsys)
    assert status == 0, err
    task = tmp_path / "t.jsonl"
    task.write_text('{"text": "good", "label": 1}\n{"text": null, "label": 0}\n', "utf-8")
    error = _error(_run(finetune, ["--model", masked_lm, "--train_file", task, "--valid_file",
                                   task], capsys))  # fmt: skip
    assert f"{task} line 2: 'text' is null, not text" in error


def test_a_value_that_starts_with_dashes_and_a_held_out_split_as_input(en_corpus, tmp_path,
                                                                       capsys):  # fmt: skip
    from bertlab.command import run

    got = {}

    def overrides(overrides: str = "", max_steps: int = 1) -> None:
        """A command with a free-form flag, as soak's --overrides."""
        got.update(overrides=overrides, max_steps=max_steps)

    run(overrides, ["--overrides", "--data.x a --model.y b", "--max_steps", "8"])
    assert got == {"overrides": "--data.x a --model.y b", "max_steps": 8}
    from bertlab.corpus.prepare import prepare_corpus

    status, err = _run(prepare_corpus, ["--input", en_corpus / "train.txt", en_corpus / "test.txt",
                                        "--output_dir", tmp_path / "c"], capsys)  # fmt: skip
    assert status == 0, err
    assert f"warning: --input {en_corpus / 'test.txt'} is the held-out test split" in err


def test_the_fifth_probes_remaining_findings(masked_lm, en_samples, en_wordpiece, tmp_path, capsys):
    """Emoji-only text, a null setting, a short --seq_len, checkpointing switched off, a
    samples record without its fingerprint, a vocab.txt-only folder, soak's own flags, and a
    gpu_check input too small to check with."""
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.research.budget import plan_budget
    from bertlab.research.gpu_check import gpu_check
    from bertlab.research.soak import soak

    emoji = tmp_path / "emoji.txt"
    emoji.write_text(("\U0001f600\U0001f389 " * 30 + "\n") * 20, encoding="utf-8")
    error = _error(_run(evaluate_mlm, ["--model", masked_lm, "--text", emoji], capsys))
    assert f"--text {emoji}: no word piece to mask, every token is [UNK]" in error
    nulls = tmp_path / "nulls.yaml"
    nulls.write_text("model:\n  lr: null\n", encoding="utf-8")
    for extra, expected in (
        ([f"--config={nulls}"], "--model.lr is null; give a number"),
        (["--trainer.enable_checkpointing=false"], "--trainer.enable_checkpointing false: "),
    ):
        error = _error(_fit(_tiny_fit(en_samples, tmp_path / "run", *extra), capsys))
        assert expected in error, error
    plan = ["--batch_size", "8", "--num_samples", "10", "--seq_len", "1"]
    assert "--seq_len 1 is too small" in _error(_run(plan_budget, plan, capsys))
    train = tmp_path / "train"
    shutil.copytree(en_samples / "train", train)
    meta = json.loads((train / "meta.json").read_text(encoding="utf-8"))
    del meta["tokenizer"]["fingerprint"]
    (train / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    error = _error(_run(plan_budget, ["--batch_size", "8", "--samples", train], capsys))
    assert "is damaged: its tokenizer record has no fingerprint" in error
    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    shutil.copy(en_wordpiece / "vocab.txt", vocab_only / "vocab.txt")
    error = _error(_run(evaluate_mlm, ["--model", masked_lm, "--text", emoji, "--tokenizer",
                                       vocab_only], capsys))  # fmt: skip
    assert "holds vocab.txt but no tokenizer.json or tokenizer_config.json" in error
    argv = ["--output_dir", tmp_path / "soak", "--config", REPO / "configs" / "tiny.yaml"]
    error = _error(_run(soak, [*argv, "--overrides=--trainer.default_root_dir=elsewhere"], capsys))
    assert "--overrides sets --trainer.default_root_dir, which soak sets itself" in error
    small = tmp_path / "small.txt"
    small.write_text("One document.\nOf two lines.\n", encoding="utf-8")
    out = tmp_path / "gpu-check"
    error = _error(_run(gpu_check, ["--device", "cpu", "--smoke", "--input", small,
                                    "--output_dir", out], capsys))  # fmt: skip
    assert error.startswith(f"error: --input {small}: ") and not out.exists()


def test_the_sixth_probes_findings(masked_lm, en_corpus, tmp_path, capsys):
    from bertlab.export.fill_mask import fill_mask
    from bertlab.research.budget import plan_budget
    from bertlab.tokenizer.training import train_tokenizer

    status, err = _run(fill_mask, ["--model", masked_lm, "--text", "[MASK]"], capsys)
    assert status == 0, err  # a text that is one mask, not fire's list syntax
    error = _error(_run(train_tokenizer, ["--train_file", en_corpus / "test.txt", "--output_dir",
                                          tmp_path / "t", "--character_coverage", "1e-9"],
                        capsys))  # fmt: skip
    assert "--character_coverage 1e-09: SentencePiece takes 0.98 to 1" in error
    status, err = _run(plan_budget, ["--batch_size", "100000", "--seq_len", "64",
                                     "--num_samples", "1000"], capsys)  # fmt: skip
    assert status == 0 and "warning: a step of 100,000 sequences is more than the 1,000" in err


def test_the_sixth_probes_checkpoint_and_folder_findings(
    en_samples, en_corpus, en_wordpiece, tmp_path, capsys
):
    """Junk inside a checkpoint's tensor bytes (its zip checksum tells), a checkpoint missing a
    weight, and validate writing its logs into another command's folder."""
    import torch
    from tiny import handmade_checkpoint

    from bertlab.export.model import export_model

    ckpt = handmade_checkpoint(en_wordpiece, tmp_path / "tiny.ckpt")
    junk = tmp_path / "junk.ckpt"
    data = bytearray(ckpt.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # inside a tensor's bytes: still a valid zip
    junk.write_bytes(bytes(data))
    error = _error(_run(export_model, ["--ckpt_path", junk, "--output_dir", tmp_path / "m"],
                        capsys))  # fmt: skip
    assert f"--ckpt_path {junk} is damaged:" in error and "does not match its checksum" in error
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["state_dict"][next(k for k in checkpoint["state_dict"] if "query" in k)]
    torch.save(checkpoint, tmp_path / "missing.ckpt")
    argv = _tiny_fit(
        en_samples,
        tmp_path / "run",
        "--model.hidden_size=32",
        "--model.intermediate_size=64",
        f"--ckpt_path={tmp_path / 'missing.ckpt'}",
    )
    error = _error(_fit(["test", *argv[1:]], capsys))
    assert "is damaged: its weights do not fit the model its settings describe" in error
    assert not (tmp_path / "run").exists()
    corpus = tmp_path / "corpus"
    shutil.copytree(en_corpus, corpus)
    argv = _tiny_fit(en_samples, corpus)
    error = _error(_fit(["validate", *argv[1:]], capsys))
    assert f"--trainer.default_root_dir {corpus} holds the output of prepare_corpus" in error


def test_the_sixth_probes_misleading_figures_are_said(masked_lm, en_corpus, tmp_path, capsys):
    """A held-out text the model was trained on, a unigram corpus the tokenizer cannot spell, a
    compressed held-out split as a corpus input: each said in one warning line."""
    import gzip

    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.downstream.heldout import evaluate_mlm

    train, test = en_corpus / "train.txt", en_corpus / "test.txt"
    status, err = _run(evaluate_mlm, ["--model", masked_lm, "--text", train, test], capsys)
    assert status == 0, err
    assert f"warning: --text {train} is the train split of the corpus in {en_corpus}" in err
    assert f"--text {test} is the train split" not in err
    carded = tmp_path / "carded"
    shutil.copytree(masked_lm, carded)
    (carded / "README.md").write_text("| | |\n| --- | --- |\n| corpus files | corpus/train.txt |\n")
    copy = tmp_path / "corpus" / "train.txt"  # a copy: no corpus marker beside it
    copy.parent.mkdir()
    shutil.copy(train, copy)
    status, err = _run(evaluate_mlm, ["--model", carded, "--text", copy], capsys)
    assert status == 0 and "card names corpus/train.txt as its training corpus" in err, err
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("日本語の文章です。\n東京は大きな都市です。\n" * 50, encoding="utf-8")
    status, err = _run(evaluate_mlm, ["--model", masked_lm, "--text", test,
                                      "--unigram_corpus", foreign], capsys)  # fmt: skip
    assert status == 0 and f"warning: --unigram_corpus {foreign}: " in err, err
    assert "are [UNK] for this tokenizer" in err
    status, err = _run(evaluate_mlm, ["--model", masked_lm, "--text", test,
                                      "--unigram_corpus", train], capsys)  # fmt: skip
    assert status == 0 and "--unigram_corpus" not in err, err
    corpus = tmp_path / "earlier"
    shutil.copytree(en_corpus, corpus)
    packed = corpus / "valid.txt.gz"
    packed.write_bytes(gzip.compress((corpus / "valid.txt").read_bytes()))
    status, err = _run(prepare_corpus, ["--input", train, packed, "--output_dir",
                                        tmp_path / "c"], capsys)  # fmt: skip
    assert status == 0 and f"warning: --input {packed} is the held-out valid split" in err, err


def test_bad_sample_lines_are_refused_by_the_trainer_recipe_too(en_samples, tmp_path):
    """The Hugging Face recipe's reader checks each line as bertlab's loader does."""
    import gzip

    from bertlab.research.hf_recipe import TokenIdsDataset

    samples = tmp_path / "samples"
    shutil.copytree(en_samples / "valid", samples)
    meta = json.loads((samples / "meta.json").read_text(encoding="utf-8"))
    for listed in meta["shards"]:
        del listed["num_bytes"]  # the lines are checked, not the size of a shard edited here
    (samples / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    shard = samples / "shard-00000.jsonl.gz"
    lines = gzip.decompress(shard.read_bytes()).decode().splitlines()
    for number, change in ((1, {"next_sentence_label": None}), (2, {"input_ids": [2, 1.5, 3]}),
                           (3, {"token_type_ids": [True, 0, 0]})):  # fmt: skip
        broken = list(lines)
        sample = json.loads(broken[number - 1])
        sample.update(change)
        if change.get("token_type_ids"):
            sample["input_ids"] = sample["input_ids"][:3]
        broken[number - 1] = json.dumps(sample)
        shard.write_bytes(gzip.compress(("\n".join(broken) + "\n").encode()))
        with pytest.raises(ValueError, match=rf"^{shard}:{number}: "):
            TokenIdsDataset(str(samples), [0, 1, 2, 3, 4])


def test_quality_benchmark_refuses_fit_flags_before_any_run(tmp_path, capsys):
    from bertlab.research.quality import quality_benchmark

    out = tmp_path / "quality"
    for flag in ("--equal_args", "--budget_args"):
        argv = [f"{flag}=--model.lrr=3", "--output_dir", out, "--work_dir", tmp_path / "cache"]
        error = _error(_run(quality_benchmark, argv, capsys))
        assert error == f"error: {flag} --model.lrr=3: unrecognized arguments: --model.lrr=3"
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_the_seventh_probes_output_and_fit_findings(en_samples, en_corpus, tmp_path, capsys):
    """An output that is a link to the command's earlier output, a shard of another size than
    its meta.json records, a devices word, a fit that would validate or log nothing."""
    import gzip

    from bertlab.tokenizer.training import train_tokenizer

    tokenizer = tmp_path / "tok"
    argv = ["--train_file", en_corpus / "test.txt", "--model_type", "wordpiece",
            "--vocab_size", "300"]  # fmt: skip
    assert _run(train_tokenizer, [*argv, "--output_dir", tokenizer], capsys)[0] == 0
    link = tmp_path / "link"
    link.symlink_to(tokenizer)
    status, err = _run(train_tokenizer, [*argv, "--output_dir", link, "--overwrite"], capsys)
    assert status == 0, err
    assert link.is_symlink() and link.resolve() == tokenizer  # the user's link, kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "tok"]  # nothing left beside
    assert (tokenizer / "tokenizer.json").is_file()

    samples = tmp_path / "samples"
    shutil.copytree(en_samples, samples)
    shard = samples / "train" / "shard-00000.jsonl.gz"
    lines = gzip.decompress(shard.read_bytes()).splitlines(keepends=True)
    shard.write_bytes(gzip.compress(b"".join(lines[:100])))  # a valid gzip, cut short
    error = _error(_fit(_tiny_fit(samples, tmp_path / "run"), capsys))
    assert f"--data.train_files: {shard} is damaged: " in error
    assert "but its meta.json records" in error and not (tmp_path / "run").exists()

    error = _error(_fit(_tiny_fit(en_samples, tmp_path / "run", "--trainer.devices=two"), capsys))
    assert error.startswith("error: --trainer.devices two: give a number of devices")
    status, err = _fit(_tiny_fit(en_samples, tmp_path / "run", "--trainer.limit_val_batches=0",
                                 "--trainer.log_every_n_steps=0"), capsys)  # fmt: skip
    assert status == 0, err
    assert "warning: --trainer.limit_val_batches 0: no validation will run" in err
    assert "warning: --trainer.log_every_n_steps 0: no training loss" in err


def test_the_seventh_probes_tool_findings(masked_lm, en_corpus, en_wordpiece, tmp_path, capsys):
    from tiny import handmade_checkpoint, write_run

    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.downstream.finetune import finetune
    from bertlab.export.model import export_model
    from bertlab.research.budget import plan_budget
    from bertlab.research.plots import plot_runs

    logs = tmp_path / "logs"
    write_run(logs, seconds_per_step=5, downstream=False)
    error = _error(_run(plot_runs, ["--logdir", logs, "--output_dir", tmp_path / "p",
                                    "--dpi", "70000"], capsys))  # fmt: skip
    assert error.startswith("error: --dpi 70000: at most 1200") and not (tmp_path / "p").exists()

    ckpt = handmade_checkpoint(en_wordpiece, tmp_path / "tiny.ckpt")
    out = tmp_path / "model"
    error = _error(_run(export_model, ["--ckpt_path", ckpt, "--output_dir", out,
                                       "--embeddings_only", "--widget_text", "a [MASK]"],
                        capsys))  # fmt: skip
    assert "--widget_text: an --embeddings_only export has no masked-LM head" in error
    error = _error(_run(export_model, ["--ckpt_path", ckpt, "--output_dir", out, "--config",
                                       tmp_path], capsys))  # fmt: skip
    assert error == f"error: --config {tmp_path} is a folder; give the run's config.yaml in it"
    status, err = _run(export_model, ["--ckpt_path", ckpt, "--output_dir", out, "--language",
                                      "en, ja"], capsys)  # fmt: skip
    assert status == 0, err
    assert "language:\n- en\n- ja\n" in (out / "README.md").read_text(encoding="utf-8")

    raw = en_corpus / "test.txt"
    error = _error(_run(prepare_corpus, ["--input", raw, "--output_dir", tmp_path / "c",
                                         "--dataset_split", "validation"], capsys))  # fmt: skip
    assert error == "error: --dataset_split is only used with --dataset NAME"
    corpus = ["--input", raw, "--output_dir", tmp_path / "c"]
    error = _error(_run(prepare_corpus, [*corpus, "--valid_docs", "0.5", "--test_docs", "0.5"],
                        capsys))  # fmt: skip
    assert "hold out every document: their fractions must sum to less than 1" in error
    status, err = _run(prepare_corpus, [*corpus, "--valid_docs", "0.4", "--test_docs", "0.4"],
                       capsys)  # fmt: skip
    assert status == 0 and "documents: only" in err and "are left for training" in err, err

    error = _error(_run(plan_budget, ["--batch_size", "8", "--target", "bert-phased",
                                      "--target_tokens", "1000000"], capsys))  # fmt: skip
    assert "--target bert-phased and --target_tokens 1000000 are two budgets" in error

    task = tmp_path / "task.tsv"
    task.write_text("".join(f"{i % 2}\tsentence {i}\n" for i in range(20)), encoding="utf-8")
    error = _error(_run(finetune, ["--model", masked_lm, "--train_file", task, "--valid_file",
                                   task, "--label_column", "7"], capsys))  # fmt: skip
    assert "--label_column 7 is a column position, but the line has 2 tab-separated" in error


def test_the_eighth_probes_findings(masked_lm, en_corpus, tmp_path, capsys, monkeypatch):
    """An event file damaged mid-way, an input hard-linked into the output, an empty list value,
    a fit flag as a tool flag's value, a card not in UTF-8, a weights file this user cannot
    read."""
    import os

    from tiny import write_run

    import bertlab.files.artefacts
    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.export.fill_mask import fill_mask
    from bertlab.export.hub import push_to_hub
    from bertlab.research.plots import plot_runs
    from bertlab.research.soak import soak

    logs = tmp_path / "logs"
    write_run(logs, seconds_per_step=5, downstream=False)
    events = next(logs.glob("events.out.tfevents.*"))
    data = bytearray(events.read_bytes())
    data[len(data) // 2] ^= 0xFF
    events.write_bytes(bytes(data))
    error = _error(_run(plot_runs, ["--logdir", logs, "--output_dir", tmp_path / "p"], capsys))
    assert f"{events} is damaged: record" in error and "fails its checksum" in error
    events.write_bytes(bytes(data[: len(data) // 2]))  # cut short: a live run's last record
    assert _run(plot_runs, ["--logdir", logs, "--output_dir", tmp_path / "p"], capsys)[0] == 0

    corpus = tmp_path / "corpus"
    shutil.copytree(en_corpus, corpus)
    (tmp_path / "in").mkdir()
    os.link(corpus / "test.txt", tmp_path / "in" / "t.txt")
    before = (corpus / "train.txt").read_bytes()
    error = _error(_run(prepare_corpus, ["--input", tmp_path / "in" / "t.txt", "--output_dir",
                                         corpus, "--overwrite"], capsys))  # fmt: skip
    assert f"({corpus / 'test.txt'} is a hard link to it); choose another folder" in error
    assert f"holds --input {tmp_path / 'in' / 't.txt'} under another name" in error
    assert (corpus / "train.txt").read_bytes() == before
    error = _error(_run(prepare_corpus, ["--input", "", "--output_dir", tmp_path / "c"], capsys))
    assert error == "error: --input: value 1 is empty; give a value (see --help)"

    argv = ["--output_dir", tmp_path / "soak", "--config", REPO / "configs" / "tiny.yaml"]
    error = _error(_run(soak, [*argv, "--overrides", "--trainer.default_root_dir=x"], capsys))
    assert "--overrides sets --trainer.default_root_dir, which soak sets itself" in error

    model = tmp_path / "model"
    shutil.copytree(masked_lm, model)
    card = "---\nlicense: apache-2.0\n---\n# A card\n"
    (model / "README.md").write_bytes(card.encode("utf-16"))
    status, err = _run(push_to_hub, ["--model_dir", model, "--repo_id", "me/tiny", "--dry_run"],
                       capsys)  # fmt: skip
    assert status == 2 and f"{model / 'README.md'}: not UTF-8 at byte 0" in err, err

    weights = model / "model.safetensors"
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if Path(path) == weights:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(bertlab.files.artefacts, "open", refusing_open, raising=False)
    error = _error(_run(fill_mask, ["--model", model, "--text", "a [MASK] b"], capsys))
    assert f"{weights} cannot be read by this user (permission denied)" in error


def test_the_ninth_probes_findings(masked_lm, en_samples, en_wordpiece, tmp_path, capsys,
                                   monkeypatch):  # fmt: skip
    """A byte-order mark in a task file or a card, a quoted ~ in an output path, a resume with
    another seed_everything, a hand-edited special token, text columns without a header."""
    from bertlab.downstream.finetune import finetune
    from bertlab.export.hub import push_to_hub
    from bertlab.samples.prepare import prepare_samples
    from bertlab.tokenizer.training import train_tokenizer

    task = tmp_path / "task.tsv"
    rows = "".join(f"{('neg', 'pos')[i % 2]}\tsentence number {i} about cats\n" for i in range(20))
    task.write_text("\ufeff" + rows, encoding="utf-8")
    status, err = _run(finetune, ["--model", masked_lm, "--train_file", task, "--valid_file",
                                  task, "--max_epochs", "1", "--max_seq_len", "32",
                                  "--output_json", tmp_path / "f.json"],
                       capsys)  # fmt: skip
    assert status == 0, err
    result = json.loads((tmp_path / "f.json").read_text(encoding="utf-8"))
    assert result["num_labels"] == 2, result
    plain = tmp_path / "plain.tsv"
    plain.write_text(rows, encoding="utf-8")
    error = _error(_run(finetune, ["--model", masked_lm, "--train_file", plain, "--valid_file",
                                   plain, "--text_columns", "5"], capsys))  # fmt: skip
    assert "--text_columns 5 needs a header line naming them, or a --label_column position" in error

    model = tmp_path / "model"
    shutil.copytree(masked_lm, model)
    (model / "README.md").write_text("\ufeff---\nlicense: apache-2.0\n---\n", encoding="utf-8")
    status, err = _run(push_to_hub, ["--model_dir", model, "--repo_id", "me/tiny", "--dry_run"],
                       capsys)  # fmt: skip
    assert status == 2 and "starts with a byte-order mark before its ---" in err, err

    tokenizer = tmp_path / "tok"
    shutil.copytree(en_wordpiece, tokenizer)
    config = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": "<mask>"}))
    corpus = tmp_path / "c.txt"
    corpus.write_text("One sentence here.\nAnother one there.\n", encoding="utf-8")
    error = _error(_run(prepare_samples, ["--input", corpus, "--tokenizer", tokenizer,
                                          "--output_dir", tmp_path / "s"], capsys))  # fmt: skip
    assert "has no <mask> line, the mask token tokenizer_config.json declares" in error

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    status, err = _run(train_tokenizer, ["--train_file", corpus, "--output_dir", "~/tok",
                                         "--model_type", "wordpiece", "--vocab_size", "40"],
                       capsys)  # fmt: skip
    assert (tmp_path / "home" / "tok" / "tokenizer.json").is_file(), err
    assert not (tmp_path / "~").exists()

    argv = _tiny_fit(en_samples, tmp_path / "run")
    assert _fit(argv, capsys)[0] == 0
    last = next((tmp_path / "run").rglob("last.ckpt"))
    argv = _tiny_fit(en_samples, tmp_path / "run", f"--ckpt_path={last}", "--seed_everything=7",
                     "--trainer.max_steps=4")  # fmt: skip
    error = _error(_fit(argv, capsys))
    assert "seed_everything 0 -> 7" in error, error
