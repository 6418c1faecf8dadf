"""The speed section: `auto` resolved for each kind of machine, explicit values winning, the CLI.

Run: .venv/bin/python -m pytest tests/speed/test_speed.py -q

Each kind of machine is faked by its DeviceFacts (what bertlab.speed.settings.probe_device reads off
a real one); one test resolves on this machine, one under the AVX2 emulation in a subprocess, and
one through the `bertlab` command's parser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bertlab.speed.settings import (
    LEGACY_MODEL_KEYS,
    DeviceFacts,
    Speed,
    _cpuinfo,
    count_processes,
    cpu_isa,
    probe_device,
    resolve,
    strip_legacy,
)

AMX = DeviceFacts(type="cpu", name="Xeon (fake)", isa="amx", bf16_speedup=9.5)
AVX512_BF16 = DeviceFacts(type="cpu", name="Xeon (fake)", isa="avx512_bf16", bf16_speedup=0.57)
AVX2 = DeviceFacts(type="cpu", name="EPYC (fake)", isa="avx2", bf16_speedup=0.01)
H200 = DeviceFacts(
    type="cuda", name="H200 (fake)", isa="sm_90", cuda_capability=(9, 0), cuda_bf16=True
)
T4 = DeviceFacts(type="cuda", name="T4 (fake)", isa="sm_75", cuda_capability=(7, 5))
CPU_ONLY = ("bf16_working_copy", "fast_dropout", "keep_freed_memory")
AMX_FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_amx_trains_the_bf16_working_copy_in_32_true():
    chosen = resolve(Speed(), AMX)
    assert chosen.precision == "32-true"
    assert chosen.speed.bf16_working_copy and chosen.speed.fast_dropout
    assert chosen.speed.keep_freed_memory and chosen.speed.fused_mlm_loss
    assert chosen.speed.attn_implementation == "sdpa" and not chosen.speed.compile
    assert "9.50x fp32" in chosen.reasons["bf16_working_copy"]


@pytest.mark.parametrize("facts", [AVX512_BF16, AVX2], ids=["avx512_bf16", "avx2"])
def test_cpus_without_fast_bf16_products_compute_in_fp32(facts):
    chosen = resolve(Speed(), facts)
    assert chosen.precision == "32-true" and not chosen.speed.bf16_working_copy
    assert f"{facts.bf16_speedup:.2f}x fp32, below" in chosen.reasons["bf16_working_copy"]
    assert "no fast bf16" in chosen.reasons["precision"]
    assert chosen.speed.fast_dropout and chosen.speed.keep_freed_memory  # CPU kernels
    summary = chosen.summary()
    assert "\n" not in summary and summary.startswith(f"speed [cpu: {facts.name}")


def test_gpus_get_mixed_precision_and_none_of_the_cpu_paths():
    recent, old = resolve(Speed(), H200), resolve(Speed(), T4)
    assert recent.precision == "bf16-mixed" and old.precision == "16-mixed"
    for chosen in (recent, old):
        assert not any(getattr(chosen.speed, name) for name in CPU_ONLY)
        assert chosen.speed.float32_matmul_precision == "high"  # TF32
    assert recent.speed.optimizer_implementation == "fused"
    # fp16 loss scaling with clipping: fused AdamW would refuse to clip.
    assert old.speed.optimizer_implementation == "foreach"
    flash = DeviceFacts(**{**vars(H200), "flash_attn": True})
    assert resolve(Speed(), flash).speed.attn_implementation == "flash_attention_2"
    assert resolve(Speed(), flash, "32-true").speed.attn_implementation == "sdpa"


def test_explicit_values_win_and_are_marked_set():
    speed = Speed(bf16_working_copy=False, attn_implementation="eager", pad_to_multiple_of=64)
    chosen = resolve(speed, AMX, precision="32-true")
    assert not chosen.speed.bf16_working_copy and chosen.speed.attn_implementation == "eager"
    assert chosen.speed.pad_to_multiple_of == 64
    assert "bf16_working_copy false (set)" in chosen.summary()
    assert "precision 32-true (set)" in chosen.summary()
    assert resolve(Speed(bf16_working_copy=True), AVX2).speed.bf16_working_copy


def test_the_working_copy_is_off_where_it_cannot_work():
    assert not resolve(Speed(), AMX, precision="bf16-mixed").speed.bf16_working_copy
    two = resolve(Speed(), AMX, processes=2)
    assert not two.speed.bf16_working_copy and "2 processes" in two.reasons["bf16_working_copy"]
    assert count_processes(2) == 2 and count_processes("auto") == 1
    assert count_processes([0, 1, 2]) == 3 and count_processes("1", num_nodes=2) == 2


def test_instruction_set_follows_the_limits_not_cpuid_alone():
    assert cpu_isa(AMX_FLAGS, None, "AVX512") == "amx"
    # The AVX2 emulation: both limits set, though cpuid still lists AMX.
    assert cpu_isa(AMX_FLAGS, "AVX2", "AVX2") == "avx2"
    assert cpu_isa(AMX_FLAGS, None, "AVX2") == "avx2"  # ATEN_CPU_CAPABILITY alone
    assert cpu_isa(AMX_FLAGS, "AVX512_CORE_BF16", "AVX512") == "avx512_bf16"
    assert cpu_isa(AMX_FLAGS - {"amx_bf16", "amx_tile"}, None, "AVX512") == "avx512_bf16"
    assert cpu_isa({"avx2", "avx512f"}, None, "AVX512") == "avx512"
    assert cpu_isa({"avx2"}, None, "AVX2") == "avx2"
    assert cpu_isa(set(), None, "DEFAULT") == "baseline"


def test_resolves_on_this_machine():
    facts = probe_device("cpu")
    assert facts.type == "cpu" and facts.name and facts.bf16_speedup > 0
    _, flags = _cpuinfo()
    if "avx2" in flags:
        assert facts.isa != "baseline"
    chosen = resolve(Speed(), facts)
    assert chosen.speed.is_resolved()
    assert chosen.speed.bf16_working_copy == (facts.bf16_speedup >= 1.5)


@pytest.mark.skipif("avx2" not in _cpuinfo()[1], reason="needs a CPU with AVX2")
def test_the_avx2_emulation_is_seen_as_avx2_with_slow_bf16():
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    env["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"
    code = (
        "import json; from bertlab.speed.settings import cpu_facts, resolve, Speed; "
        "f = cpu_facts(); "
        "print(json.dumps([f.isa, f.bf16_speedup, resolve(Speed(), f).speed.bf16_working_copy]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    isa, speedup, working_copy = json.loads(done.stdout.strip().splitlines()[-1])
    assert isa == "avx2" and speedup < 0.5 and working_copy is False


def test_bad_values_and_old_checkpoint_keys():
    with pytest.raises(ValueError, match="--speed.pad_masked_to 0"):
        Speed(pad_masked_to=0)
    old = {"hidden_size": 64, "bf16_compute": True, "attn_implementation": "eager", "lr": 1e-3}
    assert strip_legacy(old) == {"hidden_size": 64, "lr": 1e-3}
    assert set(LEGACY_MODEL_KEYS.values()) <= set(Speed().as_dict())


def test_the_command_resolves_links_and_honours_explicit_values(en_samples, tmp_path):
    from tiny import small_run, tiny_model

    from bertlab.train.cli import run_cli

    explicit = ["--speed.attn_implementation=eager", "--speed.pad_to_multiple_of=16"]
    args = [*small_run(en_samples, tmp_path, steps=1), *tiny_model(), *explicit]
    cli = run_cli(["validate", *args, "--trainer.limit_val_batches=1"])
    speed = cli.model.speed
    assert speed.is_resolved() and speed.attn_implementation == "eager"
    assert cli.model.model.config._attn_implementation == "eager"
    assert cli.datamodule.pad_to_multiple_of == 16  # linked into the data
    config = cli.config["validate"]
    assert config.trainer.precision == "32-true" and "auto" not in vars(config.speed).values()
    assert "speed" not in cli.model.hparams


def test_a_gpu_run_builds_none_of_the_cpu_paths(en_samples, tmp_path, monkeypatch):
    """Through the command, with the device faked as an H200: bf16-mixed, TF32, and no CPU-only
    module (fast dropout masks) or setting (working copy, allocator) in what it builds."""
    from tiny import small_run, tiny_model

    import bertlab.train.cli
    from bertlab.model.module import BertPretraining
    from bertlab.speed.dropout import FastDropout

    monkeypatch.setattr(bertlab.train.cli, "probe_device", lambda accelerator: H200)
    before = torch.get_float32_matmul_precision()
    try:
        args = [*small_run(en_samples, tmp_path, steps=1), *tiny_model()]
        cli = bertlab.train.cli.run_cli(["validate", *args, "--trainer.limit_val_batches=1"])
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    config = cli.config["validate"]
    assert config.trainer.precision == "bf16-mixed"
    assert not any(config.speed[name] for name in CPU_ONLY)
    assert not any(isinstance(m, FastDropout) for m in cli.model.modules())
    assert cli.model.compute_dtype is None  # no bf16 working copy
    # The same construction on a CPU does build them: the check above can fail.
    cpu = BertPretraining(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64,
                          speed=resolve(Speed(), AMX).speed)  # fmt: skip
    assert any(isinstance(m, FastDropout) for m in cpu.modules())


def test_the_bf16_probe_keeps_the_best_of_alternating_timings(monkeypatch):
    """One timing disturbed by a busy neighbour does not decide; a clear answer stops early."""
    import bertlab.speed.flops
    from bertlab.speed.settings import bf16_speedup

    def timings(sequence):
        calls = []

        def rate(dtype, seconds):
            calls.append(dtype)
            return sequence[len(calls) - 1]

        monkeypatch.setattr(bertlab.speed.flops, "matmul_rate", rate)
        return calls

    calls = timings([100.0, 138.0, 100.0, 700.0])  # fp32, bf16 (disturbed), fp32, bf16
    assert bf16_speedup() == pytest.approx(7.0) and len(calls) == 4
    calls = timings([100.0, 1.0])  # an AVX2 CPU: bf16 emulated, clear after one pair
    assert bf16_speedup() == pytest.approx(0.01) and len(calls) == 2
