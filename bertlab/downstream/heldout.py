"""Held-out masked-LM evaluation that is neither bertlab's training code nor the recipe's.

What a pre-training run buys is a model that predicts masked words from their context; this file
measures that, the same way for any masked LM, so that bertlab's models and the Hugging Face
Trainer recipe's are judged by one evaluator.

Decisions:
- Held-out text is a corpus-format file (a sentence or a paragraph a line, a blank line between
  documents; `.gz` too), tokenized sentence by sentence with the model's tokenizer and cut into
  blocks of `max_len` tokens ([CLS] ... [SEP]) within one document. Blocks of fewer than 16
  tokens are dropped; the first `max_blocks` blocks are kept, in file order.
- The masked positions are drawn once per block set from `seed` (15% of each block's word
  pieces, at least one; never [UNK]) and every one of them is replaced by [MASK]: no 80/10/10,
  so a model earns nothing by copying the unchanged tenth of its targets, and every model
  evaluated on the same blocks is scored on the same positions.
- The model is called through its own Hugging Face `forward` (any masked LM: `BertForMaskedLM`,
  `BertForPreTraining`, the pre-LN classes); the loss is computed here, in fp32, from the logits
  at the masked positions. bertlab's sparse head, fused loss and masking are not used.
- The baseline is a unigram model of the training corpus (token counts, add-one smoothing over
  the vocabulary's non-special tokens) scored on the same positions: a model that has learned
  only word frequencies scores that. `below_unigram` (unigram loss minus the model's) is the
  share of the loss that context bought.
- Figures that would mislead are flagged, not withheld (one `warning:` line each on stderr; the
  figures are still what they say): a model whose every LayerNorm is still at its initial scale
  1 and shift 0 was never trained (training moves them at its first step), so its loss is that
  of random weights; a text with fewer than MIN_POSITIONS masked positions gives a loss too
  noisy to compare models by; a text more than MAX_UNKNOWN_SHARE [UNK] is not in the
  tokenizer's language, and its few scored pieces say little about the model; a text the model
  was trained on (its card's corpus files, or a corpus's train split) is not held out; a
  unigram corpus mostly [UNK] makes a near-uniform baseline. Whether a model was trained is
  read from its weights rather than the export's records, which a hand-made or copied folder
  may lack.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bertlab.files.artefacts import not_a_file
from bertlab.files.identity import file_identity
from bertlab.model.network import never_trained
from bertlab.tokenizer.export import check_folder_tokenizer
from bertlab.tokenizer.special import MAX_UNKNOWN_SHARE

MIN_BLOCK_TOKENS = 16
# A masked position's loss varies by some 2-3 nats, so the mean over 200 positions is uncertain
# by about 0.2 nats: the size of the differences between runs worth reporting.
MIN_POSITIONS = 200


@dataclass(frozen=True)
class HeldoutBlocks:
    """Masked blocks of one held-out text: inputs with [MASK] at `targets != -100`."""

    name: str
    input_ids: Tensor  # [B, L] int64, padded with the tokenizer's padding id
    attention_mask: Tensor  # [B, L]
    targets: Tensor  # [B, L], the original token at masked positions, -100 elsewhere
    unknown_share: float = 0.0  # of the blocks' text tokens, the tokenizer's [UNK]

    @property
    def num_positions(self) -> int:
        return int((self.targets != -100).sum())


def _documents(path: Path) -> Iterable[list[str]]:
    from bertlab.samples.tokenized import read_documents

    if not path.is_file():
        raise ValueError(f"--text {path}: {not_a_file(path)}")
    try:  # the file is named, not prepare_samples' --input (this reads --text, heldout.texts...)
        yield from read_documents(path)
    except ValueError as error:
        raise ValueError(str(error).replace(f"--input {path}: ", f"{path}: ", 1)) from None


def _load_tokenizer(path: str, flag: str = "--tokenizer"):
    from bertlab.tokenizer.loading import open_tokenizer

    tokenizer = open_tokenizer(path, flag)
    for role in ("cls_token_id", "sep_token_id", "mask_token_id", "pad_token_id"):
        if getattr(tokenizer, role) is None:
            raise ValueError(f"{flag} {path}: has no {role.removesuffix('_id')}")
    return tokenizer


def _document_ids(tokenizer, sentences: list[str]) -> list[int]:
    encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    return [token for sentence in encoded for token in sentence]


def make_blocks(
    text: str | Path,
    tokenizer,
    max_len: int = 128,
    max_blocks: int = 256,
    mask_share: float = 0.15,
    seed: int = 0,
) -> HeldoutBlocks:
    """Masked blocks of `text` (a corpus-format file) for `tokenizer` (an object or a folder)."""
    if max_len < MIN_BLOCK_TOKENS:
        raise ValueError(f"--max_len {max_len}: at least {MIN_BLOCK_TOKENS}")
    if not 0 < mask_share < 1:
        raise ValueError(f"--mask_share {mask_share}: must lie in (0, 1)")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = _load_tokenizer(str(tokenizer))
    path = Path(text)
    body = max_len - 2
    blocks: list[list[int]] = []
    for sentences in _documents(path):
        ids = _document_ids(tokenizer, sentences)
        for start in range(0, len(ids), body):
            piece = ids[start : start + body]
            if len(piece) + 2 >= MIN_BLOCK_TOKENS:
                blocks.append([tokenizer.cls_token_id, *piece, tokenizer.sep_token_id])
        if len(blocks) >= max_blocks:
            break
    blocks = blocks[:max_blocks]
    if not blocks:
        raise ValueError(f"--text {path}: no block of {MIN_BLOCK_TOKENS} tokens or more")
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    text_tokens = sum(len(block) - 2 for block in blocks)
    unknown = sum(block.count(tokenizer.unk_token_id) for block in blocks)
    input_ids = torch.full((len(blocks), max_len), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(blocks), max_len), dtype=torch.long)
    targets = torch.full((len(blocks), max_len), -100, dtype=torch.long)
    for row, block in enumerate(blocks):
        length = len(block)
        input_ids[row, :length] = torch.tensor(block)
        attention_mask[row, :length] = 1
        # Word pieces only: [CLS], [SEP] and [UNK] (text the vocabulary cannot spell) are no
        # target a model or a unigram model could be scored on.
        pieces = np.array([i for i in range(1, length - 1) if block[i] not in special])
        if not len(pieces):
            continue
        count = max(1, round(mask_share * len(pieces)))
        chosen = rng.choice(pieces, size=count, replace=False)
        positions = torch.from_numpy(np.sort(chosen))
        targets[row, positions] = input_ids[row, positions]
        input_ids[row, positions] = tokenizer.mask_token_id
    share = unknown / text_tokens if text_tokens and tokenizer.unk_token_id is not None else 0.0
    if not bool((targets != -100).any()):  # every piece [UNK] (emoji, another script): no loss
        raise ValueError(
            f"--text {path}: no word piece to mask, every token is {tokenizer.unk_token} or "
            "special for this tokenizer; give text in the tokenizer's language"
        )
    return HeldoutBlocks(path.name, input_ids, attention_mask, targets, share)


def unigram_log_probs(corpus: str | Path, tokenizer, flag: str = "--unigram_corpus") -> Tensor:
    """Log-probabilities [V] of a unigram model of `corpus` (add-one over non-special tokens)."""
    if isinstance(tokenizer, (str, Path)):
        tokenizer = _load_tokenizer(str(tokenizer))
    path = Path(corpus)
    if not path.is_file():
        raise ValueError(f"{flag} {path}: {not_a_file(path)}")
    size = len(tokenizer)
    counts = np.zeros(size, dtype=np.float64)
    for sentences in _documents(path):
        ids = np.asarray(_document_ids(tokenizer, sentences), dtype=np.int64)
        counts += np.bincount(ids, minlength=size)[:size]
    if not counts.any():  # add-one smoothing alone would make it a uniform model, unsaid
        raise ValueError(f"{flag} {path}: no text in it to count words from")
    unk = tokenizer.unk_token_id
    if unk is not None and counts[unk] > MAX_UNKNOWN_SHARE * counts.sum():
        # The [UNK] counts are dropped with the special tokens below: what is left is mostly
        # add-one smoothing, a near-uniform baseline that any model beats.
        _warn(
            f"{flag} {path}: {counts[unk] / counts.sum():.0%} of its tokens are [UNK] for this "
            "tokenizer (text it cannot spell): the baseline is near uniform, so below_unigram "
            "overstates what context bought; give the corpus the tokenizer was trained on"
        )
    counts += 1.0
    counts[list(set(tokenizer.all_special_ids))] = 0.0
    log_probs = np.log(counts / counts.sum(), where=counts > 0, out=np.full(size, -math.inf))
    return torch.from_numpy(log_probs).float()


def _logits(output) -> Tensor:
    logits = getattr(output, "logits", None)
    return output.prediction_logits if logits is None else logits


@torch.no_grad()
def evaluate_masked_lm(
    model: torch.nn.Module,
    blocks: HeldoutBlocks,
    unigram: Tensor | None = None,
    batch_size: int = 32,
) -> dict:
    """Loss (nats) and accuracy of `model` on the blocks' masked positions, beside the unigram's.

    The model is put in eval mode for the evaluation and given back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for start in range(0, blocks.input_ids.size(0), batch_size):
            rows = slice(start, start + batch_size)
            targets = blocks.targets[rows]
            length = int(blocks.attention_mask[rows].sum(1).max())
            output = model(
                input_ids=blocks.input_ids[rows, :length].to(device),
                attention_mask=blocks.attention_mask[rows, :length].to(device),
                token_type_ids=torch.zeros_like(blocks.input_ids[rows, :length]).to(device),
            )
            masked = targets[:, :length] != -100
            logits = _logits(output)[masked.to(device)].float()
            truth = targets[:, :length][masked].to(device)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, truth, reduction="sum"))
            correct += int((logits.argmax(-1) == truth).sum())
            count += int(truth.numel())
    finally:
        model.train(was_training)
    result = {
        "text": blocks.name,
        "positions": count,
        "loss": round(loss_sum / count, 4),
        "accuracy": round(correct / count, 4),
    }
    if unigram is not None:
        truth = blocks.targets[blocks.targets != -100]
        unigram_loss = float(-unigram[truth].mean())
        result["unigram_loss"] = round(unigram_loss, 4)
        result["unigram_accuracy"] = round(float((truth == unigram.argmax()).float().mean()), 4)
        result["below_unigram"] = round(unigram_loss - result["loss"], 4)
    return result


