#!/usr/bin/env python
"""Export a checkpoint as a Hugging Face model folder.

Usage: python tools/export_model.py --ckpt_path C --output_dir DIR [--config Y]
"""

from bertlab.command import run
from bertlab.export.model import export_model

if __name__ == "__main__":
    run(export_model)
