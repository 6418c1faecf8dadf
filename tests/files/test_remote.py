"""bertlab.files.remote: URLs told from paths, joined without folding `//`, streamed shards read
as local ones are, and a store's failures as one line naming the URL.

Run: .venv/bin/python -m pytest tests/files/test_remote.py -q
"""

from __future__ import annotations

import gzip

import fsspec
import pytest

from bertlab.files import remote
from bertlab.samples.shard_reader import read_lines, resolve_samples


def test_urls_and_paths():
    assert remote.is_remote("s3://b/x") and remote.is_remote("hf://datasets/a/b")
    assert not remote.is_remote("/data/x") and not remote.is_remote("file:///data/x")
    assert not remote.is_remote("runs/tiny")
    assert (
        remote.join("s3://b/runs/", "version_0", "last.ckpt") == "s3://b/runs/version_0/last.ckpt"
    )
    assert remote.join("runs", "last.ckpt") == "runs/last.ckpt"
    assert remote.parent("s3://b/x/y.txt") == "s3://b/x"
    assert remote.name("s3://b/x/") == "x"


def test_streamed_shards_are_read_as_local_ones(en_samples, s3_bucket):
    shard = en_samples / "train" / "shard-00000.jsonl.gz"
    url = f"{s3_bucket}/train/shard-00000.jsonl.gz"
    fs = fsspec.filesystem("s3")
    fs.put(str(en_samples / "train") + "/", f"{s3_bucket}/train/", recursive=True)
    assert list(read_lines(url)) == list(read_lines(str(shard)))
    local = resolve_samples(str(en_samples / "train"), "--data.train_files")
    for spec in (f"{s3_bucket}/train", f"{s3_bucket}/train/", f"{s3_bucket}/tr*"):
        found = resolve_samples(spec, "--data.train_files")
        assert [s.num_samples for s in found.shards] == [s.num_samples for s in local.shards]
        assert found.shards[0].path == url
    glob = resolve_samples(f"{s3_bucket}/train/shard-0000[01].jsonl.gz", "--data.train_files")
    assert [s.path for s in glob.shards] == [url, url.replace("00000", "00001")]


def test_a_truncated_streamed_shard_is_one_line():
    fs = fsspec.filesystem("memory")
    data = gzip.compress(b"".join(b'{"x": %d}\n' % i for i in range(2000)))
    fs.pipe_file("/remote-test/shard.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^memory://remote-test/shard.jsonl.gz: truncated"):
        list(read_lines("memory://remote-test/shard.jsonl.gz"))


def test_missing_things_are_one_line_naming_the_url(s3_bucket):
    with pytest.raises(ValueError) as error:
        resolve_samples("s3://bertlab-no-such-bucket/samples", "--data.train_files")
    assert str(error.value) == (
        "--data.train_files s3://bertlab-no-such-bucket/samples: no such bucket "
        "'bertlab-no-such-bucket'"
    )
    with pytest.raises(ValueError, match="no such file or folder"):
        resolve_samples(f"{s3_bucket}/nothing", "--data.train_files")
    with pytest.raises(ValueError, match=r"s3://bertlab-no-such-bucket/x: no such bucket"):
        remote.check_writable("s3://bertlab-no-such-bucket/x")
    with pytest.raises(ValueError, match=r"^memory://nope/x: no such file or folder"):
        remote.open_read("memory://nope/x")
