#!/usr/bin/env python
"""Train a BERT tokenizer (SentencePiece unigram/bpe or WordPiece) as a transformers folder.

Usage: python tools/train_tokenizer.py --train_file corpus/train.txt --output_dir tokenizer
    --model_type unigram|bpe|wordpiece --vocab_size 32000 [--lowercase --add_dummy_prefix false]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.tokenizer.training:train_tokenizer")  # imported with Ctrl-C handled
