"""The held-out evaluator (bertlab.downstream.heldout, tools/evaluate_mlm.py): one scorer for every
model.

Run: .venv/bin/python -m pytest tests/downstream/test_heldout.py -x -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_tool

from bertlab.downstream.heldout import evaluate_masked_lm, make_blocks, unigram_log_probs


@pytest.fixture(scope="module")
def tokenizer(en_wordpiece: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(en_wordpiece)


def _tiny_model(tokenizer, bias: torch.Tensor | None = None):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = BertForMaskedLM(config)
    if bias is not None:
        # Logits = the bias at every position: a model that knows word frequencies only.
        head = model.cls.predictions
        with torch.no_grad():
            head.transform.dense.weight.zero_()
            head.transform.dense.bias.zero_()
            head.bias.copy_(bias)
    return model


def test_masks_a_share_of_word_pieces_the_same_for_every_call(en_corpus: Path, tokenizer):
    blocks = make_blocks(en_corpus / "test.txt", tokenizer, max_len=64, max_blocks=40, seed=3)
    again = make_blocks(en_corpus / "test.txt", tokenizer, max_len=64, max_blocks=40, seed=3)
    other = make_blocks(en_corpus / "test.txt", tokenizer, max_len=64, max_blocks=40, seed=4)
    assert blocks.input_ids.shape == (40, 64)
    assert torch.equal(blocks.targets, again.targets)
    assert not torch.equal(blocks.targets, other.targets)
    masked = blocks.targets != -100
    # Every masked position shows [MASK] and hides a word piece, never [CLS], [SEP] or padding.
    assert (blocks.input_ids[masked] == tokenizer.mask_token_id).all()
    assert not torch.isin(blocks.targets[masked], torch.tensor(tokenizer.all_special_ids)).any()
    special = torch.isin(blocks.input_ids, torch.tensor(tokenizer.all_special_ids))
    pieces = int((~special & blocks.attention_mask.bool()).sum()) + int(masked.sum())
    assert 0.13 < masked.sum().item() / pieces < 0.17


def test_a_word_frequency_model_scores_the_unigram_loss(en_corpus: Path, tokenizer):
    unigram = unigram_log_probs(en_corpus / "train.txt", tokenizer)
    assert torch.isclose(unigram.exp().sum(), torch.tensor(1.0), atol=1e-4)
    blocks = make_blocks(en_corpus / "test.txt", tokenizer, max_len=64, max_blocks=30)
    frequencies = _tiny_model(tokenizer, bias=unigram.clamp(min=-1e4))
    result = evaluate_masked_lm(frequencies, blocks, unigram)
    assert result["loss"] == pytest.approx(result["unigram_loss"], abs=1e-3)
    assert result["accuracy"] == pytest.approx(result["unigram_accuracy"], abs=1e-3)
    assert abs(result["below_unigram"]) < 1e-3
    # An untrained model knows less than word frequencies: it is scored above the unigram loss.
    untrained = evaluate_masked_lm(_tiny_model(tokenizer), blocks, unigram)
    assert untrained["below_unigram"] < -0.5
    assert untrained["positions"] == result["positions"] == blocks.num_positions


def test_evaluate_mlm_tool_prints_and_writes_the_figures(
    en_corpus: Path, en_wordpiece: Path, tokenizer, tmp_path: Path
):
    folder = tmp_path / "model"
    _tiny_model(tokenizer).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copyfile(en_wordpiece / name, folder / name)
    texts = [en_corpus / "test.txt", en_corpus / "valid.txt"]
    out = tmp_path / "heldout.json"
    args = ["--model", folder, "--unigram_corpus", en_corpus / "train.txt", "--max_blocks", 20]
    done = run_tool("evaluate_mlm.py", *args, "--text", *texts, "--output", out)
    lines = [line for line in done.stdout.splitlines() if line.startswith("held-out MLM loss")]
    assert len(lines) == 2 and "test.txt" in lines[0] and "unigram" in lines[0]
    figures = json.loads(out.read_text())
    assert [f["text"] for f in figures] == ["test.txt", "valid.txt"]
    missing = run_tool("evaluate_mlm.py", *args, "--text", tmp_path / "nope.txt", check=False)
    assert missing.returncode == 2
    expected = f"error: --text {tmp_path / 'nope.txt'}: no such file"
    assert missing.stderr.strip().splitlines() == [expected]


def test_untrained_weights_and_too_short_texts_are_flagged(
    en_corpus: Path, en_wordpiece: Path, tokenizer, tmp_path: Path, capsys
):
    from bertlab.downstream.heldout import MIN_POSITIONS, evaluate_mlm

    folder = tmp_path / "model"
    model = _tiny_model(tokenizer)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copyfile(en_wordpiece / name, folder / name)
    short = tmp_path / "short.txt"  # the first few sentences of the test text: one block
    short.write_text("".join((en_corpus / "test.txt").open().readlines()[:3]), encoding="utf-8")
    texts = [str(en_corpus / "test.txt"), str(short)]
    capsys.readouterr()  # save_pretrained's progress bar
    results = evaluate_mlm(str(folder), texts, max_blocks=20)
    long, brief = results
    assert long["positions"] >= MIN_POSITIONS > brief["positions"] > 0
    assert warnings(capsys) == [
        f"warning: --model {folder}: its weights were never trained (every LayerNorm still has "
        "its initial scale 1 and shift 0): the figures are those of random weights",
        f"warning: --text {short}: only {brief['positions']} masked positions (1 block): a loss "
        f"over so few is too noisy to compare models by; give a longer text (at least "
        f"{MIN_POSITIONS} positions)",
    ]
    # One optimizer step moves every LayerNorm: the same folder then evaluates without a word.
    blocks = make_blocks(en_corpus / "test.txt", tokenizer, max_len=64, max_blocks=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=blocks.input_ids, attention_mask=blocks.attention_mask,
          labels=blocks.targets).loss.backward()  # fmt: skip
    optimizer.step()
    model.save_pretrained(folder)
    evaluate_mlm(str(folder), texts[:1], max_blocks=20)
    assert warnings(capsys) == []


def warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
