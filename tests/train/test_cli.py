"""The `bertlab` command end to end: tiny fit/validate/test, pretrained recipes, one-line errors.

Run: .venv/bin/python -m pytest tests/train/test_cli.py -q

The fit and one bad config run as real subprocesses (`python -m bertlab`); the rest calls
`bertlab.train.cli.run_cli` / `main` in-process (the same parser, callbacks and checks, without
paying the imports again) with a smaller model and fewer steps than configs/tiny.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_tool
from tiny import TINY_CONFIG, make_tokenizer, small_run, tiny_model
from transformers import BertConfig, BertForPreTraining

from bertlab.speed.settings import LEGACY_MODEL_KEYS as LEGACY
from bertlab.speed.settings import Speed
from bertlab.train.cli import main, run_cli


@pytest.fixture(autouse=True)
def command_line(monkeypatch):
    """The arguments go to main(); pytest's own must not look like a second command line."""
    monkeypatch.setattr(sys, "argv", ["bertlab"])


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The TensorBoard scalars of a run: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tiny_fit_lowers_validation_loss_then_test_with_same_config(en_samples, tmp_path):
    before = run_cli(["validate", *small_run(en_samples, tmp_path / "before"), *tiny_model()])
    initial = float(before.trainer.callback_metrics["val_loss"])

    fitted = run_tool("bertlab", "fit", *small_run(en_samples, tmp_path / "fit"), *tiny_model())
    run_dir = tmp_path / "fit" / "lightning_logs" / "version_0"
    # The speed choices, resolved for this machine, in one line with their reasons...
    (line,) = [x for x in (fitted.stdout + fitted.stderr).splitlines() if x.startswith("speed [")]
    assert line.startswith("speed [cpu: ") and "precision 32-true (" in line
    assert "bf16_working_copy " in line and "attn_implementation " in line
    # ...and in the saved config, so the run can be repeated exactly: no `auto` left.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "32-true"
    assert set(saved["speed"]) == set(Speed().as_dict())
    assert "auto" not in saved["speed"].values()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(
        n.startswith("step=60-val_loss=") for n in checkpoints
    )
    assert (run_dir / "config.yaml").is_file()
    logged = scalars(run_dir)
    expected = {"train/loss", "train/mlm_accuracy", "train/nsp_loss", "val_loss", "val/perplexity"}
    expected |= {"lr/decay", "throughput/tokens_per_sec", "throughput/samples_per_sec"}
    expected |= {"throughput/mfu", "throughput/data_fraction", "throughput/padding_efficiency"}
    assert expected <= set(logged), expected - set(logged)
    assert all(0 < mfu <= 1 for _, mfu in logged["throughput/mfu"])
    rates = [rate for _, rate in logged["lr/decay"]]
    assert max(rates) <= 5e-3 and rates[-1] < max(rates) / 4  # warmup, then decay towards 0
    ((_, final),) = logged["val_loss"]  # one validation, at the end
    assert final < initial - 1.0, (initial, final)

    last = str(run_dir / "checkpoints" / "last.ckpt")
    checkpoint = torch.load(last, weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["hidden_size"] == 64
    assert checkpoint["hyper_parameters"]["tokenizer"]  # linked from the data
    assert checkpoint["global_step"] == 60
    # Speed is the machine's, not the model's: no checkpoint carries it.
    assert not set(checkpoint["hyper_parameters"]) & (set(Speed().as_dict()) | set(LEGACY))

    # The config that trained, plus --ckpt_path: no callback to comment out.
    tested = run_cli(
        ["test", *small_run(en_samples, tmp_path / "test"), *tiny_model(), "--ckpt_path", last]
    )
    metrics = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
    assert metrics["test/loss"] == pytest.approx(
        metrics["test/mlm_loss"] + metrics["test/nsp_loss"], rel=0.02
    )
    assert 0.0 < metrics["test/mlm_accuracy"] < 1.0
    assert metrics["test/perplexity"] < float(torch.exp(torch.tensor(initial)))

    # A checkpoint of an older bertlab kept its speed switches under `model`: it still tests,
    # with this machine's own choices.
    checkpoint["hyper_parameters"] |= {
        "bf16_compute": True, "attn_implementation": "eager", "fast_dropout": True,
        "fused_mlm_loss": True, "sparse_mlm_head": True, "pad_masked_to": 8,
        "keep_freed_memory": True, "compile": False, "optimizer_implementation": "auto",
    }  # fmt: skip
    legacy = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy)
    old = run_cli(
        [
            "test",
            *small_run(en_samples, tmp_path / "old"),
            *tiny_model(),
            "--ckpt_path",
            str(legacy),
        ]
    )
    assert float(old.trainer.callback_metrics["test/loss"]) == pytest.approx(
        metrics["test/loss"], rel=1e-4
    )


