#!/usr/bin/env python
"""Tokenize a corpus into BERT pre-training samples.

Usage: python tools/prepare_samples.py --input corpus/train.txt --tokenizer tokenizer
    --output_dir samples/train --max_seq_len 128 [--num_shards 8 --num_proc 2 --nsp false]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.samples.prepare:prepare_samples")  # imported with Ctrl-C handled
