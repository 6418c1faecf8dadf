"""Wikipedia `pages-articles` XML dumps -> articles as paragraphs of plain text.

Decisions:
- The dump is streamed with `xml.etree.ElementTree.iterparse` and every finished <page> is cleared
  from the tree, so memory stays flat whatever the dump's size (a 20 GB enwiki dump included).
- The root element must be MediaWiki's <mediawiki xmlns="http://www.mediawiki.org/xml/export-N/">;
  anything else is a ValueError naming the file (a user handing us some other XML).
- Kept: namespace 0 (articles) only, not redirects (<redirect> or `#REDIRECT` text), not
  disambiguation pages (a disambiguation template such as {{disambiguation}}, {{geodis}},
  {{aimai}}, {{曖昧さ回避}}). These checks are cheap and happen while reading (`iter_pages`);
  the costly cleaning is `Page.paragraphs()`, which bertlab.corpus.splits may run on other
  processes.
- Wikitext is parsed by mwparserfromhell, not by our own regular expressions. From its tree we
  keep text, the visible text of links and external links, and a few inline templates whose text
  is part of the sentence ({{convert|5|km}} -> "5 km", {{lang|fr|mot}} -> "mot"); we drop all
  other templates (infoboxes, citations, navboxes), tables, <ref>s, math, galleries, comments,
  file/image/category/interlanguage links, list items (*, #, ;, :), preformatted lines (a
  leading space: code) and headings. Headings are removed, not kept as sentences: they are not
  sentences and they would make next-sentence pairs easy to guess.
- As in MediaWiki, consecutive lines make one paragraph; blank lines and dropped blocks end it.
- Everything from the first appendix heading on ("See also", "References", "External links",
  their Japanese equivalents, ...) is cut before parsing: it holds lists and citations, not prose,
  and parsing it would cost a third of the time.
- Comments and <ref>…</ref> footnotes are removed with one regular expression before parsing:
  neither can nest, so their extent is unambiguous, and they hold most of an article's templates
  (citations): this halves mwparserfromhell's time. Everything else is left to the parser.
- A paragraph that still holds markup after all this (an unbalanced `{{` or `[[` in the source)
  is dropped rather than repaired: losing a paragraph is cheaper than teaching BERT wikitext.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import mwparserfromhell
from mwparserfromhell.nodes import (
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

_ROOT = re.compile(r"\{(http://www\.mediawiki\.org/xml/export-[0-9.]+/)\}mediawiki")
_REDIRECT = re.compile(r"\s*#\s*(redirect|転送|重定向)", re.IGNORECASE)
_DISAMBIGUATION = re.compile(
    r"\{\{\s*(?:template:)?\s*(?:[^|}]*disambig[^|}]*|dab|disamb|hndis|geodis|numberdis|"
    r"mathdab|aimai|曖昧さ回避|[^|}]*の曖昧さ回避|消歧义|消歧義)\s*[|}]",
    re.IGNORECASE,
)
_APPENDIX = re.compile(
    r"^==+\s*(?:see also|notes|references|footnotes|citations|sources|bibliography|"
    r"further reading|external links|notes and references|関連項目|脚注|注釈|出典|参考文献|"
    r"外部リンク)\s*==+\s*$",
    re.IGNORECASE | re.MULTILINE,
)
# Link prefixes whose target is not prose, beyond the dump's own names for these namespaces.
_DROPPED_LINK_PREFIXES = frozenset(
    {"file", "image", "media", "category", "ファイル", "画像", "カテゴリ"}
)
_DROPPED_NAMESPACES = ("-2", "6", "14")  # Media, File, Category
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,8})*")
_DROPPED_TAGS = {
    "ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "imagemap",
    "score", "graph", "mapframe", "maplink", "templatedata", "syntaxhighlight", "source", "hr",
    "noinclude", "includeonly", "categorytree", "inputbox",
}  # fmt: skip
_LIST_TAGS = {"li", "dt", "dd"}
_BLOCK_MARK = "\x00"  # marks a line that is a list item or preformatted: dropped afterwards
_COMMENTS_AND_REFS = re.compile(
    r"<!--.*?(?:-->|$)|<ref\b[^>]*/\s*>|<ref\b[^>]*(?<!/)>(?:(?!<ref\b).)*?</ref\s*>",
    re.DOTALL | re.IGNORECASE,
)
_STYLE_QUOTES = re.compile(r"'{2,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_EMPTY_BRACKETS = re.compile(r"[(（]\s*(?:[,;:、，；：]\s*)*[)）]|\[\s*\]")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])(?=\s|$)")
_RESIDUAL_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|\||</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")


@dataclass(frozen=True)
class Page:
    """An article page of a dump, its wikitext not cleaned yet (that is the costly part)."""

    title: str
    text: str
    link_prefixes: frozenset[str]  # lowercased link prefixes whose links are dropped

    def paragraphs(self) -> list[str]:
        return clean_wikitext(self.text, self.link_prefixes)


def iter_pages(stream: IO[bytes], name: str) -> Iterator[Page]:
    """Yield the article pages of a MediaWiki XML dump read from `stream` (`name` in errors).

    Redirects, disambiguation pages and other namespaces are skipped here, before any parsing.
    """
    events = ET.iterparse(stream, events=("start", "end"))
    prefixes = frozenset(_DROPPED_LINK_PREFIXES)
    try:
        _, root = next(events)
        match = _ROOT.fullmatch(root.tag)
        if match is None:
            tag = root.tag.split("}")[-1]
            raise ValueError(f"{name}: not a MediaWiki XML dump (root element <{tag}>)")
        ns = "{" + match.group(1) + "}"
        for event, element in events:
            if event != "end":
                continue
            if element.tag == ns + "siteinfo":
                local = {
                    namespace.text.strip().lower()
                    for namespace in element.iter(ns + "namespace")
                    if namespace.get("key") in _DROPPED_NAMESPACES and namespace.text
                }
                prefixes = prefixes | local
                root.clear()
            elif element.tag == ns + "page":
                page = _page(element, ns, prefixes)
                root.clear()
                if page is not None:
                    yield page
    except ET.ParseError as error:
        line, column = error.position
        reason = str(error).split(":")[0]
        raise ValueError(
            f"{name}: malformed XML at line {line}, column {column} ({reason})"
        ) from None


def iter_articles(stream: IO[bytes], name: str) -> Iterator[tuple[str, list[str]]]:
    """(title, paragraphs) of each article with some text left after cleaning."""
    for page in iter_pages(stream, name):
        paragraphs = page.paragraphs()
        if paragraphs:
            yield page.title, paragraphs


def _page(page: ET.Element, ns: str, link_prefixes: frozenset[str]) -> Page | None:
    namespace = page.findtext(ns + "ns")
    title = page.findtext(ns + "title") or ""
    if namespace is not None and namespace.strip() != "0":
        return None
    if namespace is None and ":" in title:  # export formats before 0.6 have no <ns>
        return None
    if page.find(ns + "redirect") is not None:
        return None
    text = page.findtext(f"{ns}revision/{ns}text") or ""
    if _REDIRECT.match(text) or _DISAMBIGUATION.search(text) or title.endswith("(disambiguation)"):
        return None
    return Page(title, text, link_prefixes)


def clean_wikitext(text: str, link_prefixes: frozenset[str] | None = None) -> list[str]:
    """Plain-text paragraphs of an article's wikitext (see the module docstring for the rules)."""
    prefixes = _DROPPED_LINK_PREFIXES if link_prefixes is None else link_prefixes
    appendix = _APPENDIX.search(text)
    if appendix is not None:
        text = text[: appendix.start()]
    text = _COMMENTS_AND_REFS.sub("", text)
    pieces: list[str] = []
    _strip(mwparserfromhell.parse(text, skip_style_tags=True), pieces, prefixes)
    plain = _MAGIC_WORD.sub("", _STYLE_QUOTES.sub("", "".join(pieces)))
    paragraphs, lines = [], []
    # As in MediaWiki, a paragraph runs over consecutive lines; blank lines and the lines we drop
    # (list items, preformatted code) end it.
    for line in [*plain.split("\n"), ""]:
        if line.strip() and _BLOCK_MARK not in line:
            lines.append(line)
            continue
        paragraph = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _EMPTY_BRACKETS.sub("", " ".join(lines)))
        paragraph = " ".join(paragraph.split())
        if paragraph and _RESIDUAL_MARKUP.search(paragraph) is None:
            paragraphs.append(paragraph)
        lines = []
    return paragraphs


