"""prepare_samples: corpus -> sentence-pair / MLM-only samples in gzipped JSONL shards + meta.json.

Run: .venv/bin/python -m pytest tests/samples/test_samples.py -q
"""

from __future__ import annotations

import bisect
import gzip
import json
import random
from pathlib import Path

import numpy as np
from conftest import run_tool

from bertlab.samples.pairs import mlm_blocks, nsp_pairs, truncate_pair
from bertlab.samples.prepare import measure_throughput, prepare_samples
from bertlab.tokenizer.training import load_tokenizer, tokenizer_fingerprint

CLS, SEP = 2, 3


def read_samples(folder: Path) -> list[dict]:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    samples = []
    for shard in meta["shards"]:
        with gzip.open(folder / shard["file"], "rt", encoding="utf-8") as f:
            samples += [json.loads(line) for line in f]
    return samples


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def subset(corpus_file: Path, out: Path, num_documents: int) -> Path:
    """The first documents of a corpus file, as a smaller corpus file."""
    documents = corpus_file.read_text(encoding="utf-8").split("\n\n")[:num_documents]
    out.write_text("\n\n".join(d.strip("\n") for d in documents) + "\n", encoding="utf-8")
    return out


class TokenStreams:
    """Each document of a corpus file tokenized on its own, sentence by sentence, by AutoTokenizer;
    finds where a token sequence occurs (one character per token, so str.find does the work)."""

    def __init__(self, corpus_file: Path, tokenizer: Path):
        tok = load_tokenizer(str(tokenizer))
        texts, self.starts = [], []
        for document in corpus_file.read_text(encoding="utf-8").split("\n\n"):
            sentences = [s for s in document.split("\n") if s.strip()]
            if not sentences:
                continue
            ids = tok(sentences, add_special_tokens=False)["input_ids"]
            self.starts.append(sum(map(len, texts)))
            texts.append(self.text([i for s in ids for i in s]) + "\x00")
        self.all = "".join(texts)

    @staticmethod
    def text(ids: list[int]) -> str:
        return "".join(chr(0x1000 + i) for i in ids)

    def contains(self, ids: list[int]) -> bool:
        return self.all.find(self.text(ids)) >= 0

    def occurrences(self, ids: list[int]) -> list[tuple[int, int, int]]:
        """(position, start and end of its document) of every occurrence of ids."""
        needle, found, at = self.text(ids), [], -1
        while (at := self.all.find(needle, at + 1)) >= 0:
            document = bisect.bisect_right(self.starts, at) - 1
            end = self.starts[document + 1] if document + 1 < len(self.starts) else len(self.all)
            found.append((at, self.starts[document], end))
        return found

    def follows(self, a: list[int], b: list[int]) -> bool:
        """B occurs after A in one document (the longer is looked up first: fewer occurrences)."""
        if len(b) >= len(a):
            return any(
                self.all.find(self.text(a), lo, at) >= 0 for at, lo, _ in self.occurrences(b)
            )
        after = ((at + len(a), hi) for at, _, hi in self.occurrences(a))
        return any(self.all.find(self.text(b), lo, hi) >= 0 for lo, hi in after)

    def apart(self, a: list[int], b: list[int]) -> bool:
        """A and B occur in two different documents."""
        longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
        needle = self.text(shorter)
        return any(
            self.all.find(needle, 0, lo) >= 0 or self.all.find(needle, hi) >= 0
            for _, lo, hi in self.occurrences(longer)
        )


def split_pair(sample: dict, max_seq_len: int) -> tuple[list[int], list[int]]:
    ids, types = sample["input_ids"], sample["token_type_ids"]
    assert len(ids) == len(types) <= max_seq_len
    b_start = types.index(1)
    assert types == [0] * b_start + [1] * (len(ids) - b_start)
    assert ids[0] == CLS and ids[b_start - 1] == SEP and ids[-1] == SEP
    a, b = ids[1 : b_start - 1], ids[b_start:-1]
    assert a and b
    return a, b


