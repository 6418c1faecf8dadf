#!/usr/bin/env bash
# `make demo`: the whole bertlab pipeline on a CPU in a few minutes.
#
# raw text -> corpus -> WordPiece tokenizer -> samples -> tiny BERT fit -> test -> export ->
# held-out loss against a unigram model -> fill-mask
# The raw text is CPython's own reference documentation (always installed) unless CORPUS names
# the user's files (a Wikipedia dump, .txt, .jsonl; several separated by spaces).
set -euo pipefail
# Every step passes --overwrite: a second `make demo` replaces the first one's outputs (each tool
# refuses a folder it did not write, so nothing else in DEMO_DIR can be lost).
PYTHON=${PYTHON:-python}
DEMO_DIR=${DEMO_DIR:-demo}
CORPUS=${CORPUS:-}
LANG_CODE=${DEMO_LANG:-en}
step() { printf '\n== %s\n' "$*"; }

mkdir -p "$DEMO_DIR"
if [ -z "$CORPUS" ]; then
  step "Embedded corpus: CPython's reference documentation"
  CORPUS="$DEMO_DIR/raw/pydoc.txt"
  "$PYTHON" -m bertlab.corpus.python_docs "$CORPUS"
fi

step "prepare_corpus"
# shellcheck disable=SC2086  # CORPUS may name several files
"$PYTHON" tools/prepare_corpus.py --input $CORPUS --output_dir "$DEMO_DIR/corpus" \
  --lang "$LANG_CODE" --valid_docs 8 --test_docs 8 --overwrite

step "train_tokenizer (WordPiece)"
"$PYTHON" tools/train_tokenizer.py --train_file "$DEMO_DIR/corpus/train.txt" \
  --output_dir "$DEMO_DIR/tokenizer" --model_type wordpiece --vocab_size 4000 --overwrite

step "prepare_samples"
for split in train valid test; do
  "$PYTHON" tools/prepare_samples.py --input "$DEMO_DIR/corpus/$split.txt" \
    --tokenizer "$DEMO_DIR/tokenizer" --output_dir "$DEMO_DIR/samples/$split" \
    --max_seq_len 128 --num_shards 2 --nsp false --overwrite
done

step "bertlab fit (configs/tiny.yaml)"
rm -rf "$DEMO_DIR/runs"
RUN_ARGS=(--config configs/tiny.yaml
  --data.train_files "$DEMO_DIR/samples/train" --data.val_files "$DEMO_DIR/samples/valid"
  --data.test_files "$DEMO_DIR/samples/test" --trainer.default_root_dir "$DEMO_DIR/runs/tiny"
  --model.objective mlm --model.position_embedding rotary --data.mlm_probability 0.4)
# Masked LM with rotary positions and 40% masking: what learned context soonest in the
# short-budget study (BENCHMARKS.md, "Time to quality"); BERT's absolute positions stay at word
# frequencies for far longer than a demo runs.
# Two minutes of training on any machine: a time budget (the schedule decays over it), not a
# step count tuned to one CPU's speed.
"$PYTHON" -m bertlab fit "${RUN_ARGS[@]}" --trainer.max_steps -1 \
  --trainer.max_time "${DEMO_TRAIN_TIME:-00:00:02:00}"
CKPT=$(ls "$DEMO_DIR"/runs/tiny/lightning_logs/version_*/checkpoints/last.ckpt | tail -n 1)

step "bertlab test on $CKPT"
"$PYTHON" -m bertlab test "${RUN_ARGS[@]}" --ckpt_path "$CKPT"

step "export_model -> $DEMO_DIR/model"
"$PYTHON" tools/export_model.py --ckpt_path "$CKPT" --output_dir "$DEMO_DIR/model" \
  --language "$LANG_CODE" --overwrite

step "evaluate_mlm: held-out loss beside a unigram model of the training text"
"$PYTHON" tools/evaluate_mlm.py --model "$DEMO_DIR/model" --text "$DEMO_DIR/corpus/test.txt" \
  --unigram_corpus "$DEMO_DIR/corpus/train.txt"

step "fill_mask"
"$PYTHON" tools/fill_mask.py --model "$DEMO_DIR/model" --text \
  "The [MASK] statement is used for conditional execution." \
  "A function definition defines a user-defined [MASK] object." \
  "Exceptions are raised with the [MASK] statement."