def describe(result: dict) -> str:
    """One line for a person: the model's held-out loss beside the unigram model's."""
    line = (
        f"held-out MLM loss {result['loss']:.2f} nats, accuracy {100 * result['accuracy']:.1f}% "
        f"on {result['text']} ({result['positions']:,} masked positions)"
    )
    if "unigram_loss" in result:
        line += (
            f"; unigram {result['unigram_loss']:.2f} nats: "
            f"{result['below_unigram']:+.2f} nats below it"
        )
    return line


def _warn(message: str) -> None:
    """One `warning:` line on stderr: the figures stand, but this makes them mislead."""
    print(f"warning: {message}", file=sys.stderr)


def _warn_of_text(path: str, blocks: HeldoutBlocks) -> None:
    """A text whose loss would mislead, said in one line: too few positions, too much [UNK]."""
    if blocks.num_positions < MIN_POSITIONS:
        count = blocks.input_ids.size(0)
        _warn(
            f"--text {path}: only {blocks.num_positions} masked positions ({count} block"
            f"{'s' if count != 1 else ''}): a loss over so few is too noisy to compare models "
            f"by; give a longer text (at least {MIN_POSITIONS} positions)"
        )
    if blocks.unknown_share > MAX_UNKNOWN_SHARE:
        _warn(
            f"--text {path}: {blocks.unknown_share:.0%} of its tokens are [UNK] for this "
            "tokenizer (text it cannot spell, e.g. another language's script): the loss is "
            "over the few pieces left; give text in the tokenizer's language"
        )


