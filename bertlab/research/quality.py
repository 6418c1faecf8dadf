"""tools/quality_benchmark.py: what bertlab's and the Hugging Face recipe's training buys, judged
by one evaluator that is neither's training code.

Decisions:
- Data: the shared English Wikipedia sample through bertlab's pipeline (prepare_corpus with 4
  valid and 6 test documents, an 8k WordPiece, MLM-only samples of 128 tokens, dupe factor 5),
  cached in `--work_dir` by the settings that made it. Held-out text of the training domain is
  the corpus's test split; of another domain, CPython's reference documentation
  (bertlab.corpus.python_docs: real English prose nobody here wrote, shipped with every Python).
- One evaluator (bertlab.downstream.heldout): the same blocks, the same masked positions, all
  [MASK], the loss and accuracy beside a unigram model of the training corpus on the same positions.
- Runs, each a fresh process:
  `hf_trainer` (BertForMaskedLM + DataCollatorForLanguageModeling + Trainer, dropout 0.1) and
  `bertlab` (`bertlab fit` of configs/bert-mini.yaml with the recipe's post-LN shape, dropout
  0.1 and initialisation set back explicitly) train the same samples with the same shape, batch,
  schedule and steps: the equal-steps comparison. `budget` is the goal's command as a user types
  it (`configs/bert-mini.yaml --model.objective mlm --trainer.max_steps -1 --trainer.max_time`),
  with whatever the recipe now holds. `ablation` runs `bertlab` with one speed switch off each
  and once more with another seed (the noise the switches are judged against).
- bertlab runs are scored by its `heldout:` callback, the recipe by the same evaluator in a
  TrainerCallback; both exclude evaluation time from the training seconds they report.
- Outputs in `--output_dir`: quality.jsonl (every evaluation of every run), quality.md (the
  final figures and the comparisons with their goals), quality.png (held-out loss against
  training seconds and against steps, runs overlaid, the unigram loss as a dashed line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bertlab.files.atomic import atomic_write
from bertlab.files.output_folder import check_output_folder, check_outside_outputs, output_folder
from bertlab.research.benchmark import BERT_MINI
from bertlab.research.benchmark_runs import run_in_process
from bertlab.research.measured_data import DEFAULT_INPUT, cached_pipeline

REPO = Path(__file__).resolve().parents[2]
COMMAND = "quality_benchmark"
SYSTEMS = ("hf_trainer", "bertlab", "budget", "ablation")
# Each ablation turns one speed switch off (the equal-steps bertlab run otherwise).
ABLATIONS = {
    "no_bf16_working_copy": ["--speed.bf16_working_copy=false"],
    "no_sparse_head": ["--speed.sparse_mlm_head=false"],
    "no_fused_loss": ["--speed.fused_mlm_loss=false"],
    "torch_dropout": ["--speed.fast_dropout=false"],
    "eager_attention": ["--speed.attn_implementation=eager"],
    "seed_1": ["--seed_everything=1", "--data.seed=1"],
}
# The notebook recipe's BERT and masking (transformers' defaults, DataCollatorForLanguageModeling's
# 15%): what the equal-steps bertlab run is set back to, whatever configs/bert-mini.yaml holds.
RECIPE_MODEL = [
    "--model.layer_norm=post", "--model.hidden_dropout_prob=0.1",
    "--model.attention_probs_dropout_prob=0.1", "--model.initializer_range=0.02",
    "--model.position_init=random", "--model.position_embedding=absolute",
    "--data.mlm_probability=0.15",
]  # fmt: skip
GOALS = {"equal_steps_loss_gap": 0.05, "time_ratio": 1 / 3, "budget_below_unigram": 1.0}


def prepare_quality_data(input: str, work_dir: str, vocab_size: int = 8000) -> dict[str, str]:
    """Corpus, tokenizer, MLM-only samples and the other-domain text, cached in work_dir."""
    from bertlab.corpus.python_docs import write_pydoc_corpus

    data = cached_pipeline(
        input, work_dir, prefix="quality-", valid_docs=4, test_docs=6, vocab_size=vocab_size,
        splits=("train", "valid"), max_seq_len=128, dupe_factor=5, num_shards=4, nsp=False,
    )  # fmt: skip
    pydoc = Path(work_dir) / "quality-pydoc.txt"
    if not pydoc.is_file():
        write_pydoc_corpus(pydoc)
    return {
        "train": str(data.corpus / "train.txt"),
        "test": str(data.corpus / "test.txt"),
        "other_domain": str(pydoc),
        "tokenizer": str(data.tokenizer),
        "samples": str(data.samples["train"]),
        "valid_samples": str(data.samples["valid"]),
    }


def _bertlab_args(
    data: dict, run_dir: Path, steps: int, batch_size: int | None, eval_every: int, max_blocks: int
) -> list[str]:
    """`bertlab fit` of the bert-mini recipe on the benchmark's data, scored by `heldout:`."""
    texts = json.dumps([data["test"], data["other_domain"]])
    batch = [f"--data.batch_size={batch_size}"] if batch_size else []
    return [
        "fit", f"--config={REPO / 'configs' / 'bert-mini.yaml'}", "--model.objective=mlm",
        f"--data.train_files={data['samples']}", f"--data.val_files={data['valid_samples']}",
        "--data.test_files=null", "--data.num_workers=1",
        f"--trainer.default_root_dir={run_dir}", "--trainer.limit_val_batches=10",
        f"--trainer.val_check_interval={max(steps, 1) if steps > 0 else 10**6}",
        "--trainer.log_every_n_steps=25", "--trainer.enable_progress_bar=false",
        "--checkpoint.save_top_k=0", f"--heldout.texts={texts}",
        f"--heldout.unigram_corpus={data['train']}", f"--heldout.every_n_steps={eval_every}",
        f"--heldout.max_blocks={max_blocks}", f"--heldout.output={run_dir / 'heldout.jsonl'}",
        *batch,
    ]  # fmt: skip


