"""The `speed` section: every setting that changes how fast a run goes, not what it computes.

`bertlab fit` reads these from its own config section (`speed:`), never from `model:`. Each one
defaults to `auto`, which is resolved once when the run starts from what the device really
offers, logged in one line with its reasons, and written back into the run's saved config
(config.yaml), so the run can be repeated exactly. An explicit value always wins.

Decisions:
- Speed is not a model hyperparameter: checkpoints do not carry it, so a run that resumes, tests
  or exports a checkpoint on another machine makes its own choices there. Checkpoints of older
  versions kept these switches under `model` (LEGACY_MODEL_KEYS): they are dropped when read.
- The device is described by `DeviceFacts`, read by `probe_device`: for a CPU, its model name,
  the instruction set its kernels may use (cpuid flags, capped by ONEDNN_MAX_CPU_ISA and by
  torch's ATen capability, which follows ATEN_CPU_CAPABILITY) and a measured probe: how fast a
  bf16 matrix product runs against an fp32 one. The probe decides bf16, because it measures what
  the kernels really do (under the AVX2 emulation `torch.cpu._is_amx_tile_supported()` still says
  True while bf16 products run 100x slower); the instruction set names the machine in the log.
  For CUDA: the compute capability, bf16 support and whether flash-attn is importable.
- `resolve` is a pure function of the settings, the facts, the trainer precision (None: not set
  by the user) and the process count, so every kind of machine is tested by faking its facts.
  Its table is BENCHMARKS.md's "Portable speed" measurements:
  - bf16 working copy (bertlab.speed.bf16) where bf16 products are at least BF16_MIN_SPEEDUP x fp32
    (AMX: ~10x, bert-mini 1.7x over fp32); fp32 elsewhere (AVX512-BF16 without AMX: bf16
    products 0.6x fp32; AVX2: 0.01x). One process only (DDP reduces the master's gradients).
  - precision, when the config does not set it: 32-true on a CPU (autocast's casts cost more
    than they save there; the working copy is the CPU's bf16), bf16-mixed on a GPU with bf16
    (compute capability >= 8.0), 16-mixed (with loss scaling) on older GPUs.
  - fast dropout masks and the allocator setting are CPU kernels: on on a CPU, off on a GPU.
  - the fused MLM decoder + loss and the sparse MLM head win on every CPU measured (1.2x, 2.1x+);
    fused AdamW is within noise of foreach there and one kernel on a GPU.
  - torch.compile: off (0.36-0.83x of eager on every CPU measured).
  - TF32 for fp32 products on a GPU (`high`); `highest` on a CPU, where it means nothing.
  - `check_precision` refuses, before the Trainer exists, a precision the device cannot run
    (Lightning would silently train `16-mixed` on a CPU as `bf16-mixed`, with other numerics) and
    a GPU accelerator on a machine without one: fp16 AMP needs CUDA, bf16 on CUDA a GPU that has
    it, Transformer Engine its package.
  - The GPU column follows torch's and Lightning's guidance and is not yet measured: no GPU has
    been lent to this project's sessions so far (BENCHMARKS.md says when one is).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

AUTO = "auto"
BF16_MIN_SPEEDUP = 1.5
# Keys that older checkpoints stored under `model` and that now belong to `speed`.
LEGACY_MODEL_KEYS = {
    "bf16_compute": "bf16_working_copy",
    "attn_implementation": "attn_implementation",
    "fast_dropout": "fast_dropout",
    "fused_mlm_loss": "fused_mlm_loss",
    "sparse_mlm_head": "sparse_mlm_head",
    "pad_masked_to": "pad_masked_to",
    "keep_freed_memory": "keep_freed_memory",
    "compile": "compile",
    "optimizer_implementation": "optimizer_implementation",
}


@dataclass
class Speed:
    """How a run computes: settings that change its speed, not its results (beyond noise).

    Every one is `auto` by default: resolved when the run starts from the device, logged with the
    reason, and written into the run's config.yaml.

    Args:
        bf16_working_copy: Train a bf16 copy of the model against fp32 master weights, with no
            casts between operations (bertlab.speed.bf16): bf16 that pays on CPUs with fast bf16
            products (AMX). Needs trainer.precision 32-true and one process.
        attn_implementation: sdpa (fused attention kernels; with fast_dropout on a CPU, attention
            with dropout in the model's dtype), eager, or flash_attention_2 (needs flash-attn).
        fast_dropout: On a CPU, dropout masks four per 64-bit random number (bertlab.speed.dropout);
            on a GPU torch's own run either way. Other random masks, same distribution.
        fused_mlm_loss: The MLM decoder and its cross-entropy in one function that never builds
            the fp32 log-probabilities over the vocabulary (bertlab.speed.cross_entropy).
        sparse_mlm_head: Run the MLM head only on the masked positions.
        pad_masked_to: Pad the count of masked positions to a multiple of this.
        pad_to_multiple_of: Pad each batch's length to a multiple of this (the data's collator).
        keep_freed_memory: On a CPU, have glibc keep freed memory for the next step instead of
            page-faulting fresh memory (bertlab.speed.allocator).
        compile: torch.compile the encoder and the MLM head.
        optimizer_implementation: AdamW's kernel: fused, foreach or for_loop.
        float32_matmul_precision: torch.set_float32_matmul_precision: highest, high (TF32 on
            GPUs) or medium.
    """

    bf16_working_copy: bool | Literal["auto"] = AUTO
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = AUTO
    fast_dropout: bool | Literal["auto"] = AUTO
    fused_mlm_loss: bool | Literal["auto"] = AUTO
    sparse_mlm_head: bool | Literal["auto"] = AUTO
    pad_masked_to: int | Literal["auto"] = AUTO
    pad_to_multiple_of: int | Literal["auto"] = AUTO
    keep_freed_memory: bool | Literal["auto"] = AUTO
    compile: bool | Literal["auto"] = AUTO
    optimizer_implementation: Literal["auto", "fused", "foreach", "for_loop"] = AUTO
    float32_matmul_precision: Literal["auto", "highest", "high", "medium"] = AUTO

    def __post_init__(self) -> None:
        for name in ("pad_masked_to", "pad_to_multiple_of"):
            value = getattr(self, name)
            if value != AUTO and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"--speed.{name} {value!r} must be auto or an integer >= 1")

    def is_resolved(self) -> bool:
        return all(getattr(self, f.name) != AUTO for f in dataclasses.fields(self))

    def explicit(self) -> set[str]:
        """The names of the settings that are not `auto`."""
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != AUTO}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DeviceFacts:
    """What the resolver knows of a device. `isa`: amx, avx512_bf16, avx512, avx2, baseline
    (CPUs) or sm_XY (CUDA); `bf16_speedup`: a bf16 product's measured rate over fp32's (CPU)."""

    type: Literal["cpu", "cuda"]
    name: str
    isa: str
    bf16_speedup: float | None = None
    cuda_capability: tuple[int, int] | None = None
    cuda_bf16: bool = False
    flash_attn: bool = False

    def describe(self) -> str:
        if self.type == "cuda":
            cap = self.cuda_capability or (0, 0)
            return f"cuda: {self.name}, compute capability {cap[0]}.{cap[1]}"
        isa = ISA_NAMES.get(self.isa, self.isa)
        speed = f", bf16 products {self.bf16_speedup:.2f}x fp32" if self.bf16_speedup else ""
        return f"cpu: {self.name}, {isa}{speed}"


ISA_NAMES = {
    "amx": "AMX",
    "avx512_bf16": "AVX512-BF16 without AMX",
    "avx512": "AVX-512 without bf16",
    "avx2": "AVX2 only",
    "baseline": "no AVX2",
}


@dataclass
class Resolution:
    """A fully resolved Speed, the trainer precision, and why each auto choice was made."""

    speed: Speed
    precision: str
    reasons: dict[str, str] = field(default_factory=dict)
    facts: DeviceFacts | None = None

    def summary(self) -> str:
        """The one line logged at the start of a run."""
        parts = [f"precision {self.precision} ({self.reasons.get('precision', 'set')})"]
        for f in dataclasses.fields(self.speed):
            value = getattr(self.speed, f.name)
            shown = str(value).lower() if isinstance(value, bool) else value
            parts.append(f"{f.name} {shown} ({self.reasons.get(f.name, 'set')})")
        where = self.facts.describe() if self.facts else "device unknown"
        return f"speed [{where}]: " + "; ".join(parts)


# ------------------------------------------------------------------------------ the device
def cpu_isa(flags: set[str], onednn_max_isa: str | None, aten_capability: str) -> str:
    """The widest instruction set torch's CPU kernels will use, from cpuid flags and the limits."""
    limit = (onednn_max_isa or "ALL").upper()
    aten = aten_capability.upper()
    avx512_allowed = aten.startswith("AVX512") or aten == ""  # "" : torch could not say
    limit_allows_bf16 = limit == "ALL" or any(t in limit for t in ("BF16", "FP16", "AMX", "AVX10"))
    limit_allows_amx = limit == "ALL" or "AMX" in limit
    limit_allows_avx512 = limit == "ALL" or "AVX512" in limit or "AVX10" in limit
    if avx512_allowed and limit_allows_amx and {"amx_bf16", "amx_tile"} <= flags:
        return "amx"
    if avx512_allowed and limit_allows_bf16 and "avx512_bf16" in flags:
        return "avx512_bf16"
    if avx512_allowed and limit_allows_avx512 and "avx512f" in flags:
        return "avx512"
    if "avx2" in flags and not limit.startswith(("SSE", "AVX_", "DEFAULT")) and limit != "AVX":
        return "avx2"
    return "baseline"


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def bf16_speedup(rounds: int = 4, seconds: float = 0.02) -> float:
    """A bf16 matrix product's rate over fp32's on this CPU, robust to a busy neighbour.

    fp32 and bf16 are timed in alternation, each keeping its best: a moment of contention only
    lowers the rate measured in it, so one disturbed timing (on an AMX VM shared with a test run,
    a single pair measured 1.4x where the CPU does 7x) cannot decide the run's precision. A
    ratio far from the threshold (under 0.5x or over 3x) after a round is taken at once, so an
    AVX2 CPU, whose every bf16 product is slow, pays for one round only.
    """
    from bertlab.speed.flops import matmul_rate

    best = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for _ in range(rounds):
        for dtype in best:
            best[dtype] = max(best[dtype], matmul_rate(dtype, seconds=seconds))
        ratio = best[torch.bfloat16] / best[torch.float32]
        if ratio < 0.5 or ratio > 3.0:
            break
    return ratio


