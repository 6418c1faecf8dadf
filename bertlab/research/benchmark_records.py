"""The JSON lines of tools/benchmark.py: one record per measured run, the ratios, the goals met.

Decisions:
- A record says what ran (system, variant, precision, what was set) and what it measured; a
  ratio record compares bertlab's defaults with the recipe's better variant in the same run, and
  with several rounds its median of the ratios paired within each round (on a shared machine a
  whole round can run slow).
- The goals live here, beside the verdicts that use them, so a goal is stated once.
"""

from __future__ import annotations

import os
import platform
import statistics

import torch

# bertlab's `defaults` set nothing (every speed setting auto); each ablation sets one thing.
# "speed": explicit speed settings; "precision": trainer.precision; "options": the rest of a run.
DEFAULT_OPTIONS = {"objective": "mlm", "num_workers": 0, "processes": 1}
# On a GPU the loader works beside the device: bertlab's default there is loader workers.
GPU_OPTIONS = DEFAULT_OPTIONS | {"num_workers": 4}

# Goals by instruction set (BENCHMARKS.md, Portable speed): on AMX >= 5x the recipe's better
# variant, elsewhere 3.5x.
SPEEDUP_GOALS = {"amx": 5.0, "cuda": 2.0}  # cuda: BERT-Base at sequence length 128
GPU_MFU_GOAL = 0.40
DEFAULT_SPEEDUP_GOAL = 3.5
GOALS = {"mfu_at_most": 1.0, "data_fraction": 0.05, "prep_vs_raw": 0.5}


