"""MFU's two halves: the useful-FLOPs formula and the measured matrix-product peak.

Run: .venv/bin/python -m pytest tests/speed/test_flops.py -q
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForPreTraining

from bertlab.speed.flops import (
    matmul_rate,
    measure_peak_flops,
    model_training_flops,
    precision_dtype,
    training_flops,
)


def test_formula_counts_encoder_weights_attention_and_predictions():
    # 6·N per token + 12·L·d·Σl² + 6·d·V per prediction
    flops = training_flops(2, 4, 10, 100, tokens=5, sum_squared_lengths=13, predicted_tokens=2)
    assert flops == 6 * 100 * 5 + 12 * 2 * 4 * 13 + 6 * 4 * 10 * 2
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    model = BertForPreTraining(config)
    encoder = sum(p.numel() for p in model.bert.encoder.parameters())
    assert model_training_flops(model, 10, 50, 3) == training_flops(2, 16, 50, encoder, 10, 50, 3)


def test_peak_is_measured_in_the_dtype_asked_for():
    fp32 = measure_peak_flops(torch.float32, seconds=0.2)
    assert 1e8 < fp32 < 1e14  # a CPU's fp32 rate, not a table's figure
    assert matmul_rate(torch.float32, (1, 64, 64, 64), seconds=0.01) > 0
    assert precision_dtype("bf16-mixed") == torch.bfloat16
    assert precision_dtype("16-mixed") == torch.float16
    assert precision_dtype("32-true") == torch.float32
