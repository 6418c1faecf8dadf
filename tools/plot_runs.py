#!/usr/bin/env python
"""Figures of training runs. Usage: python tools/plot_runs.py --logdir RUN... --output_dir DIR"""

from bertlab.command import run
from bertlab.research.plots import plot_runs

if __name__ == "__main__":
    run(plot_runs)
