"""Rotary positions (bertlab.model.rotary, `model.position_embedding: rotary`): exactly RoFormer,
trained, resumed, exported, fine-tuned.

Run: .venv/bin/python -m pytest tests/model/test_rotary.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_tool
from tiny import fit_args
from transformers import BertConfig, BertForPreTraining

from bertlab.model.rotary import to_roformer, use_rotary


def _network(rotary: bool) -> BertForPreTraining:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=48, pad_token_id=0,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    model = BertForPreTraining(config)
    with torch.no_grad():  # weights away from their initial values, so each one matters
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return (use_rotary(model) if rotary else model).eval()


def test_rotary_is_roformer_exactly_and_order_matters_without_a_position_table():
    rotary = _network(rotary=True)
    ids = torch.randint(5, 300, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    ids[1, 25:] = 0
    with torch.no_grad():
        ours = rotary(input_ids=ids, attention_mask=mask).prediction_logits
        theirs = to_roformer(rotary)(input_ids=ids, attention_mask=mask).logits
        absolute = _network(rotary=False)(input_ids=ids, attention_mask=mask).prediction_logits
        # The position table is not used: zeroing it changes nothing...
        rotary.bert.embeddings.position_embeddings.weight.zero_()
        same = rotary(input_ids=ids, attention_mask=mask).prediction_logits
        # ...and yet order matters: two tokens swapped change the other tokens' predictions.
        swapped = ids.clone()
        swapped[0, [3, 4]] = swapped[0, [4, 3]]
        moved = rotary(input_ids=swapped, attention_mask=mask).prediction_logits
        # Without rotation and without a position table, BERT is a bag of words: a swap
        # elsewhere leaves a token's prediction as it was (to rounding).
        bag = _network(rotary=False)
        bag.bert.embeddings.position_embeddings.weight.zero_()
        bag_shift = bag(input_ids=ids).prediction_logits - bag(input_ids=swapped).prediction_logits
    real = mask.bool()
    assert (ours - theirs)[real].abs().max() <= 1e-5
    assert (ours - absolute)[real].abs().max() > 0.1
    assert torch.equal(ours, same)
    assert (ours[0, 10] - moved[0, 10]).abs().max() > 100 * bag_shift[0, 10].abs().max()
    # The same parameters as BERT's: checkpoints keep their shape.
    assert set(rotary.state_dict()) == set(_network(rotary=False).state_dict())


def test_rotary_fit_resumes_exports_and_fine_tunes(
    mlm_samples: Path, en_corpus: Path, tmp_path: Path
):
    from transformers import AutoModelForMaskedLM

    rotary = ("--model.objective=mlm", "--model.position_embedding=rotary")
    run_tool("bertlab", *fit_args(mlm_samples, tmp_path / "runs", *rotary, steps=8))
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    out = tmp_path / "model"
    done = run_tool("export_model.py", "--ckpt_path", ckpt, "--output_dir", out)
    assert "AutoModelForMaskedLM" in done.stdout and "AutoModelForPreTraining" not in done.stdout
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model).__name__ == "RoFormerForMaskedLM" and not model.config.rotary_value
    assert "RoFormerForMaskedLM" in (out / "README.md").read_text()
    # A resume rebuilds the rotary network (its weights load strictly, the run continues).
    resumed = fit_args(mlm_samples, tmp_path / "runs", *rotary, "--ckpt_path", str(ckpt), steps=12)
    run_tool("bertlab", *resumed)
    # Fine-tuning the exported folder builds transformers' RoFormer classifier.
    task = tmp_path / "task.tsv"
    lines = [line for line in (en_corpus / "test.txt").read_text().splitlines() if line][:40]
    task.write_text("".join(f"{i % 2}\t{line}\n" for i, line in enumerate(lines)))
    tuned = run_tool(
        "finetune.py", "--model", out, "--train_file", task, "--valid_file", task,
        "--max_epochs", 1, "--max_seq_len", 64,
    )  # fmt: skip
    assert "accuracy" in tuned.stdout + tuned.stderr


def test_rotary_refuses_what_cannot_export(mlm_samples: Path, tmp_path: Path):
    rotary = "--model.position_embedding=rotary"
    # Through the command once (the NSP objective: no RoFormer class has a next-sentence head)...
    done = run_tool("bertlab", *fit_args(mlm_samples, tmp_path / "runs", rotary, steps=4),
                    check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "model.objective mlm" in done.stderr and "Traceback" not in done.stderr
    # ...and the other refusals where the command raises them, without a process each.
    from bertlab.model.module import BertPretraining

    tiny = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    for settings, names in (
        (dict(layer_norm="pre", num_attention_heads=2), "model.layer_norm post"),
        (dict(num_attention_heads=32), "even head size"),
    ):
        with pytest.raises(ValueError, match=names):
            BertPretraining(**tiny, **settings, objective="mlm", position_embedding="rotary")
