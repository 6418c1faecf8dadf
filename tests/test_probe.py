"""Mistakes a new user makes, through each tool's real entry point: one line, nothing left behind.

.venv/bin/python -m pytest tests/test_probe.py -q

Each test is a class of finding of a mistake probe (issue 17): a refused run that left a folder,
a flag that was silently not used, a message that named the wrong thing or was cut short, a
result that means nothing without a warning line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_tool


def one_error(result) -> str:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def warnings(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def documents(tmp_path: Path, count: int) -> Path:
    text = tmp_path / "docs.txt"
    sentences = [f"Sentence {j} of the document says a few more words." for j in range(12)]
    text.write_text(
        "\n\n".join(f"Document {i} starts here.\n" + "\n".join(sentences) for i in range(count))
        + "\n",
        encoding="utf-8",
    )
    return text


def test_prepare_corpus_refused_on_its_input_leaves_no_folder(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    for source in (bad, empty):
        out = tmp_path / "corpus"
        error = one_error(run_tool("prepare_corpus.py", "--input", source, "--output_dir", out,
                                   check=False))  # fmt: skip
        assert source.name in error
        assert not out.exists()


def test_prepare_corpus_column_flags_without_a_table_are_refused(tmp_path):
    text = documents(tmp_path, 3)
    for flag in ("--title_column", "--text_column"):
        result = run_tool("prepare_corpus.py", "--input", text, "--output_dir", tmp_path / "c",
                          flag, "title", check=False)  # fmt: skip
        assert flag in one_error(result)
        assert not (tmp_path / "c").exists()


def test_prepare_corpus_warns_of_a_lang_that_is_not_a_code(tmp_path):
    text = documents(tmp_path, 3)
    result = run_tool("prepare_corpus.py", "--input", text, "--output_dir", tmp_path / "c",
                      "--lang", "japanese", "--valid_docs", "0", "--test_docs", "0")  # fmt: skip
    (line,) = warnings(result)
    assert "--lang japanese" in line
    ok = run_tool("prepare_corpus.py", "--input", text, "--output_dir", tmp_path / "d",
                  "--lang", "pt-br", "--valid_docs", "0", "--test_docs", "0")  # fmt: skip
    assert warnings(ok) == []


def test_a_tokenizer_path_of_the_wrong_kind_is_named_for_what_it_is(tmp_path, en_wordpiece):
    text = documents(tmp_path, 3)
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "meta.json").write_text("{}\n", encoding="utf-8")
    for tokenizer, expected in (
        (en_wordpiece / "vocab.txt", "is a file"),
        (samples, "holds no tokenizer files"),
    ):
        result = run_tool("prepare_samples.py", "--input", text, "--tokenizer", tokenizer,
                          "--output_dir", tmp_path / "s", check=False)  # fmt: skip
        error = one_error(result)
        assert str(tokenizer) in error and expected in error
        assert error.endswith(("tokenizer.json", "wrote"))  # not cut at "...from one of:"


def test_convert_tokenizer_names_a_folder_given_as_the_model(tmp_path, ja_unigram):
    error = one_error(run_tool("convert_tokenizer.py", "--spm_model", ja_unigram,
                               "--output_dir", tmp_path / "t", check=False))  # fmt: skip
    assert "is a folder" in error and "sentencepiece.model" in error


def test_prepare_samples_warns_of_nsp_from_one_document_and_of_empty_shards(tmp_path, en_wordpiece):
    one = documents(tmp_path, 1)
    result = run_tool("prepare_samples.py", "--input", one, "--tokenizer", en_wordpiece,
                      "--output_dir", tmp_path / "s1", "--max_seq_len", "64",
                      "--num_shards", "1", "--dupe_factor", "1")  # fmt: skip
    (line,) = warnings(result)
    assert "one document" in line and "next_sentence_label" in line and "--nsp false" in line
    mlm = run_tool("prepare_samples.py", "--input", one, "--tokenizer", en_wordpiece,
                   "--output_dir", tmp_path / "s2", "--max_seq_len", "64", "--nsp", "false",
                   "--num_shards", "1", "--dupe_factor", "1")  # fmt: skip
    assert warnings(mlm) == []
    many = run_tool("prepare_samples.py", "--input", documents(tmp_path, 4), "--tokenizer",
                    en_wordpiece, "--output_dir", tmp_path / "s3", "--max_seq_len", "64",
                    "--num_shards", "50", "--dupe_factor", "1")  # fmt: skip
    (line,) = warnings(many)
    assert "shards are empty" in line and "--num_shards" in line


def test_prepare_samples_errors_name_the_users_path(tmp_path, en_wordpiece):
    bad = tmp_path / "in" / "latin1.txt"
    bad.parent.mkdir()
    bad.write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))
    for out, expected in (("out", "error: --input in/latin1.txt:"), ("in", "in/latin1.txt;")):
        result = run_tool("prepare_samples.py", "--input", "in/latin1.txt", "--tokenizer",
                          en_wordpiece, "--output_dir", out, check=False, cwd=tmp_path)  # fmt: skip
        assert expected in one_error(result)


def test_bertlab_fit_names_a_zero_lr_an_empty_config_and_a_checkpoint_folder(en_samples, tmp_path):
    from tiny import small_run, tiny_model

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n", encoding="utf-8")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    root = tmp_path / "run"
    for extra, expected in (
        (["--model.lr=0"], "model.lr must be positive, got 0"),
        (["--model.lr=-1"], "model.lr must be positive, got -1"),
        ([f"--config={empty}"], f"--config {empty} is empty (no settings)"),
        ([f"--ckpt_path={folder}"], f"--ckpt_path {folder} is a folder; give a checkpoint"),
    ):
        result = run_tool("bertlab", "fit", *small_run(en_samples, root, steps=2), *tiny_model(),
                          *extra, check=False)  # fmt: skip
        assert expected in one_error(result)
        assert not root.exists()  # nothing of a refused run: no lightning_logs/version_0


def test_bertlab_fit_warns_of_validation_on_training_shards_and_names_heldout_files(
    en_samples, tmp_path
):
    from tiny import small_run, tiny_model

    run = [
        *small_run(en_samples, tmp_path / "run", steps=2),
        *tiny_model(),
        "--model.warmup_steps=1",
    ]
    result = run_tool("bertlab", "fit", *run, f"--data.val_files={en_samples / 'train'}")
    assert any(
        "--data.val_files" in line and "not held-out" in line for line in warnings(result)
    ), result.stderr[-2000:]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))
    root = tmp_path / "refused"
    for extra, expected in (
        (f"--heldout.texts=[{latin1}]", f"error: {latin1}: not UTF-8 at byte 3"),
        ("--seed_everything=abc", "--seed_everything abc: expected bool or int"),
    ):
        run = [
            *small_run(en_samples, root, steps=2),
            *tiny_model(),
            "--model.warmup_steps=1",
            extra,
        ]
        assert expected in one_error(run_tool("bertlab", "fit", *run, check=False))


def test_bertlab_test_without_a_checkpoint_is_warned_and_bad_values_named(
    en_samples, tmp_path, capsys
):
    from tiny import small_run, tiny_model

    from bertlab.train.cli import main

    run = [*small_run(en_samples, tmp_path / "run", steps=2), *tiny_model()]
    main(["test", *run, "--trainer.limit_test_batches=1"])
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if x.startswith("warning:")] == [
        "warning: bertlab test without a checkpoint scores weights nobody trained; give "
        "--ckpt_path (a .ckpt file, or last)"
    ]
    for extra, expected in (
        ("--model.hidden_dropout_prob=2", "model.hidden_dropout_prob must be in [0, 1), got 2"),
        ("--data.shuffle_buffer_size=-5", "--data.shuffle_buffer_size -5 must be >= 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *run, "--model.warmup_steps=1", extra])
        assert exit_info.value.code == 2
        errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], errors


def test_export_model_refuses_a_language_that_is_not_a_code(tmp_path, capsys):
    from bertlab.command import run
    from bertlab.export.model import export_model

    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"not read: the flag is checked first")
    with pytest.raises(SystemExit) as exit_info:
        run(export_model, ["--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "m"),
                           "--language", "English"])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: --language 'English' is not a language code such as en, ja, pt-BR (or a "
        "comma-separated list of them)\n"
    )
    assert not (tmp_path / "m").exists()


def _run(fn, argv: list[str], capsys) -> tuple[int, str]:
    """fn's command through bertlab.command.run in-process: (exit status, stderr)."""

    from bertlab.command import run

    try:
        run(fn, [str(a) for a in argv])
    except SystemExit as exit_info:
        return int(exit_info.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


def _error(status_err: tuple[int, str]) -> str:
    status, err = status_err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert status == 2 and len(errors) == 1, err
    return errors[0]


def test_fill_mask_refuses_a_model_without_a_mask_and_a_top_k_beyond_the_vocabulary(
    masked_lm, tmp_path, capsys
):
    from transformers import GPT2Config, GPT2LMHeadModel

    from bertlab.export.fill_mask import fill_mask

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(
        gpt2
    )
    error = _error(_run(fill_mask, ["--model", gpt2, "--text", "a [MASK] b"], capsys))
    assert error.startswith(f"error: --model {gpt2}: not a masked language model")
    error = _error(_run(fill_mask, ["--model", masked_lm, "--text", "a [MASK] b", "--top_k",
                                    "1000000"], capsys))  # fmt: skip
    assert "--top_k 1000000 is more than the model's" in error


def test_evaluate_mlm_output_follows_the_output_rule(masked_lm, en_corpus, tmp_path, capsys):
    from bertlab.downstream.heldout import evaluate_mlm

    text = tmp_path / "test.txt"
    text.write_text((en_corpus / "test.txt").read_text(encoding="utf-8"), encoding="utf-8")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    base = ["--model", masked_lm, "--text", text, "--max_blocks", "4"]
    for output, expected in (
        (text, "is --text"),
        (notes, "exists and is not a result of evaluate_mlm"),
        (folder, "is a folder"),
        (masked_lm / "figures.json", "is inside --model"),
    ):
        assert expected in _error(_run(evaluate_mlm, [*base, "--output", output], capsys))
    assert notes.read_text(encoding="utf-8") == "mine\n"
    assert text.read_text(encoding="utf-8") == (en_corpus / "test.txt").read_text("utf-8")
    figures = tmp_path / "figures.json"
    assert _run(evaluate_mlm, [*base, "--output", figures], capsys)[0] == 0
    again = _error(_run(evaluate_mlm, [*base, "--output", figures], capsys))
    assert "pass --overwrite" in again
    status, err = _run(evaluate_mlm, [*base, "--output", figures, "--overwrite",
                                      "--unigram_corpus", text], capsys)  # fmt: skip
    assert status == 0
    assert f"warning: --unigram_corpus {text} is also a --text" in err
    assert "--max_blocks must be at least 1" in _error(
        _run(evaluate_mlm, [*base[:-2], "--max_blocks", "0"], capsys)
    )


def test_soak_checks_its_own_flags_first_and_names_the_fits_error(tmp_path, capsys):
    from bertlab.research.soak import soak

    config = tmp_path / "tiny.yaml"
    config.write_text("trainer: {}\n", encoding="utf-8")
    out = tmp_path / "soak"
    base = ["--output_dir", out, "--max_steps", "8", "--val_every", "2"]
    for extra, expected in (
        (["--config", tmp_path / "nope.yaml"], "--config"),
        (["--config", config, "--interval", "0"], "--interval 0"),
        (["--config", config, "--num_workers", "-1"], "--num_workers -1"),
    ):
        assert expected in _error(_run(soak, [*base, *extra], capsys))
        assert not out.exists()
    error = _error(_run(soak, [*base, "--config", config, "--overrides=--model.nope=3"],
                        capsys))  # fmt: skip
    assert error.startswith("error: bertlab fit failed (exit 2): ") and "nope" in error, error
    assert error.endswith(f"see {out}/fit.log")


def test_benchmarks_refuse_a_bad_budget_and_an_output_that_is_not_results(tmp_path, capsys):
    from bertlab.research.benchmark import benchmark
    from bertlab.research.quality import quality_benchmark

    out = tmp_path / "quality"
    error = _error(_run(quality_benchmark, ["--max_time", "abc", "--output_dir", out], capsys))
    assert error == "error: --max_time 'abc' must be DD:HH:MM:SS, e.g. 00:00:08:00"
    assert not out.exists()
    text = tmp_path / "train.txt"
    text.write_text("A corpus line.\n", encoding="utf-8")
    error = _error(_run(benchmark, ["--output", text], capsys))
    assert error.startswith(f"error: --output {text} is not a file of benchmark results")
    assert text.read_text(encoding="utf-8") == "A corpus line.\n"


def test_train_tokenizer_refuses_negative_parity_lines_and_threads(tmp_path, capsys):
    from bertlab.tokenizer.training import convert_tokenizer, train_tokenizer

    text = documents(tmp_path, 3)
    base = ["--train_file", text, "--output_dir", tmp_path / "t", "--vocab_size", "50"]
    cases = (
        (["--parity_lines", "-5"], "--parity_lines -5 must be >= 0"),
        (["--num_threads", "-2"], "--num_threads -2 must be at least 1"),
    )
    for extra, expected in cases:
        assert expected in _error(_run(train_tokenizer, [*base, *extra], capsys))
    convert = ["--spm_model", tmp_path / "x.model", "--output_dir", tmp_path / "c"]
    error = _error(_run(convert_tokenizer, [*convert, "--parity_lines", "-1"], capsys))
    assert "--parity_lines -1 must be >= 0" in error
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


# ------------------------------------------------------- a second probe (issue 17): 297 mistakes
def test_bertlab_fit_refuses_shapes_settings_and_folders_that_would_fail_later(
    en_samples, masked_lm, tmp_path, capsys
):
    """Each refused before anything is built, in one line naming the flag: before, a traceback
    mid-step (heads 0, val_check_interval 0, an accelerator without its package, flash attention
    on a CPU, a file that is no Lightning checkpoint) or a run that went on (weight decay below 0,
    a negative clipping, logs written into the samples folder)."""
    import torch
    from tiny import small_run, tiny_model

    from bertlab.train.cli import main

    run = [*small_run(en_samples, tmp_path / "run", steps=2), *tiny_model()]
    run.append("--model.warmup_steps=1")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    bare = tmp_path / "no-hparams.ckpt"  # Lightning's keys, but not the model's settings
    torch.save({"pytorch-lightning_version": "2.6.6", "global_step": 0, "state_dict": {}}, bare)
    cases = [
        (["--model.num_attention_heads=0"], "--model.num_attention_heads 0 must be at least 1"),
        (["--model.num_attention_heads=3"], "--model.hidden_size 64 is not a multiple of"),
        (["--model.num_hidden_layers=0"], "--model.num_hidden_layers 0 must be at least 1"),
        (["--model.weight_decay=-1"], "--model.weight_decay -1.0 must be >= 0"),
        (["--trainer.val_check_interval=0"], "--trainer.val_check_interval 0 must be positive"),
        (["--trainer.gradient_clip_val=-1"], "--trainer.gradient_clip_val -1"),
        (["--trainer.accelerator=tpu"], "--trainer.accelerator tpu needs the torch_xla package"),
        (["--speed.attn_implementation=flash_attention_2"], "flash_attention_2 needs a CUDA GPU"),
        ([f"--trainer.default_root_dir={en_samples / 'train'}"],
         "--trainer.default_root_dir .* is inside --data.train_files"),
        ([f"--ckpt_path={foreign}"], "--ckpt_path .*foreign.ckpt: not a checkpoint of bertlab fit"),
        ([f"--ckpt_path={bare}"], "--ckpt_path .*no-hparams.ckpt: not a checkpoint of bertlab "
         "fit \\(no hyper_parameters"),
        (["--model.warmup_steps=100"], "--model.warmup_steps 100 must be smaller than"),
        ([f"--model.from_pretrained={masked_lm}"],
         "--model.hidden_size 64 contradicts --model.from_pretrained .* \\(hidden_size 32\\)"),
    ]  # fmt: skip
    import re

    for extra, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *run, *extra])
        errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert exit_info.value.code == 2 and len(errors) == 1, (extra, errors)
        assert re.search(expected, errors[0]), (expected, errors[0])
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in (en_samples / "train").iterdir() if p.is_dir()) == []
    with pytest.raises(SystemExit):
        main(["fit", *run, "--model.trainable=word_embeddings", "--model.num_attention_heads=0"])
    assert "warning: --model.trainable word_embeddings without --model.from_pretrained" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["validate", *run, "--data.val_files=null"])
    assert "bertlab validate needs --data.val_files" in capsys.readouterr().err


