#!/usr/bin/env python
"""Print a model's top-k fills for each mask token.

Usage: python tools/fill_mask.py --model DIR --text "Paris is the [MASK] of France." [--json]
"""

from bertlab.command import run
from bertlab.export.fill_mask import fill_mask

if __name__ == "__main__":
    run(fill_mask)
