#!/usr/bin/env python
"""bertlab's GPU path end to end. Usage: python tools/gpu_check.py --output_dir runs/gpu-check"""

from bertlab.command import run
from bertlab.research.gpu_check import gpu_check

if __name__ == "__main__":
    run(gpu_check)