def cpu_facts() -> DeviceFacts:
    """This CPU: its name, usable instruction set and (probe) bf16's measured speed over fp32."""
    name, flags = _cpuinfo()
    isa = cpu_isa(flags, os.environ.get("ONEDNN_MAX_CPU_ISA"), _aten_capability())
    return DeviceFacts(type="cpu", name=name, isa=isa, bf16_speedup=bf16_speedup())


def _aten_capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return ""


def cuda_facts(index: int = 0) -> DeviceFacts:
    """The CUDA device `index`: name, compute capability, bf16, flash-attn."""
    import importlib.util

    major, minor = torch.cuda.get_device_capability(index)
    return DeviceFacts(
        type="cuda",
        name=torch.cuda.get_device_name(index),
        isa=f"sm_{major}{minor}",
        cuda_capability=(major, minor),
        cuda_bf16=bool(torch.cuda.is_bf16_supported()),
        flash_attn=importlib.util.find_spec("flash_attn") is not None,
    )


@functools.lru_cache(maxsize=4)
def probe_device(accelerator: str = AUTO) -> DeviceFacts:
    """Facts of the device a run with `trainer.accelerator` = `accelerator` trains on (cached)."""
    wants_gpu = str(accelerator).lower() in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available():
        return cuda_facts()
    return cpu_facts()


