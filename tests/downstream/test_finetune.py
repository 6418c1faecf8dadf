"""Downstream fine-tuning: input layouts, label mapping, errors, and learning a real task.

Run: .venv/bin/python -m pytest tests/downstream/test_finetune.py -q

The task is built from the shared data: is a sentence English (Wikipedia) or Japanese (man
pages)? A tiny BERT (hidden 32, 2 layers, random weights) with a WordPiece tokenizer built here
on both languages learns it in seconds, so accuracy well above chance shows that labels, texts
and the training loop are wired right. Pair tasks label the SECOND text's language and leave the
first one random, so they are learnable only if the pair's second column reaches the model.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import random
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import run_tool

from bertlab.downstream.finetune import finetune
from bertlab.downstream.tasks import degenerate_split, label_mapping, read_examples

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)
# Tiny models on a shared 2-core machine: one thread avoids OpenMP's spinning under contention.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = dict(lr=3e-3, batch_size=16, max_seq_len=64, max_epochs=3)


def english_sentences(shared_data: Path, count: int) -> list[str]:
    """The first `count` sentences of at least 30 characters of the shared Wikipedia dump."""
    from bertlab.corpus.sentences import split_sentences
    from bertlab.corpus.wikipedia import iter_articles

    out: list[str] = []
    with bz2.open(shared_data / "enwiki-sample.xml.bz2") as stream:
        for _, paragraphs in iter_articles(stream, "enwiki-sample"):
            for paragraph in paragraphs:
                out += [s for s in split_sentences(paragraph, "en") if len(s) >= 30]
            if len(out) >= count:
                return out[:count]
    return out


def japanese_lines(shared_data: Path, count: int) -> list[str]:
    """`count` lines of at least 20 characters of the Japanese man pages (tabs made spaces)."""
    with gzip.open(shared_data / "ja-manpages.txt.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip().replace("\t", " ") for line in f]
    return [line for line in lines if len(line) >= 20][:count]


def build_wordpiece(texts: list[str], folder: Path, num_words: int = 1200) -> Path:
    """A cased WordPiece tokenizer with bertlab's fixed special ids: every character (alone and
    as a ## continuation) and the most frequent words of `texts`.

    Built by counting rather than with tokenizers' trainer, whose ties fall differently in each
    process (Rust's randomised hashing): the same texts must give the same vocabulary, or the
    accuracies these tests check would change from run to run.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    characters = Counter(char for word, count in words.items() for char in word * count)
    by_count = sorted(characters, key=lambda c: (-characters[c], c))
    vocab = SPECIALS + by_count + [f"##{c}" for c in by_count]
    frequent = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    vocab += frequent[:num_words]
    core = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    core.normalizer = normalizer
    core.pre_tokenizer = pre_tokenizer
    core.decoder = decoders.WordPiece()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core,
        **{f"{k}_token": f"[{k.upper()}]" for k in ("pad", "unk", "cls", "sep", "mask")},
    )
    fast.save_pretrained(str(folder))
    return folder


def language_task(shared_data: Path, folder: Path, size: int = 200) -> dict[str, list]:
    """{"en": sentences, "ja": lines}, `size` each, shuffled; a tokenizer in folder/tokenizer."""
    rng = random.Random(0)
    texts = {"en": english_sentences(shared_data, size), "ja": japanese_lines(shared_data, size)}
    for sentences in texts.values():
        rng.shuffle(sentences)
    build_wordpiece(texts["en"] + texts["ja"], folder / "tokenizer")
    return texts


def labelled(texts: dict[str, list], start: int, stop: int, seed: int) -> list[tuple[str, str]]:
    """(language, text) for texts[lang][start:stop] of both languages, shuffled."""
    items = [(lang, t) for lang, ts in texts.items() for t in ts[start:stop]]
    random.Random(seed).shuffle(items)
    return items


