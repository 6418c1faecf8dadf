"""Raw text in, the corpus format out: Wikipedia dumps, text, Parquet and datasets, sentences.

The first stage of the pipeline (`tools/prepare_corpus.py`): train/valid/test.txt, one sentence a
line, documents apart by a blank line; and the embedded demo corpus (CPython's documentation).

May import: files, bertlab.signals (its spawned workers leave Ctrl-C to the parent).
"""
