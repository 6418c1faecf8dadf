#!/usr/bin/env python
"""A long tiny `bertlab fit` that must keep flat memory and few checkpoints (`make soak`).

Usage: python tools/soak.py --output_dir runs/soak [--max_steps 3000 --val_every 300]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.soak:soak")  # imported with Ctrl-C handled
