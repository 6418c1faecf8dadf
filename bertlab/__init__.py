"""bertlab: pre-train BERT with PyTorch Lightning, from raw text to the Hugging Face Model Hub.

The package is the library; `tools/` holds thin command-line scripts over it and `bertlab.cli`
is the `bertlab fit|validate|test` command.
"""

__version__ = "0.1.0"
