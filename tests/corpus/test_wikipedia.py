"""Wikipedia dump reading and wikitext cleaning.

Run: .venv/bin/python -m pytest tests/corpus/test_wikipedia.py -q
"""

from __future__ import annotations

import io

import pytest

from bertlab.corpus.wikipedia import clean_wikitext, iter_articles

WIKITEXT = """{{Infobox person
| name = Ada
| image = Ada.jpg
}}
[[File:Ada.jpg|thumb|Portrait of [[Ada Lovelace|Ada]]]]
'''Ada Lovelace''' (born ''Augusta Ada Byron'';<ref name="b">{{cite book|title=Ada}}</ref>
10 December 1815) was an [[England|English]] [[mathematician]]s
and writer.<ref name="b"/> She walked {{convert|5|km|mi}} a day&nbsp;at&nbsp;dawn.<!-- hidden -->
__NOTOC__
== Early life ==
She was the daughter of [[Lord Byron]]{{citation needed|date=May 2016}}.
{| class="wikitable"
| cell one || cell two
|}
* a list item about [[Babbage]]
# a numbered item
 preformatted code line
Her notes are on the [http://example.org Analytical Engine] ({{lang|fr|moteur}}).

== References ==
{{Reflist}}
== External links ==
* [http://example.org Site]
[[Category:Mathematicians]]
[[de:Ada Lovelace]]
"""


def test_clean_wikitext_keeps_prose_and_drops_markup() -> None:
    paragraphs = clean_wikitext(WIKITEXT)
    assert paragraphs == [
        "Ada Lovelace (born Augusta Ada Byron; 10 December 1815) was an English mathematicians"
        " and writer. She walked 5 km a day at dawn.",
        "She was the daughter of Lord Byron.",
        "Her notes are on the Analytical Engine (moteur).",
    ]


def _dump(pages: str, root: str = "mediawiki xmlns='http://www.mediawiki.org/xml/export-0.10/'"):
    siteinfo = (
        "<siteinfo><namespaces><namespace key='6'>Datei</namespace>"
        "<namespace key='14'>Kategorie</namespace></namespaces></siteinfo>"
    )
    return io.BytesIO(f"<{root}>{siteinfo}{pages}</{root.split()[0]}>".encode())


def _page(title: str, text: str, ns: int = 0, redirect: bool = False) -> str:
    return (
        f"<page><title>{title}</title><ns>{ns}</ns>"
        + ("<redirect title='X'/>" if redirect else "")
        + f"<revision><text xml:space='preserve'>{text}</text></revision></page>"
    )


def test_dump_keeps_articles_only() -> None:
    pages = "".join(
        [
            _page("Kept", "A real article. [[Datei:x.png|thumb|caption]] [[Kategorie:Y]]"),
            _page("Redirected", "#REDIRECT [[Kept]]", redirect=True),
            _page("Old redirect", "#redirect [[Kept]]"),
            _page("Talk:Kept", "Talk page text.", ns=1),
            _page("Kept (disambiguation)", "Kept may refer to: a thing."),
            _page("Mercury", "Mercury may be:\n{{disambiguation|geo}}"),
            _page("Ambiguous", "A list.\n{{Place name disambiguation}}"),
            _page("Empty", "{{Infobox only}}"),
        ]
    )
    articles = list(iter_articles(_dump(pages), "dump.xml"))
    assert articles == [("Kept", ["A real article."])]


def test_not_a_mediawiki_dump() -> None:
    with pytest.raises(ValueError, match=r"^x\.xml: not a MediaWiki XML dump \(root element <rss>"):
        list(iter_articles(io.BytesIO(b"<rss><channel/></rss>"), "x.xml"))


def test_malformed_xml_names_line_and_column() -> None:
    data = _dump(_page("A", "text")).getvalue()[:-40]
    with pytest.raises(ValueError, match=r"^d\.xml: malformed XML at line 1, column \d+"):
        list(iter_articles(io.BytesIO(data), "d.xml"))


JA_WIKITEXT = (
    "{{基礎情報 国\n|略名 = 日本\n}}\n"
    "'''日本国'''（にっぽんこく、にほんこく{{Efn|読みについて}}）は、[[東アジア]]に位置する"
    "[[国家]]。{{仮リンク|首都|en|Capital city}}は[[東京都|東京]]である<ref>出典</ref>。\n"
    "[[ファイル:Flag.png|thumb|[[国旗]]]]\n"
    "'''富士山'''（{{lang|en|Mount Fuji}}）は山である。\n\n"
    "== 脚注 ==\n{{Reflist}}\n== 関連項目 ==\n* [[日本の地理]]\n"
    "[[Category:日本]]\n[[カテゴリ:国家]]\n"
)


def test_clean_japanese_wikitext() -> None:
    assert clean_wikitext(JA_WIKITEXT) == [
        "日本国（にっぽんこく、にほんこく）は、東アジアに位置する国家。首都は東京である。",
        "富士山（Mount Fuji）は山である。",
    ]
