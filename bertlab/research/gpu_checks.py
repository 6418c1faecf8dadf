"""The checks of tools/gpu_check.py, one function each: what it runs and what it must see.

Each check runs the real entry points (`bertlab fit|test`, tools/export_model.py,
tools/benchmark.py) as subprocesses, so a GPU machine exercises what a user runs, and returns a
`Check`: ok or not, a summary line, and its figures. bertlab.research.gpu_check runs them in
order and writes their figures; the checks themselves are described there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# Differences of logged training losses taken as equal on a GPU: bf16 noise of a loss near 7,
# well under what a resume that restored the wrong state would give (a different batch or
# learning rate moves the loss by 1e-2 or more).
GPU_LOSS_TOLERANCE = 2e-3


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    figures: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"check {self.name}: {'ok' if self.ok else 'FAILED'}: {self.summary}"


@dataclass
class Plan:
    """Sizes of one gpu_check: full on a GPU, tiny with --smoke."""

    device: str
    smoke: bool
    vocab_size: int
    steps: int
    val_every: int
    model: list[str]
    benchmark: list[list[str]]
    timeout: float


def make_plan(device: str, smoke: bool) -> Plan:
    if smoke:
        tiny = [
            "--model.hidden_size=32", "--model.num_hidden_layers=1",
            "--model.num_attention_heads=2", "--model.intermediate_size=64",
            "--model.max_position_embeddings=64", "--data.batch_size=8",
        ]  # fmt: skip
        quick = ["--quick", "--steps=3", "--warmup_steps=1", "--systems", "hf_trainer", "bertlab"]
        # 16 steps, a checkpoint every 4: a kill that lands late on a slow CPU still leaves steps
        # to resume.
        return Plan(device, True, 1000, 16, 4, tiny, [quick], 300)
    runs = [
        ["--systems", "hf_trainer", "bertlab", "--steps=30", "--warmup_steps=10", f"--seq_len={n}"]
        for n in (128, 512)
    ]
    return Plan(device, False, 8000, 60, 20, [], runs, 900)


def _env() -> dict:
    # tools/ scripts import bertlab from the repository without an installed package.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONFAULTHANDLER": "1"}


def _run(args: list[str], log: Path, timeout: float) -> tuple[int, str]:
    """Run a command (its own process group), its output into `log`; (status, output)."""
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            args, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = -signal.SIGKILL
    return status, log.read_text(encoding="utf-8", errors="replace")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    return lines[-1] if len(lines[-1]) <= 400 else "..." + lines[-1][-400:]


def check_data(plan: Plan, input: str, work: Path) -> Check:
    from bertlab.corpus.prepare import prepare_corpus
    from bertlab.samples.prepare import prepare_samples
    from bertlab.tokenizer.training import train_tokenizer

    started = time.perf_counter()
    corpus, tokenizer = work / "corpus", work / "tokenizer"
    prepare_corpus([input], str(corpus), lang="en", valid_docs=2, test_docs=2)
    train_tokenizer(
        str(corpus / "train.txt"), str(tokenizer), model_type="wordpiece",
        vocab_size=plan.vocab_size,
    )  # fmt: skip
    counts = {}
    for split in ("train", "valid", "test"):
        meta = prepare_samples(
            str(corpus / f"{split}.txt"), str(tokenizer), str(work / "samples" / split),
            max_seq_len=64 if plan.smoke else 128, num_shards=2,
            dupe_factor=1 if plan.smoke else 5,
        )  # fmt: skip
        counts[split] = meta["num_samples"]
    seconds = round(time.perf_counter() - started, 1)
    summary = f"samples {counts} from {Path(input).name} in {seconds} s"
    return Check("data", all(counts.values()), summary, {"samples": counts, "seconds": seconds})


def fit_args(plan: Plan, samples: Path, root: Path, *extra: str) -> list[str]:
    """`bertlab fit` of configs/tiny.yaml on the plan's device, validating and checkpointing."""
    return [
        sys.executable, "-m", "bertlab", "fit", f"--config={REPO / 'configs' / 'tiny.yaml'}",
        f"--data.train_files={samples / 'train'}", f"--data.val_files={samples / 'valid'}",
        f"--data.test_files={samples / 'test'}",
        f"--trainer.accelerator={'gpu' if plan.device == 'cuda' else 'cpu'}",
        f"--trainer.max_steps={plan.steps}", f"--trainer.val_check_interval={plan.val_every}",
        "--trainer.limit_val_batches=4", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", f"--model.warmup_steps={plan.steps // 4}",
        f"--trainer.default_root_dir={root}", *plan.model, *extra,
    ]  # fmt: skip


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    from bertlab.research.plots import load_runs

    series: dict[str, dict[int, float]] = {}
    for run in load_runs([str(folder)]):
        for tag, s in run.series.items():
            series.setdefault(tag, {}).update(zip(s.steps, s.values, strict=True))
    return series


def _speed_line(output: str) -> str:
    found = re.search(r"speed \[[^\n]*", output)
    return found.group(0) if found else ""


def check_fit(plan: Plan, samples: Path, runs: Path) -> Check:
    root = runs / "fit"
    status, output = _run(fit_args(plan, samples, root), runs / "fit.log", plan.timeout)
    if status != 0:
        return Check("fit", False, f"exit {status}: {_last_line(output)}")
    speed = _speed_line(output)
    precision = re.search(r"precision (\S+)", speed)
    precision = precision.group(1) if precision else "?"
    scalars = _scalars(root)
    loss = scalars.get("train/loss", {})
    checkpoints = sorted(p.name for p in root.rglob("*.ckpt"))
    throughput = scalars.get("throughput/tokens_per_sec", {})
    mfu = scalars.get("throughput/mfu", {})
    figures = {
        "precision": precision, "speed": speed, "checkpoints": checkpoints,
        "first_loss": loss[min(loss)] if loss else None,
        "last_loss": loss[max(loss)] if loss else None,
        "val_mlm_loss": _last(scalars.get("val/mlm_loss")),
        "tokens_per_sec": _last(throughput), "mfu": _last(mfu),
    }  # fmt: skip
    problems = []
    if plan.device == "cuda" and not precision.endswith("-mixed"):
        problems.append(f"auto resolved precision {precision}, not mixed precision on a GPU")
    if "last.ckpt" not in checkpoints or len(checkpoints) < 2:
        problems.append(f"checkpoints {checkpoints}: want last.ckpt and a validated one")
    if figures["val_mlm_loss"] is None:
        problems.append("no val/mlm_loss logged")
    if not loss or figures["last_loss"] >= figures["first_loss"]:
        problems.append("training loss did not fall")
    summary = "; ".join(problems) or (
        f"precision {precision}, loss {figures['first_loss']:.3f} -> {figures['last_loss']:.3f}, "
        f"val mlm_loss {figures['val_mlm_loss']:.3f}, tokens/s {_shown(figures['tokens_per_sec'])}"
        f", MFU {_shown(figures['mfu'])}, checkpoints {', '.join(checkpoints)}"
    )
    return Check("fit", not problems, summary, figures)


def _last(series: dict[int, float] | None) -> float | None:
    return series[max(series)] if series else None


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def check_resume(plan: Plan, samples: Path, runs: Path) -> Check:
    root = runs / "resume"
    log = runs / "resume-killed.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            fit_args(plan, samples, root), cwd=REPO, env=_env(), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + plan.timeout
        while process.poll() is None and time.monotonic() < deadline:
            if list(root.rglob("last.ckpt")):
                break
            time.sleep(0.02)
        finished = process.poll() is not None
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if finished:
        output = log.read_text(encoding="utf-8", errors="replace")
        return Check(
            "resume", False, f"the run ended before its first checkpoint: {_last_line(output)}"
        )
    status, output = _run(
        fit_args(plan, samples, root, "--ckpt_path=last"), runs / "resume.log", plan.timeout
    )
    if status != 0:
        return Check("resume", False, f"resumed run: exit {status}: {_last_line(output)}")
    reference = _scalars(runs / "fit").get("train/loss", {})
    versions = sorted((root / "lightning_logs").glob("version_*"))
    killed = _scalars(versions[0]).get("train/loss", {}) if versions else {}
    resumed = _scalars(versions[-1]).get("train/loss", {}) if len(versions) > 1 else {}
    if not reference or not resumed:
        return Check("resume", False, "no training losses to compare (train/loss)")
    start = min(resumed)
    after = [abs(resumed[s] - reference[s]) for s in resumed if s in reference]
    before = [abs(killed[s] - reference[s]) for s in killed if s in reference and s < start]
    figures = {
        "resumed_at_step": start, "compared_steps": len(after),
        "max_diff_after_resume": max(after, default=None),
        "max_diff_before_kill": max(before, default=None),
        "last_step": max(resumed),
    }  # fmt: skip
    tolerance = GPU_LOSS_TOLERANCE if plan.device == "cuda" else 0.0
    ok = (
        len(after) == plan.steps - start
        and max(after) <= tolerance
        and max(resumed) >= plan.steps - 1
    )
    summary = (
        f"killed after step {start}, resumed to step {max(resumed) + 1}: {len(after)} losses, "
        f"max |diff| {max(after):.2e} (before the kill {_shown(figures['max_diff_before_kill'])}"
        f"; allowed {tolerance:g})"
    )
    return Check("resume", ok, summary, figures)


def check_test(plan: Plan, samples: Path, runs: Path) -> Check:
    last = sorted((runs / "fit").rglob("last.ckpt"))
    if not last:
        return Check("test", False, "no last.ckpt from the fit check")
    args = fit_args(plan, samples, runs / "test", f"--ckpt_path={last[-1]}")
    args[3] = "test"
    status, output = _run(args, runs / "test.log", plan.timeout)
    if status != 0:
        return Check("test", False, f"exit {status}: {_last_line(output)}")
    scalars = _scalars(runs / "test")
    loss = _last(scalars.get("test/mlm_loss"))
    if loss is None:
        return Check("test", False, "no test/mlm_loss logged")
    return Check("test", True, f"test mlm_loss {loss:.3f}", {"test_mlm_loss": loss})


def check_export(plan: Plan, runs: Path, out: Path) -> Check:
    last = sorted((runs / "fit").rglob("last.ckpt"))
    if not last:
        return Check("export", False, "no last.ckpt from the fit check")
    model = out / "model"
    args = [
        sys.executable, str(REPO / "tools" / "export_model.py"), f"--ckpt_path={last[-1]}",
        f"--output_dir={model}", "--language=en",
    ]  # fmt: skip
    status, output = _run(args, runs / "export.log", plan.timeout)
    if status != 0:
        return Check("export", False, f"exit {status}: {_last_line(output)}")
    import transformers
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    transformers.logging.set_verbosity_error()  # the MLM class leaves the NSP head unused
    tokenizer = AutoTokenizer.from_pretrained(model)
    loaded = AutoModelForMaskedLM.from_pretrained(model).eval()
    text = f"The {tokenizer.mask_token} is the capital of France."
    import torch

    with torch.no_grad():
        logits = loaded(**tokenizer(text, return_tensors="pt")).logits
    finite = bool(torch.isfinite(logits).all())
    summary = f"{_last_line(output)}; transformers loads it, logits finite: {finite}"
    return Check("export", finite, summary, {"export_output": _last_line(output)})


def check_benchmark(plan: Plan, out: Path, runs: Path, input: str) -> Check:
    results = out / "benchmark.jsonl"
    figures: dict = {"runs": []}
    problems = []
    for index, flags in enumerate(plan.benchmark):
        args = [
            sys.executable, str(REPO / "tools" / "benchmark.py"), f"--device={plan.device}",
            f"--input={input}", f"--output={results}", f"--work_dir={runs / 'benchmark-data'}",
            *flags,
        ]  # fmt: skip
        status, output = _run(args, runs / f"benchmark-{index}.log", plan.timeout)
        if status != 0:
            problems.append(f"{' '.join(flags)}: exit {status}: {_last_line(output)}")
            continue
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        ratio = next((r for r in lines if r.get("system") == "ratio"), {})
        trains = [r for r in lines if r.get("benchmark") == "train" and "tokens_per_s" in r]
        shape = next((r.get("shape") for r in lines if r.get("system") == "machine"), {})
        figures["runs"].append({"flags": flags, "shape": shape, "ratio": ratio, "train": trains})
        if not ratio:
            problems.append(f"{' '.join(flags)}: no ratio line")
    summary = "; ".join(problems) or ", ".join(
        f"seq {r['shape'].get('max_seq_len')} batch {r['shape'].get('batch_size')}: "
        f"{r['ratio'].get('bertlab_vs_hf_trainer')}x the recipe, "
        f"MFU {r['ratio'].get('bertlab_mfu')}"
        for r in figures["runs"]
    )
    return Check("benchmark", not problems, summary, figures)