def test_user_mistake_is_one_line_through_the_real_command():
    result = run_tool(
        "bertlab", "fit", "--config", TINY_CONFIG, "--model.hidden_sise", "3", check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hidden_sise" in errors[0], result.stderr


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    return str(make_tokenizer(tmp_path_factory.mktemp("other_tokenizer")))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trainer.max_steps=-1"], "trainer.max_steps is required for lr_schedule linear"),
        (["--model.hidden_sise=3"], "hidden_sise"),
        (["--model.hidden_size=abc"], "hidden_size"),
        (["--model.objective=nsp"], "--model.objective nsp: expected one of mlm_nsp, mlm"),
        (["--trainer.precision=17"], "--trainer.precision 17: expected one of 64, 32, 16,"),
        (["--optimizer=Nope"], "--optimizer Nope: Expected a dot import path string: Nope"),
        (
            [
                '--trainer.callbacks+={"class_path": "pytorch_lightning.callbacks.EarlyStopping", '
                '"init_args": {"monitor": 3}}'
            ],
            "'pytorch_lightning.callbacks.EarlyStopping': --monitor 3: expected str",
        ),  # fmt: skip
        (["--model.max_position_embeddings=32"], "max_position_embeddings"),
        (["--model.num_attention_heads=3"], "num_attention_heads"),
        (["--data.tokenizer=OTHER"], "does not match the tokenizer"),
        (["--model.trainable=[bert.encoder.layers.*]"], "matches no parameter"),
        (["--speed.bf16_working_copy=maybe"], "bf16_working_copy"),
        (["--speed.pad_masked_to=0"], "pad_masked_to 0"),
        (["--speed.attn_implementation=fast"], "attn_implementation"),
        (["--model.bf16_compute=true"], "use speed.bf16_working_copy"),  # moved
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_bad_configs_end_as_one_line(extra, message, en_samples, other_tokenizer, tmp_path, capsys):
    extra = [e.replace("OTHER", other_tokenizer) for e in extra]
    args = ["fit", *small_run(en_samples, tmp_path, steps=2), "--model.hidden_size=32", *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors


@pytest.mark.parametrize(
    ("subcommand", "key", "says"),
    [
        ("test", "limit_test_batches", "would run no batch and report nothing"),
        ("validate", "limit_val_batches", "would run no batch and report nothing"),
        ("fit", "limit_train_batches", "would train on no batch and save weights nobody trained"),
        ("fit", "max_steps", "would train on no batch and save weights nobody trained"),
    ],
)
def test_a_run_of_zero_batches_is_refused(subcommand, key, says, en_samples, tmp_path, capsys):
    # Lightning runs these and exits 0: test and validate print nothing, fit saves last.ckpt.
    root = tmp_path / "runs"
    args = [subcommand, *small_run(en_samples, root, steps=2), "--model.hidden_size=32",
            "--model.warmup_steps=1"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"--trainer.{key}=0"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --trainer.{key} 0: bertlab {subcommand} {says}"]
    assert not root.exists()


def test_accumulating_zero_batches_is_refused(en_samples, tmp_path, capsys):
    # Lightning's training step divides by it: a ZeroDivisionError traceback.
    root = tmp_path / "runs"
    args = ["fit", *small_run(en_samples, root, steps=2), "--model.hidden_size=32",
            "--model.warmup_steps=1", "--trainer.accumulate_grad_batches=0"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: --trainer.accumulate_grad_batches 0 must be at least 1"]
    assert not root.exists()


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--trainer.max_time=00:00:00:00", "--trainer.max_time 00:00:00:00: bertlab fit would "
         "train for no time"),
        ("--throughput.window=0", "--throughput.window 0 must be at least 1"),
    ],
)  # fmt: skip
def test_a_budget_of_nothing_is_refused(flag, says, en_samples, tmp_path, capsys):
    # Lightning stops at once and exits 0 (max_time); a window of 0 batches logs no rate.
    root = tmp_path / "runs"
    args = ["fit", *small_run(en_samples, root, steps=2), "--model.hidden_size=32",
            "--model.warmup_steps=1", flag]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], errors


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  hidden_size: [1, 2\n", "not valid YAML at line 3, column 1"),
        ("- a\n- b\n", "a YAML list, not a mapping of sections"),
        (b"model: {hidden_size: \xff}\n", "not UTF-8 text"),
    ],
    ids=["broken", "a list", "not UTF-8"],
)
def test_a_broken_config_file_is_named(text, message, tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    for args in (["fit", "--config", str(config)], ["fit", f"--config={config}"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == err.splitlines()[0] and err.startswith(f"error: --config {config}: ")
        assert message in err


def save_small_bert(folder: Path, vocab_size: int) -> BertForPreTraining:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    model = BertForPreTraining(config)
    model.save_pretrained(folder)
    return model


def pretrained_run(recipe: str, samples: Path, pretrained: Path, root: Path) -> Path:
    run_cli(
        [
            "fit",
            *small_run(samples, root, config=f"configs/{recipe}.yaml", steps=4),
            f"--model.from_pretrained={pretrained}",
            "--model.warmup_steps=1",
            "--model.lr=1e-2",
            "--trainer.accumulate_grad_batches=1",
            "--data.num_workers=0",
        ]
    )
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_wordemb_transfer_recipe_trains_only_the_lexical_layer(en_samples, tmp_path):
    source = save_small_bert(tmp_path / "english-bert", vocab_size=500)
    last = pretrained_run(
        "wordemb-transfer", en_samples, tmp_path / "english-bert", tmp_path / "run"
    )
    state = torch.load(last, weights_only=True, map_location="cpu")["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    embeddings = state["bert.embeddings.word_embeddings.weight"]
    assert embeddings.shape == (3000, 32)  # the new vocabulary (en_samples' tokenizer)
    assert not torch.equal(embeddings[:500], source.bert.embeddings.word_embeddings.weight)
    lexical = {"bert.embeddings.word_embeddings.weight", "cls.predictions.bias"}
    lexical |= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    for name, value in source.state_dict().items():
        if name not in lexical:
            assert torch.equal(state[name], value), f"frozen {name} changed"


def test_continue_mlm_recipe_trains_everything(en_samples, tmp_path):
    source = save_small_bert(tmp_path / "bert", vocab_size=3000)
    last = pretrained_run("continue-mlm", en_samples, tmp_path / "bert", tmp_path / "run")
    state = torch.load(last, weights_only=True, map_location="cpu")["state_dict"]
    layer = "bert.encoder.layer.0.output.dense.weight"
    assert not torch.equal(state[f"model.{layer}"], source.state_dict()[layer])
    # NSP is not trained in an MLM-only run: its head is left as it was.
    head = "cls.seq_relationship.weight"
    assert torch.equal(state[f"model.{head}"], source.state_dict()[head])


def test_resume_from_last_checkpoint_equals_an_uninterrupted_run(en_samples, tmp_path):
    """fit 8 steps == fit 4 steps, then fit to 8 with --ckpt_path last.ckpt (bit-identical)."""
    common = [*tiny_model(), "--model.lr_schedule=constant", "--trainer.limit_val_batches=2"]

    def fit(root: Path, steps: int, *extra: str) -> dict:
        args = small_run(en_samples, root, steps=steps)
        run_cli(["fit", *args, *common, "--trainer.val_check_interval=100", *extra])
        last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        return torch.load(last, weights_only=True, map_location="cpu")

    straight = fit(tmp_path / "straight", 8)
    half = fit(tmp_path / "first_half", 4)
    assert half["global_step"] == 4
    first_half = tmp_path / "first_half" / "lightning_logs" / "version_0" / "checkpoints"
    resumed = fit(tmp_path / "resumed", 8, f"--ckpt_path={first_half / 'last.ckpt'}")
    assert resumed["global_step"] == straight["global_step"] == 8
    for name, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