def _warn_of_training_text(path: str, model: str) -> None:
    """A --text the model was trained on, by its card's corpus files or as a corpus's train
    split: its loss is valid, but measures memory rather than what context bought."""
    from bertlab.export.model_card import card_corpus_files
    from bertlab.files.output_folder import corpus_split

    named = "/".join(Path(path).resolve().parts[-2:])
    if named in card_corpus_files(Path(model)):
        _warn(
            f"--text {path}: --model {model}'s card names {named} as its training corpus: "
            "the loss is not held-out; give that corpus's test.txt"
        )
        return
    split = corpus_split(path)
    if split and split[1] == "train":
        _warn(
            f"--text {path} is the train split of the corpus in {split[0]}: a model trained on "
            "it has seen this text, so the loss is not held-out; give its test.txt"
        )


def usable_positions(config) -> int:
    """The longest input a model takes: RoBERTa-style models number positions from pad + 1."""
    positions = config.max_position_embeddings
    if config.model_type.startswith(("roberta", "xlm-roberta")):
        positions -= config.pad_token_id + 1
    return positions


def _load_masked_lm(folder: str) -> torch.nn.Module:
    import transformers
    from transformers import AutoModelForMaskedLM

    from bertlab.files.artefacts import check_model_folder, check_model_weights

    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"--model {folder}: not a Hugging Face model folder (no config.json)")
    check_model_folder(Path(folder), f"--model {folder}")  # a damaged file named, no traceback
    check_model_weights(Path(folder), f"--model {folder}")  # nan figures, or a size mismatch
    # No progress bar or load report: an exported BertForPreTraining's unused NSP head is expected.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        return AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--model {folder}: cannot be loaded as a masked LM: {reason}") from None


