#!/usr/bin/env python
"""Steps, epochs and hours for a token budget. Usage: python tools/plan_budget.py --batch_size 32"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.budget:plan_budget")  # imported with Ctrl-C handled
