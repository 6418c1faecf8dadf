#!/usr/bin/env python
"""Turn dumps, text, JSON Lines, Parquet or a dataset into a BERT corpus (train/valid/test.txt).

Usage: python tools/prepare_corpus.py --input PATH... --output_dir DIR [--lang en|ja|...]
       python tools/prepare_corpus.py --download ja --date 20240601 --output_dir DIR
       python tools/prepare_corpus.py --input wikipedia/20231101.en --output_dir DIR   # Parquet
       python tools/prepare_corpus.py --dataset parquet --dataset_files "d/*.parquet" --output_dir D
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.corpus.prepare:prepare_corpus")  # imported with Ctrl-C handled