def _strip(code: Wikicode, out: list[str], prefixes: frozenset[str]) -> None:
    for node in code.nodes:
        if isinstance(node, Text):
            # A line that starts with a space is preformatted text (code, pseudocode), not prose.
            out.append(node.value.replace("\n ", "\n" + _BLOCK_MARK))
        elif isinstance(node, Wikilink):
            _strip_link(node, out, prefixes)
        elif isinstance(node, Tag):
            tag = str(node.tag).strip().lower()
            if tag in _LIST_TAGS:
                out.append(_BLOCK_MARK)
            elif tag == "br":
                out.append("\n")
            elif tag not in _DROPPED_TAGS and node.contents is not None:
                _strip(node.contents, out, prefixes)
        elif isinstance(node, Template):
            render = _template_renderer(_template_name(node))
            if render is not None:
                params = [_plain(p.value, prefixes) for p in node.params if not p.showkey]
                out.append(render(params))
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _strip(node.title, out, prefixes)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, Heading):
            out.append("\n")
        # Comments, template arguments ({{{1}}}) and anything unknown leave no text.


def _plain(code: Wikicode, prefixes: frozenset[str]) -> str:
    pieces: list[str] = []
    _strip(code, pieces, prefixes)
    return "".join(pieces).strip()


def _strip_link(link: Wikilink, out: list[str], prefixes: frozenset[str]) -> None:
    title = str(link.title).strip()  # raw, to read its namespace prefix
    if not title.startswith(":") and ":" in title:
        prefix = title.split(":", 1)[0].strip().lower()
        if prefix in prefixes or _LANGUAGE_CODE.fullmatch(prefix):
            return
    if link.text is not None:
        _strip(link.text, out, prefixes)
    else:
        out.append(_plain(link.title, prefixes).lstrip(":"))