def pairs(texts: dict[str, list], start: int, stop: int, seed: int) -> list[tuple[str, str, int]]:
    """(text_a of a random language, text_b, 1 if text_b is Japanese else 0)."""
    rng = random.Random(seed)
    items = labelled(texts, start, stop, seed)
    return [(rng.choice(items)[1], text, int(lang == "ja")) for lang, text in items]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def task(shared_data: Path, tmp_path_factory) -> dict:
    """Model folder and the task in all layouts: headerless TSV, GLUE TSV (pairs), JSONL (pairs)."""
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    root = tmp_path_factory.mktemp("finetune")
    texts = language_task(shared_data, root)
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY)
    model = BertForPreTraining(config)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    splits = {"train": (0, 120), "valid": (120, 160), "test": (160, 200)}
    files = {}
    for split, (start, stop) in splits.items():
        tsv = root / f"{split}.tsv"
        items = labelled(texts, start, stop, seed=len(split))
        tsv.write_text("".join(f"{lang}\t{text}\n" for lang, text in items), encoding="utf-8")
        glue = root / f"{split}-glue.tsv"
        rows = pairs(texts, start, stop, seed=len(split))
        lines = [f"{i}\t{a}\t{b}\t{label}\n" for i, (a, b, label) in enumerate(rows)]
        glue.write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(lines), encoding="utf-8")
        jsonl = root / f"{split}.jsonl"
        records = [{"text": a, "text_pair": b, "label": label} for a, b, label in rows]
        jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        files[split] = {"tsv": tsv, "glue": glue, "jsonl": jsonl}
    return {"root": root, "model": root / "model", "files": files}


# ----------------------------------------------------------------------------- the real tool
def test_tool_learns_a_sentence_task_from_tsv(task):
    files = task["files"]
    output = task["root"] / "result.json"
    result = run_tool(
        "finetune.py",
        *("--model", task["model"], "--train_file", files["train"]["tsv"]),
        *("--valid_file", files["valid"]["tsv"], "--test_file", files["test"]["tsv"]),
        *("--lr", FAST["lr"], "--batch_size", 16, "--max_seq_len", 64, "--max_epochs", 3),
        *("--output_json", output),
        env=ONE_THREAD,
    )
    report = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert report == json.loads(output.read_text())
    assert report["labels"] == {"en": 0, "ja": 1} and report["positive_label"] == "ja"
    assert report["num_labels"] == 2 and report["pairs"] is False
    assert (report["train_size"], report["valid_size"], report["test_size"]) == (240, 80, 80)
    assert report["valid"]["accuracy"] >= 0.9, report["history"]
    assert report["test"]["accuracy"] >= 0.9 and 0.9 <= report["test"]["f1"] <= 1.0
    assert 1 <= report["best_epoch"] <= report["epochs_run"] <= 3
    best = report["history"][report["best_epoch"] - 1]
    assert (
        best["accuracy"]
        == report["valid"]["accuracy"]
        == max(h["accuracy"] for h in report["history"])
    )


def test_a_validation_split_of_one_label_is_scored_with_a_warning(task, tmp_path, capsys):
    files = task["files"]
    english = [line for line in files["valid"]["tsv"].read_text().splitlines() if line[:2] == "en"]
    valid = Path(write(tmp_path / "english.tsv", "".join(f"{line}\n" for line in english)))
    result = finetune(
        model=str(task["model"]), train_file=str(files["train"]["tsv"]), valid_file=str(valid),
        **{**FAST, "max_epochs": 1},
    )  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning:")]
    assert warnings == [
        f"warning: --valid_file {valid}: all {len(english)} examples have label 'en': accuracy "
        "is only how often the model predicts it (a classifier that always does scores 1.0), "
        "and the F1 of 'ja' is 0 whatever the model"
    ]
    assert result["valid"]["f1"] == 0.0  # what the warning said


def test_degenerate_splits_are_named(tmp_path):
    mapping = {"0": 0, "1": 1}
    one = read_examples(write(tmp_path / "one.tsv", "1\tx\n"))
    assert degenerate_split(one, mapping, "--test_file t") == (
        "--test_file t: 1 example: its accuracy can only be 0 or 1"
    )
    positives = read_examples(write(tmp_path / "pos.tsv", "1\tx\n1\ty\n"))
    assert degenerate_split(positives, mapping, "--valid_file v") == (
        "--valid_file v: all 2 examples have label '1': accuracy is only how often the model "
        "predicts it (a classifier that always does scores 1.0)"
    )
    both = read_examples(write(tmp_path / "both.tsv", "1\tx\n0\ty\n"))
    assert degenerate_split(both, mapping, "--valid_file v") is None


