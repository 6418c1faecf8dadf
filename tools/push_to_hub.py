#!/usr/bin/env python
"""Upload an exported model folder to the Hugging Face Model Hub.

Usage: python tools/push_to_hub.py --model_dir DIR --repo_id ORG/NAME [--revision v1.0 --dry_run]
"""

from bertlab.command import run

if __name__ == "__main__":
    run("bertlab.export.hub:push_to_hub")  # imported with Ctrl-C handled