def _is_earlier_result(path: Path) -> bool:
    """Whether `path` holds figures evaluate_mlm wrote (a list of objects with text and loss)."""
    try:
        figures = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(figures, list) and all(
        isinstance(f, dict) and {"text", "loss"} <= f.keys() for f in figures
    )


def evaluate_mlm(
    model: str,
    text: list[str],
    unigram_corpus: str | None = None,
    tokenizer: str | None = None,
    max_len: int | None = None,
    max_blocks: int = 256,
    seed: int = 0,
    output: str | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Held-out masked-LM loss and accuracy of a Hugging Face model, beside a unigram model's.

    Every masked position (15% of each block's word pieces, drawn from --seed) is replaced by
    [MASK]; the same text, length and seed give the same positions for every model. Prints one
    line per text and returns the figures (also written to --output as JSON, if given).

    Args:
        model: a Hugging Face model folder (tools/export_model.py's output, or any masked LM).
        text: held-out text files (one sentence or paragraph a line, blank lines between
            documents; .gz too): the corpus's test split, and text of another domain.
        unigram_corpus: the training corpus (train.txt): its unigram model is the baseline.
        tokenizer: tokenizer folder (default: the model folder's own).
        max_len: tokens per block, [CLS] and [SEP] included (default: 128, or the model's
            positions if fewer).
        max_blocks: blocks per text (the first ones, in file order).
        seed: seed of the masked positions.
        output: a JSON file for the figures (never an input; an earlier one only with
            --overwrite).
        overwrite: replace an earlier --output of evaluate_mlm.
    """
    from bertlab.files.atomic import atomic_write
    from bertlab.files.output_folder import check_output_file

    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise ValueError("--text: give at least one held-out text file")
    for path in texts:
        if not Path(path).is_file():
            raise ValueError(f"--text {path}: {not_a_file(path)}")
    if max_blocks < 1:
        raise ValueError(f"--max_blocks must be at least 1, got {max_blocks}")
    if seed < 0:
        raise ValueError(f"--seed {seed} must be 0 or more")
    if output is not None:
        inputs = [("--text", t) for t in texts] + [
            ("--unigram_corpus", unigram_corpus), ("--model", model), ("--tokenizer", tokenizer),
        ]  # fmt: skip
        check_output_file(output, "evaluate_mlm", inputs, overwrite, flag="--output",
                          recognise=_is_earlier_result)  # fmt: skip
    if unigram_corpus and file_identity(unigram_corpus) in {file_identity(t) for t in texts}:
        _warn(
            f"--unigram_corpus {unigram_corpus} is also a --text: the baseline has seen the "
            "held-out text, so below_unigram is not what context bought; give the training corpus"
        )
    tok = _load_tokenizer(tokenizer or model, "--tokenizer" if tokenizer else "--model")
    unigram = unigram_log_probs(unigram_corpus, tok) if unigram_corpus else None
    network = _load_masked_lm(model)
    if tokenizer is not None and Path(model).is_dir():  # another vocabulary of the same size too
        check_folder_tokenizer(tok, tokenizer, Path(model), network.config.vocab_size)
    if network.config.vocab_size != len(tok):
        raise ValueError(
            f"--tokenizer {tokenizer or model}: {len(tok)} tokens, but --model {model} has a "
            f"vocabulary of {network.config.vocab_size}"
        )
    positions = usable_positions(network.config)
    if max_len is not None and max_len < MIN_BLOCK_TOKENS:
        raise ValueError(f"--max_len {max_len} must be at least {MIN_BLOCK_TOKENS}")
    if max_len is not None and max_len > positions:
        raise ValueError(f"--max_len {max_len}: --model {model} takes at most {positions} tokens")
    max_len = max_len or min(128, positions)
    if never_trained(network):
        _warn(
            f"--model {model}: its weights were never trained (every LayerNorm still has its "
            "initial scale 1 and shift 0): the figures are those of random weights"
        )
    results = []
    for path in texts:
        blocks = make_blocks(path, tok, max_len, max_blocks, seed=seed)
        _warn_of_training_text(path, model)
        _warn_of_text(path, blocks)
        result = evaluate_masked_lm(network, blocks, unigram)
        print(describe(result))
        results.append(result)
    if output:
        with atomic_write(output) as f:
            f.write(json.dumps(results, indent=1) + "\n")
    return results
