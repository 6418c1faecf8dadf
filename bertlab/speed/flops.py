"""Useful FLOPs of a BERT training step and the matrix-product peak they are measured against.

The one place where MFU's numerator and denominator are defined; the ThroughputMonitor callback,
the benchmark and the speed resolver's probe all use it.

Decisions:
- Useful FLOPs (forward + backward): 6·N per real token for the N weights of the transformer
  layers, 12·L·d·l² for the attention of a sequence of l real tokens, 6·d·V per predicted (masked)
  token for the decoder. Embedding lookups, the head's transform and the pooler are left out, and
  padding earns nothing, so a dense MLM head gets no credit for decoding positions without a label.
- The peak is measured, not looked up, in the dtype the run computes in (fp32 for a run in fp32:
  an fp32 run scored against a bf16 peak on an AVX2 CPU, where bf16 is emulated, read 410%).
  It is the best rate of square and batched products of a few sizes with the run's thread count:
  on a 2-core machine one product split across both cores reached about half of what each core
  does on a product of its own. A busy moment only makes a rate look lower, so the best one counts.
- On a GPU the products are synchronised around each timing, and the sizes are larger (a GPU is
  far from its peak on a 1024² product).
"""

from __future__ import annotations

import time

import torch


def training_flops(
    num_layers: int,
    hidden_size: int,
    vocab_size: int,
    encoder_params: int,
    tokens: float,
    sum_squared_lengths: float,
    predicted_tokens: float,
) -> float:
    """Useful FLOPs of training steps (forward + backward) over the given token counts."""
    return (
        6 * encoder_params * tokens
        + 12 * num_layers * hidden_size * sum_squared_lengths
        + 6 * hidden_size * vocab_size * predicted_tokens
    )


def model_training_flops(
    model: torch.nn.Module, tokens: float, sum_squared_lengths: float, predicted_tokens: float
) -> float:
    """training_flops for a transformers BERT (anything with `.config` and `.bert.encoder`)."""
    config = model.config
    encoder_params = sum(p.numel() for p in model.bert.encoder.parameters())
    return training_flops(
        config.num_hidden_layers, config.hidden_size, config.vocab_size, encoder_params,
        tokens, sum_squared_lengths, predicted_tokens,
    )  # fmt: skip


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    dtype: torch.dtype,
    shape: tuple[int, int, int, int] = (1, 1024, 256, 512),
    seconds: float = 0.1,
    device: torch.device | str = "cpu",
) -> float:
    """Best FLOP/s of a (batch, m, k) @ (batch, k, n) product in `dtype` on `device`.

    At least one timed product follows a warm-up (kernel selection, AMX tile configuration), so
    a very slow dtype (bf16 emulated on AVX2) costs two products, not `seconds` of them.
    """
    device = torch.device(device)
    batch, m, k, n = shape
    # Its own generator: the probe runs after the seed is set and a timing-dependent number of
    # times, so drawing from the global one would change a seeded run's initial weights.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(batch, m, k, device=device, generator=generator).to(dtype)
    b = torch.randn(batch, k, n, device=device, generator=generator).to(dtype)
    out = torch.empty(batch, m, n, dtype=dtype, device=device)
    torch.bmm(a, b, out=out)
    _synchronize(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        torch.bmm(a, b, out=out)
        _synchronize(device)
        best = max(best, 2 * batch * m * k * n / (time.perf_counter() - start))
        if time.perf_counter() >= deadline:
            return best


def measure_peak_flops(
    dtype: torch.dtype = torch.float32,
    seconds: float = 1.0,
    device: torch.device | str = "cpu",
) -> float:
    """The practical peak FLOP/s of matrix products in `dtype` on `device` (see the docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        forms = [(1, size, size, size) for size in (4096, 8192)]
    else:
        threads = torch.get_num_threads()
        sizes = (256, 512, 1024)
        forms = [
            (batch, s, s, s) for s in sizes for batch in dict.fromkeys((1, threads, 2 * threads))
        ]
    each = seconds / len(forms)
    return max(matmul_rate(dtype, form, each, device) for form in forms)


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype of the matrix products of a Lightning precision setting."""
    if "bf16" in precision:
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return torch.float32