# ---------------------------------------------------------------------------- the resolver
def count_processes(devices: object, num_nodes: int = 1, facts: DeviceFacts | None = None) -> int:
    """How many training processes a trainer's `devices` / `num_nodes` make."""
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, int) or str(devices).lstrip("-").isdigit():
        count = int(devices)
        if count == -1:
            count = torch.cuda.device_count() if facts and facts.type == "cuda" else 1
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    else:  # "auto"
        count = torch.cuda.device_count() if facts and facts.type == "cuda" else 1
    return max(count, 1) * max(int(num_nodes or 1), 1)


def resolve(
    speed: Speed, facts: DeviceFacts, precision: str | None = None, processes: int = 1
) -> Resolution:
    """Every `auto` of `speed` decided for `facts`; `precision` None is decided too."""
    reasons: dict[str, str] = {}
    chosen: dict[str, object] = {}
    cpu = facts.type == "cpu"
    if speed.attn_implementation == "flash_attention_2" and (cpu or not facts.flash_attn):
        # transformers would fail while building the model, with an ImportError
        raise ValueError(
            "--speed.attn_implementation flash_attention_2 needs a CUDA GPU and the flash-attn "
            "package; use sdpa or auto"
        )
    fast_bf16 = cpu and (facts.bf16_speedup or 0) >= BF16_MIN_SPEEDUP
    bf16_rate = f"bf16 products {facts.bf16_speedup or 0:.2f}x fp32"

    def pick(name: str, value: object, why: str) -> None:
        if getattr(speed, name) == AUTO:
            chosen[name], reasons[name] = value, why

    if precision is None:
        precision, reasons["precision"] = _default_precision(facts, fast_bf16, bf16_rate)
    precision = str(precision)

    if not cpu:
        pick("bf16_working_copy", False, "a GPU's autocast is cheap")
    elif processes > 1:
        pick("bf16_working_copy", False, f"{processes} processes (DDP bypasses the copy)")
    elif precision != "32-true":
        pick("bf16_working_copy", False, f"trainer.precision {precision} does its own casting")
    elif fast_bf16:
        pick("bf16_working_copy", True, f"{bf16_rate}, at least {BF16_MIN_SPEEDUP}x")
    else:
        pick("bf16_working_copy", False, f"{bf16_rate}, below {BF16_MIN_SPEEDUP}x")

    if facts.type == "cuda" and facts.flash_attn and precision.startswith(("bf16", "16")):
        pick("attn_implementation", "flash_attention_2", "flash-attn is installed")
    else:
        pick("attn_implementation", "sdpa", "fused kernels; with fast_dropout, attention in-dtype")
    pick("fast_dropout", cpu, "torch's CPU masks are a quarter of a step" if cpu else "GPU")
    pick("fused_mlm_loss", True, "faster on every device measured")
    pick("sparse_mlm_head", True, "skips the decoder on unmasked positions")
    pick("pad_masked_to", 8, "aligned shapes")
    pick("pad_to_multiple_of", 8, "aligned shapes, little padding")
    pick("keep_freed_memory", cpu, "page faults cost 4-12% of a CPU step" if cpu else "GPU")
    pick("compile", False, "slower than eager on every device measured")
    scaled = precision.startswith("16")
    if not scaled:
        pick("optimizer_implementation", "fused", "one kernel over all parameters")
    else:
        pick("optimizer_implementation", "foreach", "fused AdamW and fp16 scaling + clipping clash")
    pick(
        "float32_matmul_precision",
        "highest" if cpu else "high",
        "nothing faster on a CPU" if cpu else "TF32 for fp32 products",
    )
    resolved = dataclasses.replace(speed, **chosen)
    assert resolved.is_resolved(), resolved
    return Resolution(speed=resolved, precision=precision, reasons=reasons, facts=facts)


