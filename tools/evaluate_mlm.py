#!/usr/bin/env python
"""Held-out masked-LM loss of a Hugging Face model beside a unigram model's.

Usage: python tools/evaluate_mlm.py --model demo/model --text demo/corpus/test.txt
       --unigram_corpus demo/corpus/train.txt
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.downstream.heldout:evaluate_mlm")  # imported with Ctrl-C handled