def test_english_pairs_are_real_text(en_corpus: Path, en_wordpiece: Path, tmp_path: Path):
    check_pairs_are_real_text(en_corpus, en_wordpiece, tmp_path)


def test_japanese_pairs_are_real_text(ja_corpus: Path, ja_unigram: Path, tmp_path: Path):
    check_pairs_are_real_text(ja_corpus, ja_unigram, tmp_path)


def check_pairs_are_real_text(corpus: Path, tokenizer: Path, tmp_path: Path) -> None:
    """Pairs longer than max_seq_len, truncated: A and B are still pieces of the real documents."""
    text = subset(corpus / "train.txt", tmp_path / "corpus.txt", 20)
    max_seq_len = 32  # shorter than most sentence pairs: nearly every pair is truncated
    out = tmp_path / "samples"
    meta = prepare_samples(str(text), str(tokenizer), str(out), max_seq_len=max_seq_len,
                           dupe_factor=1, num_shards=2, seed=7)  # fmt: skip
    samples = read_samples(out)
    assert len(samples) == meta["num_samples"] > 300
    streams = TokenStreams(text, tokenizer)
    for sample in samples:
        a, b = split_pair(sample, max_seq_len)
        if sample["next_sentence_label"] == 0:
            # B comes after A in the same document (truncation may leave a gap between them).
            assert streams.follows(a, b), (a, b)
        else:
            assert streams.apart(a, b), (a, b)
    truncated = sum(len(s["input_ids"]) == max_seq_len for s in samples)
    assert truncated > len(samples) / 2
    # Most sentences are longer than the target: a one-sentence chunk always gets a random B.
    assert 0.1 * len(samples) < sum(s["next_sentence_label"] for s in samples) < len(samples)


def test_meta_and_shards_of_the_fixture(en_samples: Path, en_corpus: Path, en_wordpiece: Path):
    train = en_samples / "train"
    meta = json.loads((train / "meta.json").read_text(encoding="utf-8"))
    assert list(meta) == [
        "format", "format_version", "tokenizer", "max_seq_len", "nsp", "seed", "dupe_factor",
        "short_seq_prob", "num_samples", "num_tokens", "shards", "source_files", "corpus",
    ]  # fmt: skip
    assert meta["format"] == "bertlab.samples" and meta["format_version"] == 1
    assert meta["tokenizer"] == {
        "path": str(en_wordpiece.resolve()),
        "name": en_wordpiece.name,
        "vocab_size": 3000,
        "fingerprint": tokenizer_fingerprint(str(en_wordpiece)),
        "special_ids": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
    }
    assert (meta["max_seq_len"], meta["nsp"], meta["seed"], meta["dupe_factor"]) == (64, True, 0, 1)
    assert meta["source_files"] == [str((en_corpus / "train.txt").resolve())]
    assert sorted(p.name for p in train.iterdir()) == [
        ".bertlab-output",  # the marker of bertlab.files.output_folder
        "meta.json",
        *(f"shard-{i:05d}.jsonl.gz" for i in range(4)),
    ]
    total = 0
    for shard in meta["shards"]:
        raw = (train / shard["file"]).read_bytes()
        assert raw[3] == 0 and raw[4:8] == b"\0\0\0\0", "no file name, no time in gzip headers"
        lines = gzip.decompress(raw).decode("ascii").splitlines()
        samples = [json.loads(line) for line in lines]
        assert shard["num_samples"] == len(samples)
        assert shard["num_tokens"] == sum(len(s["input_ids"]) for s in samples)
        assert set(samples[0]) == {"input_ids", "token_type_ids", "next_sentence_label"}
        total += len(samples)
    assert total == meta["num_samples"] > 1000
    counts = [s["num_samples"] for s in meta["shards"]]
    assert max(counts) - min(counts) <= 1
    assert meta["num_tokens"] == sum(s["num_tokens"] for s in meta["shards"])
    assert (
        meta["corpus"]["num_tokens"] * 0.9 < meta["num_tokens"] < meta["corpus"]["num_tokens"] * 1.3
    )
    labels = [s["next_sentence_label"] for s in read_samples(train)]
    assert 0.35 < sum(labels) / len(labels) < 0.75
    for split in ("valid", "test"):
        assert json.loads((en_samples / split / "meta.json").read_text())["num_samples"] > 10


