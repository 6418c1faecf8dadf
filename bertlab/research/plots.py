"""Figures of training runs from their TensorBoard logs: losses, learning rate, throughput,
downstream accuracy, against step and against wall-clock time, runs overlaid.

Decisions:
- The logs are the only input: TensorBoard event files, read with TensorBoard's own
  EventAccumulator, so a run from bertlab, plain Lightning or anything else that writes scalars
  can be compared. Nothing needs a checkpoint or the training code.
- A `--logdir` is searched recursively: each folder holding event files is one run (Lightning
  writes `lightning_logs/version_N/`, and a resumed run starts a new version), named after the
  logdir (or `--names`), plus the sub-folder when there are several. Several event files in one
  folder are one run, read in order.
- Series are found by regular expressions over tag names, one per figure group (`--patterns`
  overrides any of them), not by a fixed list: `train/loss`, `val_loss`, `train/mlm_loss`,
  `lr-AdamW/pg1`, `train/tokens_per_sec`, `downstream/accuracy` all match without
  configuration, and a renamed metric needs one flag, not a code change.
- Wall-clock is each event's own time since the run's first event, so a paused or resumed run
  shows its gap: the x axis is the time a person waited, the cost being compared.
- A series identical to another of the same run in the same figure (the learning rate of each
  AdamW parameter group) is drawn once; non-finite values are dropped. Both are reported.
- A figure no run has data for is not written, a run missing a series another run has is
  noted, and so is a series of a single point (drawn as a dot: one value, no trend): the notes
  and the manifest of what was drawn ({figure: ["run: tag", ...]}) are the return value, built
  from the lines actually on the axes.
- `--smoothing` is TensorBoard's (a de-biased exponential average, raw values drawn faintly
  behind) and touches only dense, noisy series: not the learning rate (a schedule, exact), not
  sparse ones (validation, downstream: drawn with markers).
- PNGs through matplotlib's Agg backend (no display needed). The output folder follows
  bertlab.files.output_folder's rule (new, empty, or an earlier plot_runs folder replaced whole with
  --overwrite, never inside a --logdir) and appears complete or not at all, so no stale figure of
  an earlier run survives beside the new ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertlab.files.output_folder import Legacy, check_output_folder, output_folder
from bertlab.files.tensorboard_logs import read_scalars

EVENT_FILE_MARKER = "tfevents"
# Series this short are periodic evaluations: drawn with markers, never smoothed (an average of
# four validation points lags the truth by a whole interval).
SPARSE_POINTS = 30
# Print quality is 300-600 dpi; far beyond that the canvas alone is gigabytes.
MAX_DPI = 1200

# group -> regular expression (re.search over tag names) selecting that group's series.
DEFAULT_PATTERNS: dict[str, str] = {
    "loss": r"^(?!downstream).*loss(_step)?$",
    "lr": r"(^|/)lr([-_/]|$)|learning_rate",
    "throughput": r"(tokens|items)_per_sec",
    "mfu": r"(^|/)mfu$",
    "downstream": r"^downstream.*(acc|accuracy|f1)$",
}


@dataclass(frozen=True)
class FigureSpec:
    file: str
    title: str
    group: str
    x: str  # "step" or "time"
    ylabel: str
    smooth: bool = True  # False for exact series (a schedule) that smoothing would distort


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("loss_step.png", "Training and validation loss", "loss", "step", "loss"),
    FigureSpec("loss_time.png", "Training and validation loss", "loss", "time", "loss"),
    FigureSpec("lr_step.png", "Learning rate", "lr", "step", "learning rate", smooth=False),
    FigureSpec("throughput_step.png", "Throughput", "throughput", "step", "tokens / second"),
    FigureSpec("mfu_step.png", "Model FLOPs utilisation", "mfu", "step", "MFU"),
    FigureSpec("downstream_time.png", "Downstream accuracy", "downstream", "time", "accuracy"),
)
COMMAND = "plot_runs"
# What plot_runs wrote before the output marker existed.
LEGACY = Legacy(names={spec.file for spec in FIGURES}, required=())


@dataclass
class Series:
    steps: list[int]
    times: list[float]  # seconds since the run's first event
    values: list[float]


@dataclass
class Run:
    name: str
    series: dict[str, Series]


def _event_folders(logdir: str) -> list[Path]:
    path = Path(logdir)
    if not path.exists():
        raise ValueError(f"--logdir {logdir}: no such file or folder")
    if path.is_file():
        if EVENT_FILE_MARKER not in path.name:
            raise ValueError(f"--logdir {logdir}: not a TensorBoard event file")
        return [path]
    folders = sorted(
        {f.parent for f in path.rglob(f"events.out.{EVENT_FILE_MARKER}.*") if f.is_file()}
    )
    if not folders:
        raise ValueError(
            f"--logdir {logdir}: no TensorBoard event files (events.out.tfevents.*) found in it"
        )
    return folders


def _read_scalars(path: Path) -> dict[str, Series]:
    try:
        events = read_scalars(path)
    except ValueError as error:  # a truncated or foreign file: the user's input, not our bug
        raise ValueError(f"--logdir {error}") from None
    start = min((e.wall_time for es in events.values() for e in es), default=0.0)
    return {
        tag: Series(
            steps=[e.step for e in es],
            times=[e.wall_time - start for e in es],
            values=[e.value for e in es],
        )
        for tag, es in events.items()
    }


def load_runs(logdir: list[str], names: list[str] | None = None) -> list[Run]:
    """Each folder of event files under each logdir as a named run."""
    if not logdir:
        raise ValueError("--logdir: give at least one run's log folder")
    if names is not None and len(names) != len(logdir):
        raise ValueError(f"--names: {len(names)} names for {len(logdir)} --logdir folders")
    for i, name in enumerate(names or []):
        if not str(name).strip():
            raise ValueError(f"--names: name {i + 1} is empty; give each --logdir a legend name")
        if list(map(str, names)).index(str(name)) != i:  # two runs under one legend name
            raise ValueError(f"--names: {name!r} is given twice; give each run its own name")
    seen: dict[Path, str] = {}
    for root in map(str, logdir):  # the same curves twice, under two names, compare nothing
        if (key := Path(root).resolve()) in seen:
            raise ValueError(f"--logdir {root} is given twice (also as {seen[key]})")
        seen[key] = root
    runs = []
    for index, root in enumerate(logdir):
        base = names[index] if names is not None else root.rstrip("/") or root
        folders = _event_folders(root)
        for folder in folders:
            name = base
            if len(folders) > 1:
                name = f"{base}/{folder.relative_to(root).as_posix()}"
            runs.append(Run(name=name, series=_read_scalars(folder)))
    return runs


def _smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with its start-up bias removed."""
    if weight <= 0:
        return values
    smoothed, last, debias = [], 0.0, 1.0
    for value in values:
        last = last * weight + (1 - weight) * value
        debias *= weight
        smoothed.append(last / (1 - debias))
    return smoothed


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 2 * 3600:
        return "hours", 3600.0
    if seconds >= 2 * 60:
        return "minutes", 60.0
    return "seconds", 1.0