def test_tools_refuse_settings_that_mean_nothing(tmp_path, masked_lm, en_corpus, capsys):
    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.downstream.finetune import finetune
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.export.fill_mask import fill_mask
    from bertlab.research.benchmark import benchmark
    from bertlab.research.plots import plot_runs
    from bertlab.research.quality import quality_benchmark
    from bertlab.research.soak import soak
    from bertlab.tokenizer.training import train_tokenizer

    text = en_corpus / "test.txt"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    task = tmp_path / "task.tsv"
    task.write_text("a\tone text\nb\tanother\n")
    (tmp_path / "run").mkdir()
    cases = [
        (train_tokenizer, ["--train_file", text, "--output_dir", tmp_path / "t", "--seed", -1],
         "--seed -1 must be in [0, 2**32)"),
        (prepare_corpus, ["--input", text, "--output_dir", tmp_path / "c", "--mirror", "http://x"],
         "--mirror is only used with --download LANG"),
        (benchmark, ["--threads", -1], "--threads -1 must be at least 1"),
        (benchmark, ["--native", "false"], "--native false needs --emulate_avx2"),
        (benchmark, ["--output", tmp_path], "is a folder; give a file"),
        (quality_benchmark, ["--batch_size", 0, "--output_dir", tmp_path / "q"],
         "--batch_size 0 must be at least 1"),
        (soak, ["--val_every", 0, "--output_dir", tmp_path / "s"], "--val_every 0 must be"),
        (finetune, ["--model", masked_lm, "--train_file", task, "--valid_file", task,
                    "--label_column", "0", "--text_columns", "0"], "includes the --label_column"),
        (evaluate_mlm, ["--model", masked_lm, "--text", text, "--max_len", 0],
         "--max_len 0 must be at least 16"),
        (evaluate_mlm, ["--model", masked_lm, "--text", text, "--unigram_corpus", empty],
         "no text in it to count words from"),
        (fill_mask, ["--model", masked_lm, "--text", "word " * 100 + "[MASK]"],
         "tokens, but the model takes at most 64"),
        (plot_runs, ["--logdir", tmp_path / "run", tmp_path / "run", "--output_dir",
                     tmp_path / "p"], "twice; give each value once"),
    ]  # fmt: skip
    for fn, argv, expected in cases:
        assert expected in _error(_run(fn, argv, capsys)), (fn.__name__, argv)
    for name in ("t", "c", "q", "s", "p"):
        assert not (tmp_path / name).exists(), name