def test_same_output_whatever_num_proc(en_corpus: Path, en_wordpiece: Path, tmp_path: Path):
    text = subset(en_corpus / "train.txt", tmp_path / "corpus.txt", 12)
    common = dict(input=str(text), tokenizer=str(en_wordpiece), max_seq_len=48, dupe_factor=2,
                  num_shards=3)  # fmt: skip
    prepare_samples(**common, output_dir=str(tmp_path / "one"), num_proc=1)
    result = run_tool(
        "prepare_samples.py", "--input", text, "--tokenizer", en_wordpiece,
        "--output_dir", tmp_path / "two", "--max_seq_len", "48", "--dupe_factor", "2",
        "--num_shards", "3", "--num_proc", "2",
    )  # fmt: skip
    assert "samples" in result.stdout
    one = folder_bytes(tmp_path / "one")
    assert one == folder_bytes(tmp_path / "two")
    prepare_samples(**common, output_dir=str(tmp_path / "seed"), seed=1)
    other = folder_bytes(tmp_path / "seed")
    assert other["meta.json"] != one["meta.json"]
    assert all(other[name] != one[name] for name in one if name.endswith(".gz"))


def test_mlm_only_blocks(en_corpus: Path, en_wordpiece: Path, tmp_path: Path) -> None:
    text = subset(en_corpus / "train.txt", tmp_path / "corpus.txt", 10)
    streams = TokenStreams(text, en_wordpiece)
    passes = {}
    for dupe_factor in (1, 2):
        out = tmp_path / f"mlm{dupe_factor}"
        meta = prepare_samples(str(text), str(en_wordpiece), str(out), max_seq_len=40,
                               dupe_factor=dupe_factor, nsp=False, num_shards=2)  # fmt: skip
        assert meta["nsp"] is False
        blocks = []
        for sample in read_samples(out):
            assert set(sample) == {"input_ids", "token_type_ids"}
            ids = sample["input_ids"]
            assert ids[0] == CLS and ids[-1] == SEP and 3 <= len(ids) <= 40
            assert sample["token_type_ids"] == [0] * len(ids)
            assert streams.contains(ids[1:-1]), "a block is a piece of one document"
            blocks.append(tuple(ids[1:-1]))
        passes[dupe_factor] = blocks
        if dupe_factor == 1:  # one pass cuts every document into blocks, all tokens kept
            assert sum(map(len, blocks)) == meta["corpus"]["num_tokens"]
            assert sum(len(b) == 38 for b in blocks) > len(blocks) * 0.8
    assert set(passes[2]) > set(passes[1]), "the second pass cuts the documents elsewhere"


def reference_truncation(length_a: int, length_b: int, max_num_tokens: int) -> tuple[int, int]:
    """Google's truncate_seq_pair, on lengths only."""
    while length_a + length_b > max_num_tokens:
        if length_a > length_b:
            length_a -= 1
        else:
            length_b -= 1
    return length_a, length_b


