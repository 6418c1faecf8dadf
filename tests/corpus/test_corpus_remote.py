"""prepare_corpus with s3:// inputs: a Wikipedia dump streamed from the bucket (bz2 over the
streamed object) gives the corpus the local file gives, byte for byte; globs and folders of URLs;
a missing bucket or object is one line naming the URL.

Run: .venv/bin/python -m pytest tests/corpus/test_corpus_remote.py -q

The store is moto's S3 server on 127.0.0.1 (tests/conftest.py: s3_bucket).
"""

from __future__ import annotations

import fsspec
import pytest
from conftest import run_tool

from bertlab.corpus.inputs import expand_inputs
from bertlab.corpus.prepare import prepare_corpus


def test_a_dump_in_a_bucket_makes_the_corpus_the_local_dump_makes(
    shared_data, en_corpus, s3_bucket, tmp_path
):
    dump = f"{s3_bucket}/dumps/enwiki-sample.xml.bz2"
    fsspec.filesystem("s3").put_file(str(shared_data / "enwiki-sample.xml.bz2"), dump)
    out = tmp_path / "corpus"
    run_tool(
        "prepare_corpus.py", "--input", dump, "--output_dir", out, "--lang", "en",
        "--valid_docs", "10", "--test_docs", "5",
    )  # fmt: skip
    for split in ("train", "valid", "test"):
        assert (out / f"{split}.txt").read_bytes() == (en_corpus / f"{split}.txt").read_bytes()


def test_folders_and_globs_of_urls(s3_bucket, tmp_path):
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"{s3_bucket}/text/a.jsonl", b'{"text": "One sentence. Two sentences."}\n')
    fs.pipe_file(f"{s3_bucket}/text/sub/b.txt", b"Another document. It ends.\n")
    fs.pipe_file(f"{s3_bucket}/text/notes.md", b"not an input")
    fs.pipe_file(f"{s3_bucket}/text/.hidden/c.txt", b"Hidden. Skipped.\n")
    folder = expand_inputs([f"{s3_bucket}/text"])
    assert folder == [f"{s3_bucket}/text/a.jsonl", f"{s3_bucket}/text/sub/b.txt"]
    assert expand_inputs([f"{s3_bucket}/text/*.jsonl"]) == folder[:1]
    prepare_corpus(input=[f"{s3_bucket}/text"], output_dir=str(tmp_path / "c"), valid_docs=0,
                   test_docs=0)  # fmt: skip
    text = (tmp_path / "c" / "train.txt").read_text()
    assert text == "One sentence.\nTwo sentences.\n\nAnother document.\nIt ends.\n"


@pytest.mark.parametrize(
    "url, says",
    [
        ("s3://bertlab-no-such-bucket/dump.xml.bz2", "no such bucket 'bertlab-no-such-bucket'"),
        ("{bucket}/missing.txt", "no such file or folder"),
        ("{bucket}/none/*.txt", "no file matches this pattern"),
    ],
)
def test_a_missing_bucket_or_object_is_one_line_naming_it(s3_bucket, tmp_path, url, says):
    url = url.format(bucket=s3_bucket)
    with pytest.raises(ValueError) as error:
        prepare_corpus(input=[url], output_dir=str(tmp_path / "c"))
    assert str(error.value) == f"--input {url}: {says}"
