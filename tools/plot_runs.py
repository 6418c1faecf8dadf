#!/usr/bin/env python
"""Figures of training runs. Usage: python tools/plot_runs.py --logdir RUN... --output_dir DIR"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.plots:plot_runs")  # imported with Ctrl-C handled