def test_inputs_that_do_not_fit_are_refused_or_said(en_wordpiece, masked_lm, tmp_path, capsys):
    """A raw input given to prepare_samples, a tokenizer of another script, Japanese text split
    as English, another tokenizer's vocabulary at evaluate_mlm, a plot with nothing to draw, an
    empty flag value, a negative seed."""
    from tiny import make_tokenizer

    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.downstream.heldout import evaluate_mlm
    from bertlab.research.plots import plot_runs
    from bertlab.samples.prepare import prepare_samples
    from bertlab.train.cli import main

    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"text": "A document. Of two sentences."}\n')
    error = _error(_run(prepare_samples, ["--input", raw, "--tokenizer", en_wordpiece,
                                          "--output_dir", tmp_path / "s"], capsys))  # fmt: skip
    assert "raw input for prepare_corpus, not a corpus" in error
    japanese = tmp_path / "ja.txt"
    document = "東京は日本の首都です。人口が多い。\n大阪は商業の町です。食べ物がおいしい。\n\n"
    japanese.write_text(document * 40)
    status, err = _run(
        prepare_samples,
        [
            "--input",
            japanese,
            "--tokenizer",
            en_wordpiece,
            "--output_dir",
            tmp_path / "s",
            "--nsp",
            "false",
        ],
        capsys,
    )
    assert status == 0 and "tokens are the unknown token: --tokenizer" in err, err
    status, err = _run(
        prepare_corpus,
        ["--input", japanese, "--output_dir", tmp_path / "c", "--valid_docs", 0, "--test_docs", 0],
        capsys,
    )
    assert status == 0 and "are Chinese or Japanese, but --lang en" in err, err
    other = tmp_path / "other"
    make_tokenizer(other, num_words=50)
    error = _error(_run(evaluate_mlm, ["--model", masked_lm, "--text", japanese,
                                       "--tokenizer", other], capsys))  # fmt: skip
    assert "is another vocabulary than --model" in error or "tokens but --model" in error, error
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events.out.tfevents.1.x").write_bytes(b"\x00garbled")
    status, err = _run(plot_runs, ["--logdir", tmp_path / "logs", "--output_dir", tmp_path / "p"],
                       capsys)  # fmt: skip
    assert status == 2 and not (tmp_path / "p").exists(), err
    assert "--output_dir is empty" in _error(_run(prepare_samples, ["--input", japanese,
        "--tokenizer", en_wordpiece, "--output_dir", ""], capsys))  # fmt: skip
    with pytest.raises(SystemExit):
        main(["fit", "--seed_everything=-1", "--data.train_files", str(tmp_path)])
    assert "--seed_everything -1 must be in" in capsys.readouterr().err


