"""tools/gpu_check.py (`make gpu-check`): bertlab's GPU path end to end, one line per check.

A GPU machine is lent for minutes, without network: everything a real run does is checked in
one command, through the same entry points a user runs, and every figure is written under
`--output_dir` (checks.json, the benchmark's JSON lines, the runs' logs) to be copied out.

Checks, in order (a failed check is reported and the next ones still run where they can):
- `data`: corpus -> WordPiece tokenizer -> samples (train, valid, test) from real text (the
  shared English Wikipedia sample, or the repository's slice of it).
- `fit`: `bertlab fit` of configs/tiny.yaml on the device with validation and checkpoints; on a
  GPU, `auto` must resolve to mixed precision (bf16-mixed where the GPU has bf16). Its figures:
  the resolved speed line, first and last training loss, validation loss, tokens/s and MFU.
- `resume`: the same fit killed (SIGKILL, the whole process group) once its first checkpoint is
  on disk, then `--ckpt_path last`: every training loss logged after the resume is compared with
  the uninterrupted run's. The steps before the kill are compared too: on a GPU that is the
  run-to-run noise (atomics in the backward pass) against which the resume's difference is read.
- `test`: `bertlab test` on the uninterrupted run's last checkpoint.
- `export`: tools/export_model.py on that checkpoint (its own logit check against the Lightning
  module), then the folder loaded by plain transformers.
- `benchmark`: tools/benchmark.py on the device, bertlab against the Hugging Face Trainer recipe
  (BERT-Base at sequence lengths 128 and 512 on a GPU; its ratio, MFU, peak memory lines).

`--device cpu --smoke` runs every check with tiny shapes and few steps on a CPU, so the script is
known to work before GPU time is spent (tests/research/test_gpu_check.py runs it so in `make test`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bertlab.files.artefacts import not_a_file
from bertlab.files.output_folder import check_output_folder, write_marker
from bertlab.research.gpu_checks import (
    Check,
    Plan,
    check_benchmark,
    check_data,
    check_export,
    check_fit,
    check_resume,
    check_test,
    make_plan,
)
from bertlab.signals import Interrupted

COMMAND = "gpu_check"


# ---------------------------------------------------------------------------------- the checks


# --------------------------------------------------------------------------------- the command
def gpu_check(
    output_dir: str = "runs/gpu-check",
    device: str = "cuda",
    smoke: bool = False,
    input: str | None = None,
    checks: list[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Check bertlab's GPU path end to end: fit, kill + resume, test, export, benchmark.

    Prints one line per check (`check NAME: ok|FAILED: figures`) and writes every figure to
    OUTPUT_DIR/checks.json, the benchmark's lines to OUTPUT_DIR/benchmark.jsonl and the runs with
    their logs under OUTPUT_DIR/runs. Exits 1 if a check failed.

    Args:
        output_dir: a new or empty folder (or this command's earlier output, with --overwrite).
        device: cuda (the first GPU) or cpu.
        smoke: tiny shapes and few steps: checks the script itself, e.g. on a CPU before GPU
            time is spent.
        input: the text the data is made from (default: the shared English Wikipedia sample,
            or the repository's slice of it where that is absent).
        checks: the checks to run (default all: data fit resume test export benchmark).
        overwrite: replace this command's earlier output in output_dir.
    """
    import torch

    from bertlab.research.measured_data import DEFAULT_INPUT

    if device not in ("cuda", "cpu"):
        raise ValueError(f"--device {device}: choose cuda or cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here (--device cpu --smoke?)")
    names = ("data", "fit", "resume", "test", "export", "benchmark")
    wanted = list(checks or names)
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ValueError(f"--checks {' '.join(unknown)}: unknown; choose from {' '.join(names)}")
    input = input or DEFAULT_INPUT
    if not Path(input).is_file():
        raise ValueError(f"--input {input}: {not_a_file(input)}")
    out = Path(output_dir)
    made = not out.exists()
    if check_output_folder(out, COMMAND, [("--input", input)], overwrite):
        shutil.rmtree(out)  # only this command's own earlier output (checked just above)
    (out / "runs").mkdir(parents=True)
    write_marker(out, COMMAND, ["runs", "model", "checks.json", "benchmark.jsonl"])
    plan = make_plan(device, smoke)
    results: list[Check] = []
    for name in (n for n in names if n in wanted):
        started = time.perf_counter()
        try:
            check = _run_check(name, plan, input, out)
        except ValueError as error:  # the data check refused --input: nothing measured yet
            if made:
                shutil.rmtree(out, ignore_errors=True)
            raise ValueError(f"--input {input}: {error}") from None
        except Interrupted as stop:  # device time is dear: what was measured stays, said so
            done = ", ".join(c.name for c in results) or "none"
            stop.detail = (
                f"stopped during the {name} check; the checks done ({done}) are in "
                f"{out / 'checks.json'}, the folder is incomplete"
            )
            raise
        check.figures["seconds"] = round(time.perf_counter() - started, 1)
        results.append(check)
        print(check.line(), flush=True)
        report = {
            "device": _device_name(device), "smoke": smoke, "torch": torch.__version__,
            "checks": [asdict(c) for c in results],
        }  # fmt: skip
        (out / "checks.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    failed = [c.name for c in results if not c.ok]
    print(f"gpu_check: {len(results) - len(failed)} of {len(results)} checks ok"
          + (f"; failed: {' '.join(failed)}" if failed else ""), flush=True)  # fmt: skip
    if failed:
        sys.exit(1)


def _run_check(name: str, plan: Plan, input: str, out: Path) -> Check:
    """One check; its failure is a finding (a failed Check), not the end of the others."""
    runs = out / "runs"
    samples = runs / "data" / "samples"
    steps = {
        "fit": lambda: check_fit(plan, samples, runs),
        "resume": lambda: check_resume(plan, samples, runs),
        "test": lambda: check_test(plan, samples, runs),
        "export": lambda: check_export(plan, runs, out),
        "benchmark": lambda: check_benchmark(plan, out, runs, input),
    }
    if name == "data":  # a refused --input is the user's mistake, not a finding: one line, exit 2
        try:
            return check_data(plan, input, runs / "data")
        except ValueError:
            raise
        except Exception as error:
            return Check(name, False, f"{type(error).__name__}: {str(error)[:300]}")
    try:
        if not (samples / "train" / "meta.json").exists():
            return Check(name, False, "no samples (the data check did not run or failed)")
        return steps[name]()
    except Exception as error:  # a check's failure is reported as its result
        return Check(name, False, f"{type(error).__name__}: {str(error)[:300]}")


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    from bertlab.speed.settings import _cpuinfo

    return _cpuinfo()[0]
