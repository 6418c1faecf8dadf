#!/usr/bin/env python
"""Downstream accuracy. Usage: python tools/finetune.py --model DIR --train_file F --valid_file F"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.downstream.finetune:finetune")  # imported with Ctrl-C handled
