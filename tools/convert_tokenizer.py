#!/usr/bin/env python
"""Turn a SentencePiece model trained elsewhere into a bertlab tokenizer folder.

Usage: python tools/convert_tokenizer.py --spm_model sp.model --output_dir tokenizer
    [--text_file corpus/valid.txt]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.tokenizer.training:convert_tokenizer")  # imported with Ctrl-C handled