def _template_name(template: Template) -> str:
    name = str(template.name).strip().lower().replace("_", " ")
    return name[len("template:") :] if name.startswith("template:") else name


def _template_renderer(name: str) -> Callable[[list[str]], str] | None:
    if name.startswith("lang-"):  # {{lang-fr|texte}}
        return _nth(0)
    return _INLINE_TEMPLATES.get(name)


def _convert(params: list[str]) -> str:
    """{{convert|5|km|mi}} -> "5 km"; {{convert|5|to|10|km}} -> "5 to 10 km"."""
    if len(params) >= 4 and params[1] in ("-", "–", "to", "and", "or", "by", "x", "×"):
        return " ".join(params[:4])
    return " ".join(params[:2])


def _nth(index: int) -> Callable[[list[str]], str]:
    return lambda params: params[index] if len(params) > index else ""


def _last(params: list[str]) -> str:
    return params[-1] if params else ""


_INLINE_TEMPLATES: dict[str, Callable[[list[str]], str]] = {
    "convert": _convert,
    "cvt": _convert,
    "nowrap": _nth(0),
    "nobr": _nth(0),
    "small": _nth(0),
    "smaller": _nth(0),
    "big": _nth(0),
    "lang": _nth(1),
    "transl": _last,
    "nihongo": _nth(0),
    "abbr": _nth(0),
    "nts": _nth(0),
    "dts": _nth(0),
    "mvar": _nth(0),
    "as of": lambda params: f"As of {' '.join(params[:3])}",
    "ndash": lambda params: "–",
    "mdash": lambda params: "—",
    "snd": lambda params: " – ",
    "frac": lambda params: "/".join(params),
    "ruby": _nth(0),
    "読み仮名": _nth(0),
    "仮リンク": _nth(0),  # ja: a link to an article that exists only in another language
}