def test_fit_refuses_a_run_folder_in_another_commands_output(en_samples, en_corpus, tmp_path):
    """A corpus folder (prepare_corpus's marker) as the run's root: the logs would mix with it."""
    import shutil

    from tiny import small_run, tiny_model

    corpus = tmp_path / "corpus"
    shutil.copytree(en_corpus, corpus)
    before = sorted(p.name for p in corpus.iterdir())
    for root, expected in (
        (corpus, f"--trainer.default_root_dir {corpus} holds the output of prepare_corpus"),
        (corpus / "runs", f"--trainer.default_root_dir {corpus / 'runs'} is inside {corpus}"),
    ):
        result = run_tool("bertlab", "fit", *small_run(en_samples, root, steps=2), *tiny_model(),
                          check=False)  # fmt: skip
        assert expected in one_error(result)
    assert sorted(p.name for p in corpus.iterdir()) == before


def test_fit_warns_of_a_masking_share_too_small_to_learn_from(en_samples, tmp_path):
    from tiny import small_run, tiny_model

    run = [*small_run(en_samples, tmp_path / "run", steps=2), *tiny_model(),
           "--model.warmup_steps=1"]  # fmt: skip
    result = run_tool("bertlab", "fit", *run, "--data.mlm_probability=0.001")
    assert (
        "warning: --data.mlm_probability 0.001 masks 0.1% of tokens (BERT masks 15%): most "
        "batches have few or no masked tokens to learn from"
    ) in warnings(result)


