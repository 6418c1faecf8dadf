"""`bertlab fit|validate|test`: the CLI and what every run gets around the model.

LightningCLI over BertPretraining and BertDataModule, checkpoints that are never half-written,
the non-finite-loss guard, graceful interrupts, preflight checks, throughput and MFU.

May import: model, data, speed, downstream (evaluation during pre-training), files, bertlab.signals,
bertlab.command (its user errors).
"""