def _run_bertlab(args: list[str], run_dir: Path, timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bertlab", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    points_file = run_dir / "heldout.jsonl"
    if done.returncode != 0 or not points_file.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:] or [""]
        return {"error": f"exit status {done.returncode}: {tail[-1]}", "log_tail": tail}
    points = [json.loads(line) for line in points_file.read_text().splitlines() if line]
    speed = next((line for line in done.stderr.splitlines() if line.startswith("speed [")), "")
    return {"heldout": points, "speed": speed}


def check_fit_flags(flags: list[str], flag: str) -> None:
    """Refuse `bertlab fit` flags the parser rejects, before any run: a typo in the last run's
    flags would otherwise surface only after the hours of the runs before it."""
    if not flags:
        return
    command = [
        sys.executable, "-m", "bertlab", "fit", f"--config={REPO / 'configs' / 'bert-mini.yaml'}",
        *flags, "--print_config",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or [""]
        reason = next((line for line in lines if line.startswith("error:")), lines[-1])
        raise ValueError(f"{flag} {' '.join(flags)}: {reason.removeprefix('error:').strip()}")


def _recipe_spec(
    data: dict, steps: int, batch_size: int, lr: float, warmup: int, eval_every: int, blocks: int
) -> dict:
    shape = {**BERT_MINI, "batch_size": batch_size}
    return {
        "system": "hf_trainer", "tokenizer": data["tokenizer"], "samples": data["samples"],
        "shape": shape, "steps": steps, "warmup_steps": warmup, "lr": lr, "dropout": 0.1,
        "precision": "fp32",
        "heldout": {
            "texts": [data["test"], data["other_domain"]], "unigram_corpus": data["train"],
            "every_n_steps": eval_every, "max_len": 128, "max_blocks": blocks,
        },
    }  # fmt: skip


def _final(points: list[dict], text: str) -> dict:
    return points[-1][text]


def _reach_seconds(points: list[dict], text: str, loss: float) -> float | None:
    """Training seconds of the first evaluation at or below `loss` (None: never)."""
    for point in points:
        if point[text]["loss"] <= loss:
            return point["train_seconds"]
    return None


def summarise(runs: dict[str, dict], texts: list[str]) -> list[str]:
    """quality.md: the final figures of every run, then the comparisons and their goals."""
    ok = {name: run for name, run in runs.items() if "error" not in run}
    lines = [*_table(runs, texts), ""]
    hf, ours = ok.get("hf_trainer"), ok.get("bertlab")
    if hf and ours:
        lines += _equal_steps(hf, ours, texts)
    for name in ("bertlab", "budget") if hf else ():  # the budget run alone beside the recipe too
        if name in ok:
            lines += _equal_wall_clock(name, ok[name], hf, texts)
    if "budget" in ok:
        budget, other = ok["budget"], texts[-1]
        below = _final(budget["heldout"], other)["below_unigram"]
        met = below >= GOALS["budget_below_unigram"]
        lines.append(
            f"- time budget, {other}: {below:+.3f} nats below unigram after "
            f"{budget['heldout'][-1]['train_seconds']:.0f} training s "
            f"(goal {GOALS['budget_below_unigram']}: {'met' if met else 'not met'})"
        )
    ablations = {n: r for n, r in ok.items() if n.startswith("ablation/")}
    if ours and ablations:
        for text in texts:
            base = _final(ours["heldout"], text)["loss"]
            shifts = ", ".join(
                f"{n.split('/', 1)[1]} {_final(r['heldout'], text)['loss'] - base:+.3f}"
                for n, r in ablations.items()
            )
            lines.append(f"- quality ablation, {text} (loss minus bertlab's): {shifts}")
    return lines


def _table(runs: dict[str, dict], texts: list[str]) -> list[str]:
    lines = [
        "| run | steps | training s | " + " | ".join(
            f"{t} loss | {t} acc | {t} unigram | {t} below unigram" for t in texts
        ) + " |",
        "|" + " --- |" * (3 + 4 * len(texts)),
    ]  # fmt: skip
    for name, run in runs.items():
        if "error" in run:
            lines.append(f"| {name} | error: {run['error']} |")
            continue
        last = run["heldout"][-1]
        cells = [name, str(last["step"]), f"{last['train_seconds']:.0f}"]
        for text in texts:
            r = last[text]
            cells += [
                f"{r['loss']:.3f}", f"{100 * r['accuracy']:.1f}%", f"{r['unigram_loss']:.3f}",
                f"{r['below_unigram']:+.3f}",
            ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _equal_steps(hf: dict, ours: dict, texts: list[str]) -> list[str]:
    lines = []
    for text in texts:
        gap = _final(ours["heldout"], text)["loss"] - _final(hf["heldout"], text)["loss"]
        met = abs(gap) <= GOALS["equal_steps_loss_gap"]
        lines.append(
            f"- equal steps, {text}: bertlab - recipe = {gap:+.3f} nats "
            f"(goal within {GOALS['equal_steps_loss_gap']}: {'met' if met else 'not met'})"
        )
    hf_time, our_time = hf["heldout"][-1]["train_seconds"], ours["heldout"][-1]["train_seconds"]
    ratio = our_time / hf_time
    lines.append(
        f"- equal steps, wall time: bertlab {our_time:.0f} s, recipe {hf_time:.0f} s, "
        f"ratio {ratio:.3f} (goal at most 1/3: {'met' if ratio <= 1 / 3 else 'not met'})"
    )
    return lines


def _equal_wall_clock(name: str, run: dict, hf: dict, texts: list[str]) -> list[str]:
    """When `run` first reaches the recipe's final held-out loss, against the recipe's time."""
    hf_time, lines = hf["heldout"][-1]["train_seconds"], []
    for text in texts:
        target = _final(hf["heldout"], text)["loss"]
        reached = _reach_seconds(run["heldout"], text, target)
        verdict = (
            "never, in this run"
            if reached is None
            else f"{reached:.0f} s = {reached / hf_time:.3f} of the recipe's {hf_time:.0f} s"
            + (" (goal at most 1/3: met)" if reached <= hf_time / 3 else " (not met)")
        )
        lines.append(
            f"- equal wall clock, {text}: `{name}` reaches the recipe's final "
            f"{target:.3f} nats in {verdict}"
        )
    return lines


def plot(runs: dict[str, dict], texts: list[str], path: Path) -> None:
    """Held-out loss against training seconds and steps, one row per text, runs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(texts), 2, figsize=(12, 4.2 * len(texts)), squeeze=False)
    for row, text in enumerate(texts):
        unigram = None
        for name, run in runs.items():
            if "error" in run or name.startswith("ablation/"):
                continue
            points = run["heldout"]
            losses = [p[text]["loss"] for p in points]
            unigram = points[-1][text].get("unigram_loss", unigram)
            axes[row][0].plot([p["train_seconds"] for p in points], losses, "o-", label=name)
            axes[row][1].plot([p["step"] for p in points], losses, "o-", label=name)
        for column, xlabel in enumerate(("training seconds", "optimizer steps")):
            ax = axes[row][column]
            if unigram is not None:
                ax.axhline(unigram, color="grey", linestyle="--", label="unigram")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"held-out MLM loss, {text} (nats)")
            ax.grid(alpha=0.3)
            ax.legend()
    figure.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as tmp:
        figure.savefig(tmp.name, dpi=90)
    os.replace(tmp.name, path)
    plt.close(figure)


def quality_benchmark(
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 5e-4,
    warmup_steps: int = 20,
    eval_every: int = 50,
    max_time: str = "00:00:08:00",
    budget_eval_every: int = 250,
    budget_args: list[str] | None = None,
    equal_args: list[str] | None = None,
    systems: list[str] | None = None,
    variants: list[str] | None = None,
    max_blocks: int = 128,
    input: str = DEFAULT_INPUT,
    work_dir: str | None = None,
    output_dir: str = "runs/quality",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the Hugging Face Trainer recipe and bertlab on the same data; judge both by one
    held-out evaluator (all masked positions [MASK], beside a unigram model).

    Prints and writes quality.md (final figures, equal-steps and equal-wall-clock comparisons,
    the time-budget run, the quality ablation), quality.jsonl and quality.png in --output_dir.

    Args:
        steps: optimizer steps of the equal-steps runs (hf_trainer, bertlab, ablation).
        batch_size: samples per step of the equal-steps runs.
        lr: peak learning rate of the equal-steps runs (linear warm-up and decay).
        warmup_steps: warm-up steps of the equal-steps runs.
        eval_every: steps between evaluations of the equal-steps runs.
        max_time: the `budget` run's --trainer.max_time (DD:HH:MM:SS).
        budget_eval_every: steps between evaluations of the `budget` run.
        budget_args: more `bertlab fit` flags for the `budget` run (e.g. --data.batch_size=32);
            without them it runs the recipe as it is, at the recipe's batch size.
        equal_args: more `bertlab fit` flags for the equal-steps `bertlab` and ablation runs,
            after the Trainer recipe's BERT settings they start from (e.g.
            --model.position_embedding=rotary, to ablate the speed switches on the rotary
            recipe; its comparison with hf_trainer is then no longer BERT against BERT).
        systems: any of hf_trainer, bertlab, budget, ablation (default: all).
        variants: the ablation runs (default: all of them).
        max_blocks: held-out blocks of 128 tokens per text.
        input: the text the data is made from (default: the shared English Wikipedia sample).
        work_dir: cache of the data (default: $TMPDIR/bertlab-benchmark).
        output_dir: folder for quality.md, quality.jsonl, quality.png and the runs.
        overwrite: replace an earlier call's output_dir.
    """
    systems = list(systems or SYSTEMS)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"--systems {' '.join(unknown)}: unknown; choose from {' '.join(SYSTEMS)}")
    wrong = [v for v in variants or [] if v not in ABLATIONS]
    if wrong:
        raise ValueError(
            f"--variants {' '.join(wrong)}: unknown; choose from {' '.join(ABLATIONS)}"
        )
    if steps < 1 or eval_every < 1 or warmup_steps >= steps:
        raise ValueError("--steps and --eval_every must be >= 1 and --warmup_steps < --steps")
    for flag, value in (("batch_size", batch_size), ("max_blocks", max_blocks),
                        ("budget_eval_every", budget_eval_every)):  # fmt: skip
        if value < 1:
            raise ValueError(f"--{flag} {value} must be at least 1")
    if not lr > 0:
        raise ValueError(f"--lr {lr} must be positive")
    parts = str(max_time).split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        # Lightning's Timer would refuse it only when the budget run starts, after the others.
        raise ValueError(f"--max_time {max_time!r} must be DD:HH:MM:SS, e.g. 00:00:08:00")
    if "bertlab" in systems or "ablation" in systems:
        check_fit_flags(list(equal_args or []), "--equal_args")
    if "budget" in systems:
        check_fit_flags(list(budget_args or []), "--budget_args")
    work_dir = work_dir or str(Path(tempfile.gettempdir()) / "bertlab-benchmark")
    check_outside_outputs(work_dir, "--work_dir", COMMAND)  # a cache, never in another's output
    inputs = [("--input", input), ("--work_dir", work_dir)]
    check_output_folder(output_dir, COMMAND, inputs, overwrite)
    data = prepare_quality_data(input, work_dir)
    texts = [Path(data["test"]).name, Path(data["other_domain"]).name]
    equal = [
        *RECIPE_MODEL, f"--model.lr={lr}", f"--model.warmup_steps={warmup_steps}",
        f"--trainer.max_steps={steps}", *(equal_args or []),
    ]  # fmt: skip
    plan: dict[str, list[str] | None] = {}
    if "hf_trainer" in systems:
        plan["hf_trainer"] = None
    if "bertlab" in systems or "ablation" in systems:
        plan["bertlab"] = equal
    if "budget" in systems:
        budget = ["--trainer.max_steps=-1", f"--trainer.max_time={max_time}"]
        plan["budget"] = budget + list(budget_args or [])
    if "ablation" in systems:
        for name in variants or ABLATIONS:
            plan[f"ablation/{name}"] = equal + ABLATIONS[name]
    with output_folder(output_dir, COMMAND) as out:
        runs = _run_plan(plan, data, out, steps, batch_size, lr, warmup_steps, eval_every,
                         budget_eval_every, max_blocks)  # fmt: skip
        lines = summarise(runs, texts)
        with atomic_write(out / "quality.jsonl") as f:
            for name, result in runs.items():
                for point in result.get("heldout", []):
                    f.write(json.dumps({"run": name, **point}) + "\n")
        (out / "quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        plot(runs, texts, out / "quality.png")
    print("\n".join(lines))
    return {"runs": {n: r.get("heldout", r) for n, r in runs.items()}, "summary": lines}


def _run_plan(
    plan: dict[str, list[str] | None], data: dict, out: Path, steps: int, batch_size: int,
    lr: float, warmup_steps: int, eval_every: int, budget_eval_every: int, max_blocks: int,
) -> dict[str, dict]:  # fmt: skip
    """Every planned run, in order, each in its own process and folder under `out`."""
    runs: dict[str, dict] = {}
    for name, extra in plan.items():
        run_dir = out / name.replace("/", "-")
        run_dir.mkdir(parents=True)
        if extra is None:
            spec = _recipe_spec(data, steps, batch_size, lr, warmup_steps, eval_every, max_blocks)
            result = run_in_process(spec)
        else:
            budget = name == "budget"
            every = budget_eval_every if budget else eval_every
            base = _bertlab_args(
                data, run_dir, -1 if budget else steps, None if budget else batch_size, every,
                max_blocks,
            )  # fmt: skip
            result = _run_bertlab(base + extra, run_dir, timeout=3 * 3600)
        runs[name] = result
        last = result.get("heldout", [{}])[-1]
        print(json.dumps({"run": name, "error": result.get("error"), "last": last}), flush=True)
    return runs
