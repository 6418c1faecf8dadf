"""Tokenizers: train WordPiece or SentencePiece, convert, load, fingerprint, export alike.

The second stage (`tools/train_tokenizer.py`, `tools/convert_tokenizer.py`), and the tokenizer half
of an export (the files copied and proven to tokenize as the training did).

May import: files.
"""
