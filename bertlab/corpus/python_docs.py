"""The embedded demo corpus: the reference documentation every CPython installation carries.

`pydoc_data.topics` holds the text of the Python Language Reference (about 80 topics, ~450k
characters of real English prose), so `make demo` needs no download. Decisions:
- One document per topic; the prose paragraphs are kept, one paragraph a line, because the
  documents-separated-by-blank-lines text format cannot hold blank lines inside a document.
- Indented blocks (grammar rules, code examples) and the heading underlines are dropped: they are
  not sentences, and would teach the model punctuation soup.
- Topics are written in sorted order so the corpus, and the demo after it, is deterministic.

Usage: python -m bertlab.corpus.python_docs OUTPUT.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bertlab.files.atomic import atomic_write

_UNDERLINE = re.compile(r"^[*=\-^~\"']{3,}$")


def _paragraphs(text: str) -> list[str]:
    paragraphs: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        prose = line.strip() and not line.startswith((" ", "\t")) and not _UNDERLINE.match(line)
        if prose:
            current.append(line.strip())
            continue
        if _UNDERLINE.match(line.strip()) and current:
            current.pop()  # the line above an underline is a heading, not prose
        if current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [p for p in paragraphs if len(p.split()) >= 4]


def write_pydoc_corpus(output: str | Path) -> int:
    """Write the CPython reference documentation as plain text documents; return their count."""
    from pydoc_data.topics import topics

    documents = ["\n".join(_paragraphs(topics[name])) for name in sorted(topics)]
    documents = [d for d in documents if d]
    with atomic_write(output) as f:
        f.write("\n\n".join(documents) + "\n")
    return len(documents)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bertlab.corpus.python_docs OUTPUT.txt")
    count = write_pydoc_corpus(sys.argv[1])
    print(f"wrote {count} documents of CPython's reference documentation to {sys.argv[1]}")