def test_truncation_matches_the_reference() -> None:
    rng = random.Random(0)
    fronts = 0
    for _ in range(2000):
        a0, b0 = rng.randrange(1000), rng.randrange(1000)
        a = (a0, a0 + rng.randint(1, 200))
        b = (b0, b0 + rng.randint(1, 200))
        max_num_tokens = rng.randint(5, 300)
        (ta0, ta1), (tb0, tb1) = truncate_pair(a, b, max_num_tokens, rng)
        assert a[0] <= ta0 < ta1 <= a[1] and b[0] <= tb0 < tb1 <= b[1]
        expected = reference_truncation(a[1] - a[0], b[1] - b[0], max_num_tokens)
        assert (ta1 - ta0, tb1 - tb0) == expected
        fronts += (ta0 - a[0]) + (tb0 - b[0])
        if (ta0 - a[0]) + (a[1] - ta1) + (tb0 - b[0]) + (b[1] - tb1) == 0:
            assert (ta0, ta1, tb0, tb1) == (*a, *b)
    assert fronts > 0  # both ends are cut


def test_pairs_of_a_single_document_are_true_continuations() -> None:
    # One document of 30 sentences of 5 tokens: no other document to draw a random B from.
    sentence_starts = np.arange(0, 151, 5)
    document_starts = np.array([0, 30])
    samples = nsp_pairs(0, sentence_starts, document_starts, random.Random(0), 16, 0.1)
    assert samples and all(label == 0 for _, _, label in samples)
    assert all(a[1] <= b[0] for a, b, _ in samples)
    assert mlm_blocks(0, 150, 0, random.Random(0), 16)[:2] == [((0, 14), None, None),
                                                                ((14, 28), None, None)]  # fmt: skip


def write_tokenizer_without_specials(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(str(folder))


def test_bad_input_is_a_one_line_error(en_wordpiece: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("One sentence here.\nAnother one.\n\nA second document.\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n", encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(good.read_bytes() * 200 + "Caf\xe9 au lait.\n".encode("latin-1"))
    truncated = tmp_path / "truncated.txt.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes() * 5000)[:-200])
    no_specials = tmp_path / "no_specials"
    write_tokenizer_without_specials(no_specials)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    cases = [
        (["--input", tmp_path / "missing.txt"], "missing.txt"),
        (["--max_seq_len", "4"], "--max_seq_len 4"),
        (["--num_shards", "0"], "--num_shards 0"),
        (["--input", empty], "empty.txt"),
        (["--input", latin1], f"byte {len(good.read_bytes()) * 200 + 3}"),
        (["--input", truncated], "truncated.txt.gz"),
        (["--tokenizer", no_specials], "no_specials"),
        (["--output_dir", tmp_path], "holds --input"),
        (["--output_dir", foreign], "--output_dir"),
    ]
    for number, (args, expected) in enumerate(cases):
        out = tmp_path / f"out{number}"
        flags = {"--input": good, "--tokenizer": en_wordpiece, "--output_dir": out}
        flags.update(zip(args[::2], args[1::2], strict=True))
        argv = [word for flag, value in flags.items() for word in (flag, value)]
        result = run_tool("prepare_samples.py", *argv, check=False)
        assert result.returncode == 2, (expected, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert expected in lines[0], (expected, lines[0])
        assert not (out / "meta.json").exists()
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "meta.json").exists()


def test_throughput_figures(en_corpus: Path, en_wordpiece: Path, tmp_path: Path) -> None:
    text = subset(en_corpus / "train.txt", tmp_path / "corpus.txt", 5)
    figures = measure_throughput(str(text), str(en_wordpiece), dupe_factor=1, repeats=1,
                                 num_proc=(1, 2), work_dir=str(tmp_path))  # fmt: skip
    systems = [(r["system"], r["num_proc"]) for r in figures["results"]]
    assert systems == [("tokenizer(batch)", 1), ("encode_batch_fast", 1),
                       ("prepare_samples", 1), ("prepare_samples", 2)]  # fmt: skip
    assert all(r["tokens_per_s"] > 0 and r["seconds"] > 0 for r in figures["results"])
    assert figures["num_tokens"] > 1000 and set(figures["speedup"]) == {1, 2}
    assert list(tmp_path.glob("throughput-*")) == []
