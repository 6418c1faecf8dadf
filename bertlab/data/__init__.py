"""The training input: the LightningDataModule, the streaming dataset, masking into batches.

Samples folders -> resumable, rank-aware DataLoaders of masked batches for `bertlab fit`.

May import: samples (the format), tokenizer.
"""
