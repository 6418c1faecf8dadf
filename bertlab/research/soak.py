"""The soak run: a long tiny `bertlab fit` whose memory stays flat and checkpoints stay few.

Decisions:
- The run is the real command (`python -m bertlab fit`) in a subprocess, with validation and
  checkpoints every `val_every` steps and several epochs of the data, so every periodic path
  (epoch ends, DataLoader workers restarting, validation, checkpoint rotation) repeats many times.
- Memory is sampled from /proc every `interval` seconds (Linux; no psutil): the training
  process's resident set (RSS), and the proportional set size (PSS, shared pages split between
  sharers) of the whole process tree, DataLoader workers included, so forked workers that share
  the parent's pages are not counted twice.
- Flat means: after the warm-up (the first `warmup_fraction` of the steps: allocator pools, the
  first validations and checkpoints; the steps come from the run's TensorBoard log, which also
  leaves out the interpreter's start), the median RSS of the last quarter exceeds the
  median of the first quarter by at most `max_growth_mb`. A leak of a few kB a step over
  thousands of steps shows; allocator noise does not.
- Checkpoints: the folder is listed at every sample; at the end it must hold exactly last.ckpt
  and min(save_top_k, validations) top-k files and no temporary files, and while running never
  more than save_top_k + 2 (a new top-k file exists for a moment before the one it displaces is
  deleted).
- Outputs in output_dir: memory.csv (seconds, step estimate, rss_mb, tree_pss_mb, checkpoints),
  memory.png, summary.json and the run's log; the summary is also returned and printed. A failed
  check is a ValueError naming it (the command exits 2), after all outputs are written.
- output_dir follows bertlab.files.output_folder's rule (new, empty, or an earlier soak's folder
  with --overwrite; a folder from before the marker is recognised by its fit.log). It is the one
  command that does not build its output beside and rename it: the outputs are the evidence of a
  failed soak and must stay where they are when it fails, and the run's own files (config.yaml,
  checkpoints) name the folder they were written in. An earlier soak's entries are deleted
  before the run, and only those.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bertlab.files.artefacts import not_a_file
from bertlab.files.output_folder import Legacy, check_output_folder, write_marker
from bertlab.files.tensorboard_logs import read_scalars

MIB = 2**20
COMMAND = "soak"
OUTPUTS = ("run", "fit.log", "memory.csv", "memory.png", "summary.json")
LEGACY = Legacy(names=OUTPUTS, required={"fit.log"})


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += _children(current)
    return pids


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def sample_memory(pid: int) -> tuple[float, float]:
    """(RSS of pid, PSS of pid and all its descendants), in MiB."""
    rss = _status_kb(pid, "VmRSS") / 1024
    pss = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):  # a worker that just exited
            pss += _pss_kb(member)
    return rss, pss / 1024


def _checkpoint_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and ".ckpt" in p.name)


def _logged_steps(run_dir: Path) -> tuple[list[float], list[int]]:
    """(wall times, global steps) of the run's logged training losses, in time order."""
    events = []
    for folder in sorted(run_dir.glob("lightning_logs/version_*")):
        events += [(e.wall_time, e.step + 1) for e in read_scalars(folder).get("train/loss", [])]
    events = [(0.0, 0), *sorted(events)]
    return [t for t, _ in events], [s for _, s in events]


