"""What scale_benchmark's records say: the projection to a larger corpus, the table, the plot.

Decisions:
- The projection is linear in size from the two largest corpora (time and, where it grows,
  memory), and for more cores uses Amdahl's law from the one- and two-process times:
  t(n) = s + p / n with s + p = t(1), s + p / 2 = t(2). It is a projection, and labelled as one.
- The plot has time and the largest process's memory against size, one colour a series; the raw
  tokenizer holds the whole text in memory, so only its time is drawn.
"""

from __future__ import annotations

from pathlib import Path


def _amdahl(t1: float, t2: float, cores: int) -> float:
    """t(cores) from t(1) and t(2) under Amdahl's law (a serial part s, a parallel part p)."""
    parallel = max(0.0, 2 * (t1 - t2))
    serial = max(0.0, t1 - parallel)
    return serial + parallel / cores


def project(records: list[dict], target_mb: float, cores: list[int]) -> list[dict]:
    """Projected time and memory of each stage at target_mb, on this machine and on more cores."""
    projections = []
    for stage in ("prepare_corpus", "train_tokenizer", "prepare_samples"):
        for num_proc in sorted({r.get("num_proc", 1) for r in records if r["stage"] == stage}):
            runs = sorted(
                (r for r in records if r["stage"] == stage and r.get("num_proc", 1) == num_proc),
                key=lambda r: r["size_mb"],
            )
            if len(runs) < 2:
                continue
            small, large = runs[-2], runs[-1]
            scale = (target_mb - large["size_mb"]) / (large["size_mb"] - small["size_mb"])
            seconds = large["seconds"] + scale * (large["seconds"] - small["seconds"])
            growth = max(0.0, large["peak_mb"] - small["peak_mb"])
            projections.append({
                "stage": stage, "num_proc": num_proc, "target_mb": target_mb,
                "seconds": seconds, "peak_mb": large["peak_mb"] + scale * growth,
            })  # fmt: skip
    for stage in ("prepare_corpus", "prepare_samples"):
        by_proc = {p["num_proc"]: p for p in projections if p["stage"] == stage}
        if 1 in by_proc and 2 in by_proc:
            for n in cores:
                projections.append({
                    "stage": stage, "num_proc": n, "target_mb": target_mb,
                    "seconds": _amdahl(by_proc[1]["seconds"], by_proc[2]["seconds"], n),
                    "peak_mb": by_proc[2]["peak_mb"], "amdahl": True,
                })  # fmt: skip
    for projection in projections:  # the largest process, and all of them (workers + main)
        workers = projection["num_proc"]
        projection["total_mb"] = projection["peak_mb"] * (workers + 1 if workers > 1 else 1)
    return projections


def series(records: list[dict]) -> dict[str, list[dict]]:
    """label -> the records of one stage and process (or thread) count, by size."""
    series: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["size_mb"]):
        if r["stage"] == "tokenizer":
            label = f"raw tokenizer, {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
        elif r["stage"] == "train_tokenizer":
            label = "train_tokenizer"
        else:
            label = f"{r['stage']} x{r['num_proc']}"
        series.setdefault(label, []).append(r)
    return series


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (label, runs) in enumerate(series(records).items()):
        sizes = [r["size_mb"] for r in runs]
        style = {"marker": "o", "label": label, "linestyle": ":" if "raw" in label else "-",
                 "color": f"C{index}"}  # fmt: skip
        time_axis.plot(sizes, [r["seconds"] for r in runs], **style)
        if "raw" not in label:  # the raw tokenizer holds the whole text: not a tool's memory
            memory_axis.plot(sizes, [r["peak_mb"] for r in runs], **style)
    sizes = sorted({r["size_mb"] for r in records})
    for axis in (time_axis, memory_axis):
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(FixedLocator(sizes))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([f"{s:g}" for s in sizes])
        axis.set_xlabel("corpus (MB of text)")
    time_axis.set(ylabel="wall time (s)", title="time", yscale="log")
    memory_axis.set(ylabel="peak memory, largest process (MB)", title="memory")
    memory_axis.set_ylim(bottom=0)
    time_axis.legend(fontsize=8)
    memory_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def table(records: list[dict]) -> list[str]:
    lines = [
        "| corpus | stage | processes | wall | corpus tokens/s | peak (largest process) "
        "| output bytes/token |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        rate = f"{r['tokens_per_s'] / 1000:,.0f}k" if r.get("tokens_per_s") else ""
        out = f"{r['bytes_per_token']:.2f}" if r.get("bytes_per_token") else ""
        lines.append(
            f"| {r['size_mb']:g} MB | {r['stage']} | {r.get('threads', r.get('num_proc', 1))} "
            f"| {r['seconds']:.1f} s | {rate} | {r['peak_mb']:,.0f} MB | {out} |"
        )
    return lines


def report(records: list[dict], projections: list[dict]) -> None:
    """The ratios the goals name, per size, and the projection."""
    for size in sorted({r["size_mb"] for r in records}):
        mine = {(r["stage"], r.get("threads", r.get("num_proc"))): r for r in records
                if r["size_mb"] == size}  # fmt: skip
        one = mine.get(("tokenizer", 1))
        many = [r for (stage, _), r in mine.items() if stage == "tokenizer" and r is not one]
        for n in sorted(k for (stage, k) in mine if stage == "prepare_samples"):
            rate = mine[("prepare_samples", n)]["tokens_per_s"]
            text = f"{size:g} MB: prepare_samples x{n} = {rate / one['tokens_per_s']:.2f}x the "
            text += "raw tokenizer on one thread"
            if many:
                text += f", {rate / many[0]['tokens_per_s']:.2f}x on {many[0]['threads']} threads"
            print(text)
    for p in projections:
        how = " (Amdahl, from 1 and 2 processes)" if p.get("amdahl") else ""
        print(
            f"projected at {p['target_mb']:,.0f} MB: {p['stage']} x{p['num_proc']}{how}: "
            f"{p['seconds'] / 3600:.2f} h, largest process {p['peak_mb']:,.0f} MB, all "
            f"{p['total_mb']:,.0f} MB"
        )
