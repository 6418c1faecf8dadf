"""What trains and how: trainable-parameter selection, AdamW parameter groups, the LR schedule.

Decisions:
- `trainable` names parameters as `BertForPreTraining` does (`bert.encoder.layer.0...`, the names
  users see in Hugging Face checkpoints). Patterns are shell-style (`fnmatch`, `*` crosses dots)
  over the full name; a pattern that starts with `re:` is a regular expression (`re.fullmatch`).
  Tied parameters are matched under every name they have (the MLM decoder weight is the word
  embedding matrix). A pattern that matches nothing is an error: a typo must not silently freeze
  the whole model.
- `word_embeddings` (the lexical transfer of Artetxe, Ruder and Yogatama 2020) trains the word
  embedding matrix, which is also the tied MLM decoder weight, AND the MLM output bias: the bias
  has one entry per vocabulary item, so with a new vocabulary it is as meaningless as the old
  embeddings. Position and token-type embeddings, LayerNorms and the transformer body stay frozen.
- Frozen parameters get `requires_grad=False` and are left out of the optimizer, so neither
  AdamW's update nor its decoupled weight decay can touch them; they stay bit-identical.
- No weight decay on 1-D parameters (biases and LayerNorm weights), as in the original BERT.
- AdamW picks the fastest implementation that is correct in the run: `fused` where the device has
  the fused kernel (CPU included), except with fp16 loss scaling plus gradient clipping (Lightning
  cannot clip a fused optimizer's internally-unscaled gradients), else `foreach`.
- Schedule: linear warmup over `warmup_steps` optimizer steps (the first step already uses
  lr/warmup_steps, not 0), then linear decay to exactly 0 at `max_steps`, or constant. With a
  time budget (trainer.max_time and no max_steps), the decay is laid over the budget instead, as
  Cramming does: the factor is 1 minus the share of the budget spent (bertlab.model.time_budget),
  and the warm-up ends by 5% of the budget at the latest, so a long run's recipe works in minutes.
  The multiplier is a plain function, so the scheduler's state holds no objects and checkpoints load
  with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Callable, Iterable

import torch
from torch import nn

# Vocabulary-indexed parameters: what `trainable: word_embeddings` trains.
WORD_EMBEDDING_PATTERNS = (
    "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "cls.predictions.bias",
)
# Parameters an MLM-only run never uses: frozen so DDP sees no unused trainable parameter.
NSP_ONLY_PATTERNS = ("bert.pooler.*", "cls.seq_relationship.*")

PRESETS = ("all", "word_embeddings")


# Above this an AdamW step moves every weight by about its own scale: the run diverges at once.
MAX_SENSIBLE_LR = 1.0


def warn_of_lr(lr: float, flag: str) -> None:
    """A learning rate above 1 for AdamW (BERT's are 1e-5 to 1e-3) is said in one line: valid,
    but the loss becomes NaN within a few steps."""
    if lr > MAX_SENSIBLE_LR:
        print(
            f"warning: {flag} {lr:g} is far above any AdamW learning rate for BERT (1e-5 to "
            "1e-3): the run will diverge; did you mean a power of ten below?",
            file=sys.stderr,
        )


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def select_trainable(
    model: nn.Module, trainable: str | Iterable[str] = "all", objective: str = "mlm_nsp"
) -> list[str]:
    """Set requires_grad on model's parameters from `trainable`; return the trainable names.

    `trainable` is "all", "word_embeddings" or one or more fnmatch / `re:` patterns.
    """
    patterns: list[str]
    if isinstance(trainable, str):
        if trainable == "all":
            patterns = ["*"]
        elif trainable == "word_embeddings":
            patterns = list(WORD_EMBEDDING_PATTERNS)
        else:
            patterns = [trainable]
    else:
        patterns = list(trainable)
        if not patterns:
            raise ValueError("model.trainable is an empty list: nothing would train")
    named = list(model.named_parameters(remove_duplicate=False))
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as error:
                raise ValueError(
                    f"model.trainable: bad regular expression {pattern!r}: {error}"
                ) from None
        # The preset lists names some models lack (an untied or bias-free decoder).
        if trainable != "word_embeddings" and not any(_matches(n, pattern) for n, _ in named):
            raise ValueError(
                f"model.trainable: pattern {pattern!r} matches no parameter (presets: "
                f"{', '.join(PRESETS)}; names look like {named[5][0]!r})"
            )
    chosen = {id(p) for n, p in named if any(_matches(n, pat) for pat in patterns)}
    if objective == "mlm":
        chosen -= {id(p) for n, p in named if any(_matches(n, pat) for pat in NSP_ONLY_PATTERNS)}
    if not chosen:
        raise ValueError(f"model.trainable {trainable!r} leaves no parameter to train")
    for _, parameter in named:
        parameter.requires_grad_(id(parameter) in chosen)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two AdamW groups: decayed matrices, undecayed biases and norms."""
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    # Named, so the learning-rate monitor logs lr/decay and lr/no_decay rather than pg1, pg2.
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def adamw_implementation(device: torch.device, fp16_scaling_with_clipping: bool = False) -> str:
    """ "fused", "foreach" or "for_loop": the fastest AdamW that is correct on `device`."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    if device.type in _get_fused_kernels_supported_devices() and not fp16_scaling_with_clipping:
        return "fused"
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return "foreach"
    return "for_loop"


def build_adamw(
    groups: list[dict],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    implementation: str,
) -> torch.optim.AdamW:
    """AdamW over `groups` with the chosen implementation ("fused" | "foreach" | "for_loop")."""
    assert implementation in ("fused", "foreach", "for_loop"), implementation
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **flags[implementation])


BUDGET_WARMUP_SHARE = 0.05  # under a time budget, warm-up ends by 5% of it (Cramming: a share)


def lr_multiplier(
    warmup_steps: int,
    max_steps: int | None,
    schedule: str = "linear",
    budget_used: Callable[[], float] | None = None,
) -> Callable[[int], float]:
    """The LambdaLR factor at optimizer step `step`: warmup, then linear decay to 0 or constant.

    With `budget_used` (a time budget: the share of it spent so far, 0 to 1), a linear schedule
    decays to 0 at the end of the budget instead of at `max_steps`, and the warm-up ends after
    `warmup_steps` or once BUDGET_WARMUP_SHARE of the budget is spent, whichever comes first.
    """
    if schedule not in ("linear", "constant"):
        raise ValueError(f"model.lr_schedule must be linear or constant, got {schedule!r}")
    if warmup_steps < 0:
        raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    if schedule == "linear" and budget_used is None:
        if max_steps is None or max_steps < 0:
            raise ValueError(
                "trainer.max_steps is required for lr_schedule linear (the learning rate decays "
                "to zero at max_steps); set trainer.max_steps, or trainer.max_time for a "
                "schedule over a time budget, or model.lr_schedule: constant"
            )
        if warmup_steps >= max_steps:
            raise ValueError(
                f"--model.warmup_steps {warmup_steps} must be smaller than --trainer.max_steps "
                f"{max_steps}"
            )
    decay_steps = (max_steps or 0) - warmup_steps

    def multiplier(step: int) -> float:
        warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
        if budget_used is None:
            if schedule == "constant":
                return warm
        else:
            used = budget_used()
            # A recipe's warm-up in steps (10,000 for a long run) would outlast a short budget:
            # under a budget it also ends once BUDGET_WARMUP_SHARE of the time is spent.
            warm = min(1.0, max(warm, used / BUDGET_WARMUP_SHARE))
            if schedule == "constant":
                return warm
            # min(): a warm-up still under way when the budget's decay has begun gives way to it.
            return min(warm, max(0.0, 1.0 - used))
        if step < warmup_steps:
            return warm
        return max(0.0, (max_steps - step) / decay_steps)

    return multiplier
