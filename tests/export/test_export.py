"""export_model: a bertlab checkpoint becomes a folder plain transformers loads, verified.

Run: .venv/bin/python -m pytest tests/export/test_export.py -x -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_tool
from tiny import handmade_checkpoint

from bertlab.command import run
from bertlab.export.model import export_model

FIT_CONFIG = """\
trainer:
  max_steps: 2
  val_check_interval: 2
  check_val_every_n_epoch: null
  limit_val_batches: 1
  log_every_n_steps: 1
  default_root_dir: {root}
  enable_progress_bar: false
  enable_model_summary: false
model:
  hidden_size: 32
  num_hidden_layers: 1
  num_attention_heads: 2
  intermediate_size: 64
  max_position_embeddings: 64
  warmup_steps: 1
data:
  train_files: {samples}/train
  val_files: {samples}/valid
  batch_size: 4
  shuffle_buffer_size: 16
throughput:
  peak_flops: 0
"""

# Runs in a fresh interpreter that imports transformers and torch, nothing of bertlab.
PLAIN_TRANSFORMERS = """
import json, sys
import torch
from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline

request = json.loads(sys.argv[1])
results = {}
for folder, job in request.items():
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(job["texts"], padding=True, return_tensors="pt")
    pre = AutoModelForPreTraining.from_pretrained(folder).eval()
    mlm = AutoModelForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = pre(**batch).prediction_logits
        mlm_logits = mlm(**batch).logits
    torch.save({"batch": dict(batch), "logits": logits, "mlm_logits": mlm_logits}, job["out"])
    answer = pipeline("fill-mask", model=folder)(job["fill"], top_k=3)
    results[folder] = [{"token_str": a["token_str"], "score": a["score"]} for a in answer]