def test_tool_reports_a_bad_label_in_one_line(task, tmp_path):
    valid = tmp_path / "valid.tsv"
    valid.write_text("en\tA sentence.\nfr\tUne phrase.\n", encoding="utf-8")
    result = run_tool(
        "finetune.py",
        *("--model", task["model"], "--train_file", task["files"]["train"]["tsv"]),
        *("--valid_file", valid),
        check=False,
        env=ONE_THREAD,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"error: {valid} line 2: label 'fr' does not occur")


def test_output_json_follows_the_output_rule(task, tmp_path, capsys):
    """--output_json is never an input, inside the model folder, a folder or someone else's file;
    an earlier result is replaced only with --overwrite (bertlab.files.output_folder)."""
    from bertlab.command import run

    files = task["files"]
    train = tmp_path / "data" / "train.tsv"
    train.parent.mkdir()
    train.write_bytes(files["train"]["tsv"].read_bytes())
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    args = ["--model", task["model"], "--train_file", train, "--valid_file", files["valid"]["tsv"],
            "--max_epochs", 1, "--batch_size", 32, "--max_seq_len", 32]  # fmt: skip

    def refused(output, *fragments, extra=()):
        with pytest.raises(SystemExit) as exit_info:
            run(finetune, [str(a) for a in [*args, "--output_json", output, *extra]])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: --output_json {output}"), err
        for fragment in fragments:
            assert fragment in err, err

    before = {p: p.read_bytes() for p in [train, notes, *task["model"].iterdir()]}
    refused(train, "is --train_file")
    refused(task["model"] / "result.json", "is inside --model")
    refused(train.parent, "holds --train_file")
    (tmp_path / "folder").mkdir()
    refused(tmp_path / "folder", "is a folder")
    refused(notes, "not a result of finetune", extra=["--overwrite"])
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in train.parent.iterdir()) == ["train.tsv"]

    result = tmp_path / "result.json"
    run(finetune, [str(a) for a in [*args, "--output_json", result]])
    first = json.loads(result.read_text())
    capsys.readouterr()
    refused(result, "earlier result of finetune", "--overwrite")
    assert json.loads(result.read_text()) == first
    run(finetune, [str(a) for a in [*args, "--output_json", result, "--overwrite", "--seed", 1]])
    assert json.loads(result.read_text())["seed"] == 1


# ------------------------------------------------------------------------- pairs, JSON Lines
def test_glue_tsv_pairs_use_both_columns(task):
    files = task["files"]
    common = dict(model=str(task["model"]), **FAST)
    both = finetune(
        train_file=str(files["train"]["glue"]), valid_file=str(files["valid"]["glue"]), **common
    )
    assert both["pairs"] and both["labels"] == {"0": 0, "1": 1} and both["positive_label"] == "1"
    assert both["valid"]["accuracy"] >= 0.85, both["history"]
    # The label is the language of sentence2: sentence1 alone carries no signal.
    first_only = finetune(
        train_file=str(files["train"]["glue"]),
        valid_file=str(files["valid"]["glue"]),
        text_columns=["sentence1"],
        **common,
    )
    assert not first_only["pairs"] and first_only["valid"]["accuracy"] <= 0.7


def test_jsonl_pairs_with_test_file(task, capsys):
    files = task["files"]
    result = finetune(
        model=str(task["model"]),
        train_file=str(files["train"]["jsonl"]),
        valid_file=str(files["valid"]["jsonl"]),
        test_file=str(files["test"]["jsonl"]),
        **FAST,
    )
    assert json.loads(capsys.readouterr().out) == result
    assert result["pairs"] and result["test"]["accuracy"] >= 0.85, result["history"]


def pretraining_checkpoint(task: dict, folder: Path) -> Path:
    """A real `BertPretraining` Lightning checkpoint after two steps; its model saved in folder."""
    from transformers import AutoTokenizer

    from bertlab.model.module import BertPretraining

    tokenizer = AutoTokenizer.from_pretrained(task["model"])
    texts = [line.split("\t")[1] for line in task["files"]["train"]["tsv"].read_text().splitlines()]
    encoded = tokenizer(texts[:16], truncation=True, max_length=32, padding="max_length")
    input_ids = torch.tensor(encoded["input_ids"])
    chosen = (torch.rand(input_ids.shape, generator=torch.Generator().manual_seed(0)) < 0.15) & (
        input_ids > 4
    )
    batch = {
        "input_ids": torch.where(chosen, 4, input_ids),
        "attention_mask": torch.tensor(encoded["attention_mask"]),
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.where(chosen, input_ids, -100),
    }
    module = BertPretraining(
        tokenizer=str(task["model"]),
        objective="mlm",
        lr_schedule="constant",
        warmup_steps=0,
        lr=1e-2,
        **TINY,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader([batch, batch], batch_size=None))
    ckpt = folder / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    module.model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return ckpt


