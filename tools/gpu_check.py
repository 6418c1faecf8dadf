#!/usr/bin/env python
"""bertlab's GPU path end to end. Usage: python tools/gpu_check.py --output_dir runs/gpu-check"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.research.gpu_check:gpu_check")  # imported with Ctrl-C handled
