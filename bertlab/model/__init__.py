"""The model: the LightningModule, its network, losses, optimisation and resume checks.

BertPretraining around `transformers.BertForPreTraining` (post- or pre-LN), the sparse MLM head,
AdamW groups, the learning-rate schedule and its time-budget clock.

May import: speed, files, tokenizer (opening a tokenizer folder).
"""
