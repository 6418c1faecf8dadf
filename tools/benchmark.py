#!/usr/bin/env python
"""bertlab against the Hugging Face Trainer recipe. Usage: python tools/benchmark.py --steps 40"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.benchmark:benchmark")  # imported with Ctrl-C handled
