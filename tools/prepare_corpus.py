#!/usr/bin/env python
"""Turn Wikipedia dumps, plain text or JSON Lines into a BERT corpus (train/valid/test.txt).

Usage: python tools/prepare_corpus.py --input PATH... --output_dir DIR [--lang en|ja|...]
       python tools/prepare_corpus.py --download ja --date 20240601 --output_dir DIR
"""

from bertlab.command import run
from bertlab.corpus import prepare_corpus

if __name__ == "__main__":
    run(prepare_corpus)
