"""A bf16 working copy of a model with fp32 master weights: bf16 training that pays on a CPU.

Decisions:
- Autocast (`trainer.precision: bf16-mixed`) keeps weights and the residual stream in fp32 and
  casts at every matrix product, forward and backward. On a CPU those casts cost more than AMX's
  faster bf16 products save (measured on the bert-mini shape: autocast slower than fp32). Here the
  whole forward and backward run in bf16 on a bf16 copy of the model, with no casts in between,
  and only the optimizer touches the fp32 master weights (the classic "O2" recipe).
- The master stays the LightningModule's `model`: it is what the optimizer steps, what gradient
  clipping sees, what validation runs (in fp32, so metrics do not depend on this switch) and
  what checkpoints and export hold. The copy is not a registered submodule, so the state dict is
  unchanged.
- After each backward the copy's gradients are added, in fp32, to the master's and cleared, so
  gradient accumulation over many micro-batches sums in fp32; after each optimizer step the
  master's new values are copied back. Frozen parameters are never copied (they cannot change).
- One process only: DDP reduces the gradients of the parameters it wraps (the master's), which
  this copy bypasses (BertPretraining then trains without it, with a warning). On GPUs autocast's
  casts are cheap; use bf16-mixed there.
- Forward hooks on the master when the copy is made are copied with it; hooks added later act
  only on validation, which runs the master.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Bf16WorkingCopy:
    """A bf16 copy of `master` for forward and backward; gradients flow back to `master`."""

    def __init__(self, master: nn.Module) -> None:
        self.master = master
        self.module = copy.deepcopy(master).to(torch.bfloat16)
        master_params = dict(master.named_parameters())
        self.pairs = [
            (master_params[name], param)
            for name, param in self.module.named_parameters()
            if master_params[name].requires_grad
        ]

    @torch.no_grad()
    def grads_to_master(self) -> None:
        """Add the copy's gradients to the master's in fp32 and clear them (after backward)."""
        for master, working in self.pairs:
            if working.grad is None:
                continue
            if master.grad is None:
                master.grad = working.grad.to(master.dtype)
            else:
                master.grad.add_(working.grad)
            working.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the master's values into the bf16 copy (after an optimizer step)."""
        for master, working in self.pairs:
            working.copy_(master)
