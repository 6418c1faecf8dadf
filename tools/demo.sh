#!/usr/bin/env bash
# `make demo`: the whole bertlab pipeline on a CPU in a few minutes.
#
# raw text -> corpus -> WordPiece tokenizer -> samples -> tiny BERT fit -> test -> export -> fill-mask
# The raw text is CPython's own reference documentation (always installed) unless CORPUS names
# the user's files (a Wikipedia dump, .txt, .jsonl; several separated by spaces).
set -euo pipefail
PYTHON=${PYTHON:-python}
DEMO_DIR=${DEMO_DIR:-demo}
CORPUS=${CORPUS:-}
LANG_CODE=${DEMO_LANG:-en}
step() { printf '\n== %s\n' "$*"; }

mkdir -p "$DEMO_DIR"
if [ -z "$CORPUS" ]; then
  step "Embedded corpus: CPython's reference documentation"
  CORPUS="$DEMO_DIR/raw/pydoc.txt"
  "$PYTHON" -m bertlab.pydoc_corpus "$CORPUS"
fi

step "prepare_corpus"
# shellcheck disable=SC2086  # CORPUS may name several files
"$PYTHON" tools/prepare_corpus.py --input $CORPUS --output_dir "$DEMO_DIR/corpus" \
  --lang "$LANG_CODE" --valid_docs 0.05 --test_docs 0.05

step "train_tokenizer (WordPiece)"
"$PYTHON" tools/train_tokenizer.py --train_file "$DEMO_DIR/corpus/train.txt" \
  --output_dir "$DEMO_DIR/tokenizer" --model_type wordpiece --vocab_size 8000

step "prepare_samples"
for split in train valid test; do
  "$PYTHON" tools/prepare_samples.py --input "$DEMO_DIR/corpus/$split.txt" \
    --tokenizer "$DEMO_DIR/tokenizer" --output_dir "$DEMO_DIR/samples/$split" \
    --max_seq_len 128 --num_shards 2
done