def _finite(series: Series) -> tuple[Series, int]:
    keep = [i for i, v in enumerate(series.values) if math.isfinite(v)]
    kept = Series(
        steps=[series.steps[i] for i in keep],
        times=[series.times[i] for i in keep],
        values=[series.values[i] for i in keep],
    )
    return kept, len(series.values) - len(keep)


def _compile_patterns(patterns: dict[str, str] | None) -> dict[str, re.Pattern]:
    if patterns is not None and not isinstance(patterns, dict):
        raise ValueError(f'--patterns expects a mapping like \'{{"lr": "^lr"}}\', got {patterns!r}')
    merged = {**DEFAULT_PATTERNS, **(patterns or {})}
    unknown = sorted(set(merged) - set(DEFAULT_PATTERNS))
    if unknown:
        raise ValueError(
            f"--patterns: unknown group {unknown[0]!r}; groups: {', '.join(DEFAULT_PATTERNS)}"
        )
    compiled = {}
    for group, pattern in merged.items():
        try:
            compiled[group] = re.compile(str(pattern))
        except re.error as error:
            raise ValueError(
                f"--patterns {group}: bad regular expression {pattern!r} ({error})"
            ) from None
    return compiled


def _matching(run: Run, pattern: re.Pattern, notes: list[str], figure: str) -> dict[str, Series]:
    """The run's series for one figure: matched, finite, duplicates dropped."""
    chosen: dict[str, Series] = {}
    for tag in sorted(run.series, key=lambda t: (not t.startswith("train"), t)):
        if not pattern.search(tag):
            continue
        series, dropped = _finite(run.series[tag])
        if dropped:
            notes.append(f"{figure}: {run.name}: {tag}: {dropped} non-finite values left out")
        if not series.values:
            continue
        twin = next(
            (t for t, s in chosen.items() if (s.steps, s.values) == (series.steps, series.values)),
            None,
        )
        if twin is not None:
            notes.append(f"{figure}: {run.name}: {tag} is identical to {twin}, drawn once")
            continue
        chosen[tag] = series
    return chosen


