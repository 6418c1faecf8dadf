"""Sentence splitting for English-style and Chinese/Japanese text.

Run: .venv/bin/python -m pytest tests/corpus/test_sentences.py -q
"""

from __future__ import annotations

import pytest

from bertlab.corpus.sentences import is_cjk, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "It rained. Then it stopped! Did it? Yes.",
            ["It rained.", "Then it stopped!", "Did it?", "Yes."],
        ),
        (
            "Mr. Smith met Dr. Jones at St. Paul's. They talked.",
            ["Mr. Smith met Dr. Jones at St. Paul's.", "They talked."],
        ),
        (
            "Some fruits, e.g. Apples, are red. Others are not.",
            ["Some fruits, e.g. Apples, are red.", "Others are not."],
        ),
        (
            "He moved to the U.S. in 1990. It was 3.14 km away.",
            ["He moved to the U.S. in 1990.", "It was 3.14 km away."],
        ),
        (
            "J. R. R. Tolkien wrote it. See p. 5 and No. 7.",
            ["J. R. R. Tolkien wrote it.", "See p. 5 and No. 7."],
        ),
        ('She said "Go home." Then she left.', ['She said "Go home."', "Then she left."]),
        ("It ended in 1990. 2000 was next.", ["It ended in 1990.", "2000 was next."]),
        (
            "version 2.0 is out. and lowercase continues",
            ["version 2.0 is out. and lowercase continues"],
        ),
        ("Wait... Really?", ["Wait...", "Really?"]),
        ("  spaced   out\ttext  ", ["spaced out text"]),
        ("", []),
    ],
)
def test_english(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "en") == expected


def test_unknown_space_delimited_language_uses_the_english_rule() -> None:
    assert split_sentences("Das ist gut. Wir gehen z.B. Heute.", "de") == [
        "Das ist gut.",
        "Wir gehen z.B. Heute.",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("今日は晴れ。明日は雨！本当？はい。", ["今日は晴れ。", "明日は雨！", "本当？", "はい。"]),
        ("彼は「行く。」と言った。そして去った。", ["彼は「行く。」と言った。", "そして去った。"]),
        ("終わった。」次の文。", ["終わった。」", "次の文。"]),
        ("半角｡次!? そして", ["半角｡", "次!?", "そして"]),
        ("Yahoo!ニュースを読む。", ["Yahoo!ニュースを読む。"]),
        ("ファイル foo.txt を 開く。次へ", ["ファイル foo.txt を 開く。", "次へ"]),
        ("「閉じない。引用。", ["「閉じない。", "引用。"]),
    ],
)
def test_japanese(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "ja") == expected
    assert "".join(expected).replace(" ", "") == text.replace(" ", "")  # nothing inserted


def test_cjk_languages() -> None:
    assert is_cjk("ja") and is_cjk("zh") and is_cjk("zh-yue") and is_cjk("ZH_classical")
    assert not is_cjk("en") and not is_cjk("ko") and not is_cjk("jv")


def test_no_line_breaks_or_control_characters_survive() -> None:
    sentences = split_sentences("One\u2028two\x0bthree\x85four.\x00 Five\u00a0six.", "en")
    assert sentences == ["One two three four.", "Five six."]
