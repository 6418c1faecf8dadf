"""Documents of tokenized sentences -> pre-training samples, as spans of one flat token array.

The sample-building algorithm of bertlab.samples.prepare, kept apart so it can be read (and tested)
as the algorithm alone: no files, no processes, no tokenizer.

Decisions:
- Every token of the corpus sits in one flat array; a sentence, and so a document, is a run of
  it (bertlab.samples.tokenized). A segment is a (start, end) span of that array, and truncation
  only moves a span's ends. So A and B are always contiguous pieces of real documents: the defect
  of Google's create_pretraining_data.py (a truncated B rebuilt from A's ids) cannot happen here.
- NSP pairs follow Google's create_instances_from_document: sentences are accumulated into a chunk
  up to a target length of max_seq_len - 3; A is the first a_end sentences, B the true rest
  (label 0) or, half of the time and whenever the chunk has one sentence, a run of sentences from a
  random other document (label 1), whose unused sentences go back to be used by the next chunk;
  the longer segment loses a token from a random end until the pair fits.
- Deviations, each making the label or the length honest: the short target length (probability
  short_seq_prob, uniform in [2, max_seq_len - 3]) is drawn for every chunk, not once per
  document, so short_seq_prob is the share of short samples as its name says; the random document
  is drawn uniformly among the *other* documents (Google retries 10 times and may give up and use
  the same one, with label 1); with a single document in the corpus, no random B exists, so a
  chunk of two or more sentences always takes its true continuation and a one-sentence chunk
  makes no sample.
- MLM-only samples are contiguous blocks of max_seq_len - 2 tokens of one document (the last one
  shorter). The first pass starts at the document's first token; every later pass of dupe_factor
  starts at a random offset (the head before it is left out of that pass), so passes cut the
  document in different places instead of repeating the same blocks.
- All randomness comes from the `random.Random` handed in, one per (seed, pass, document), so a
  document's samples do not depend on which process builds them or in which order.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence

Span = tuple[int, int]
# (A span, B span or None for MLM-only, next_sentence_label or None for MLM-only)
Sample = tuple[Span, Span | None, int | None]


def truncate_pair(a: Span, b: Span, max_num_tokens: int, rng: random.Random) -> tuple[Span, Span]:
    """Shorten the longer of two spans (B on ties) from a random end until both fit together.

    The result has the distribution of Google's truncate_seq_pair, which removes one token at a
    time from the longer segment (B on ties), from the front or the back by a fair coin: the
    longer segment first loses the difference in length, then the two alternate (B first), so the
    number each loses is known up front, and each segment's coins are drawn at once.
    """
    a0, a1 = a
    b0, b1 = b
    overflow = (a1 - a0) + (b1 - b0) - max_num_tokens
    if overflow <= 0:
        return a, b
    difference = min(overflow, abs((a1 - a0) - (b1 - b0)))
    cut_a = difference if a1 - a0 > b1 - b0 else 0
    cut_b = difference - cut_a
    overflow -= difference
    cut_a += overflow // 2
    cut_b += overflow - overflow // 2
    if cut_a:
        front = rng.getrandbits(cut_a).bit_count()
        a0, a1 = a0 + front, a1 - (cut_a - front)
    if cut_b:
        front = rng.getrandbits(cut_b).bit_count()
        b0, b1 = b0 + front, b1 - (cut_b - front)
    assert a1 > a0 and b1 > b0, "truncation emptied a segment"
    return (a0, a1), (b0, b1)


def _below(rng: random.Random, n: int) -> int:
    """Uniform in [0, n): random.randrange's job at a fraction of its cost."""
    return int(rng.random() * n)


def _target_length(rng: random.Random, max_num_tokens: int, short_seq_prob: float) -> int:
    if rng.random() < short_seq_prob:
        return 2 + _below(rng, max_num_tokens - 1)
    return max_num_tokens


def nsp_pairs(
    document: int,
    sentence_starts: Sequence[int],
    document_starts: Sequence[int],
    rng: random.Random,
    max_seq_len: int,
    short_seq_prob: float,
) -> list[Sample]:
    """Sentence pairs of one document, as (A span, B span, next_sentence_label).

    sentence_starts: (numpy) where each sentence starts in the flat token array, one more at the
        end.
    document_starts: (numpy) where each document starts in sentence_starts, one more at the end.
    """
    max_num_tokens = max_seq_len - 3
    num_documents = len(document_starts) - 1
    first, last = document_starts[document : document + 2].tolist()
    bounds = sentence_starts[first : last + 1].tolist()
    num_sentences = len(bounds) - 1
    samples: list[Sample] = []
    target = _target_length(rng, max_num_tokens, short_seq_prob)
    chunk_start = 0
    while chunk_start < num_sentences:
        # The chunk ends with the sentence that brings it to the target, or with the document.
        end = bisect_left(bounds, bounds[chunk_start] + target, chunk_start + 1)
        i = min(end, num_sentences) - 1
        count = i + 1 - chunk_start
        a_end = 1 + _below(rng, count - 1) if count >= 2 else 1
        a = (bounds[chunk_start], bounds[chunk_start + a_end])
        random_next = count == 1 or rng.random() < 0.5
        if random_next and num_documents == 1:
            random_next = False
            if count == 1:  # nothing to pair this sentence with
                chunk_start = i + 1
                continue
        if random_next:
            other = _below(rng, num_documents - 1)
            other += other >= document
            b = _random_segment(
                sentence_starts, document_starts, other, target - (a[1] - a[0]), rng
            )
            # The sentences of this chunk after A were not used: the next chunk starts there.
            i = chunk_start + a_end - 1
        else:
            b = (a[1], bounds[i + 1])
        a, b = truncate_pair(a, b, max_num_tokens, rng)
        samples.append((a, b, int(random_next)))
        chunk_start = i + 1
        target = _target_length(rng, max_num_tokens, short_seq_prob)
    return samples


def _random_segment(
    sentence_starts: Sequence[int],
    document_starts: Sequence[int],
    document: int,
    target: int,
    rng: random.Random,
) -> Span:
    """Sentences of a document from a random one on, until target tokens (at least one)."""
    first, last = document_starts[document : document + 2].tolist()
    j = first + _below(rng, last - first)
    # Every sentence has a token, so target sentences always reach the target: one read of the
    # arrays (a random document is outside the window bertlab.samples.token_store holds in memory).
    bounds = sentence_starts[j : min(last, j + max(target, 1)) + 1].tolist()
    k = 1
    while k < len(bounds) - 1 and bounds[k] - bounds[0] < target:
        k += 1
    return bounds[0], bounds[k]


def mlm_blocks(
    start: int, end: int, pass_index: int, rng: random.Random, max_seq_len: int
) -> list[Sample]:
    """Contiguous blocks of max_seq_len - 2 tokens of the document spanning [start, end)."""
    block = max_seq_len - 2
    offset = _below(rng, block) if pass_index > 0 and end - start > block else 0
    return [((s, min(s + block, end)), None, None) for s in range(start + offset, end, block)]
