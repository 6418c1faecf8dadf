#!/usr/bin/env python
"""Export a checkpoint as a Hugging Face model folder.

Usage: python tools/export_model.py --ckpt_path C --output_dir DIR [--config Y]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.export.model:export_model")  # imported with Ctrl-C handled
