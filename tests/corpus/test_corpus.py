"""prepare_corpus: Wikipedia dump, plain text and JSON Lines to train/valid/test.txt.

Run: .venv/bin/python -m pytest tests/corpus/test_corpus.py -q
"""

from __future__ import annotations

import bz2
import gzip
import json
import re
from pathlib import Path

import pytest
from conftest import FULL_TEXT, run_tool

from bertlab.corpus.prepare import prepare_corpus

SPLITS = ("train", "valid", "test")


def documents(path: Path) -> list[list[str]]:
    """The documents of a corpus file, checking the format on the way."""
    text = path.read_text(encoding="utf-8")
    if not text:
        return []
    assert text.endswith("\n") and not text.endswith("\n\n"), path
    blocks = text[:-1].split("\n\n")
    result = [block.split("\n") for block in blocks]
    for document in result:
        assert document and all(s and s == s.strip() for s in document), document[:3]
    return result


def corpus_bytes(folder: Path) -> dict[str, bytes]:
    return {split: (folder / f"{split}.txt").read_bytes() for split in SPLITS}


def test_english_dump_through_the_tool(en_corpus: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    dump = shared_data / "enwiki-sample.xml.bz2"
    result = run_tool(
        "prepare_corpus.py", "--input", dump, "--output_dir", out, "--lang", "en",
        "--valid_docs", "10", "--test_docs", "5",
    )  # fmt: skip
    assert "train " in result.stdout and "sentences" in result.stdout
    # The tool and the in-process fixture are two runs: byte-identical.
    assert corpus_bytes(out) == corpus_bytes(en_corpus)
    docs = {split: documents(out / f"{split}.txt") for split in SPLITS}
    assert len(docs["valid"]) == 10 and len(docs["test"]) == 5
    # 206 pages: 99 redirects, a project page, 8 disambiguation pages and a bare list drop out.
    articles = sum(len(d) for d in docs.values())
    assert 90 <= articles <= 106 if FULL_TEXT else 45 <= articles <= 58
    sentences = sum(len(doc) for d in docs.values() for doc in d)
    assert 15_000 < sentences < 25_000 if FULL_TEXT else 3_000 < sentences < 6_000
    assert not (set(map(tuple, docs["train"])) & set(map(tuple, docs["valid"] + docs["test"])))


def test_wikipedia_output_is_clean(en_corpus: Path) -> None:
    text = "".join((en_corpus / f"{split}.txt").read_text(encoding="utf-8") for split in SPLITS)
    for markup in ("{{", "}}", "[[", "]]", "|", "<ref", "</", "'''", "''", "&nbsp;", "__TOC"):
        assert markup not in text, markup
    for line in ("Ada may refer to:", "Austin may also refer to:", "Alien or Aliens may refer to:"):
        assert line not in text  # disambiguation pages
    assert "#redirect" not in text.lower()
    first = "Anarchism is a political philosophy that advocates self-governed societies"
    assert (first if FULL_TEXT else "Albedo or reflection coefficient, derived from Latin") in text
    lines = text.splitlines()
    sentence = (
        "Autism is a neurodevelopmental disorder characterized by impaired social interaction, "
        "verbal and non-verbal communication, and restricted and repetitive behavior."
    )
    assert (sentence if FULL_TEXT else "Albedo depends on the frequency of the radiation.") in lines
    assert not any(line in ("References", "External links", "See also") for line in lines)


def test_japanese_text(ja_corpus: Path, shared_data: Path) -> None:
    docs = {split: documents(ja_corpus / f"{split}.txt") for split in SPLITS}
    assert [len(docs[s]) for s in SPLITS] == [260 if FULL_TEXT else 60, 30, 10]
    with gzip.open(shared_data / "ja-manpages.txt.gz", "rt", encoding="utf-8") as f:
        source = " ".join(f.read().split("\n\n")[:300])
    source = " ".join(source.split())
    sentences = [s for split in SPLITS for doc in docs[split] for s in doc]
    # Splitting only cuts: every sentence is a piece of the original text, no space inserted.
    assert all(s in source for s in sentences[::50])
    # A sentence ends at 。 (and the closing brackets after it) unless the 。 sits inside brackets.
    assert sum(s.endswith("。") for s in sentences) > len(sentences) / 3
    for s in sentences:
        head = re.sub(r"。+[」』）)】〕〉》\"”’'］\]]*$", "", s)
        if "。" in head:
            assert any(bracket in s for bracket in "「『（([【〔〈《［"), s


def test_plain_text_and_json_lines_inputs(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "nested").mkdir(parents=True)
    txt = [
        f"Document {i} starts here. It has two sentences.\nA second paragraph {i}."
        for i in range(30)
    ]  # noqa: E501
    (raw / "a.txt").write_text("\n\n\n".join(txt) + "\n", encoding="utf-8")
    with gzip.open(raw / "nested" / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\ufeffGzipped document one.\r\n\r\nGzipped document two.\r\n")
    records = [
        {"id": i, "text": f"Json document {i}. Still {i}.\n\nNext paragraph."} for i in range(20)
    ]  # noqa: E501
    (raw / "c.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    with bz2.open(raw / "nested" / "d.jsonl.bz2", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "Bzipped json."}) + "\n")
    (raw / "notes.md").write_text("Not an input: ignored inside a directory.")
    (raw / "empty.txt").write_text("\n\n   \n")

    summary = prepare_corpus([str(raw)], str(tmp_path / "out"), valid_docs=0.1, test_docs=3)
    counts = {split: c["documents"] for split, c in summary["splits"].items()}
    assert counts == {"train": 45, "valid": 5, "test": 3}  # 53 documents
    assert summary["inputs"] == [
        str(raw / "a.txt"), str(raw / "c.jsonl"), str(raw / "empty.txt"),
        str(raw / "nested" / "b.txt.gz"), str(raw / "nested" / "d.jsonl.bz2"),
    ]  # fmt: skip
    every = [d for split in SPLITS for d in documents(tmp_path / "out" / f"{split}.txt")]
    assert ["Document 0 starts here.", "It has two sentences.", "A second paragraph 0."] in every
    assert ["Json document 3.", "Still 3.", "Next paragraph."] in every
    assert ["Gzipped document one."] in every and ["Bzipped json."] in every
    assert summary["splits"]["valid"]["sentences"] == sum(
        len(d) for d in documents(tmp_path / "out" / "valid.txt")
    )

    # A glob and a single file give the same documents as the directory, in the same order.
    again = prepare_corpus(
        [str(raw / "*.txt"), str(raw / "c.jsonl"), str(raw / "nested")],
        str(tmp_path / "again"), valid_docs=0.1, test_docs=3,
    )  # fmt: skip
    assert sorted(again["inputs"]) == sorted(summary["inputs"])


def test_split_is_deterministic_by_document(tmp_path: Path) -> None:
    lines = [f"Sentence {i} of the corpus. Another one {i}." for i in range(200)]
    source = tmp_path / "docs.txt"
    source.write_text("\n\n".join(lines) + "\n", encoding="utf-8")

    def run(name: str, **kwargs) -> dict[str, bytes]:
        prepare_corpus([str(source)], str(tmp_path / name), **kwargs)
        return corpus_bytes(tmp_path / name)

    first = run("a", valid_docs=0.05, test_docs=0.1)
    assert run("b", valid_docs=0.05, test_docs=0.1) == first
    assert [len(documents(tmp_path / "a" / f"{s}.txt")) for s in SPLITS] == [170, 10, 20]
    assert run("c", valid_docs=0.05, test_docs=0.1, seed=1) != first
    # Documents keep their input order within a split.
    train = documents(tmp_path / "a" / "train.txt")
    numbers = [int(doc[0].split()[1]) for doc in train]
    assert numbers == sorted(numbers)
    # A count of 0 gives an empty split file.
    run("d", valid_docs=0, test_docs=1)
    assert (tmp_path / "d" / "valid.txt").read_bytes() == b""


def test_split_sizes_are_checked(tmp_path: Path) -> None:
    source = tmp_path / "docs.txt"
    source.write_text("One doc.\n\nTwo doc.\n\nThree doc.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="leave no training documents"):
        prepare_corpus([str(source)], str(tmp_path / "o"), valid_docs=2, test_docs=1)
    with pytest.raises(ValueError, match="--valid_docs 1.5"):
        prepare_corpus([str(source)], str(tmp_path / "o"), valid_docs=1.5)
    with pytest.raises(ValueError, match="--test_docs -1"):
        prepare_corpus([str(source)], str(tmp_path / "o"), test_docs=-1)


def _cut(source: Path, target: Path, size: int) -> Path:
    target.write_bytes(source.read_bytes()[:size])
    return target


def _bad_inputs(tmp: Path, shared: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input file, a fragment the one-line error must hold besides the file name)."""
    (tmp / "latin1.txt").write_bytes("Good line.\n\nCaf\u00e9 au lait.\n".encode("latin-1"))
    (tmp / "empty.txt").write_text("\n\n... !!!\n\n")
    (tmp / "feed.xml").write_text("<?xml version='1.0'?><rss><channel/></rss>")
    (tmp / "bad.jsonl").write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    (tmp / "notext.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    return {
        "missing": (tmp / "missing.txt", "no such file"),
        "empty corpus": (tmp / "empty.txt", "no documents left"),
        "not utf-8": (tmp / "latin1.txt", "not UTF-8 at byte 15 (line 3)"),
        "not mediawiki": (tmp / "feed.xml", "not a MediaWiki XML dump"),
        "truncated bz2": (
            _cut(shared / "enwiki-sample.xml.bz2", tmp / "cut.xml.bz2", 200_000),
            "truncated or corrupt bz2 data near compressed byte",
        ),
        "truncated gz": (
            _cut(shared / "ja-manpages.txt.gz", tmp / "cut.txt.gz", 100_000),
            "truncated or corrupt gz data",
        ),
        "bad json": (tmp / "bad.jsonl", "line 3: not valid JSON"),
        "no text field": (tmp / "notext.jsonl", 'line 2: no "text"'),
    }


def test_bad_input_is_a_one_line_error(tmp_path: Path, shared_data: Path) -> None:
    for name, (path, fragment) in _bad_inputs(tmp_path, shared_data).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        result = run_tool(
            "prepare_corpus.py", "--input", path, "--output_dir", out, "--lang", "ja", check=False
        )
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert str(path) in lines[0] and fragment in lines[0], (name, lines[0])
        assert not (out / "train.txt").exists(), name
        assert not out.exists() or not any(out.iterdir()), (name, list(out.iterdir()))


def test_flags_are_checked(tmp_path: Path) -> None:
    result = run_tool("prepare_corpus.py", "--output_dir", tmp_path, check=False)
    assert result.returncode == 2 and "--input is required" in result.stderr
    result = run_tool(
        "prepare_corpus.py", "--download", "en", "--output_dir", tmp_path, check=False
    )
    assert result.returncode == 2 and "--download needs --date" in result.stderr
    (tmp_path / "x.csv").write_text("a,b\n")
    result = run_tool("prepare_corpus.py", "--input", tmp_path / "x.csv", check=False)
    assert result.returncode == 2 and "x.csv: unknown format" in result.stderr


def test_corpus_folder_inside_an_input_folder(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in" / "docs.txt"
    source.parent.mkdir()
    source.write_text("\n\n".join(f"Document number {i}." for i in range(20)) + "\n")
    out = source.parent / "corpus"
    # The output rule (bertlab.files.output_folder): never inside an input folder, whose files a
    # rerun would read, and never holding an input.
    with pytest.raises(ValueError, match="--output_dir .*corpus is inside --input"):
        prepare_corpus([str(source.parent), str(source)], str(out), valid_docs=2, test_docs=2)
    assert not out.exists()
    # The file named twice (a hard link too) is read once, said in one line.
    other = tmp_path / "corpus"
    (tmp_path / "link.txt").hardlink_to(source)
    capsys.readouterr()
    first = prepare_corpus([str(source), str(tmp_path / "link.txt")], str(other), valid_docs=2,
                           test_docs=2)  # fmt: skip
    assert first["splits"]["train"]["documents"] == 16
    assert f"warning: --input names {source} twice (also as {tmp_path / 'link.txt'})" in (
        capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="holds --input"):
        prepare_corpus([str(other / "train.txt")], str(other), overwrite=True)


def test_num_proc_does_not_change_the_output(shared_data: Path, tmp_path: Path) -> None:
    text = bz2.decompress((shared_data / "enwiki-sample.xml.bz2").read_bytes()).decode()
    end = 0
    for _ in range(60 if FULL_TEXT else 4):  # the first pages (4 articles), uncompressed
        end = text.index("</page>", end) + len("</page>")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "small-pages-articles.xml").write_text(text[:end] + "\n</mediawiki>\n")
    with gzip.open(shared_data / "ja-manpages.txt.gz", "rt", encoding="utf-8") as f:
        documents = f.read().split("\n\n")[:400]  # several batches of the process pool
    (tmp_path / "in" / "ja.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")

    def run(name: str, num_proc: int) -> dict:
        inputs = [str(tmp_path / "in")]
        return prepare_corpus(inputs, str(tmp_path / name), "ja", 30, 10, num_proc=num_proc)

    one, two = run("one", 1), run("two", 2)
    expected = 300 if FULL_TEXT else 60
    assert one["splits"] == two["splits"] and one["splits"]["train"]["documents"] > expected
    assert corpus_bytes(tmp_path / "one") == corpus_bytes(tmp_path / "two")