results["bertlab_imported"] = any(m == "bertlab" or m.startswith("bertlab.") for m in sys.modules)
print(json.dumps(results))
"""


def front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def user_error(capsys, argv: list[str]) -> str:
    """Run export_model as the tool does (in-process); return its one-line error."""
    with pytest.raises(SystemExit) as exit_info:
        run(export_model, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def trained_ckpt(en_samples: Path, tmp_path_factory) -> Path:
    """Two optimizer steps of the real `bertlab fit` on the English samples."""
    root = tmp_path_factory.mktemp("fit")
    config = root / "tiny.yaml"
    config.write_text(FIT_CONFIG.format(root=root / "run", samples=en_samples), encoding="utf-8")
    run_tool("bertlab", "fit", "--config", config)
    ckpt = root / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="module")
def en_export(trained_ckpt: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "tiny-bert-en"
    result = run_tool(
        "export_model.py", "--ckpt_path", trained_ckpt, "--output_dir", out,
        "--language", "en", "--datasets", "wikipedia", "wikitext",
    )  # fmt: skip
    assert "max |logit difference|" in result.stdout
    return out


@pytest.fixture(scope="module")
def ja_export(ja_unigram: Path, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ja")
    ckpt = handmade_checkpoint(ja_unigram, tmp / "ja.ckpt")
    out = tmp / "tiny-bert-ja"
    export_model(str(ckpt), str(out), language="ja", widget_text="東京は日本の[MASK]です。")
    return out


def test_folder_layout_and_config(en_export: Path, ja_export: Path, ja_unigram: Path):
    for folder in (en_export, ja_export):
        names = {p.name for p in folder.iterdir()}
        expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "README.md", "CHANGELOG.md"}  # fmt: skip
        assert expected <= names, names
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["BertForPreTraining"]
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == tokenizer_config["tokenizer_class"]
        assert not any(p.name.startswith(".") for p in folder.parent.iterdir())
    assert "vocab.txt" in {p.name for p in en_export.iterdir()}
    raw = (ja_export / "sentencepiece.model").read_bytes()
    assert raw == (ja_unigram / "sentencepiece.model").read_bytes()


def test_plain_transformers_gives_the_lightning_modules_logits(
    en_export: Path, ja_export: Path, trained_ckpt: Path, tmp_path: Path
):
    from bertlab.model.module import BertPretraining

    request = {
        str(en_export): {"texts": ["The city lies on a river.", "It was founded in 1850."],
                         "fill": "The city lies on a [MASK].", "out": str(tmp_path / "en.pt")},
        str(ja_export): {"texts": ["東京は日本の首都です。"], "fill": "東京は日本の[MASK]です。",
                         "out": str(tmp_path / "ja.pt")},
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, json.dumps(request)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers.pop("bertlab_imported") is False
    for folder, candidates in answers.items():
        assert len(candidates) == 3 and all(0 <= c["score"] <= 1 for c in candidates), folder

    module = BertPretraining.load_from_checkpoint(trained_ckpt, map_location="cpu").eval()
    plain = torch.load(tmp_path / "en.pt", weights_only=True)
    with torch.no_grad():
        want = module.model(**plain["batch"]).prediction_logits
    assert (want - plain["logits"]).abs().max() <= 1e-5
    assert (want - plain["mlm_logits"]).abs().max() <= 1e-5


def test_model_card_front_matter_and_training_facts(en_export: Path, trained_ckpt: Path):
    meta = front_matter(en_export / "README.md")
    assert meta["language"] == ["en"]
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["wikipedia", "wikitext"]
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "fill-mask"
    assert "[MASK]" in meta["widget"][0]["text"]
    card = (en_export / "README.md").read_text(encoding="utf-8")
    checkpoint = torch.load(trained_ckpt, weights_only=True)
    (state,) = [s for s in checkpoint["callbacks"].values() if "current_score" in s]
    assert f"| validation loss (at this checkpoint) | {float(state['current_score']):.4g} |" in card
    assert "| optimizer steps | 2 |" in card
    assert "| batch size | 4 per device x 1 device(s) x 1 accumulation" in card
    assert "| hidden size | 32 |" in card and "| type | WordPiece |" in card
    assert 'pipeline("fill-mask"' in card and "estimated" in card
    assert "last.ckpt" in (en_export / "CHANGELOG.md").read_text(encoding="utf-8")


def test_run_facts_come_from_this_checkpoint_and_its_test_run(trained_ckpt: Path, tmp_path: Path):
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    from bertlab.export.run_facts import collect_run_facts

    logs = tmp_path / "run" / "lightning_logs"
    shutil.copytree(trained_ckpt.parents[1], logs / "version_0")
    ckpt = logs / "version_0" / "checkpoints" / "last.ckpt"
    with SummaryWriter(logs / "version_0") as writer:  # a later validation: not this checkpoint's
        writer.add_scalar("val_loss", 0.125, global_step=99)
    # `bertlab test --ckpt_path run/lightning_logs/version_0/checkpoints/last.ckpt`, run from
    # another working directory, logged into a sibling version folder.
    (logs / "version_1").mkdir()
    (logs / "version_1" / "config.yaml").write_text(
        "ckpt_path: run/lightning_logs/version_0/checkpoints/last.ckpt\n"
    )
    with SummaryWriter(logs / "version_1") as writer:
        writer.add_scalar("test/loss", 3.25, global_step=2)
    checkpoint = torch.load(ckpt, weights_only=True)
    facts = collect_run_facts(checkpoint, ckpt)
    (state,) = [s for s in checkpoint["callbacks"].values() if "current_score" in s]
    assert facts.val_loss == pytest.approx(float(state["current_score"]), abs=1e-6)
    assert facts.test_loss == 3.25
    assert (facts.global_step, facts.batch_size, facts.num_devices) == (2, 4, 1)
    assert facts.accumulate_grad_batches == 1 and facts.precision.startswith("32-true")
    assert facts.tokens_seen_estimated and 2 * 4 * 8 < facts.tokens_seen <= 2 * 4 * 64
    assert facts.config_path == str((logs / "version_0" / "config.yaml").resolve())


def test_japanese_tokenizer_keeps_parity_with_sentencepiece(ja_export: Path, ja_corpus: Path):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    lines = [line for line in (ja_corpus / "valid.txt").read_text().splitlines() if line][:300]
    tokenizer = AutoTokenizer.from_pretrained(ja_export)
    raw = spm.SentencePieceProcessor(model_file=str(ja_export / "sentencepiece.model"))
    assert tokenizer(lines, add_special_tokens=False)["input_ids"] == raw.encode(lines)
    meta = front_matter(ja_export / "README.md")
    assert meta["language"] == ["ja"] and meta["widget"] == [{"text": "東京は日本の[MASK]です。"}]
    assert "SentencePiece Unigram" in (ja_export / "README.md").read_text(encoding="utf-8")


def test_bfloat16_and_embeddings_only(trained_ckpt: Path, tmp_path: Path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    half = tmp_path / "bf16"
    export_model(str(trained_ckpt), str(half), language="en", dtype="bfloat16")
    with safe_open(half / "model.safetensors", "pt") as f:
        assert f.get_tensor(f.keys()[0]).dtype == torch.bfloat16
    assert "looser tolerance" in (half / "README.md").read_text(encoding="utf-8")

    embeddings = half  # an earlier export, replaced whole by --overwrite
    export_model(str(trained_ckpt), str(embeddings), embeddings_only=True, dtype="float16",
                 overwrite=True)  # fmt: skip
    names = {p.name for p in embeddings.iterdir()}
    assert "word_embeddings.safetensors" in names and "tokenizer.json" in names
    assert not names & {"config.json", "model.safetensors"}
    tensors = load_file(embeddings / "word_embeddings.safetensors")
    checkpoint = torch.load(trained_ckpt, weights_only=True)
    want = checkpoint["state_dict"]["model.bert.embeddings.word_embeddings.weight"].half()
    assert list(tensors) == ["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(tensors["bert.embeddings.word_embeddings.weight"], want)
    assert "pipeline_tag" not in front_matter(embeddings / "README.md")


def test_checkpoint_without_bert_config_is_rebuilt_by_the_module(trained_ckpt, tmp_path):
    checkpoint = torch.load(trained_ckpt, weights_only=True)
    del checkpoint["bert_config"]  # as if saved by an older BertPretraining
    torch.save(checkpoint, tmp_path / "old.ckpt")
    result = export_model(str(tmp_path / "old.ckpt"), str(tmp_path / "model"), language="en")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    sizes = (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"])
    assert sizes == (32, 1, 3000)
    assert result["checks"]["max |logit difference| vs the checkpoint (fp32 compute)"]


def test_not_a_bertlab_checkpoint_is_a_one_line_error(tmp_path: Path, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "epoch": 1}, foreign)
    out = tmp_path / "out"
    result = run_tool("export_model.py", "--ckpt_path", foreign, "--output_dir", out, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --ckpt_path {foreign}: not a bertlab checkpoint (no hyper_parameters; "
        "expected a Lightning checkpoint of `bertlab fit`)"
    ]
    garbage = tmp_path / "notes.ckpt"
    garbage.write_text("not a checkpoint at all")
    message = user_error(capsys, ["--ckpt_path", str(garbage), "--output_dir", str(out)])
    assert "torch.load(weights_only=True) can read (not a PyTorch checkpoint, or damaged" in message
    assert "weights_only` set to `False" not in message  # torch's advice: unsafe, and wrong here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.ckpt", "notes.ckpt"]


def test_missing_tokenizer_is_a_one_line_error(trained_ckpt: Path, tmp_path: Path, capsys):
    checkpoint = torch.load(trained_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["tokenizer"] = str(tmp_path / "deleted-tokenizer")
    checkpoint["datamodule_hyper_parameters"]["train_files"] = str(tmp_path / "gone")
    moved = tmp_path / "moved.ckpt"
    torch.save(checkpoint, moved)
    out = tmp_path / "out"
    error = user_error(capsys, ["--ckpt_path", str(moved), "--output_dir", str(out)])
    assert "deleted-tokenizer" in error and "--tokenizer" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved.ckpt"]


def test_a_license_the_hub_would_refuse_is_refused_at_export(trained_ckpt, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["--ckpt_path", str(trained_ckpt), "--output_dir", str(out)]
    error = user_error(capsys, [*args, "--license", "apache"])
    assert error.startswith("error: --license 'apache' is not a Hub license identifier (did")
    assert "apache-2.0" in error and "other for a license of your own" in error
    assert "did you mean" not in user_error(capsys, [*args, "--license", "my-own-licence"])
    assert not out.exists()


def test_a_config_that_is_not_the_runs_is_refused(trained_ckpt: Path, tmp_path: Path, capsys):
    """--config fills in what the run's records lack; one they contradict is not the run's."""
    saved = (trained_ckpt.parents[1] / "config.yaml").read_text(encoding="utf-8")
    other = tmp_path / "other.yaml"
    other.write_text(saved.replace("hidden_size: 32", "hidden_size: 128"), encoding="utf-8")
    assert other.read_text(encoding="utf-8") != saved
    out = tmp_path / "model"
    args = ["--ckpt_path", str(trained_ckpt), "--output_dir", str(out)]
    error = user_error(capsys, [*args, "--config", str(other)])
    assert error == (
        f"error: --config {other} is not this checkpoint's run: model.hidden_size 128 (the run: "
        "32); give the run's own config, or leave --config out"
    )
    assert not out.exists()
    same = tmp_path / "same.yaml"
    same.write_text(saved, encoding="utf-8")
    run(export_model, [*args, "--config", str(same)])
    assert (out / "config.json").is_file()


def test_non_empty_output_dir_needs_overwrite(trained_ckpt: Path, tmp_path: Path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    error = user_error(capsys, ["--ckpt_path", str(trained_ckpt), "--output_dir", str(out)])
    assert "holds no output of export_model (keep.txt)" in error
    error = user_error(
        capsys, ["--ckpt_path", str(trained_ckpt), "--output_dir", str(out), "--overwrite"]
    )
    assert "holds no output of export_model (keep.txt)" in error
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_verification_leaves_no_folder(trained_ckpt: Path, tmp_path: Path, monkeypatch):
    import bertlab.export.model

    monkeypatch.setattr(bertlab.export.model, "STRICT_TOLERANCE", -1.0)  # any difference fails
    with pytest.raises(ValueError, match="export check failed"):
        export_model(str(trained_ckpt), str(tmp_path / "model"))
    assert list(tmp_path.iterdir()) == []