def machine_facts(facts: dict) -> dict:
    """The machine line: CPU, its usable features as the measuring processes saw them, versions."""
    import transformers

    from bertlab.speed.settings import _cpuinfo

    name, flags = _cpuinfo()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "sve")
    gpu = {k: facts[k] for k in ("gpu", "gpu_memory_gb", "cuda") if k in facts}
    return gpu | {
        "cpu": name,
        "cpu_flags": [f for f in wanted if f in flags],
        "usable": facts.get("describe"),
        "isa": facts.get("isa"),
        "bf16_speedup": facts.get("bf16_speedup"),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def default_options(device: str) -> dict:
    """bertlab's run options on `device` when an ablation sets none."""
    return GPU_OPTIONS if device == "cuda" else DEFAULT_OPTIONS


def prep_records(data: dict, work_dir: str, shape: dict, repeats: int) -> list[dict]:
    from bertlab.samples.prepare import measure_throughput

    measured = measure_throughput(
        data["corpus"], data["tokenizer"], max_seq_len=shape["max_seq_len"],
        dupe_factor=shape["dupe_factor"], num_shards=8, num_proc=(1, 2), repeats=repeats,
        work_dir=work_dir,
    )  # fmt: skip
    records = [
        {
            "benchmark": "prep",
            "system": r["system"],
            "num_proc": r["num_proc"],
            "seconds": round(r["seconds"], 3),
            "tokens_per_s": round(r["tokens_per_s"]),
            "corpus_tokens": measured["num_tokens"],
        }  # fmt: skip
        for r in measured["results"]
    ]
    speedup = measured["speedup"].get(2)
    records.append(
        {
            "benchmark": "prep",
            "system": "ratio",
            "prepare_vs_raw": round(measured["prepare_vs_raw"], 3),
            "num_proc_2_vs_1": round(speedup, 3) if speedup else None,
            "goal_prepare_vs_raw": GOALS["prep_vs_raw"],
            "met": measured["prepare_vs_raw"] >= GOALS["prep_vs_raw"] and (speedup or 0) > 1,
        }  # fmt: skip
    )
    return records


def train_record(name: str, spec: dict, result: dict, peaks: dict, mode: str) -> dict:
    system, variant = name.split("/", 1)
    record = {"benchmark": "train", "isa_mode": mode, "system": system, "variant": variant}
    record |= {"precision": spec["precision"], "dropout": spec["dropout"]}
    if spec.get("speed"):
        record["set_speed"] = spec["speed"]
    defaults = default_options(spec.get("device", "cpu"))
    changed = {k: v for k, v in (spec.get("options") or {}).items() if defaults[k] != v}
    if changed:
        record["set_options"] = changed
    if "error" in result:
        return record | result
    compute = result.get("compute_dtype") or ("bf16" if spec["precision"] == "bf16" else "fp32")
    peak = peaks[compute]
    record |= {
        "compute_dtype": compute,
        "resolved_precision": result.get("precision", spec["precision"]),
        "tokens_per_s": round(result["tokens_per_s"], 1),
        "samples_per_s": round(result["samples_per_s"], 2),
        "step_s": round(result["step_s"], 4),
        "mfu": round(result["useful_flops_per_s"] / peak, 4),
    }
    keep = (
        "data_fraction", "padding_efficiency", "cpu_share", "cpu_s_per_step", "peak_rss_mb",
        "peak_rss_children_mb", "peak_gpu_mb",
        "measured_steps", "attn_implementation", "optimizer", "torch_threads", "speed",
        "callback_mfu", "callback_tokens_per_sec", "callback_data_fraction",
    )  # fmt: skip
    if result.get("callback_mfu") and result.get("callback_peak_flops"):
        # The callback divided by the peak known when the run started; rescale to the run's.
        result["callback_mfu"] *= result["callback_peak_flops"] / peak
    for key in keep:
        if key in result:
            value = result[key]
            record[key] = round(value, 4) if isinstance(value, float) else value
    return record


def paired_ratios(rounds: list[dict[str, float]], hf_names: list[str]) -> list[float]:
    """bertlab's defaults over the recipe's better variant, within each round (side by side)."""
    ratios = []
    for tokens in rounds:
        baseline = max((tokens.get(n, 0) for n in hf_names), default=0)
        if baseline and tokens.get("bertlab/defaults"):
            ratios.append(round(tokens["bertlab/defaults"] / baseline, 3))
    return ratios


def ratio_record(
    records: dict[str, dict], mode: str, isa: str, rounds: list[dict[str, float]] | None = None
) -> dict | None:
    hf = [r for n, r in records.items() if n.startswith("hf_trainer/") and r.get("dropout") == 0.1]
    hf = [r for r in hf if "tokens_per_s" in r]
    ours = records.get("bertlab/defaults")
    if not hf or not ours or "tokens_per_s" not in ours:
        return None
    baseline = max(hf, key=lambda r: r["tokens_per_s"])
    speedup = ours["tokens_per_s"] / baseline["tokens_per_s"]
    gpu = isa.startswith("sm_")
    goal = SPEEDUP_GOALS["cuda"] if gpu else SPEEDUP_GOALS.get(isa, DEFAULT_SPEEDUP_GOAL)
    record = {
        "benchmark": "train", "isa_mode": mode, "system": "ratio",
        "bertlab_vs_hf_trainer": round(speedup, 3),
        "hf_trainer_best_variant": baseline["variant"],
        "bertlab_mfu": ours["mfu"], "bertlab_data_fraction": ours.get("data_fraction"),
        "goals": {"speedup": goal, **GOALS} | ({"mfu_at_least": GPU_MFU_GOAL} if gpu else {}),
    }  # fmt: skip
    # On a shared machine a whole round can run slow: the ratio within each round, and its median
    # over the rounds, is the figure the goal is judged by when there are several rounds.
    paired = paired_ratios(rounds or [], [n for n, r in records.items() if r in hf])
    if len(paired) > 1:
        record["paired_ratios"] = paired
        record["median_paired_ratio"] = speedup = round(statistics.median(paired), 3)
    explicit = [
        r for n, r in records.items() if n.startswith("bertlab/") and "tokens_per_s" in r
        and set(r.get("set_speed") or {}) and not r.get("set_options")
        and r.get("dropout") == 0.1 and r.get("precision") is None
    ]  # fmt: skip
    if explicit:
        best = max(explicit, key=lambda r: r["tokens_per_s"])
        record["best_explicit_variant"] = best["variant"]
        record["defaults_vs_best_explicit"] = round(ours["tokens_per_s"] / best["tokens_per_s"], 3)
    record["met"] = {
        "speedup": speedup >= goal,
        "mfu_in_0_1": 0 < ours["mfu"] <= GOALS["mfu_at_most"],
        "data_fraction": (ours.get("data_fraction") or 0) < GOALS["data_fraction"],
        "auto_within_5pct": record.get("defaults_vs_best_explicit", 1.0) >= 0.95,
    }
    if gpu:
        record["met"]["mfu_at_least"] = ours["mfu"] >= GPU_MFU_GOAL
    return record
