"""Parity: does a tokenizer folder, loaded as users load it, give the ids its raw model gives?

Decisions:
- The side under test is always `transformers.AutoTokenizer.from_pretrained(folder)`, the way
  prepare_samples, export and every Hub user load it; ids are compared without special tokens.
- The reference is the raw model in the folder: `sentencepiece.model` run by the sentencepiece
  library, or, for WordPiece, the folder's tokenizer.json run by the `tokenizers` library (which
  checks that the class named in tokenizer_config.json rebuilds the same pipeline).
- Lines are compared one by one over the whole file or a seeded sample of it; the report keeps
  the first differing line with both tokenizations, which is what one needs to see the cause.
- A Unigram difference whose two segmentations have the same total score, up to float32
  rounding, is counted apart as a tie: SentencePiece sums scores in float32 and tokenizers in
  float64, so such lines can differ for models whose scores bertlab did not round (models
  converted from elsewhere). Trained models have rounded scores and must show no tie at all.
- Lines holding a literal special token ("[MASK]", "[SEP]", ...) are counted but not compared
  against SentencePiece: there AutoTokenizer differs on purpose (the token is matched before
  normalization, and the spaces around it are not a "▁" piece of their own).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from bertlab.tokenizer.special import SPECIAL_TOKENS, sample_lines

TIE_TOLERANCE = 1e-5


@dataclasses.dataclass
class ParityReport:
    """Line-by-line comparison of AutoTokenizer ids with the raw model's ids."""

    tokenizer_dir: str
    text_file: str
    reference: str
    num_lines: int = 0
    num_tokens: int = 0
    num_mismatches: int = 0
    num_ties: int = 0
    num_skipped: int = 0
    first_mismatch: dict | None = None
    first_tie: dict | None = None

    @property
    def ok(self) -> bool:
        """No line differs, except float rounding ties."""
        return self.num_mismatches == 0

    @property
    def num_identical(self) -> int:
        return self.num_lines - self.num_mismatches - self.num_ties - self.num_skipped

    @property
    def exact(self) -> bool:
        return self.num_mismatches == 0 and self.num_ties == 0

    def summary(self) -> str:
        text = (
            f"parity with {self.reference}: {self.num_identical}/{self.num_lines} lines identical"
        )
        if self.num_skipped:
            text += (
                f", {self.num_skipped} differ at a special token written in the text (by design)"
            )
        if self.num_ties:
            text += f", {self.num_ties} differ only by a float rounding tie"
        if d := self.first_mismatch or self.first_tie:
            text += (
                f"; first difference at {self.text_file} line {d['line']} {d['text'][:80]!r}: "
                f"{self.reference} gives {d['expected'][:12]}, AutoTokenizer gives {d['got'][:12]}"
            )
        return text


def check_parity(
    tokenizer_dir: str, text_file: str, max_lines: int | None = None, seed: int = 0
) -> ParityReport:
    """Compare AutoTokenizer ids with the folder's raw model on (a seeded sample of) a text file."""
    lines, _ = sample_lines(text_file, max_lines, seed, flag="parity text")
    return compare_lines(tokenizer_dir, lines, str(text_file))


def compare_lines(tokenizer_dir: str, lines: list[tuple[int, str]], source: str) -> ParityReport:
    """Compare AutoTokenizer ids with the folder's raw model on numbered lines from `source`."""
    from transformers import AutoTokenizer

    folder = Path(tokenizer_dir)
    texts = [text for _, text in lines]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    got = tokenizer(texts, add_special_tokens=False)["input_ids"]
    scores, skip = None, ()
    if (folder / "sentencepiece.model").is_file():
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.model"))
        expected = processor.encode(texts)
        reference = "sentencepiece.model"
        skip = SPECIAL_TOKENS
        if _is_unigram(processor):
            scores = _unigram_scores(processor)
    else:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        expected = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        reference = "tokenizer.json"

    report = ParityReport(str(folder), source, reference, num_lines=len(texts))
    for (number, text), want, have in zip(lines, expected, got, strict=True):
        report.num_tokens += len(want)
        if want == have:
            continue
        if any(token in text for token in skip):
            report.num_skipped += 1
            continue
        difference = {"line": number, "text": text, "expected": want, "got": have}
        if scores is not None and _same_score(scores, want, have):
            report.num_ties += 1
            report.first_tie = report.first_tie or difference
        else:
            report.num_mismatches += 1
            report.first_mismatch = report.first_mismatch or difference
    return report


def _is_unigram(processor) -> bool:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(processor.serialized_model_proto())
    return proto.trainer_spec.model_type == 1


def _unigram_scores(processor) -> list[float]:
    """Piece scores as SentencePiece's Viterbi uses them (unknown: min score - 10)."""
    scores = [processor.get_score(i) for i in range(processor.get_piece_size())]
    normal = [s for i, s in enumerate(scores) if not processor.is_control(i)
              and not processor.is_unknown(i) and not processor.is_unused(i)]  # fmt: skip
    scores[processor.unk_id()] = min(normal) - 10.0
    return scores


def _same_score(scores: list[float], want: list[int], have: list[int]) -> bool:
    a, b = sum(scores[i] for i in want), sum(scores[i] for i in have)
    return math.isclose(a, b, rel_tol=TIE_TOLERANCE, abs_tol=1e-4)
