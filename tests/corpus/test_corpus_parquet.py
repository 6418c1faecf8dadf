"""prepare_corpus on tables: Parquet in the wikimedia/wikipedia layout, save_to_disk, datasets.

Run: .venv/bin/python -m pytest tests/corpus/test_corpus_parquet.py -q

The tables hold real English Wikipedia text: the articles of the shared sample dump, cleaned by
bertlab.corpus.wikipedia, written with the columns of `wikimedia/wikipedia` (id, url, title, text)
as `20231101.en/train-0000N-of-00002.parquet`. Every way of reading them (a folder, a glob, a
save_to_disk folder, `--dataset parquet`) must give the corpus that JSON Lines of the same texts
give, byte for byte. The datasets path runs offline: `load_dataset("parquet", data_files=...)`.
"""

from __future__ import annotations

import bz2
import itertools
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_tool

import bertlab.corpus.tables as table_documents
from bertlab.command import run
from bertlab.corpus.prepare import prepare_corpus
from bertlab.corpus.wikipedia import iter_articles

SPLITS = ("train", "valid", "test")
ARTICLES = 40  # enough text for a tokenizer and a few training steps; both data folders have it
SPLIT_FLAGS = ("--valid_docs", "3", "--test_docs", "2")


def corpus_bytes(folder: Path) -> dict[str, bytes]:
    return {split: (folder / f"{split}.txt").read_bytes() for split in SPLITS}


def documents(folder: Path) -> list[list[str]]:
    found = []
    for split in SPLITS:
        text = (folder / f"{split}.txt").read_text(encoding="utf-8")
        found += [block.split("\n") for block in text.strip().split("\n\n") if block]
    return found


@pytest.fixture(scope="module")
def articles(shared_data: Path) -> list[dict[str, str]]:
    """Rows in the wikimedia/wikipedia schema, from the real dump: paragraphs apart by a blank
    line, no title in the text (as that dataset's text is)."""
    with bz2.open(shared_data / "enwiki-sample.xml.bz2") as stream:
        found = list(itertools.islice(iter_articles(stream, "enwiki-sample"), ARTICLES))
    assert len(found) == ARTICLES
    return [
        {
            "id": str(12 + i),
            "url": "https://en.wikipedia.org/wiki/" + title.replace(" ", "_"),
            "title": title,
            "text": "\n\n".join(paragraphs),
        }
        for i, (title, paragraphs) in enumerate(found)
    ]


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def wikimedia(articles, tmp_path_factory) -> Path:
    """tmp/wikimedia/20231101.en/train-0000{0,1}-of-00002.parquet, the Hub dataset's layout."""
    folder = tmp_path_factory.mktemp("wikimedia") / "20231101.en"
    half = len(articles) // 2
    write_parquet(folder / "train-00000-of-00002.parquet", articles[:half])
    write_parquet(folder / "train-00001-of-00002.parquet", articles[half:])
    return folder


