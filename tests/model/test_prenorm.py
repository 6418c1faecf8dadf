"""Pre-LayerNorm BERT (bertlab.model.prenorm, `model.layer_norm: pre`): trains, resumes, exports
exactly.

Run: .venv/bin/python -m pytest tests/model/test_prenorm.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import run_tool
from tiny import fit_args
from transformers import BertConfig, BertForPreTraining

from bertlab.model.prenorm import to_roberta_prelayernorm, use_pre_layer_norm


def _network(pre: bool) -> BertForPreTraining:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=48, pad_token_id=0,
    )  # fmt: skip
    model = BertForPreTraining(config)
    with torch.no_grad():  # weights away from their 1 / 0 initial values, so each one matters
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return (use_pre_layer_norm(model) if pre else model).eval()


def test_pre_ln_is_roberta_prelayernorm_exactly_and_not_post_ln():
    pre = _network(pre=True)
    ids = torch.randint(5, 300, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    ids[1, 25:] = 0
    roberta = to_roberta_prelayernorm(pre)
    with torch.no_grad():
        ours = pre(input_ids=ids, attention_mask=mask).prediction_logits
        theirs = roberta(input_ids=ids, attention_mask=mask).logits
        post = _network(pre=False)(input_ids=ids, attention_mask=mask).prediction_logits
    real = mask.bool()
    assert (ours - theirs)[real].abs().max() <= 1e-5
    assert (ours - post)[real].abs().max() > 0.1
    # One parameter pair more than BERT: the LayerNorm after the last layer.
    extra = set(pre.state_dict()) - set(_network(pre=False).state_dict())
    assert extra == {"bert.encoder.LayerNorm.weight", "bert.encoder.LayerNorm.bias"}


def test_pre_ln_fit_exports_a_model_transformers_loads(
    mlm_samples: Path, en_corpus: Path, tmp_path: Path
):
    from transformers import AutoModelForMaskedLM

    pre_ln = ("--model.objective=mlm", "--model.layer_norm=pre")
    heldout = (
        f"--heldout.texts=[{en_corpus / 'test.txt'}]",
        f"--heldout.unigram_corpus={en_corpus / 'train.txt'}",
        "--heldout.every_n_steps=4",
        "--heldout.max_blocks=8",
    )
    run_tool("bertlab", *fit_args(mlm_samples, tmp_path / "runs", *pre_ln, *heldout, steps=8))
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    # The heldout section scored the run at steps 4 and 8, beside the unigram model.
    points = [json.loads(line) for line in next((tmp_path / "runs").rglob("heldout.jsonl")).open()]
    assert [p["step"] for p in points] == [4, 8]
    assert {"loss", "unigram_loss", "below_unigram"} <= set(points[-1]["test.txt"])
    out = tmp_path / "model"
    done = run_tool("export_model.py", "--ckpt_path", ckpt, "--output_dir", out)
    assert "AutoModelForMaskedLM" in done.stdout and "AutoModelForPreTraining" not in done.stdout
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model).__name__ == "RobertaPreLayerNormForMaskedLM"
    assert "RobertaPreLayerNormForMaskedLM" in (out / "README.md").read_text()
    scored = run_tool(
        "evaluate_mlm.py", "--model", out, "--text", en_corpus / "test.txt",
        "--unigram_corpus", en_corpus / "train.txt", "--max_blocks", 8,
    )  # fmt: skip
    assert "held-out MLM loss" in scored.stdout
    # A resume of the pre-LN checkpoint rebuilds the pre-LN network (its weights load strictly).
    resumed = fit_args(mlm_samples, tmp_path / "runs", *pre_ln, "--ckpt_path", str(ckpt), steps=12)
    run_tool("bertlab", *resumed)


def test_pre_ln_with_nsp_is_a_one_line_error(mlm_samples: Path, tmp_path: Path):
    args = fit_args(mlm_samples, tmp_path / "runs", "--model.layer_norm=pre", steps=4)
    done = run_tool("bertlab", *args, check=False)
    assert done.returncode == 2
    assert "model.layer_norm pre" in done.stderr and "model.objective mlm" in done.stderr
