"""Fill-mask predictions from an exported model folder, exactly as Hub users will see them.

Decisions:
- Predictions go through `transformers.pipeline("fill-mask")`, not through bertlab's own model
  code: the point of the command is to show what the Hub widget and plain-transformers users get.
- Each text is sent to the pipeline on its own. The pipeline returns a list of candidates for a
  text with one mask and a list of such lists for a text with several masks (and nests once more
  for a batch); calling it per text and normalising to "one list of candidates per mask" keeps the
  shapes unambiguous.
- With several masks in one text, each mask is predicted independently (the others stay masked),
  which is what the pipeline does; the table says "mask 1", "mask 2" in reading order.
- A text without the tokenizer's mask token is a user error naming that token (a model trained
  with `[MASK]` does not understand `<mask>`, and the other way round).
- transformers' load report (the NSP head and pooler that a masked-LM model does not use) is
  silenced: it is expected for a pre-training checkpoint and would drown the answers.
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Any

from bertlab.files.artefacts import check_model_folder, check_model_weights
from bertlab.model.network import never_trained
from bertlab.tokenizer.special import MAX_UNKNOWN_SHARE

Prediction = dict[str, Any]


def load_fill_mask_pipeline(model: str):
    """The transformers fill-mask pipeline for a model folder (on the GPU when there is one)."""
    import torch
    import transformers

    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise ValueError(f"--model {model}: not a model folder (no config.json)")
    check_model_folder(folder, f"--model {model}")  # a damaged file named, not a traceback
    check_model_weights(folder, f"--model {model}")  # nan scores, or a size-mismatch error
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = 0 if torch.cuda.is_available() else -1
    try:
        return transformers.pipeline("fill-mask", model=str(folder), device=device)
    except Exception as error:  # transformers raises many types for a model it cannot fill with
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
        raise ValueError(f"--model {model}: not a masked language model ({reason})") from None


def _warn_of_unknown(tokenizer, number: int, text: str) -> None:
    """Text the tokenizer cannot spell (another script) gets fills that say nothing: one line."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    words = [i for i in ids if i != tokenizer.mask_token_id]
    unknown = sum(i == tokenizer.unk_token_id for i in words)
    if words and unknown > MAX_UNKNOWN_SHARE * len(words):
        print(
            f"warning: --text #{number}: {unknown} of its {len(words)} tokens are "
            f"{tokenizer.unk_token} for this tokenizer (another language or script?): the "
            "fills are guesses from almost nothing",
            file=sys.stderr,
        )


def predict_masks(pipe, texts: list[str], top_k: int = 5) -> list[list[list[Prediction]]]:
    """For each text, for each mask in it (reading order), the top_k candidates.

    A candidate is {"token": id, "token_str": str, "score": float, "sequence": str}.
    """
    if top_k < 1:
        raise ValueError(f"--top_k must be at least 1, got {top_k}")
    vocabulary = pipe.model.config.vocab_size
    if top_k > vocabulary:  # torch's topk would fail mid-run with "index k out of range"
        raise ValueError(f"--top_k {top_k} is more than the model's {vocabulary} tokens")
    mask = pipe.tokenizer.mask_token
    for number, text in enumerate(texts, start=1):
        if mask not in text:
            raise ValueError(
                f"--text #{number} {text!r} has no mask token; this model's tokenizer uses {mask}"
            )
    limit = pipe.model.config.max_position_embeddings
    for number, text in enumerate(texts, start=1):
        length = len(pipe.tokenizer(text)["input_ids"])
        if length > limit:  # the model would fail on positions it does not have
            raise ValueError(
                f"--text #{number} is {length} tokens, but the model takes at most {limit}; "
                "shorten it"
            )
    for number, text in enumerate(texts, start=1):
        _warn_of_unknown(pipe.tokenizer, number, text)

    results = []
    for text in texts:
        output = pipe(text, top_k=top_k)
        per_mask = output if output and isinstance(output[0], list) else [output]
        results.append(
            [
                [
                    {
                        "token": int(c["token"]),
                        "token_str": c["token_str"],
                        "score": float(c["score"]),
                        "sequence": c["sequence"],
                    }
                    for c in candidates
                ]
                for candidates in per_mask
            ]
        )
    return results


def format_table(texts: list[str], results: list[list[list[Prediction]]]) -> str:
    """A plain-text table: each text, then per mask its candidates with scores."""
    lines = []
    for text, per_mask in zip(texts, results, strict=True):
        lines.append(text)
        for number, candidates in enumerate(per_mask, start=1):
            label = f"  mask {number}:" if len(per_mask) > 1 else "  "
            for rank, candidate in enumerate(candidates):
                prefix = label if rank == 0 else " " * len(label)
                lines.append(f"{prefix} {candidate['score']:7.4f}  {candidate['token_str']}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def fill_mask(model: str, text: list[str], top_k: int = 5, json: bool = False) -> list:
    """Print the model's top-k fills for each mask token in each text.

    Args:
        model: An exported model folder (config.json, weights, tokenizer files).
        text: One or more texts, each with at least one mask token (e.g. "Paris is the [MASK] of
            France."); several masks in one text are predicted independently.
        top_k: How many candidates to show per mask.
        json: Print JSON (one object per text: {"text", "masks": [[candidates]]}) instead of a
            table.
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise ValueError("--text needs at least one text")
    if top_k < 1:
        raise ValueError(f"--top_k must be at least 1, got {top_k}")
    pipe = load_fill_mask_pipeline(model)
    results = predict_masks(pipe, texts, top_k=top_k)  # refuses a text without a mask first
    if never_trained(pipe.model):
        print(
            f"warning: --model {model}: its weights were never trained (every LayerNorm still "
            "has its initial scale 1 and shift 0): the fills are those of random weights",
            file=sys.stderr,
        )
    if json:
        for t, masks in zip(texts, results, strict=True):
            print(jsonlib.dumps({"text": t, "masks": masks}, ensure_ascii=False))
    else:
        print(format_table(texts, results))
    return results
