"""BERT tokenizers: train or convert one, load it, fingerprint it (the public face of tokenizer_*).

Decisions:
- Three algorithms behind one command: SentencePiece unigram and bpe (bertlab.tokenizer.spm) and
  WordPiece (bertlab.tokenizer.wordpiece). Every folder loads with `AutoTokenizer.from_pretrained`,
  has [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, and adds [CLS] A [SEP] B [SEP].
- Training reads a seeded sample of `--input_sentence_size` non-blank lines (all of them when
  the file is smaller), the same sample for every algorithm, so large corpora need no more memory
  than the sample.
- A folder is only written once the parity check has passed on a sample of the training lines
  (bertlab.tokenizer.parity): a tokenizer that would tokenize differently after export never
  appears. The folder is built under a temporary name and renamed when complete; it follows
  bertlab.files.output_folder's rule (a new or empty folder, or an earlier tokenizer of the same
  command replaced only with --overwrite, never a folder holding the training text or the model).
- `load_tokenizer` is the one door the rest of bertlab uses; it refuses, naming the folder, a
  folder that is missing, that AutoTokenizer cannot load, or whose special tokens are not at the
  fixed ids, rather than letting training run on the wrong ids.
- The fingerprint hashes what decides the ids (vocabulary with ids, model scores or merges,
  normalizer and pre-tokenizer, and the BertTokenizer flags that rebuild them), not file bytes,
  so two folders holding the same tokenizer agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from bertlab.files.artefacts import check_tokenizer_files, read_json_object
from bertlab.files.output_folder import Legacy, check_output_folder, output_folder
from bertlab.tokenizer.loading import open_tokenizer
from bertlab.tokenizer.parity import ParityReport, check_parity, compare_lines
from bertlab.tokenizer.special import SPECIAL_IDS, SPECIAL_TOKENS, sample_lines

# Token ids beyond 2**24 are no vocabulary anyone trains (the largest are about 1M), and the
# Rust trainers abort the whole process, without a Python error, far below what an int holds.
MAX_VOCAB_SIZE = 2**24

__all__ = [
    "SPECIAL_IDS",
    "SPECIAL_TOKENS",
    "ParityReport",
    "check_parity",
    "convert_tokenizer",
    "load_tokenizer",
    "tokenizer_fingerprint",
    "train_tokenizer",
]

MODEL_TYPES = ("unigram", "bpe", "wordpiece")
# What the tokenizer commands wrote before the output marker existed (transformers' file names).
LEGACY = Legacy(
    names={
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
        "vocab.txt", "merges.txt", "vocab.json", "sentencepiece.model",
    },
    required={"tokenizer.json", "tokenizer_config.json"},
)  # fmt: skip


def _check_vocab_size(vocab_size: int) -> None:
    if vocab_size > MAX_VOCAB_SIZE:  # the trainers abort the process on sizes like 1e10
        raise ValueError(
            f"--vocab_size {vocab_size} is beyond any tokenizer (at most {MAX_VOCAB_SIZE:,}; "
            "BERT's is 30,522)"
        )
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"--vocab_size {vocab_size} is too small: it must exceed the 5 special tokens"
        )


def _check_coverage(character_coverage: float, model_type: str) -> None:
    if not 0 < character_coverage <= 1:
        raise ValueError(f"--character_coverage {character_coverage} must be in (0, 1]")
    if model_type != "wordpiece" and character_coverage < 0.98:  # SentencePiece's own bound
        raise ValueError(
            f"--character_coverage {character_coverage}: SentencePiece takes 0.98 to 1 "
            "(0.9995 for Japanese or Chinese)"
        )


def train_tokenizer(
    train_file: str,
    output_dir: str,
    model_type: str = "unigram",
    vocab_size: int = 32000,
    input_sentence_size: int = 1_000_000,
    lowercase: bool = False,
    add_dummy_prefix: bool = True,
    character_coverage: float = 0.9995,
    seed: int = 0,
    num_threads: int | None = None,
    parity_lines: int = 10_000,
    overwrite: bool = False,
) -> None:
    """Train a BERT tokenizer on a corpus file and write it as a transformers tokenizer folder.

    The folder loads with transformers.AutoTokenizer.from_pretrained(output_dir), has the special
    tokens [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, and (for SentencePiece) holds the raw model
    as sentencepiece.model. It is written only after AutoTokenizer has given the raw model's ids
    on a sample of the training lines.

    Args:
        train_file: corpus text, one sentence a line (blank lines between documents are skipped).
        output_dir: the tokenizer folder to write: new, empty, or an earlier train_tokenizer
            folder with --overwrite.
        model_type: unigram or bpe (SentencePiece), or wordpiece (BERT's original).
        vocab_size: number of tokens, special tokens included.
        input_sentence_size: train on a seeded random sample of this many lines (0: all lines).
        lowercase: lowercase the text (SentencePiece: NFKC with case folding; WordPiece: BERT's
            lowercasing, which also strips accents).
        add_dummy_prefix: SentencePiece only: put "▁" before the first word as before every other
            one (leave true for languages with spaces; false suits Japanese or Chinese).
        character_coverage: share of the characters of the text the alphabet must cover; rarer
            characters become [UNK] (1.0 for small alphabets, 0.9995 for Japanese or Chinese).
        seed: seed of the line sample and of SentencePiece training.
        num_threads: SentencePiece training threads (default: every CPU).
        parity_lines: how many training lines the parity check compares (0: all of them).
        overwrite: replace an earlier train_tokenizer folder in output_dir.
    """
    inputs = [("--train_file", train_file)]
    check_output_folder(output_dir, "train_tokenizer", inputs, overwrite, legacy=LEGACY)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"--model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    _check_vocab_size(vocab_size)
    _check_coverage(character_coverage, model_type)
    if model_type == "wordpiece" and not add_dummy_prefix:
        raise ValueError(
            "--add_dummy_prefix is for SentencePiece; WordPiece splits on spaces itself"
        )
    if input_sentence_size < 0:
        raise ValueError(f"--input_sentence_size {input_sentence_size} must be >= 0")
    if parity_lines < 0:  # 0 is every line; below it was every line too, unsaid
        raise ValueError(f"--parity_lines {parity_lines} must be >= 0 (0: every line)")
    if num_threads is not None and num_threads < 1:  # SentencePiece failed with a traceback
        raise ValueError(f"--num_threads {num_threads} must be at least 1")
    if seed < 0:  # SentencePiece's seed is unsigned: a traceback
        raise ValueError(f"--seed {seed} must be >= 0")
    lines, num_file_lines = sample_lines(train_file, input_sentence_size, seed)
    texts = [text for _, text in lines]
    rng = random.Random(seed)
    check = sorted(rng.sample(lines, parity_lines)) if 0 < parity_lines < len(lines) else lines

    with output_folder(output_dir, "train_tokenizer") as folder:
        if model_type == "wordpiece":
            from bertlab.tokenizer import wordpiece as tokenizer_wordpiece

            backend = tokenizer_wordpiece.train_wordpiece(
                texts, vocab_size, lowercase, character_coverage
            )
            tokenizer_wordpiece.save_folder(backend, lowercase, folder)
        else:
            from bertlab.tokenizer import spm as tokenizer_spm

            proto = tokenizer_spm.train_sentencepiece(
                texts,
                model_type=model_type,
                vocab_size=vocab_size,
                lowercase=lowercase,
                add_dummy_prefix=add_dummy_prefix,
                character_coverage=character_coverage,
                seed=seed,
                num_threads=num_threads or os.cpu_count() or 1,
            )
            tokenizer_spm.save_folder(proto, folder)
        report = compare_lines(str(folder), check, str(train_file))
        # Our own pipeline must match exactly: a difference here is a bertlab bug.
        assert report.exact, f"tokenizer not written to {output_dir}: {report.summary()}"
        load_tokenizer(str(folder))
    print(
        f"{model_type} tokenizer, {vocab_size} tokens, trained on {len(lines)} of "
        f"{num_file_lines} lines of {train_file}; {report.summary()} -> {output_dir}"
    )


def convert_tokenizer(
    spm_model: str,
    output_dir: str,
    text_file: str | None = None,
    parity_lines: int = 10_000,
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Turn a SentencePiece model trained elsewhere into a bertlab tokenizer folder.

    The model must already have the BERT special tokens at their fixed ids: [PAD]=0 (pad piece),
    [UNK]=1 (unknown piece), [CLS]=2 [SEP]=3 [MASK]=4 (user-defined or control symbols), i.e. be
    trained with --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 --pad_piece=[PAD]
    --unk_piece=[UNK] --user_defined_symbols=[CLS],[SEP],[MASK]. Its normalization is carried
    over as it is, lowercasing included (e.g. --normalization_rule_name=nmt_nfkc_cf), which is
    why there is no --lowercase here. The folder is written only if AutoTokenizer gives the
    model's ids on the check text (differences that are float32 rounding ties of equal-score
    unigram segmentations are reported, not refused).

    Args:
        spm_model: the SentencePiece .model file.
        output_dir: the tokenizer folder to write: new, empty, or an earlier convert_tokenizer
            folder with --overwrite.
        text_file: text to check parity on, one sentence a line (default: text made of every
            piece of the model plus built-in English and Japanese sentences).
        parity_lines: how many lines of text_file the check compares (0: all of them).
        seed: seed of the line sample of text_file.
        overwrite: replace an earlier convert_tokenizer folder in output_dir.
    """
    from bertlab.tokenizer import spm as tokenizer_spm

    inputs = [("--spm_model", spm_model), ("--text_file", text_file)]
    check_output_folder(output_dir, "convert_tokenizer", inputs, overwrite, legacy=LEGACY)

    if parity_lines < 0:
        raise ValueError(f"--parity_lines {parity_lines} must be >= 0 (0: every line)")
    proto = tokenizer_spm.read_model(spm_model)
    tokenizer_spm.check_model(proto, f"--spm_model {spm_model}")
    if text_file is not None:
        lines, _ = sample_lines(text_file, parity_lines, seed, flag="--text_file")
        source = str(text_file)
    else:
        lines, source = list(enumerate(tokenizer_spm.check_text(proto), 1)), "the check text"
    with output_folder(output_dir, "convert_tokenizer") as folder:
        tokenizer_spm.save_folder(proto, folder)
        report = compare_lines(str(folder), lines, source)
        if not report.ok:
            raise ValueError(f"{spm_model} cannot be converted exactly: {report.summary()}")
        load_tokenizer(str(folder))
    print(f"converted {spm_model} ({len(proto.pieces)} pieces); {report.summary()} -> {output_dir}")


def load_tokenizer(path: str):
    """Load a tokenizer folder with AutoTokenizer, checking the BERT special tokens and ids."""
    tokenizer = open_tokenizer(path, "tokenizer folder")
    problems = []
    for name, token in zip(SPECIAL_IDS, SPECIAL_TOKENS, strict=True):
        declared = getattr(tokenizer, f"{name}_token", None)
        token_id = tokenizer.convert_tokens_to_ids(token)
        if declared != token or token_id != SPECIAL_IDS[name]:
            problems.append(f"{name}_token is {declared!r} with {token} at id {token_id}")
    if not problems:
        ids = tokenizer("a")["input_ids"]
        if ids[0] != SPECIAL_IDS["cls"] or ids[-1] != SPECIAL_IDS["sep"]:
            problems.append("it does not add [CLS] ... [SEP]")
    if problems:
        raise ValueError(
            f"tokenizer folder {path} lacks the BERT special tokens at their fixed ids "
            f"([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4): {'; '.join(problems)}"
        )
    return tokenizer


def tokenizer_fingerprint(path: str) -> str:
    """16 hex characters identifying the tokenizer in a folder (same tokenizer, same value)."""
    folder = Path(path)
    # A fingerprint vouches for the folder: every file of it that holds the vocabulary is checked.
    check_tokenizer_files(folder, f"tokenizer folder {path}")
    data = read_json_object(folder / "tokenizer.json", f"tokenizer folder {path}")
    config = read_json_object(folder / "tokenizer_config.json", f"tokenizer folder {path}")
    try:
        model = data["model"]
        vocab = model["vocab"]
        if isinstance(vocab, list):  # Unigram: [piece, score] in id order
            pairs = [(piece, index) for index, (piece, _) in enumerate(vocab)]
            scores = [score for _, score in vocab]
        else:
            pairs, scores = list(vocab.items()), None
        pairs += [(token["content"], token["id"]) for token in data.get("added_tokens", [])]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError(
            f"tokenizer folder {path}: {folder / 'tokenizer.json'} is damaged: no model "
            "vocabulary in it"
        ) from None
    canonical = {
        "vocab": sorted(set(pairs)),
        "model": {"type": model.get("type"), "scores": scores, "merges": merges},
        "normalizer": data.get("normalizer"),
        "pre_tokenizer": data.get("pre_tokenizer"),
        "flags": {
            k: config.get(k) for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
        },
    }
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