def _plot(rows: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["seconds"] / 60 for r in rows]  # steps per second vary with validation
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(minutes, [r["rss_mb"] for r in rows], label="training process RSS")
    ax.plot(minutes, [r["tree_pss_mb"] for r in rows], label="process tree PSS (with workers)")
    ax.axvline(summary["warmup_seconds"] / 60, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_title(
        f"soak: {summary['steps']} steps, RSS growth after warm-up "
        f"{summary['rss_growth_mb']:+.1f} MiB"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _watch(
    command: list[str], log_path: Path, run_dir: Path, interval: float
) -> tuple[list[dict], int, float]:
    """Run the fit, sampling its memory and checkpoint folder every `interval` seconds; return
    the samples, the most checkpoints seen at once and the seconds it ran. A failed fit is a
    ValueError with its last error line."""
    rows: list[dict] = []
    most_checkpoints = 0
    start = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                try:
                    rss, pss = sample_memory(process.pid)
                except OSError:
                    break
                names = _checkpoint_names(run_dir)
                most_checkpoints = max(most_checkpoints, sum(n.endswith(".ckpt") for n in names))
                rows.append(
                    {"seconds": round(time.monotonic() - start, 2), "unix": time.time(),
                     "rss_mb": round(rss, 1), "tree_pss_mb": round(pss, 1),
                     "checkpoints": len(names)}
                )  # fmt: skip
                time.sleep(interval)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        errors = [line for line in tail.splitlines() if line.startswith("error: ")]
        why = f": {errors[-1].removeprefix('error: ')}" if errors else ""
        raise ValueError(
            f"bertlab fit failed (exit {process.returncode}){why}; see {log_path}\n{tail}"
        )
    return rows, most_checkpoints, time.monotonic() - start


def _summary(
    rows: list[dict], max_steps: int, val_every: int, warmup_fraction: float, seconds: float,
    final: list[str],
) -> dict:  # fmt: skip
    """The soak's figures: memory at the first and last quarter after warm-up, speed, folder."""
    # Warm-up is counted in steps: the interpreter's imports come before the first one.
    after = [r for r in rows if warmup_fraction * max_steps <= r["step"] < max_steps]
    if len(after) < 8:
        raise ValueError(f"only {len(after)} memory samples after warm-up; lower --interval")
    quarter = len(after) // 4
    first = statistics.median(r["rss_mb"] for r in after[:quarter])
    last = statistics.median(r["rss_mb"] for r in after[-quarter:])
    first_pss = statistics.median(r["tree_pss_mb"] for r in after[:quarter])
    last_pss = statistics.median(r["tree_pss_mb"] for r in after[-quarter:])
    validations = max_steps // val_every
    return {
        "steps": max_steps,
        "seconds": round(seconds, 1),
        "steps_per_second": round(max_steps / seconds, 2),
        "validations": validations,
        "samples": len(rows),
        "warmup_seconds": after[0]["seconds"],
        "rss_mb_after_warmup": [first, last],
        "rss_growth_mb": round(last - first, 1),
        "tree_pss_mb_after_warmup": [first_pss, last_pss],
        "tree_pss_growth_mb": round(last_pss - first_pss, 1),
        "rss_peak_mb": max(r["rss_mb"] for r in rows),
        "checkpoints_at_end": final,
    }


def _problems(summary: dict, final: list[str], max_growth_mb: float, top_k: int) -> list[str]:
    """What the soak found wrong: memory growth, a checkpoint folder not last.ckpt + top-k, or
    more checkpoints at once than a save beside the one it replaces explains."""
    problems = []
    if summary["rss_growth_mb"] > max_growth_mb:
        problems.append(
            f"RSS grew {summary['rss_growth_mb']} MiB after warm-up "
            f"(--max_growth_mb {max_growth_mb})"
        )
    kept = [n for n in final if n.endswith(".ckpt") and n != "last.ckpt"]
    if "last.ckpt" not in final or len(kept) != top_k or len(final) != len(kept) + 1:
        problems.append(f"the checkpoint folder holds {final}, not last.ckpt + {top_k}")
    if summary["most_checkpoints_at_once"] > top_k + 2:
        problems.append(f"{summary['most_checkpoints_at_once']} checkpoints existed at once")
    return problems


def _refuse_owned_overrides(overrides: str) -> None:
    """The fit's folders and length are soak's own flags: an override would win, unseen."""
    owned = ("--trainer.default_root_dir", "--checkpoint.dirpath", "--trainer.max_steps")
    for word in shlex.split(overrides):
        if word.split("=", 1)[0] in owned:
            raise ValueError(
                f"--overrides sets {word.split('=', 1)[0]}, which soak sets itself (from "
                "--output_dir and --max_steps); use those flags"
            )


def soak(
    output_dir: str = "runs/soak",
    config: str = "configs/tiny.yaml",
    max_steps: int = 3000,
    val_every: int = 300,
    save_top_k: int = 2,
    num_workers: int = 2,
    interval: float = 1.0,
    warmup_fraction: float = 0.2,
    max_growth_mb: float = 20.0,
    overrides: str = "",
    overwrite: bool = False,
) -> dict:
    """Run a long tiny `bertlab fit`, sample its memory, check it stays flat and checkpoints few.

    Args:
        output_dir: Folder for the run, memory.csv, memory.png and summary.json.
        config: The recipe (its data paths are used unless overrides change them).
        max_steps: Training steps (thousands: several epochs of the demo data).
        val_every: Steps between validations (each followed by checkpoints).
        save_top_k: Top-k checkpoints to keep (plus last.ckpt).
        num_workers: DataLoader workers per process.
        interval: Seconds between memory samples.
        warmup_fraction: Leading fraction of the steps left out of the flatness check.
        max_growth_mb: Allowed RSS growth (MiB) between the first and last quarter after warm-up.
        overrides: More `bertlab fit` arguments in one string, given with `=` since it starts
            with dashes: "--overrides=--data.batch_size=16 --data.num_workers=0".
        overwrite: Replace an earlier soak's outputs in output_dir.
    """
    if val_every < 1:
        raise ValueError(f"--val_every {val_every} must be at least 1")
    if save_top_k < -1:
        raise ValueError(f"--save_top_k {save_top_k} must be -1 (keep all), 0 or more")
    if max_steps < 4 * val_every:
        raise ValueError(f"--max_steps {max_steps} should be at least 4 x --val_every {val_every}")
    if not 0 <= warmup_fraction < 0.9:
        raise ValueError(f"--warmup_fraction {warmup_fraction} must be in [0, 0.9)")
    # Refused here, before the output folder and a fit are started for nothing.
    _refuse_owned_overrides(overrides)
    if not Path(config).is_file():
        raise ValueError(f"--config {config}: {not_a_file(config)}")
    for flag, value, least in (("num_workers", num_workers, 0), ("interval", interval, 0.01),
                               ("max_growth_mb", max_growth_mb, 0)):  # fmt: skip
        if value < least:
            raise ValueError(f"--{flag} {value} must be at least {least}")
    out = Path(output_dir)
    run_dir = out / "run"
    if check_output_folder(out, COMMAND, [("--config", config)], overwrite, legacy=LEGACY):
        for name in OUTPUTS:  # the earlier soak's entries, checked to be nothing else
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, COMMAND, OUTPUTS)
    command = [
        sys.executable, "-m", "bertlab", "fit", f"--config={config}",
        f"--trainer.max_steps={max_steps}", f"--trainer.val_check_interval={val_every}",
        "--trainer.check_val_every_n_epoch=null", f"--checkpoint.save_top_k={save_top_k}",
        f"--data.num_workers={num_workers}", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run_dir}", *shlex.split(overrides),
    ]  # fmt: skip
    rows, most_checkpoints, seconds = _watch(command, out / "fit.log", run_dir, interval)
    times, steps = _logged_steps(run_dir)
    for row in rows:
        row["step"] = steps[bisect.bisect_right(times, row.pop("unix")) - 1] if times else 0
    with open(out / "memory.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["seconds", "step", "rss_mb", "tree_pss_mb", "checkpoints"])
        writer.writeheader()
        writer.writerows(rows)

    final = _checkpoint_names(run_dir)
    summary = _summary(rows, max_steps, val_every, warmup_fraction, seconds, final)
    summary["most_checkpoints_at_once"] = most_checkpoints
    summary["command"] = " ".join(command[1:])
    validations = max_steps // val_every
    expected_top_k = min(save_top_k, validations) if save_top_k >= 0 else validations
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(rows, summary, out / "memory.png")
    print(json.dumps(summary, indent=2))

    problems = _problems(summary, final, max_growth_mb, expected_top_k)
    if problems:
        raise ValueError("soak failed: " + "; ".join(problems) + f" (see {out})")
    return summary