@pytest.fixture(scope="module")
def jsonl_corpus(articles, tmp_path_factory) -> Path:
    """The reference: the same texts as JSON Lines, through prepare_corpus."""
    tmp = tmp_path_factory.mktemp("jsonl")
    lines = [json.dumps({"text": row["text"]}, ensure_ascii=False) for row in articles]
    (tmp / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare_corpus([str(tmp / "articles.jsonl")], str(tmp / "corpus"), "en", 3, 2)
    return tmp / "corpus"


@pytest.fixture(scope="module")
def parquet_corpus(wikimedia, tmp_path_factory) -> Path:
    """The wikimedia folder through the real tools/prepare_corpus.py."""
    out = tmp_path_factory.mktemp("parquet") / "corpus"
    result = run_tool(
        "prepare_corpus.py", "--input", wikimedia, "--output_dir", out, "--lang", "en",
        *SPLIT_FLAGS,
    )  # fmt: skip
    assert f"train {ARTICLES - 5} documents" in result.stdout, result.stdout
    return out


def offline_env(tmp: Path, block_datasets: bool = False) -> dict[str, str]:
    """The environment of a tool run: no Hub, a private cache; optionally no datasets package."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    if block_datasets:
        blocker = tmp / "no-datasets" / "datasets"
        blocker.mkdir(parents=True, exist_ok=True)
        (blocker / "__init__.py").write_text("raise ImportError('datasets is not installed')\n")
        paths.insert(0, str(blocker.parent))
    return {
        **os.environ,
        "HF_HOME": str(tmp / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }


def test_wikimedia_folder_and_glob_equal_json_lines(
    parquet_corpus, jsonl_corpus, wikimedia, articles, tmp_path
):
    # The Parquet texts and the JSON Lines texts give the same corpus, byte for byte.
    assert corpus_bytes(parquet_corpus) == corpus_bytes(jsonl_corpus)
    docs = documents(parquet_corpus)
    assert len(docs) == ARTICLES
    sentences = sum(len(d) for d in docs)
    assert sentences > 20 * ARTICLES  # real articles, many sentences each
    # A document is its article's text, cut into sentences: no title line.
    titles = {row["title"] for row in articles}
    assert not any(doc[0] in titles for doc in docs)
    assert any(articles[0]["text"].startswith(doc[0]) for doc in docs)
    # Splitting only cuts: every sentence is a piece of the articles' text.
    source = "\n".join(row["text"] for row in articles)
    assert all(sentence in source for doc in docs for sentence in doc[::10])

    # A glob of the files, as the Hub's layout invites, is the same input.
    out = tmp_path / "glob"
    run_tool(
        "prepare_corpus.py", "--input", wikimedia / "train-*-of-00002.parquet",
        "--output_dir", out, "--lang", "en", *SPLIT_FLAGS,
    )  # fmt: skip
    assert corpus_bytes(out) == corpus_bytes(parquet_corpus)


def test_title_column_is_the_first_line(wikimedia, articles, tmp_path):
    summary = prepare_corpus(
        [str(wikimedia)], str(tmp_path / "titled"), "en", 3, 2, title_column="title"
    )
    assert summary["splits"]["train"]["documents"] == ARTICLES - 5
    titles = [row["title"] for row in articles]
    docs = documents(tmp_path / "titled")
    assert sorted(doc[0] for doc in docs) == sorted(titles)


def test_read_in_batches_never_whole(wikimedia, articles, tmp_path, monkeypatch):
    """More rows than a batch: several batches of at most BATCH_ROWS, no whole-table read."""
    monkeypatch.setattr(table_documents, "BATCH_ROWS", 3)

    def whole(*args, **kwargs):
        raise AssertionError("a whole table was read")

    monkeypatch.setattr(pq, "read_table", whole)
    monkeypatch.setattr(pq.ParquetFile, "read", whole)
    sizes: list[int] = []
    rows = table_documents._rows

    def counting(columns, *args):
        sizes.append(len(columns["text"]))
        return rows(columns, *args)

    monkeypatch.setattr(table_documents, "_rows", counting)
    prepare_corpus([str(wikimedia)], str(tmp_path / "batched"), "en", 3, 2)
    assert sum(sizes) == ARTICLES and max(sizes) <= 3 and len(sizes) >= ARTICLES // 3
    reference = tmp_path / "reference"
    monkeypatch.setattr(table_documents, "BATCH_ROWS", 1000)
    prepare_corpus([str(wikimedia)], str(reference), "en", 3, 2)
    assert corpus_bytes(tmp_path / "batched") == corpus_bytes(reference)

    # An Arrow file holding one large record batch is cut into batches as well.
    saved = tmp_path / "arrow"
    saved.mkdir()
    columns = {name: [row[name] for row in articles] for name in articles[0]}
    with pa.ipc.new_stream(str(saved / "data-00000-of-00001.arrow"), pa.table(columns).schema) as w:
        w.write_table(pa.table(columns), max_chunksize=ARTICLES)
    sizes.clear()
    monkeypatch.setattr(table_documents, "BATCH_ROWS", 3)
    prepare_corpus([str(saved)], str(tmp_path / "from-arrow"), "en", 3, 2)
    assert sum(sizes) == ARTICLES and max(sizes) <= 3
    assert corpus_bytes(tmp_path / "from-arrow") == corpus_bytes(reference)


def test_save_to_disk_folder_needs_no_datasets_package(articles, parquet_corpus, tmp_path):
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_list(articles).save_to_disk(str(saved), num_shards=2)
    assert (saved / "state.json").is_file() and (saved / "dataset_info.json").is_file()
    assert sorted(p.name for p in saved.glob("*.arrow")) == [
        "data-00000-of-00002.arrow", "data-00001-of-00002.arrow",
    ]  # fmt: skip
    out = tmp_path / "corpus"
    env = offline_env(tmp_path, block_datasets=True)
    run_tool(
        "prepare_corpus.py", "--input", saved, "--output_dir", out, "--lang", "en", *SPLIT_FLAGS,
        env=env,
    )  # fmt: skip
    assert corpus_bytes(out) == corpus_bytes(parquet_corpus)

    # Without the package, --dataset is one line saying how to get it.
    result = run_tool(
        "prepare_corpus.py", "--dataset", "parquet", "--dataset_files", saved / "x.parquet",
        "--output_dir", tmp_path / "none", env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: --dataset parquet needs the datasets package: pip install datasets"
    )
    assert not (tmp_path / "none").exists()


def test_dataset_flag_streams_load_dataset(wikimedia, parquet_corpus, tmp_path):
    out = tmp_path / "corpus"
    result = run_tool(
        "prepare_corpus.py", "--dataset", "parquet", "--dataset_files",
        wikimedia / "train-*.parquet", "--dataset_split", "train", "--output_dir", out,
        "--lang", "en", *SPLIT_FLAGS, env=offline_env(tmp_path),
    )  # fmt: skip
    assert f"train {ARTICLES - 5} documents" in result.stdout
    assert corpus_bytes(out) == corpus_bytes(parquet_corpus)


def refused(capsys, argv: list, *fragments: str) -> str:
    """Run prepare_corpus's command line in-process: exit 2 and one `error:` line."""
    with pytest.raises(SystemExit) as exit_:
        run(prepare_corpus, [str(a) for a in argv])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_bad_tables_are_one_line_errors(capsys, wikimedia, articles, tmp_path):
    bad = tmp_path / "bad"
    rows = [{"id": r["id"], "body": r["text"]} for r in articles[:5]]
    no_text = write_parquet(bad / "no-text.parquet", rows)
    nulls = [dict(r) for r in articles[:6]]
    nulls[4]["text"] = None
    null_text = write_parquet(bad / "null.parquet", nulls, row_group_size=2)
    numbers = write_parquet(bad / "numbers.parquet", [{"id": 1, "text": 7}])
    real = (wikimedia / "train-00000-of-00002.parquet").read_bytes()
    truncated = bad / "cut.parquet"
    truncated.write_bytes(real[: len(real) // 2])
    not_parquet = bad / "notes.parquet"
    not_parquet.write_text("These are notes, not a table.\n")
    stream = pa.BufferOutputStream()
    table = pa.table({"text": [r["text"] for r in articles[:10]]})
    with pa.ipc.new_stream(stream, table.schema) as writer:
        writer.write_table(table, max_chunksize=5)
    cut_arrow = bad / "data-00000-of-00001.arrow"
    cut_arrow.write_bytes(stream.getvalue().to_pybytes()[:-3000])

    cases = [
        ([no_text], "no column 'text' (--text_column); its columns: id, body"),
        ([null_text], "row 4: column 'text' is null, not a string"),
        ([numbers], "column 'text' holds int64 values, not text"),
        ([truncated], "not a readable Parquet file, damaged or truncated"),
        ([not_parquet], "not a readable Parquet file, damaged or truncated"),
        ([cut_arrow], "not a readable Arrow file, damaged or truncated"),
    ]
    for inputs, fragment in cases:
        out = tmp_path / f"out-{inputs[0].stem}"
        refused(capsys, ["--input", *inputs, "--output_dir", out], str(inputs[0]), fragment)
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    # A --text_column or --title_column the files lack lists the columns they have.
    refused(
        capsys,
        ["--input", wikimedia, "--output_dir", tmp_path / "o", "--title_column", "heading"],
        "train-00000-of-00002.parquet: no column 'heading' (--title_column); "
        "its columns: id, url, title, text",
    )  # fmt: skip


def test_bad_dataset_flags(capsys, wikimedia, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    refused(capsys, ["--dataset_config", "20231101.en", "--output_dir", out],
            "--dataset_config is only used with --dataset NAME")  # fmt: skip
    refused(capsys, ["--input", wikimedia, "--dataset_files", "x.parquet", "--output_dir", out],
            "--dataset_files is only used with --dataset NAME")  # fmt: skip
    files = ["--dataset", "parquet", "--dataset_files"]
    refused(capsys, [*files, tmp_path / "missing-*.parquet", "--output_dir", out],
            "--dataset parquet: cannot load it")  # fmt: skip
    refused(capsys, [*files, wikimedia / "*.parquet", "--text_column", "body", "--output_dir", out],
            "--dataset parquet: no column 'body' (--text_column); its columns: id, url, title, text")  # fmt: skip  # noqa: E501
    assert not (tmp_path / "out" / "train.txt").exists()
    # `datasets` missing from this Python: one line, not an ImportError's traceback.
    monkeypatch.setitem(sys.modules, "datasets", None)
    refused(capsys, [*files, wikimedia / "*.parquet", "--output_dir", out],
            "needs the datasets package: pip install datasets")  # fmt: skip


def test_output_rule_covers_tables(capsys, wikimedia, tmp_path):
    # Never inside an input folder (a rerun would read its own output), never holding an input.
    refused(capsys, ["--input", wikimedia, "--output_dir", wikimedia / "corpus"],
            "is inside --input")  # fmt: skip
    assert not (wikimedia / "corpus").exists()
    refused(capsys, ["--input", wikimedia / "*.parquet", "--output_dir", wikimedia.parent],
            "holds --input")  # fmt: skip
    refused(capsys, ["--dataset", "parquet", "--dataset_files", wikimedia / "*.parquet",
                     "--output_dir", wikimedia.parent], "holds --dataset_files")  # fmt: skip
    refused(capsys, ["--dataset", wikimedia, "--output_dir", wikimedia / "c"],
            "is inside --dataset")  # fmt: skip


def test_parquet_to_a_trained_model(parquet_corpus, tmp_path):
    """The README's recipe, small: Parquet -> corpus -> tokenizer -> samples -> a few steps."""
    tokenizer, samples, runs = tmp_path / "tokenizer", tmp_path / "samples", tmp_path / "runs"
    run_tool(
        "train_tokenizer.py", "--train_file", parquet_corpus / "train.txt",
        "--output_dir", tokenizer, "--model_type", "wordpiece", "--vocab_size", "2000",
    )  # fmt: skip
    for split in ("train", "valid"):
        run_tool(
            "prepare_samples.py", "--input", parquet_corpus / f"{split}.txt",
            "--tokenizer", tokenizer, "--output_dir", samples / split, "--max_seq_len", "64",
        )  # fmt: skip
    run_tool(
        "bertlab", "fit", "--config", "configs/tiny.yaml",
        f"--data.train_files={samples / 'train'}", f"--data.val_files={samples / 'valid'}",
        "--data.test_files=null", "--data.batch_size=8", "--data.shuffle_buffer_size=100",
        "--model.hidden_size=64", "--model.num_attention_heads=2",
        "--model.intermediate_size=128", "--model.max_position_embeddings=64",
        "--model.warmup_steps=2", "--trainer.max_steps=6", "--trainer.val_check_interval=6",
        "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={runs}",
    )  # fmt: skip
    checkpoints = runs / "lightning_logs" / "version_0" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert any(p.name.startswith("step=6-val_loss=") for p in checkpoints.iterdir())
