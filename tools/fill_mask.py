#!/usr/bin/env python
"""Print a model's top-k fills for each mask token.

Usage: python tools/fill_mask.py --model DIR --text "Paris is the [MASK] of France." [--json]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.export.fill_mask:fill_mask")  # imported with Ctrl-C handled
