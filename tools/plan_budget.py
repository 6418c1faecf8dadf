#!/usr/bin/env python
"""Steps, epochs and hours for a token budget. Usage: python tools/plan_budget.py --batch_size 32"""

from bertlab.budget import plan_budget
from bertlab.command import run

if __name__ == "__main__":
    run(plan_budget)
