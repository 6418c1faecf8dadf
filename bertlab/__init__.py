"""bertlab: pre-train BERT with PyTorch Lightning, from raw text to the Hugging Face Model Hub.

The package is the library, one subpackage per stage of the pipeline (corpus, tokenizer, samples,
data, model, train, export, downstream) beside the speed settings (speed), the files rules
(files) and the measurements (research); each one's docstring says what it may import, and
tests/test_layout.py checks it. `tools/` holds thin command-line scripts over it, and
`bertlab.train.cli` is the `bertlab fit|validate|test` command.
"""

__version__ = "0.1.0"
