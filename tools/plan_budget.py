#!/usr/bin/env python
"""Steps, epochs and hours for a token budget. Usage: python tools/plan_budget.py --batch_size 32"""

from bertlab.command import run
from bertlab.research.budget import plan_budget

if __name__ == "__main__":
    run(plan_budget)
