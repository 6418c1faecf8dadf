"""Tokenizer training, conversion and loading (bertlab/tokenizer*.py, tools/*_tokenizer.py).

Run: .venv/bin/python -m pytest tests/tokenizer/test_tokenizer.py -q

Parity is the test that matters: each tokenizer folder, reloaded with AutoTokenizer, must give
exactly the raw SentencePiece model's ids on every line of the valid split of the shared English
and Japanese corpora. Models are small (1000-1500 pieces, a few thousand training lines) so the
file runs in seconds; the corpora and the WordPiece tokenizer are the shared session fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from conftest import FULL_TEXT, run_tool
from transformers import AutoTokenizer

from bertlab.tokenizer.training import (
    SPECIAL_TOKENS,
    check_parity,
    load_tokenizer,
    tokenizer_fingerprint,
    train_tokenizer,
)

BERT_FLAGS = dict(
    pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]", minloglevel=2
)


def text_lines(path: Path) -> list[str]:
    return [
        line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def assert_full_parity(folder: Path, text_file: Path) -> None:
    report = check_parity(str(folder), str(text_file))
    assert report.num_lines == len(text_lines(text_file)) > (1000 if FULL_TEXT else 500)
    assert report.num_identical == report.num_lines, report.summary()


@pytest.fixture(scope="module")
def en_unigram(en_corpus: Path, tmp_path_factory) -> Path:
    """English SentencePiece unigram (dummy prefix, cased), trained through the real command."""
    out = tmp_path_factory.mktemp("tokenizers") / "en_unigram"
    result = run_tool(
        "train_tokenizer.py",
        "--train_file", en_corpus / "train.txt",
        "--output_dir", out,
        "--model_type", "unigram",
        "--vocab_size", 1000,
        "--input_sentence_size", 1000,
    )  # fmt: skip
    assert "1000/1000 lines identical" in result.stdout
    return out


@pytest.fixture(scope="module")
def ja_unigram_plain(ja_corpus: Path, tmp_path_factory) -> Path:
    """Japanese SentencePiece unigram without the dummy prefix."""
    out = tmp_path_factory.mktemp("tokenizers") / "ja_unigram"
    train_tokenizer(
        str(ja_corpus / "train.txt"),
        str(out),
        vocab_size=1500,
        input_sentence_size=2000,
        add_dummy_prefix=False,
    )
    return out


def test_unigram_parity_on_every_valid_line(en_unigram, ja_unigram_plain, en_corpus, ja_corpus):
    assert_full_parity(en_unigram, en_corpus / "valid.txt")
    assert_full_parity(ja_unigram_plain, ja_corpus / "valid.txt")
    # Each language's tokenizer on the other's text: many unknown characters, still exact.
    assert_full_parity(en_unigram, ja_corpus / "valid.txt")


@pytest.mark.parametrize(
    "lang, model_type, add_dummy_prefix, lowercase",
    [
        ("en", "unigram", True, True),
        ("en", "bpe", False, False),
        ("ja", "bpe", True, True),
    ],
)
def test_parity_variants(
    lang, model_type, add_dummy_prefix, lowercase, en_corpus, ja_corpus, tmp_path
):
    corpus = {"en": en_corpus, "ja": ja_corpus}[lang]
    out = tmp_path / "tok"
    train_tokenizer(
        str(corpus / "train.txt"),
        str(out),
        model_type=model_type,
        vocab_size=1000,
        input_sentence_size=1000 if model_type == "unigram" else 3000,
        add_dummy_prefix=add_dummy_prefix,
        lowercase=lowercase,
    )
    assert_full_parity(out, corpus / "valid.txt")
    tokenizer = load_tokenizer(str(out))
    tokens = tokenizer.tokenize("The NEW Year")
    assert any(c.isupper() for c in "".join(tokens)) != lowercase
    assert tokens[0].startswith("▁") == add_dummy_prefix


def test_decode_gives_back_the_text(en_unigram, ja_unigram_plain, en_corpus, ja_corpus):
    for folder, corpus in ((en_unigram, en_corpus), (ja_unigram_plain, ja_corpus)):
        tokenizer = load_tokenizer(str(folder))
        raw = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.model"))
        lines = text_lines(corpus / "valid.txt")[:500]
        checked = 0
        for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            if 1 not in ids:  # [UNK] decodes as itself, SentencePiece as " ⁇ "
                assert tokenizer.decode(ids) == raw.decode(ids)
                checked += 1
        assert checked > 300
    tokenizer = load_tokenizer(str(en_unigram))
    text = "The Second World War   ended in 1945."
    decoded = tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
    assert decoded == "The Second World War ended in 1945."


def test_mask_literal_with_and_without_spaces(en_unigram, ja_unigram_plain, en_wordpiece):
    variants = {
        "en": ["The capital of France is [MASK].", "The capital of France is[MASK]."],
        "ja": ["日本の首都は[MASK]です。", "日本の首都は [MASK] です。"],
    }
    folders = {"en": [en_unigram, en_wordpiece], "ja": [ja_unigram_plain, en_wordpiece]}
    for lang, texts in variants.items():
        for folder in folders[lang]:
            tokenizer = load_tokenizer(str(folder))
            encoded = [tokenizer(text)["input_ids"] for text in texts]
            for ids in encoded:
                assert ids.count(tokenizer.mask_token_id) == 1 and tokenizer.mask_token_id == 4
                assert "[MASK]" not in tokenizer.decode(ids, skip_special_tokens=True)
            # Spaces next to [MASK] do not change the ids (where the language has no spaces).
            assert encoded[0] == encoded[1], (
                folder,
                [tokenizer.convert_ids_to_tokens(i) for i in encoded],
            )
    # At the start of a text the mask is also one token, and the next word keeps its "▁".
    tokenizer = load_tokenizer(str(en_unigram))
    assert tokenizer.tokenize("[MASK] is the capital.")[:2] == ["[MASK]", "▁is"]


@pytest.mark.parametrize("name", ["en_unigram", "en_wordpiece"])
def test_single_and_pair_encoding(name, request):
    tokenizer = load_tokenizer(str(request.getfixturevalue(name)))
    single = tokenizer("Paris is in France.")
    assert single["input_ids"][0] == 2 and single["input_ids"][-1] == 3
    assert set(single["token_type_ids"]) == {0}
    pair = tokenizer("Paris is in France.", "It is large.")
    ids, types = pair["input_ids"], pair["token_type_ids"]
    first_sep = ids.index(3)
    assert ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert pair["attention_mask"] == [1] * len(ids)


@pytest.mark.parametrize(
    "name, files, tokenizer_class",
    [
        ("en_unigram", {"sentencepiece.model"}, "PreTrainedTokenizerFast"),
        ("ja_unigram_plain", {"sentencepiece.model"}, "PreTrainedTokenizerFast"),
        ("en_wordpiece", {"vocab.txt"}, "BertTokenizer"),
    ],
)
def test_folder_layout_and_special_ids(name, files, tokenizer_class, request):
    folder = request.getfixturevalue(name)
    present = {p.name for p in folder.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json"} | files <= present
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == tokenizer_class
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token, tokenizer.unk_token) == ("[PAD]", "[UNK]")
    assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token) == (
        "[CLS]",
        "[SEP]",
        "[MASK]",
    )
    # A save by transformers and a reload keep the ids.
    text = "Tokyo (東京) is the capital of Japan, population 14 million."
    tokenizer.save_pretrained(str(folder.parent / f"{name}-resaved"))
    again = AutoTokenizer.from_pretrained(str(folder.parent / f"{name}-resaved"))
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_wordpiece(en_wordpiece, en_corpus, tmp_path):
    assert_full_parity(en_wordpiece, en_corpus / "valid.txt")
    tokenizer = load_tokenizer(str(en_wordpiece))
    assert type(tokenizer).__name__ == "BertTokenizer"
    vocab = (en_wordpiece / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == len(tokenizer) == 3000 and vocab[:5] == list(SPECIAL_TOKENS)
    tokens = tokenizer.tokenize("Paris unbelievably")
    assert tokens[0] == "Paris" and any(t.startswith("##") for t in tokens)
    ids = tokenizer("Paris unbelievably")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Paris unbelievably"

    out = tmp_path / "lower"
    train_tokenizer(
        str(en_corpus / "train.txt"),
        str(out),
        model_type="wordpiece",
        vocab_size=800,
        input_sentence_size=2000,
        lowercase=True,
    )
    lower = load_tokenizer(str(out))
    assert lower.tokenize("Café PARIS") == lower.tokenize("cafe paris")


def test_fingerprint_and_determinism(en_unigram, ja_corpus, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(en_unigram, copy)
    assert tokenizer_fingerprint(str(copy)) == tokenizer_fingerprint(str(en_unigram))
    assert len(tokenizer_fingerprint(str(copy))) == 16
    runs = []
    for name in ("a", "b"):
        train_tokenizer(
            str(ja_corpus / "train.txt"),
            str(tmp_path / name),
            model_type="bpe",
            vocab_size=1000,
            input_sentence_size=2000,
            seed=7,
        )
        runs.append(tmp_path / name)
    assert tokenizer_fingerprint(str(runs[0])) == tokenizer_fingerprint(str(runs[1]))
    model = "sentencepiece.model"
    assert (runs[0] / model).read_bytes() == (runs[1] / model).read_bytes()
    assert tokenizer_fingerprint(str(runs[0])) != tokenizer_fingerprint(str(en_unigram))


def test_convert_tokenizer(ja_corpus, en_corpus, tmp_path):
    """A model trained with sentencepiece directly, with options train_tokenizer never uses."""
    lines = text_lines(ja_corpus / "train.txt")[:2000]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=1000,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        byte_fallback=True,
        **BERT_FLAGS,
    )
    out = tmp_path / "converted"
    args = ("--spm_model", tmp_path / "sp.model", "--output_dir", out)
    result = run_tool("convert_tokenizer.py", *args, "--text_file", ja_corpus / "valid.txt")
    assert "lines identical" in result.stdout
    assert (out / "sentencepiece.model").read_bytes() == (tmp_path / "sp.model").read_bytes()
    # The tool checked every Japanese valid line; English text is all new to this model.
    report = check_parity(str(out), str(en_corpus / "valid.txt"))
    assert report.ok and report.num_ties <= report.num_lines // 100, report.summary()
    tokenizer = load_tokenizer(str(out))
    ids = tokenizer("首都は[MASK]です。")["input_ids"]
    assert ids.count(4) == 1 and ids[0] == 2 and ids[-1] == 3
    assert tokenizer.decode(tokenizer("猫🙂")["input_ids"], skip_special_tokens=True) == "猫🙂"


def test_convert_refuses_a_model_without_the_special_tokens(ja_corpus, tmp_path):
    lines = text_lines(ja_corpus / "train.txt")[:1000]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(tmp_path / "plain"), vocab_size=800,
        minloglevel=2,
    )  # fmt: skip
    out = tmp_path / "out"
    result = run_tool(
        "convert_tokenizer.py", "--spm_model", tmp_path / "plain.model", "--output_dir", out,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "plain.model lacks the BERT special tokens" in line
    assert "--user_defined_symbols=[CLS],[SEP],[MASK]" in line
    assert not out.exists()
    (tmp_path / "junk.model").write_bytes(b"not a model")
    result = run_tool(
        "convert_tokenizer.py", "--spm_model", tmp_path / "junk.model", "--output_dir", out,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "is not a SentencePiece model" in result.stderr


def test_missing_train_file(tmp_path):
    out = tmp_path / "tok"
    missing = tmp_path / "nope.txt"
    result = run_tool(
        "train_tokenizer.py", "--train_file", missing, "--output_dir", out, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --train_file {missing} does not exist"
    assert not out.exists()


def test_vocab_size_too_small_or_too_large(ja_corpus, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("\n".join(text_lines(ja_corpus / "train.txt")[:300]) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    args = ("--train_file", small, "--output_dir", out, "--vocab_size", 50)
    result = run_tool("train_tokenizer.py", *args, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --vocab_size 50 is too small for this corpus")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["small.txt"]

    for model_type in ("bpe", "wordpiece"):
        with pytest.raises(ValueError, match="--vocab_size 50000 is too large for this corpus"):
            train_tokenizer(str(small), str(out), model_type=model_type, vocab_size=50000)
    with pytest.raises(ValueError, match="--vocab_size 60 is too small"):
        train_tokenizer(str(small), str(out), model_type="wordpiece", vocab_size=60)
    assert not out.exists()


def test_bad_train_text_and_flags(tmp_path):
    out = str(tmp_path / "tok")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\n\nsecond café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8: line 3, byte offset 22"):
        train_tokenizer(str(bad), out)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt has no text"):
        train_tokenizer(str(empty), out)
    with pytest.raises(ValueError, match="--model_type 'sentencepiece' is not one of"):
        train_tokenizer(str(empty), out, model_type="sentencepiece")
    with pytest.raises(ValueError, match="--add_dummy_prefix is for SentencePiece"):
        train_tokenizer(str(empty), out, model_type="wordpiece", add_dummy_prefix=False)
    assert not Path(out).exists()


def test_tokenizer_folder_without_the_special_tokens(tmp_path):
    from transformers import BertTokenizer

    # A BERT-base-like layout: the special tokens exist, but at ids 0 and 100-103.
    words = ["[PAD]"] + [f"w{i}" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    folder = tmp_path / "bert-base-like"
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(str(folder))
    with pytest.raises(ValueError, match="bert-base-like lacks the BERT special tokens") as error:
        load_tokenizer(str(folder))
    assert "[MASK] at id 103" in str(error.value)
    with pytest.raises(ValueError, match="tokenizer folder .*nothing does not exist"):
        load_tokenizer(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no tokenizer files"):
        load_tokenizer(str(tmp_path / "empty"))