def _draw(
    spec: FigureSpec, selected: list[tuple[Run, dict[str, Series]]], smoothing: float, dpi: int
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = sorted(
        {t for _, chosen in selected for t in chosen}, key=lambda t: (not t.startswith("train"), t)
    )
    styles = {tag: ("-", "--", ":", "-.")[i % 4] for i, tag in enumerate(tags)}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    longest = max(s.times[-1] for _, chosen in selected for s in chosen.values())
    unit, scale = _time_unit(longest)

    figure, axes = plt.subplots(figsize=(8, 5), dpi=dpi)
    for index, (run, chosen) in enumerate(selected):
        color = colors[index % len(colors)]
        for tag, series in chosen.items():
            xs = series.steps if spec.x == "step" else [t / scale for t in series.times]
            sparse = len(xs) <= SPARSE_POINTS
            smooth = spec.smooth and smoothing > 0 and not sparse
            if smooth:
                axes.plot(xs, series.values, color=color, alpha=0.25, linewidth=1, label="_raw")
            axes.plot(
                xs,
                _smooth(series.values, smoothing) if smooth else series.values,
                color=color,
                linestyle=styles[tag],
                marker="o" if sparse else None,
                markersize=3,
                label=f"{run.name}: {tag}",
            )
    axes.set_title(spec.title)
    axes.set_xlabel("optimizer step" if spec.x == "step" else f"wall-clock time ({unit})")
    axes.set_ylabel(spec.ylabel)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    drawn = [line.get_label() for line in axes.get_lines() if not line.get_label().startswith("_")]
    return figure, drawn


def plot_runs(
    logdir: list[str],
    output_dir: str,
    names: list[str] | None = None,
    patterns: dict[str, str] | None = None,
    smoothing: float = 0.0,
    dpi: int = 100,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write PNG figures from the TensorBoard logs of one or several runs, overlaid.

    Writes loss_step.png and loss_time.png (training and validation losses against step and
    wall-clock), lr_step.png, throughput_step.png, mfu_step.png and downstream_time.png
    (downstream accuracy against wall-clock), each only where some run logs that series.
    Prints {"output_dir", "figures": {file: ["run: tag", ...]}, "notes": [...]}.

    Args:
        logdir: one or more log folders (searched recursively for events.out.tfevents.* files;
            each folder holding some is one run) or event files.
        output_dir: folder for the PNG files: new, empty, or an earlier plot_runs folder with
            --overwrite (replaced whole).
        names: a legend name for each --logdir, in order (default: the paths).
        patterns: regular expressions over tag names by group, replacing the defaults, e.g.
            '{"loss": "loss$", "lr": "^lr-"}'; groups: loss, lr, throughput, mfu, downstream.
        smoothing: TensorBoard-style exponential smoothing weight in [0, 1) for series of more
            than 30 points; raw values stay drawn faintly behind.
        dpi: resolution of the PNGs (8 x 5 inches; at most 1200).
        overwrite: replace an earlier plot_runs folder in output_dir.
    """
    import json

    if not 0 <= smoothing < 1:
        raise ValueError(f"--smoothing must be in [0, 1), got {smoothing}")
    if dpi <= 0:
        raise ValueError(f"--dpi must be positive, got {dpi}")
    if dpi > MAX_DPI:  # matplotlib would try to allocate the canvas and fail with bad_alloc
        raise ValueError(
            f"--dpi {dpi}: at most {MAX_DPI} (8 x 5 inches at {MAX_DPI} dpi are already "
            f"{8 * MAX_DPI} x {5 * MAX_DPI} pixels)"
        )
    compiled = _compile_patterns(patterns)
    inputs = [("--logdir", path) for path in logdir]
    check_output_folder(output_dir, COMMAND, inputs, overwrite, legacy=LEGACY)
    runs = load_runs(logdir, names)
    out = Path(output_dir)

    figures: dict[str, list[str]] = {}
    notes: list[str] = []
    with output_folder(out, COMMAND) as tmp:
        _draw_all(runs, compiled, smoothing, dpi, tmp, figures, notes)
        if not figures:  # raised inside: the folder is not made
            folders = ", ".join(str(d) for d in logdir)
            raise ValueError(
                f"--logdir {folders}: no figure to draw (no logged scalar matches any figure's "
                "tags; a damaged or empty event file?)"
            )
    manifest = {"output_dir": str(out), "figures": figures, "notes": notes}
    print(json.dumps(manifest, indent=2))
    return manifest


def _draw_all(runs, compiled, smoothing: float, dpi: int, out: Path, figures, notes) -> None:
    import matplotlib.pyplot as plt

    for spec in FIGURES:
        pattern = compiled[spec.group]
        selected = [(run, _matching(run, pattern, notes, spec.file)) for run in runs]
        present = [(run, chosen) for run, chosen in selected if chosen]
        if not present:
            notes.append(f"{spec.file} skipped: no run logs a tag matching {pattern.pattern!r}")
            continue
        for run, chosen in selected:
            if not chosen:
                notes.append(f"{spec.file}: {run.name} has no tag matching {pattern.pattern!r}")
            for tag, series in chosen.items():
                if len(series.values) == 1:  # a dot, not a curve: nothing to read a trend from
                    notes.append(
                        f"{spec.file}: {run.name}: {tag} has a single point (step "
                        f"{series.steps[0]}): no curve, one value"
                    )
        figure, drawn = _draw(spec, present, smoothing, dpi)
        with open(out / spec.file, "wb") as f:  # the folder as a whole appears atomically
            figure.savefig(f, format="png")
        plt.close(figure)
        figures[spec.file] = drawn
