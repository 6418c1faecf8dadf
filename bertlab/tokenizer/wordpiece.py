"""WordPiece: train BERT's own tokenizer with `tokenizers`, save it as a BertTokenizer folder.

Decisions:
- The pipeline is BERT's: BertNormalizer (clean text, CJK characters split, lowercase on
  request, accents stripped exactly when lowercasing, as in the original BERT), BertPreTokenizer,
  WordPiece with "##" continuations, [CLS] A [SEP] B [SEP] with token types 0/1.
- The special tokens are the trainer's first tokens, in the fixed order, so they get ids 0-4.
- `--character_coverage` means what it means for SentencePiece: the alphabet is the most frequent
  characters that cover that share of the (normalized) text; rarer characters become [UNK]
  (the trainer's `limit_alphabet`). Otherwise one rare CJK character costs two vocabulary slots.
- A vocabulary that cannot be filled to `--vocab_size` (the corpus has fewer distinct words), or
  that overflows it (the alphabet alone is larger), is an error naming --vocab_size, as it is for
  SentencePiece, rather than a silently different size.
- The folder is a `BertTokenizer` one (tokenizer_class, do_lower_case, strip_accents,
  tokenize_chinese_chars in tokenizer_config.json, plus tokenizer.json and vocab.txt), the class
  every BERT tool knows; transformers rebuilds the same pipeline from those flags, and the parity
  check compares it with tokenizer.json.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import WordPiece

from bertlab.tokenizer.special import SPECIAL_TOKENS


def _pipeline(lowercase: bool) -> Tokenizer:
    backend = Tokenizer(WordPiece(unk_token=SPECIAL_TOKENS[1]))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _alphabet_size(backend: Tokenizer, lines: Sequence[str], coverage: float) -> int:
    """How many of the most frequent characters cover `coverage` of the normalized text."""
    counts: Counter[str] = Counter()
    # 100k spread-out lines estimate character frequencies well enough, and quickly.
    for line in lines[:: max(1, len(lines) // 100_000)]:
        counts.update(backend.normalizer.normalize_str(line))
    for space in (" ", "\t", "\n"):
        counts.pop(space, None)
    total, covered = sum(counts.values()), 0
    for size, (_, count) in enumerate(counts.most_common(), 1):
        covered += count
        if covered >= coverage * total:
            return size
    return len(counts)


def train_wordpiece(
    lines: Sequence[str], vocab_size: int, lowercase: bool, character_coverage: float
) -> Tokenizer:
    """Train a WordPiece vocabulary of exactly `vocab_size` tokens, special tokens at 0-4."""
    backend = _pipeline(lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        limit_alphabet=_alphabet_size(backend, lines, character_coverage),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer=trainer, length=len(lines))
    size = backend.get_vocab_size()
    if size > vocab_size:
        raise ValueError(
            f"--vocab_size {vocab_size} is too small for this corpus: its characters and the "
            f"special tokens need at least {size} tokens (raise --vocab_size or lower "
            "--character_coverage)"
        )
    if size < vocab_size:
        raise ValueError(
            f"--vocab_size {vocab_size} is too large for this corpus: WordPiece can make at most "
            f"{size} tokens from it"
        )
    assert [backend.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] == list(SPECIAL_TOKENS)
    return backend


def save_folder(backend: Tokenizer, lowercase: bool, folder: Path) -> None:
    """Write the BertTokenizer folder: tokenizer.json, tokenizer_config.json, vocab.txt."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = backend.get_vocab()
    tokenizer = BertTokenizer(
        vocab=vocab, do_lower_case=lowercase, strip_accents=None, tokenize_chinese_chars=True
    )
    saved, trained = json.loads(tokenizer.backend_tokenizer.to_str()), json.loads(backend.to_str())
    for part in ("normalizer", "pre_tokenizer", "model", "decoder"):
        assert saved[part] == trained[part], f"BertTokenizer rebuilt a different {part}"
    tokenizer.save_pretrained(str(folder))
    ordered = sorted(vocab, key=vocab.__getitem__)
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in ordered), encoding="utf-8")
