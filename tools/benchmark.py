#!/usr/bin/env python
"""bertlab against the Hugging Face Trainer recipe. Usage: python tools/benchmark.py --steps 40"""

from bertlab.command import run
from bertlab.research.benchmark import benchmark

if __name__ == "__main__":
    run(benchmark)
