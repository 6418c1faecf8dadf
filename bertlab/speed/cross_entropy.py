"""The MLM decoder and its cross-entropy as one autograd function: fewer passes over [N, V].

With the sparse head, the decoder's logits ([masked positions, vocabulary], ~600 x 30k on the
bert-mini step) were still a fifth of a CPU step: a cast to fp32, log-softmax, the loss's
gather, then in the backward a zero-filled [N, V] gradient, the log-softmax backward and a cast
back. `linear_cross_entropy` computes the logits, the summed loss and, in the same pass, the
gradient of the loss with respect to the logits (softmax minus one-hot), and turns it into the
gradients of the hidden states, weight and bias at once; the backward only scales them by the
incoming gradient (the scalar loss's, 1 / count after the mean).

Decisions:
- Same numerics as `F.cross_entropy(logits.float(), targets)`: logits are produced in the
  inputs' dtype (bf16 with the working copy, as the plain path's matrix product gives them),
  the log-sum-exp, softmax and loss are fp32. A test checks loss and gradients against the plain
  path in fp32 (<= 1e-5).
- Gradients are computed in the forward only when one of the inputs requires them (training);
  validation pays for the loss alone, and holds one chunk of logits at a time.
- Under autocast the inputs are cast to autocast's dtype first, as a linear layer's would be.
- Rows whose target is -100 (the padding rows of `gather_masked`) add nothing to the loss or the
  gradients. The count of correct predictions is returned when asked, from the same logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100


# On a CPU the [N, V] logits (and then their gradient) live in one workspace per dtype that is
# kept between steps: allocated fresh, a block that size is an mmap whose first-touch page faults
# cost as much as the arithmetic; and the fp32 softmax runs over slices of at most ~16 MB, which
# glibc serves from its heap. A GPU's caching allocator already reuses blocks: fresh tensors
# there, and slices as large as 1 GiB.
_CPU_CHUNK_BYTES = 16 << 20
_GPU_CHUNK_BYTES = 1 << 30
_WORKSPACES: dict[torch.dtype, Tensor] = {}


def _workspace(rows: int, columns: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    if device.type != "cpu":
        return torch.empty(rows, columns, dtype=dtype, device=device)
    buffer = _WORKSPACES.get(dtype)
    # An inference tensor (made under inference_mode) cannot be written outside it.
    if buffer is None or buffer.numel() < rows * columns or buffer.is_inference():
        _WORKSPACES[dtype] = buffer = torch.empty(rows * columns, dtype=dtype, device=device)
    return buffer[: rows * columns].view(rows, columns)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, accuracy, grad_enabled):  # noqa: D102
        # needs_input_grad follows requires_grad even under no_grad / inference_mode (validation).
        needs_grad = grad_enabled and any(ctx.needs_input_grad[:3])
        valid = targets != IGNORE_INDEX
        safe_targets = targets.masked_fill(~valid, 0).unsqueeze(1)
        cpu = hidden.device.type == "cpu"
        chunk_bytes = _CPU_CHUNK_BYTES if cpu else _GPU_CHUNK_BYTES
        rows = max(1, chunk_bytes // (4 * weight.size(0)))
        if needs_grad:
            # All rows at once: the gradient needs every row's before its two matrix products.
            logits = _workspace(hidden.size(0), weight.size(0), hidden.dtype, hidden.device)
            torch.addmm(bias, hidden, weight.t(), out=logits)
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device) if accuracy else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        for start in range(0, hidden.size(0), rows):
            part = slice(start, start + rows)
            t, ok = safe_targets[part], valid[part]
            # Without gradients (validation) only a chunk's logits exist at a time.
            chunk = logits[part] if needs_grad else torch.addmm(bias, hidden[part], weight.t())
            if accuracy:
                correct += ((chunk.argmax(-1) == targets[part]) & ok).sum()
            probs = chunk.float()
            peak = probs.amax(-1, keepdim=True)
            target_logit = probs.gather(1, t).squeeze(1)
            probs.sub_(peak).exp_()
            total = probs.sum(-1, keepdim=True)
            log_normaliser = (total.log() + peak).squeeze(1)
            loss_sum += ((log_normaliser - target_logit) * ok).sum()
            if not needs_grad:
                continue
            # d(loss_sum)/d(logits) = softmax - one_hot(target), on the labelled rows only; it
            # replaces the logits in the workspace.
            probs.div_(total)
            probs.scatter_add_(1, t, -ok.to(probs.dtype).unsqueeze(1))
            if not cpu:
                probs.masked_fill_(~ok.unsqueeze(1), 0.0)  # no host sync on a GPU
            elif not bool(ok.all()):
                probs[~ok] = 0.0
            grad_bias += probs.sum(0)
            logits[part].copy_(probs)
        if needs_grad:
            grad_hidden = logits @ weight
            grad_weight = logits.t() @ hidden
            ctx.save_for_backward(grad_hidden, grad_weight, grad_bias.to(bias.dtype))
        if correct is not None:
            ctx.mark_non_differentiable(correct)
        return loss_sum, correct

    @staticmethod
    def backward(ctx, grad_loss, grad_correct):  # noqa: D102
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_loss.to(grad_hidden.dtype)
        return (
            grad_hidden * scale if ctx.needs_input_grad[0] else None,
            grad_weight * scale if ctx.needs_input_grad[1] else None,
            grad_bias * grad_loss.to(grad_bias.dtype) if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, accuracy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets` (-100: ignored).

    hidden [N, H], weight [V, H], bias [V], targets [N]. Returns the fp32 loss summed over the
    labelled rows and, with accuracy, the number of rows whose argmax is the target.
    """
    assert hidden.dim() == 2 and targets.shape == hidden.shape[:1]
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        # What autocast does for a linear layer; the casts are autograd ops, so the gradients
        # reach fp32 parameters in fp32.
        dtype = torch.get_autocast_dtype(device)
        hidden, weight, bias = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
    elif hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    with torch.autocast(device, enabled=False):
        return _LinearCrossEntropy.apply(
            hidden, weight, bias, targets, accuracy, torch.is_grad_enabled()
        )
