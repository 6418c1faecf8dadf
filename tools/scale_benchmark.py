#!/usr/bin/env python
"""The data path against corpus size: prepare_corpus, train_tokenizer, prepare_samples.

Usage: python tools/scale_benchmark.py --input ../shared/data/enwiki-sample.xml.bz2
       --sizes_mb 25 100 400 --output runs/scale/records.jsonl
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.scale:scale_benchmark")  # imported with Ctrl-C handled