def test_evaluate_mlm_warns_of_a_text_the_tokenizer_cannot_spell(
    masked_lm, en_corpus, ja_corpus, capsys
):
    from bertlab.downstream.heldout import evaluate_mlm

    base = ["--model", masked_lm, "--max_blocks", "4"]
    status, err = _run(evaluate_mlm, [*base, "--text", ja_corpus / "test.txt"], capsys)
    assert status == 0
    unknown = [line for line in err.splitlines() if "[UNK]" in line]
    assert len(unknown) == 1 and unknown[0].startswith(f"warning: --text {ja_corpus}"), err
    assert "give text in the tokenizer's language" in unknown[0]
    status, err = _run(evaluate_mlm, [*base, "--text", en_corpus / "test.txt"], capsys)
    assert status == 0 and "[UNK]" not in err


def test_prepare_corpus_takes_no_other_commands_output_as_text(en_corpus, en_wordpiece, tmp_path):
    import shutil

    for folder, expected in (
        (en_wordpiece, f"--input {en_wordpiece} holds the output of train_tokenizer, not text"),
        (en_corpus, f"--input {en_corpus} is prepare_corpus's output: its valid and test"),
    ):
        result = run_tool("prepare_corpus.py", "--input", folder, "--output_dir",
                          tmp_path / "c", check=False)  # fmt: skip
        assert expected in one_error(result)
        assert not (tmp_path / "c").exists()
    # Inside an input folder, a command's output folder is skipped, said in one line.
    data = tmp_path / "data"
    shutil.copytree(en_wordpiece, data / "tok")
    documents(data, 3)
    result = run_tool("prepare_corpus.py", "--input", data, "--output_dir", tmp_path / "c",
                      "--valid_docs", "0", "--test_docs", "0")  # fmt: skip
    assert (
        f"--input {data}: skipping the folders bertlab commands wrote: tok (train_tokenizer)"
        in (result.stderr)
    )
    assert "[PAD]" not in (tmp_path / "c" / "train.txt").read_text(encoding="utf-8")  # vocab.txt


def test_train_tokenizer_names_a_compressed_train_file(en_corpus, tmp_path):
    import gzip

    packed = tmp_path / "train.txt.gz"
    packed.write_bytes(gzip.compress((en_corpus / "test.txt").read_bytes()))
    result = run_tool("train_tokenizer.py", "--train_file", packed, "--output_dir",
                      tmp_path / "tok", "--vocab_size", "300", check=False)  # fmt: skip
    assert f"--train_file {packed} is gzip-compressed: give the plain text" in one_error(result)
    assert not (tmp_path / "tok").exists()