def test_checkpoint_gives_the_same_result_as_its_model_folder(task, tmp_path):
    ckpt = pretraining_checkpoint(task, tmp_path)
    files = task["files"]
    common = dict(
        train_file=str(files["train"]["tsv"]),
        valid_file=str(files["valid"]["tsv"]),
        **{**FAST, "max_epochs": 1},
    )
    from_ckpt = finetune(model=str(ckpt), **common)  # the tokenizer: the run's hyperparameter
    from_folder = finetune(model=str(tmp_path / "model"), **common)
    assert from_ckpt["history"] == from_folder["history"]
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="--model .*other.ckpt: not a bertlab checkpoint"):
        finetune(model=str(tmp_path / "other.ckpt"), **common)


# -------------------------------------------------------------------------- reading, labels
def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_layouts(tmp_path):
    sst2 = write(tmp_path / "sst2.tsv", "sentence\tlabel\ngood film \t1\nbad film\t0\n")
    examples = read_examples(sst2)
    assert [(e.label, e.text, e.text_pair) for e in examples] == [
        ("1", "good film ", None),
        ("0", "bad film", None),
    ]
    qnli = write(
        tmp_path / "qnli.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n",
    )
    assert read_examples(qnli)[0].text_pair == "Him."
    mrpc = write(
        tmp_path / "mrpc.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA\tB\n"
    )
    assert read_examples(mrpc, label_column="Quality")[0].text_pair == "B"
    cola = write(tmp_path / "in_domain_train.tsv", "gj04\t1\t\tThe book fell.\r\n\n")
    (example,) = read_examples(cola, label_column="1", text_columns="3")
    assert (example.label, example.text) == ("1", "The book fell.")
    three = write(tmp_path / "pairs.tsv", "yes\tfirst\tsecond\n")
    assert read_examples(three)[0].text_pair == "second"
    jsonl = write(
        tmp_path / "d.jsonl", '{"label": true, "text": "x"}\n\n{"label": false, "text": "y"}\n'
    )
    assert [e.label for e in read_examples(jsonl)] == ["true", "false"]
    custom = write(tmp_path / "c.jsonl", '{"y": 2, "q": "a", "d": "b"}\n')
    assert read_examples(custom, label_column="y", text_columns="q,d")[0].text_pair == "b"


