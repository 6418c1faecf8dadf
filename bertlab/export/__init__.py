"""A checkpoint out: the Hugging Face folder, its model card and facts, the Hub, fill-mask.

`tools/export_model.py`, `tools/push_to_hub.py`, `tools/fill_mask.py`.

May import: model, tokenizer (its export), files.
"""
