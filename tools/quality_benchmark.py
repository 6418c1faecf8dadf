#!/usr/bin/env python
"""Held-out quality of bertlab against the Hugging Face Trainer recipe, by one evaluator.

Usage: python tools/quality_benchmark.py --output_dir runs/quality
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.quality:quality_benchmark")  # imported with Ctrl-C handled
