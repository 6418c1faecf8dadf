"""Sentence splitting by language: one rule for space-delimited scripts, one for Chinese/Japanese.

Decisions:
- No model and no new dependency: two regular-expression rules cover what BERT's corpus format
  needs (sentence boundaries good enough for next-sentence pairs), and they are fast.
- Space-delimited languages (en, and the fallback for every --lang that is not Chinese or
  Japanese): a boundary is `.`, `!`, `?` or `…` (plus closing quotes/brackets) followed by
  whitespace and a character that is not a lowercase letter. A period does not end a sentence
  after a known abbreviation ("Mr.", "e.g.", "No."), a single letter ("J. R. R. Tolkien",
  "p. 5") or a dotted acronym ("U.S."); decimals ("3.14") have no space so never split. When in
  doubt we keep two sentences together rather than cut one in half.
- Chinese/Japanese (--lang ja, zh and their variants): split after 。｡！？ (and ASCII ! ? when
  followed by a space or the end), keeping closing brackets and quotes with the sentence; never
  inside a balanced 「…」 or （…） quotation, so quoted speech stays whole. No spaces are inserted
  or removed between words.
- Whitespace inside a sentence is collapsed to one space and control characters are dropped, so a
  sentence can never contain anything a reader would take for a line break.
"""

from __future__ import annotations

import re

CJK_LANGS = frozenset({"ja", "zh", "zh-classical", "zh-yue", "zh-min-nan", "lzh", "yue", "wuu"})

_ABBREVIATIONS = frozenset(
    """
    mr mrs ms mx dr prof sr jr st mt ft gen col lt sgt capt cmdr adm gov sen rep rev hon pres
    messrs mme mlle no nos vol vols pp ch chap fig figs eq eqs approx ca cf vs al inc ltd co corp
    brig bros jan feb mar apr jun jul aug sep sept oct nov dec op ed eds trans est ave blvd rd dept
    univ assn ph.d b.a m.a b.sc m.sc
    """.split()  # noqa: SIM905 - a word list reads better than 80 quoted strings
)

_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f\u200b\ufeff]")
_LATIN_BOUNDARY = re.compile(r"([.!?…]+)([\"'”’»)\]]*)\s+(?=\S)")
_DOTTED_ACRONYM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_CJK_BOUNDARY = re.compile(r"(?:[。｡！？]+[!?]*|[!?]+(?=\s|$))[」』）)】〕〉》\"”’'］\]]*")
_OPENING = "「『（(【〔〈《［["
_CLOSING = "」』）)】〕〉》］]"


def is_cjk(lang: str) -> bool:
    """Whether `lang` is written without spaces between words (split by the CJK rule)."""
    lang = lang.lower().replace("_", "-")
    return lang in CJK_LANGS or lang.split("-")[0] in ("ja", "zh")


def normalize_space(text: str) -> str:
    """Collapse whitespace (line breaks included) to single spaces and drop control characters."""
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


def split_sentences(paragraph: str, lang: str = "en") -> list[str]:
    """Split one paragraph into sentences with the rule for `lang` (see the module docstring)."""
    text = normalize_space(paragraph)
    if not text:
        return []
    ends = _cjk_ends(text) if is_cjk(lang) else _latin_ends(text)
    sentences, start = [], 0
    for end in [*ends, len(text)]:
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = end
    return sentences


def _latin_ends(text: str) -> list[int]:
    ends = []
    for match in _LATIN_BOUNDARY.finditer(text):
        following = text[match.end()]
        if following.islower():
            continue
        if match.group(1) == "." and _is_abbreviation(text, match.start()):
            continue
        ends.append(match.end())
    return ends


def _is_abbreviation(text: str, period: int) -> bool:
    """Whether the word before the period at `period` is an abbreviation, not a sentence end."""
    start = text.rfind(" ", 0, period) + 1
    word = text[start:period].lstrip("\"'“‘([{")
    if not word:
        return False
    if len(word) == 1 and word.isalpha():
        return True
    return word.lower() in _ABBREVIATIONS or _DOTTED_ACRONYM.fullmatch(word) is not None


def _cjk_ends(text: str) -> list[int]:
    inside = _inside_brackets(text)
    return [m.end() for m in _CJK_BOUNDARY.finditer(text) if not inside[m.start()]]


def _inside_brackets(text: str) -> list[bool]:
    """For each character, whether it lies inside a balanced pair of opening/closing brackets.

    Unbalanced brackets protect nothing, so a stray 「 cannot swallow the rest of a paragraph.
    """
    inside = [False] * (len(text) + 1)
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch in _OPENING:
            stack.append(i)
        elif ch in _CLOSING and stack:
            start = stack.pop()
            if not stack:
                for j in range(start + 1, i):
                    inside[j] = True
    return inside
