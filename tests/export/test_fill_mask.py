"""fill_mask: top-k fills through transformers' fill-mask pipeline, as a table or JSON.

Run: .venv/bin/python -m pytest tests/export/test_fill_mask.py -x -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_tool

from bertlab.command import run
from bertlab.export.fill_mask import fill_mask

TEXTS = ["The river is [MASK] long.", "A [MASK] of the [MASK] city."]


@pytest.fixture(scope="module")
def model_dir(masked_lm: Path, en_wordpiece: Path, tmp_path_factory) -> Path:
    """The tiny masked LM with an MLM output bias that makes "the" the best fill for any mask."""
    from transformers import AutoTokenizer, BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(masked_lm)
    the = AutoTokenizer.from_pretrained(en_wordpiece).convert_tokens_to_ids("the")
    with torch.no_grad():
        model.cls.predictions.bias[the] = 30.0
    out = tmp_path_factory.mktemp("fill") / "model"
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copyfile(en_wordpiece / name, out / name)
    return out


def test_table_shows_each_mask_of_each_text(model_dir: Path):
    result = run_tool("fill_mask.py", "--model", model_dir, "--text", *TEXTS, "--top_k", "3")
    blocks = result.stdout.strip().split("\n\n")
    assert len(blocks) == 2
    first, second = (block.splitlines() for block in blocks)
    assert first[0] == TEXTS[0] and len(first) == 1 + 3
    assert first[1].split()[-1] == "the"
    assert second[0] == TEXTS[1] and len(second) == 1 + 2 * 3
    assert second[1].split()[:2] == ["mask", "1:"] and second[1].split()[-1] == "the"
    assert second[4].split()[:2] == ["mask", "2:"] and second[4].split()[-1] == "the"
    assert "Loading" not in result.stderr


def test_json_has_top_k_candidates_per_mask(model_dir: Path, capsys):
    results = fill_mask(str(model_dir), TEXTS, top_k=2, json=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    assert [len(line["masks"]) for line in lines] == [1, 2]
    for line in lines:
        for candidates in line["masks"]:
            assert len(candidates) == 2 and candidates[0]["token_str"] == "the"
            assert candidates[0]["score"] >= candidates[1]["score"]
            assert set(candidates[0]) == {"token", "token_str", "score", "sequence"}
    assert results == [line["masks"] for line in lines]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "No mask here."], "has no mask token; this model's tokenizer uses [MASK]"),
        (["--text", "The [MASK].", "--top_k", "0"], "--top_k must be at least 1"),
    ],
)
def test_user_mistakes_are_one_line_errors(model_dir: Path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run(fill_mask, ["--model", str(model_dir), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_folder_without_a_model_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="not a model folder"):
        fill_mask(str(tmp_path), ["The [MASK]."])
    # A config.json that transformers cannot place ("Unrecognized model in ...") names the flag.
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match=r"--model .*config.json has no model_type"):
        fill_mask(str(tmp_path), ["The [MASK]."])
