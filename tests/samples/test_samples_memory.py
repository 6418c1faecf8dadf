"""prepare_samples on a large corpus: bounded memory, shards shuffled in buckets, same statistics.

A "large" corpus here is the English corpus repeated (documents reshuffled), with the shard
writer's bucket size lowered so that a few MB of shards take the bucketed path a corpus of
gigabytes takes.

Run: .venv/bin/python -m pytest tests/samples/test_samples_memory.py -q
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

from conftest import REPO

import bertlab.samples.shard_writer
from bertlab.samples.prepare import prepare_samples


def repeated(corpus_file: Path, out: Path, times: int) -> Path:
    """The documents of a corpus file, `times` times over, each round in another order."""
    documents = [d.strip("\n") for d in corpus_file.read_text(encoding="utf-8").split("\n\n")]
    documents = [d for d in documents if d]
    with out.open("w", encoding="utf-8") as f:
        for round_ in range(times):
            random.Random(round_).shuffle(documents)
            f.write("\n\n".join(documents) + "\n\n")
    return out


def shard_lines(folder: Path) -> list[list[bytes]]:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return [gzip.decompress((folder / s["file"]).read_bytes()).splitlines() for s in meta["shards"]]


def unsized(meta: dict) -> dict:
    shards = [{k: v for k, v in shard.items() if k != "num_bytes"} for shard in meta["shards"]]
    return {**meta, "shards": shards}


def test_bucketed_shards_hold_the_same_samples(en_corpus, en_wordpiece, tmp_path, monkeypatch):
    """Shards larger than a bucket: the same lines in every shard as a whole shuffle gives, in
    another order, and the same files whatever --num_proc."""
    text = repeated(en_corpus / "train.txt", tmp_path / "corpus.txt", 2)
    common = dict(input=str(text), tokenizer=str(en_wordpiece), max_seq_len=64, dupe_factor=2,
                  num_shards=2, seed=3)  # fmt: skip
    whole = prepare_samples(**common, output_dir=str(tmp_path / "whole"))
    size = (whole["num_tokens"] * 4) // 2  # about the bytes of one shard's lines
    monkeypatch.setattr(
        bertlab.samples.shard_writer, "_BUCKET_BYTES", size // 7
    )  # ~7 buckets a shard
    one = prepare_samples(**common, output_dir=str(tmp_path / "one"), num_proc=1)
    two = prepare_samples(**common, output_dir=str(tmp_path / "two"), num_proc=2)
    assert one == two  # the same files, so the same sizes too
    assert unsized(whole) == unsized(one)  # the lines in another order compress to other sizes
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    for whole_lines, bucketed in zip(
        shard_lines(tmp_path / "whole"), shard_lines(tmp_path / "one"), strict=True
    ):
        assert whole_lines != bucketed and sorted(whole_lines) == sorted(bucketed)


def test_statistics_of_the_output(en_corpus, en_wordpiece, tmp_path) -> None:
    """Count, length and random-next share as Google's recipe gives them, and the same on a
    corpus four times as large (drawn from the whole corpus through the token store)."""
    text = en_corpus / "train.txt"
    large = repeated(text, tmp_path / "large.txt", 4)
    stats, sizes = [], []
    for corpus, out in ((text, "small"), (large, "large")):
        meta = prepare_samples(str(corpus), str(en_wordpiece), str(tmp_path / out),
                               max_seq_len=128, dupe_factor=1, num_shards=2, seed=5)  # fmt: skip
        samples = [json.loads(line) for lines in shard_lines(tmp_path / out) for line in lines]
        assert len(samples) == meta["num_samples"]
        share = sum(s["next_sentence_label"] for s in samples) / len(samples)
        mean = sum(len(s["input_ids"]) for s in samples) / len(samples)
        short = sum(len(s["input_ids"]) < 100 for s in samples) / len(samples)
        per_token = len(samples) / (meta["corpus"]["num_tokens"])
        stats.append((share, mean, short, per_token))
        sizes.append(len(samples))
        # NSP: half the pairs get a random B, and one-sentence chunks too (a bit more than half).
        assert 0.48 < share < 0.62, share
        # Most pairs fill max_seq_len (128); short_seq_prob 0.1 and document ends shorten some.
        assert 110 < mean < 128, mean
        assert 0.03 < short < 0.2, short
        assert 1 / 128 < per_token < 1 / 100, per_token
    (share, mean, short, per_token), (large_share, large_mean, large_short, large_per_token) = stats
    # Shares of the small corpus's samples: three standard errors, at least 0.02 (the small
    # fixture of a clone without ../shared makes a few hundred samples, not thousands).
    tolerance = max(0.02, 3 * (0.25 / sizes[0]) ** 0.5)
    assert abs(large_share - share) < tolerance and abs(large_short - short) < tolerance, stats
    assert abs(large_mean / mean - 1) < 0.03 and abs(large_per_token / per_token - 1) < 0.03, stats


PEAK = """
import resource, sys
import bertlab.samples.shard_writer, bertlab.samples.tokenized
from bertlab.samples.prepare import prepare_samples
# A corpus of gigabytes, scaled down: shards in buckets of 2 MiB, the file read 1 MiB at a time.
bertlab.samples.shard_writer._BUCKET_BYTES = 2 << 20
bertlab.samples.tokenized._READ_BYTES = 1 << 20
prepare_samples(sys.argv[1], sys.argv[2], sys.argv[3], max_seq_len=128, dupe_factor=2,
                num_shards=1, seed=1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(corpus: Path, tokenizer: Path, out: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PEAK, str(corpus), str(tokenizer), str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=True,
    )  # fmt: skip
    return int(result.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_corpus(en_corpus, en_wordpiece, tmp_path) -> None:
    """Peak RSS on a corpus and on it four times over: within 1.25x, and a few MB apart (all
    documents in memory, as before, grew it by ~60 MB here)."""
    small = repeated(en_corpus / "train.txt", tmp_path / "small.txt", 1)
    large = repeated(en_corpus / "train.txt", tmp_path / "large.txt", 4)
    small_peak = peak_kib(small, en_wordpiece, tmp_path / "small")
    large_peak = peak_kib(large, en_wordpiece, tmp_path / "large")
    assert large_peak <= 1.25 * small_peak, (small_peak, large_peak)
    assert large_peak - small_peak < 20 * 1024, (small_peak, large_peak)
