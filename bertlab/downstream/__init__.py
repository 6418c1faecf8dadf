"""What a model is worth: fine-tuning on tasks, held-out MLM evaluation, both during pre-training.

`tools/finetune.py`, `tools/evaluate_mlm.py` (the independent held-out evaluator) and the
`downstream:` and `heldout:` sections of `bertlab fit`.

May import: model, export, samples, tokenizer, speed, files.
"""
