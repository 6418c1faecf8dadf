"""Pre-training samples: a corpus and a tokenizer -> *.jsonl.gz shards + meta.json, and back.

The third stage (`tools/prepare_samples.py`) and the samples format in one place: its writer
(`shard_writer`), its reader (`shard_reader`, which also reads meta.json).

May import: files, tokenizer, bertlab.workers.
"""
