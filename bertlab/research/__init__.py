"""Measurements of bertlab: the benchmarks, the quality benchmark, soak, GPU check, plots, budgets.

`tools/benchmark.py`, `tools/quality_benchmark.py`, `tools/soak.py`, `tools/gpu_check.py`,
`tools/plot_runs.py`, `tools/plan_budget.py`. Nothing in bertlab imports this room.

May import: any room of bertlab.
"""