def test_labels_are_sorted_numerically_when_integers(tmp_path):
    numbers = read_examples(write(tmp_path / "n.tsv", "10\ta\n2\tb\n1\tc\n"))
    assert label_mapping(numbers, "n.tsv") == {"1": 0, "2": 1, "10": 2}
    words = read_examples(write(tmp_path / "w.tsv", "pos\ta\nneg\tb\n"))
    assert label_mapping(words, "w.tsv") == {"neg": 0, "pos": 1}


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("missing.tsv", None, {}, "missing.tsv: no such file"),
        ("empty.tsv", "\n\n", {}, "empty.tsv: the file is empty"),
        ("notab.tsv", "en\tfine\njust text\n", {}, "notab.tsv line 2: 1 tab-separated field"),
        ("header.tsv", "sentence\tlabel\n", {}, "header.tsv: no examples"),
        (
            "cols.tsv",
            "a\tlabel\nx\t1\n",
            {"text_columns": "b"},
            "cols.tsv line 1: unknown column 'b'",
        ),
        ("short.tsv", "sentence\tlabel\nx\n", {}, "short.tsv line 2: 1 tab-separated field"),
        ("nolabel.tsv", "x\ty\n", {"label_column": "gold"}, "nolabel.tsv line 1: no header line"),
        ("bad.jsonl", '{"label": 1, "text": "a"}\n{"label": 1\n', {}, "bad.jsonl line 2: not JSON"),
        (
            "key.jsonl",
            '{"label": 1, "text": "a"}\n{"label": 0}\n',
            {},
            "key.jsonl line 2: no 'text'",
        ),
        ("blank.tsv", "en\ta\n \tb\n", {}, "blank.tsv line 2: empty label"),
    ],
)
def test_reading_errors_name_file_and_line(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_examples(str(path), **kwargs)
    assert str(error.value).startswith(f"{tmp_path}/{message}"), error.value


def test_task_errors_before_loading_the_model(tmp_path):
    train = write(tmp_path / "train.tsv", "a\tx\nb\ty\n")
    single = dict(model=str(tmp_path / "no-model"), train_file=train)
    with pytest.raises(ValueError, match=r"valid.tsv line 1: label 'c' does not occur"):
        finetune(valid_file=write(tmp_path / "valid.tsv", "c\tz\n"), **single)
    with pytest.raises(ValueError, match=r"pairs.tsv line 1: sentence pairs, but the training"):
        finetune(valid_file=write(tmp_path / "pairs.tsv", "a\tz\tw\n"), **single)
    with pytest.raises(ValueError, match="one.tsv: needs at least two different labels"):
        finetune(model="m", train_file=write(tmp_path / "one.tsv", "a\tx\n"), valid_file=train)
    with pytest.raises(ValueError, match="--model .*no-model: no such folder"):
        finetune(valid_file=write(tmp_path / "valid.tsv", "b\tz\na\tw\n"), **single)


def test_meaningless_settings_are_refused_in_one_line(tmp_path, capsys):
    """Settings that would train nonsense, or not run, exit 2 with one line naming the flag,
    before any file is read or model loaded (the model here does not even exist)."""
    from bertlab.command import run

    train = write(tmp_path / "train.tsv", "a\tx\nb\ty\n")
    valid = write(tmp_path / "valid.tsv", "b\tz\na\tw\n")
    common = ["--model", str(tmp_path / "no-model"), "--train_file", train]
    cases = [
        (["--valid_file", valid, "--warmup_ratio", "2"], r"--warmup_ratio 2.0 must be in \[0, 1\]"),
        (["--valid_file", valid, "--weight_decay", "-1"], "--weight_decay -1.0 must be >= 0"),
        (["--valid_file", valid, "--lr", "0"], "--lr 0.0 must be positive"),
        (["--valid_file", valid, "--precision", "16-mixed", "--accelerator", "cpu"],
         "--precision 16-mixed .* needs a CUDA GPU"),
    ]  # fmt: skip
    if not torch.cuda.is_available():
        cases.append((["--valid_file", valid, "--accelerator", "gpu"], "--accelerator gpu: torch"))
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run(finetune, [*common, *extra])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert re.match(f"error: {message}", err), (message, err)


def test_a_split_that_is_another_splits_file_is_warned_of(task, capsys):
    files = task["files"]
    train, valid = str(files["train"]["tsv"]), str(files["valid"]["tsv"])
    finetune(model=str(task["model"]), train_file=train, valid_file=train, test_file=train,
             **{**FAST, "max_epochs": 1})  # fmt: skip
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert warned == [
        f"warning: --valid_file {train} is also the --train_file: its scores measure "
        "memorisation, not held-out accuracy",
        f"warning: --test_file {train} is also the --train_file: its scores measure "
        "memorisation, not held-out accuracy",
    ]
    finetune(model=str(task["model"]), train_file=train, valid_file=valid, test_file=valid,
             **{**FAST, "max_epochs": 1})  # fmt: skip
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert warned == [
        f"warning: --test_file {valid} is also the --valid_file: the best epoch is chosen on "
        "it, so its score is no test score"
    ]


def test_another_tokenizer_than_the_models_is_refused(task, tmp_path, shared_data):
    """A --tokenizer whose vocabulary is not the model folder's own would feed its ids to the
    wrong embeddings: refused, naming both, whatever its size."""
    other = build_wordpiece(english_sentences(shared_data, 50), tmp_path / "other", num_words=50)
    files = task["files"]
    with pytest.raises(ValueError, match="--tokenizer .*other is another vocabulary than --model"):
        finetune(
            model=str(task["model"]), train_file=str(files["train"]["tsv"]),
            valid_file=str(files["valid"]["tsv"]), tokenizer=str(other), **FAST,
        )  # fmt: skip
