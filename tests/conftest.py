"""Shared session fixtures: the real pipeline run once on the shared data, reused by all tests.

Run everything with `make test`; one file with `.venv/bin/python -m pytest tests/test_X.py`.

The fixtures call the library functions (fast, in-process); each tool's own test also runs its
script through the real entry point. The real text is ../shared/data (or $BERTLAB_SHARED_DATA)
when that folder is there, else tests/text: slices of the same two files (its README says which),
so a fresh clone without ../shared runs every test on real text too. A folder that lacks the
files is an error, not a skip, so CI cannot pass vacuously.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


FIXTURES = REPO / "tests" / "text"
TEXT_FILES = ("enwiki-sample.xml.bz2", "ja-manpages.txt.gz")


def text_data_folder() -> Path:
    """The shared data folder when it exists, else the slices shipped in tests/text."""
    shared = Path(os.environ.get("BERTLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared if shared.is_dir() else FIXTURES


# Counts that tests assert differ between the full shared files and the slices.
FULL_TEXT = text_data_folder() != FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real text: ../shared/data, or tests/text in a clone without it."""
    path = text_data_folder()
    missing = [name for name in TEXT_FILES if not (path / name).exists()]
    assert not missing, f"real text {missing} not found in {path}"
    return path


def run_tool(script: str, *args: str, check: bool = True, cwd: Path | None = None, env=None):
    """Run tools/<script> (or `-m bertlab`) in a real subprocess, as a user would."""
    command = [sys.executable, str(REPO / "tools" / script), *map(str, args)]
    if script == "bertlab":
        command = [sys.executable, "-m", "bertlab", *map(str, args)]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(map(str, args))} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


@pytest.fixture(scope="session")
def en_corpus(shared_data: Path, tmp_path_factory) -> Path:
    """The shared English Wikipedia sample as a corpus folder: train.txt, valid.txt, test.txt."""
    from bertlab.corpus.prepare import prepare_corpus

    out = tmp_path_factory.mktemp("en_corpus")
    prepare_corpus(
        input=[str(shared_data / "enwiki-sample.xml.bz2")],
        output_dir=str(out),
        lang="en",
        valid_docs=10,
        test_docs=5,
    )
    return out


@pytest.fixture(scope="session")
def ja_corpus(shared_data: Path, tmp_path_factory) -> Path:
    """The first 300 documents of the shared Japanese text as a corpus folder."""
    from bertlab.corpus.prepare import prepare_corpus

    tmp = tmp_path_factory.mktemp("ja_corpus")
    with gzip.open(shared_data / "ja-manpages.txt.gz", "rt", encoding="utf-8") as f:
        documents = f.read().split("\n\n")[:300]
    subset = tmp / "ja-subset.txt"
    subset.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    out = tmp / "corpus"
    prepare_corpus(input=[str(subset)], output_dir=str(out), lang="ja", valid_docs=30, test_docs=10)
    return out


@pytest.fixture(scope="session")
def en_wordpiece(en_corpus: Path, tmp_path_factory) -> Path:
    """A small cased WordPiece tokenizer trained on the English corpus."""
    from bertlab.tokenizer.training import train_tokenizer

    out = tmp_path_factory.mktemp("en_wordpiece")
    train_tokenizer(
        train_file=str(en_corpus / "train.txt"),
        output_dir=str(out),
        model_type="wordpiece",
        vocab_size=3000,
    )
    return out


@pytest.fixture(scope="session")
def ja_unigram(ja_corpus: Path, tmp_path_factory) -> Path:
    """A small SentencePiece unigram tokenizer trained on the Japanese corpus."""
    from bertlab.tokenizer.training import train_tokenizer

    out = tmp_path_factory.mktemp("ja_unigram")
    train_tokenizer(
        train_file=str(ja_corpus / "train.txt"),
        output_dir=str(out),
        model_type="unigram",
        vocab_size=3000,
        input_sentence_size=3000,
    )
    return out


@pytest.fixture(scope="session")
def en_samples(en_corpus: Path, en_wordpiece: Path, tmp_path_factory) -> Path:
    """NSP sentence-pair samples (max_seq_len 64) of the English corpus: train/, valid/, test/."""
    from bertlab.samples.prepare import prepare_samples

    out = tmp_path_factory.mktemp("en_samples")
    for split, shards in (("train", 4), ("valid", 1), ("test", 1)):
        prepare_samples(
            input=str(en_corpus / f"{split}.txt"),
            tokenizer=str(en_wordpiece),
            output_dir=str(out / split),
            max_seq_len=64,
            num_shards=shards,
            dupe_factor=1,
            seed=0,
        )
    return out


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 API server on 127.0.0.1 (a free port), for the whole session: its URL."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line a request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> str:
    """A new, empty bucket on the local S3 server, as `s3://NAME`; AWS_* point at that server
    (this process and the subprocesses it starts), as a user's environment would."""
    import uuid

    import fsspec
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made for other settings
    bucket = f"bertlab-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()


def upload(folder: Path, url: str) -> str:
    """Copy a local folder's files to `url` (an s3:// folder); return the URL."""
    import fsspec

    fs = fsspec.filesystem("s3")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url.removeprefix('s3://')}/{path.relative_to(folder)}")
    return url


@pytest.fixture(scope="session")
def mlm_samples(en_corpus: Path, en_wordpiece: Path, tmp_path_factory) -> Path:
    """MLM-only samples (64 tokens) of the English corpus: train, valid, test."""
    from bertlab.samples.prepare import prepare_samples

    out = tmp_path_factory.mktemp("mlm_samples")
    for split in ("train", "valid", "test"):
        prepare_samples(
            str(en_corpus / f"{split}.txt"), str(en_wordpiece), str(out / split),
            max_seq_len=64, dupe_factor=1, num_shards=1, nsp=False,
        )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def masked_lm(en_wordpiece: Path, tmp_path_factory) -> Path:
    """A tiny untrained BertForMaskedLM folder with the English WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("masked_lm")
    tokenizer = AutoTokenizer.from_pretrained(en_wordpiece)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
