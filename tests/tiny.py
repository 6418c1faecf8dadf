"""The one place tests build tiny things: a tokenizer, a model, batches, a tiny run's arguments.

Shared by the suites in every folder (tests/ is on sys.path through conftest.py's folder):
make_tokenizer (a word-level tokenizer with bertlab's special ids), TINY (a 2-layer 32-wide
BERT), make_batch, no_dropout; fit_args (a 32-wide 1-layer `bertlab fit` of a few steps with
validation and checkpoints), small_run / data_args / tiny_model (configs/X.yaml made small: a
64-wide model that learns in 60 steps); handmade_checkpoint (an untrained checkpoint shaped as
`bertlab fit` writes it); write_run (TensorBoard logs of a made-up run).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch

from bertlab.model.module import BertPretraining

REPO = Path(__file__).resolve().parents[1]
START = 1_700_000_000.0  # a fixed wall-clock origin, so times are exact


def write_run(folder: Path, *, seconds_per_step: float, downstream: bool, lr_groups: int = 2):
    """A run as bertlab's module and callbacks log it: losses, lr per group, throughput."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step in range(1, 41):
        when = START + step * seconds_per_step
        loss = 10 * math.exp(-step / 15) + 2
        writer.add_scalar("train/loss", loss, step, walltime=when)
        writer.add_scalar("train/mlm_loss", loss - 0.5, step, walltime=when)
        for group in range(1, lr_groups + 1):
            writer.add_scalar(f"lr-AdamW/pg{group}", 1e-4 * min(1, step / 10), step, walltime=when)
        writer.add_scalar("train/tokens_per_sec", 1000 / seconds_per_step, step, walltime=when)
        if step % 10 == 0:
            writer.add_scalar("val_loss", loss + 0.3, step, walltime=when)
            writer.add_scalar("val/mlm_loss", loss - 0.2, step, walltime=when)
            if downstream:
                writer.add_scalar("downstream/accuracy", 0.5 + step / 100, step, walltime=when)
    writer.add_scalar("epoch", 0, 40, walltime=START + 41 * seconds_per_step)
    writer.close()


def handmade_checkpoint(tokenizer: Path, path: Path) -> Path:
    """A checkpoint shaped as `bertlab fit` writes it, of a tiny untrained BertPretraining."""

    module = BertPretraining(
        tokenizer=str(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def fit_args(samples: Path, root: Path, *extra: str, workers: int = 0, steps: int = 12) -> list:
    """A 32-wide, 1-layer BERT for `steps` steps; validation and checkpoints every 4 steps.

    A `--config=` among `extra` comes right after tiny.yaml: a config after the flags would
    replace them, which bertlab fit refuses."""
    configs = [e for e in extra if str(e).startswith("--config=")]
    extra = tuple(e for e in extra if e not in configs)
    return [
        "fit",
        f"--config={REPO / 'configs' / 'tiny.yaml'}",
        *configs,
        f"--data.train_files={samples / 'train'}",
        f"--data.val_files={samples / 'valid'}",
        f"--data.test_files={samples / 'test'}",
        "--data.batch_size=8",
        "--data.shuffle_buffer_size=100",
        f"--data.num_workers={workers}",
        "--model.hidden_size=32",
        "--model.num_hidden_layers=1",
        "--model.num_attention_heads=2",
        "--model.intermediate_size=64",
        "--model.max_position_embeddings=64",
        "--model.warmup_steps=2",
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=4",
        "--trainer.limit_val_batches=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        "--throughput.peak_flops=0",
        *extra,
    ]


TINY_CONFIG = "configs/tiny.yaml"


def data_args(samples: Path) -> list[str]:
    return [
        f"--data.train_files={samples / 'train'}",
        f"--data.val_files={samples / 'valid'}",
        f"--data.test_files={samples / 'test'}",
        "--data.batch_size=16",
        "--data.shuffle_buffer_size=500",
    ]


def small_run(samples: Path, root: Path, config: str = TINY_CONFIG, steps: int = 60) -> list[str]:
    """configs/X.yaml made small: a 64-wide model, `steps` steps, validation at the end."""
    return [
        f"--config={config}",
        *data_args(samples),
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}",
        "--trainer.limit_val_batches=6",
        "--trainer.limit_test_batches=6",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
    ]


def tiny_model() -> list[str]:
    return [
        "--model.hidden_size=64",
        "--model.num_attention_heads=2",
        "--model.intermediate_size=256",
        "--model.max_position_embeddings=64",
        "--model.lr=5e-3",
        "--model.warmup_steps=5",
    ]


TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(folder, num_words: int = 95, prefix: str = "w"):
    """A word-level tokenizer with bertlab's fixed special ids and `num_words` plain words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"{prefix}{i}": len(SPECIALS) + i for i in range(num_words)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(folder))
    return folder


def make_batch(
    vocab_size: int = 100, batch: int = 4, length: int = 24, nsp: bool = True, seed: int = 0
):
    """A padded, masked batch in the bertlab.data.masking format, with varied lengths."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    lengths[0] = length
    positions = torch.arange(length)
    attention_mask = (positions[None, :] < lengths[:, None]).long()
    input_ids[:, 0] = 2
    input_ids[torch.arange(batch), lengths - 1] = 3
    input_ids[attention_mask == 0] = 0
    labels = torch.full_like(input_ids, -100)
    chosen = (torch.rand(batch, length, generator=g) < 0.25) & (attention_mask == 1)
    chosen[:, 0] = False
    labels[chosen] = input_ids[chosen]
    input_ids[chosen] = 4
    token_type_ids = ((positions[None, :] >= lengths[:, None] // 2) & (attention_mask == 1)).long()
    out = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
    }
    if nsp:
        out["next_sentence_label"] = torch.randint(0, 2, (batch,), generator=g)
    return out


def no_dropout(**kwargs):
    return dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kwargs)