def _default_precision(facts: DeviceFacts, fast_bf16: bool, bf16_rate: str) -> tuple[str, str]:
    """(trainer.precision, why) for a config that leaves it unset."""
    if facts.type == "cpu":
        why = (
            "bf16 through the working copy, not autocast" if fast_bf16
            else f"no fast bf16 products on this CPU ({ISA_NAMES.get(facts.isa, facts.isa)}"
            f": {bf16_rate})"
        )  # fmt: skip
        return "32-true", why
    if facts.cuda_bf16:
        return "bf16-mixed", "this GPU has bf16"
    return "16-mixed", "this GPU has no bf16: fp16 with loss scaling"


def strip_legacy(hparams: dict) -> dict:
    """Model hyperparameters without the speed switches older checkpoints kept there."""
    return {k: v for k, v in hparams.items() if k not in LEGACY_MODEL_KEYS}


def _resolve_accelerator(accelerator: str | object) -> str:
    name = str(accelerator).lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name in ("gpu", "cuda") else name


def check_precision(
    precision: str | int | None, accelerator: str | object = "auto", flag: str = "--trainer"
) -> None:
    """Raise a ValueError when the precision cannot run on the accelerator (or it has no GPU).

    `flag` is the prefix of the flags named: `--trainer` for `--trainer.precision`, `` for a
    command whose flags are `--precision` and `--accelerator` (finetune).
    """
    name = f"{flag}." if flag else "--"
    device = _resolve_accelerator(accelerator)
    needs = {"tpu": "torch_xla", "hpu": "habana_frameworks", "xla": "torch_xla"}
    if device in needs and importlib.util.find_spec(needs[device]) is None:
        raise ValueError(
            f"{name}accelerator {accelerator} needs the {needs[device]} package, which is not "
            "installed; use cpu, gpu or auto"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}accelerator mps: no Apple GPU here; use cpu or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name}accelerator {accelerator}: torch sees no CUDA GPU on this machine; use cpu "
            "or auto"
        )
    if precision is None:
        return
    value = str(precision)
    if value in ("16-mixed", "16") and device == "cpu":
        raise ValueError(
            f"{name}precision {value} (fp16 mixed precision) needs a CUDA GPU; on the CPU use "
            "bf16-mixed or 32-true"
        )
    if value.startswith("bf16") and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"{name}precision {value}: this GPU ({torch.cuda.get_device_name()}) has no "
            "bfloat16; use 16-mixed or 32-true"
        )
    if value.startswith("transformer-engine"):
        if importlib.util.find_spec("transformer_engine") is None:
            raise ValueError(
                f"{name}precision {value} needs the transformer_engine package, which is not "
                "installed; use bf16-mixed"
            )
        if device != "cuda":
            raise ValueError(f"{name}precision {value} needs a CUDA GPU")
