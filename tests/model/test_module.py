"""BertPretraining: losses, sparse head, freezing, optimizer, schedule, checkpoints, pretrained.

Run: .venv/bin/python -m pytest tests/model/test_module.py -q

Model-level tests on hand-made batches and a throwaway tokenizer, so they run without the data
pipeline; the end-to-end runs through the `bertlab` command are in tests/train/test_cli.py.
"""

from __future__ import annotations

import math
import os

import pytest
import pytorch_lightning as pl
import torch
from tiny import TINY, make_batch, make_tokenizer, no_dropout
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForPreTraining

from bertlab.model.heads import pretraining_losses
from bertlab.model.module import BertPretraining
from bertlab.model.optim import lr_multiplier, parameter_groups
from bertlab.speed.bf16 import Bf16WorkingCopy
from bertlab.speed.settings import DeviceFacts, Speed

AMX = DeviceFacts(type="cpu", name="fake AMX CPU", isa="amx", bf16_speedup=8.0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return str(make_tokenizer(tmp_path_factory.mktemp("tok")))


def test_sparse_head_equals_dense_loss_and_gradients():
    torch.manual_seed(0)
    module = BertPretraining(vocab_size=100, **TINY, **no_dropout())
    batch = make_batch()
    results = {}
    for sparse in (True, False):
        module.zero_grad()
        out = pretraining_losses(module.model, batch, "mlm_nsp", sparse=sparse)
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in module.model.named_parameters()}
        results[sparse] = (out, grads)
    (sparse_out, sparse_grads), (dense_out, dense_grads) = results[True], results[False]
    for key in ("loss", "mlm_loss", "nsp_loss"):
        assert torch.allclose(sparse_out[key], dense_out[key], atol=1e-5, rtol=0), key
    assert int(sparse_out["mlm_count"]) == int((batch["labels"] != -100).sum())
    assert int(sparse_out["mlm_correct"]) == int(dense_out["mlm_correct"])
    for name, grad in dense_grads.items():
        assert torch.allclose(sparse_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_losses_match_transformers_own_loss():
    """Our dense path computes what BertForPreTraining.forward computes."""
    torch.manual_seed(0)
    module = BertPretraining(vocab_size=100, **TINY, **no_dropout())
    module.eval()
    batch = make_batch()
    reference = module.model(**batch).loss
    ours = pretraining_losses(module.model, batch, "mlm_nsp", sparse=True)["loss"]
    assert torch.allclose(ours, reference, atol=1e-5)


def test_mlm_objective_and_empty_mask():
    module = BertPretraining(vocab_size=100, objective="mlm", **TINY)
    batch = make_batch(nsp=False)
    out = module(batch)
    assert "nsp_loss" not in out and torch.equal(out["loss"], out["mlm_loss"])
    # NSP-only parameters never receive gradients in an MLM run: frozen, so DDP sees no unused
    # trainable parameter.
    assert not any(
        n.startswith(("bert.pooler", "cls.seq_relationship")) for n in module.trainable_names
    )
    batch["labels"].fill_(-100)
    assert torch.isfinite(module(batch)["loss"])
    nsp_module = BertPretraining(vocab_size=100, **TINY)
    with pytest.raises(ValueError, match="next_sentence_label"):
        nsp_module(make_batch(nsp=False))


def test_tokenizer_sets_vocabulary_and_padding(tokenizer):
    module = BertPretraining(tokenizer=tokenizer, **TINY)
    assert module.model.config.vocab_size == 100
    assert module.model.config.pad_token_id == 0
    with pytest.raises(ValueError, match="disagrees"):
        BertPretraining(tokenizer=tokenizer, vocab_size=123, **TINY)
    with pytest.raises(ValueError, match="tokenizer does not exist"):
        BertPretraining(tokenizer="/nonexistent/tokenizer", **TINY)
    with pytest.raises(ValueError, match="model.tokenizer is required"):
        BertPretraining(**TINY)


def test_trainable_patterns():
    module = BertPretraining(vocab_size=100, trainable="word_embeddings", **TINY)
    assert module.trainable_names == [
        "bert.embeddings.word_embeddings.weight",
        "cls.predictions.bias",
    ]
    assert module.model.cls.predictions.decoder.weight.requires_grad  # tied: the same tensor
    module = BertPretraining(
        vocab_size=100, trainable=["bert.encoder.layer.1.*", r"re:cls\.predictions\..*"], **TINY
    )
    # The decoder weight is the word-embedding matrix, so the `cls.predictions.*` pattern trains it.
    allowed = ("bert.encoder.layer.1.", "cls.predictions.", "bert.embeddings.word_embeddings.")
    assert all(n.startswith(allowed) for n in module.trainable_names)
    assert "bert.embeddings.word_embeddings.weight" in module.trainable_names
    assert "cls.predictions.transform.dense.weight" in module.trainable_names
    with pytest.raises(ValueError, match="matches no parameter"):
        BertPretraining(vocab_size=100, trainable=["bert.encoder.layers.*"], **TINY)
    with pytest.raises(ValueError, match="matches no parameter"):
        BertPretraining(vocab_size=100, trainable="word_embedding", **TINY)


def test_parameter_groups_skip_decay_on_biases_and_norms():
    module = BertPretraining(vocab_size=100, trainable="word_embeddings", **TINY)
    groups = parameter_groups(module.model, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(module.model.bert.embeddings.word_embeddings.weight)}
    assert [p.shape for p in groups[1]["params"]] == [torch.Size([100])]


def test_lr_schedule():
    linear = lr_multiplier(warmup_steps=4, max_steps=10, schedule="linear")
    assert [round(linear(s), 4) for s in range(11)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 0.8333, 0.6667, 0.5, 0.3333, 0.1667, 0.0
    ]  # fmt: skip
    constant = lr_multiplier(warmup_steps=2, max_steps=-1, schedule="constant")
    assert [constant(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="trainer.max_steps is required for lr_schedule linear"):
        lr_multiplier(warmup_steps=2, max_steps=-1, schedule="linear")
    with pytest.raises(ValueError, match="smaller than --trainer.max_steps"):
        lr_multiplier(warmup_steps=20, max_steps=10, schedule="linear")


class Batches(torch.utils.data.Dataset):
    def __init__(self, n: int, **kwargs):
        self.batches = [make_batch(seed=i, **kwargs) for i in range(n)]

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def fit(module, tmp_path, max_steps=6, **trainer_kwargs):
    settings = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    settings.update(trainer_kwargs)
    trainer = pl.Trainer(max_steps=max_steps, default_root_dir=tmp_path, **settings)
    loader = DataLoader(Batches(6), batch_size=None)
    trainer.fit(module, loader, DataLoader(Batches(2), batch_size=None))
    return trainer


def test_frozen_parameters_stay_bit_identical(tmp_path):
    torch.manual_seed(0)
    module = BertPretraining(
        vocab_size=100,
        trainable="word_embeddings",
        weight_decay=0.5,
        lr=1e-2,
        warmup_steps=1,
        **TINY,
    )
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    fit(module, tmp_path, gradient_clip_val=1.0, precision="bf16-mixed")
    for name, parameter in module.model.named_parameters():
        if name in module.trainable_names:
            assert not torch.equal(parameter, before[name]), f"{name} did not train"
        else:
            assert torch.equal(parameter, before[name]), f"frozen {name} changed"
    assert (
        module.model.cls.predictions.decoder.weight
        is module.model.bert.embeddings.word_embeddings.weight
    )


def test_training_lowers_loss_and_checkpoint_loads_weights_only(tmp_path):
    torch.manual_seed(0)
    module = BertPretraining(vocab_size=100, lr=3e-3, warmup_steps=2, **TINY, **no_dropout())
    batch = make_batch(seed=0)
    module.eval()
    with torch.no_grad():
        before = float(module(batch)["loss"])
    module.train()
    trainer = fit(module, tmp_path, max_steps=30)
    module.eval()
    with torch.no_grad():
        after = float(module(batch)["loss"])
    assert after < before - 0.3, (before, after)
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == 0.0  # decayed to zero
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["hidden_size"] == 32
    assert checkpoint["bert_config"]["vocab_size"] == 100
    rebuilt = BertForPreTraining(BertConfig(**checkpoint["bert_config"]))
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    rebuilt.load_state_dict(state)
    loaded = BertPretraining.load_from_checkpoint(path, weights_only=True)
    loaded.eval()
    with torch.no_grad():
        assert math.isclose(float(loaded(batch)["loss"]), after, rel_tol=1e-6)


def test_from_pretrained_continues_and_resizes(tmp_path, tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=80, pad_token_id=0, **TINY)
    source = BertForPreTraining(config)
    source.save_pretrained(tmp_path / "pretrained")
    same = BertPretraining(
        vocab_size=80, from_pretrained=str(tmp_path / "pretrained"), hidden_size=999
    )
    assert same.model.config.hidden_size == 32  # the folder's config decides the sizes
    for (name, a), (_, b) in zip(
        source.named_parameters(), same.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    # A 100-token tokenizer: the word-embedding transfer case.
    resized = BertPretraining(
        tokenizer=tokenizer,
        from_pretrained=str(tmp_path / "pretrained"),
        trainable="word_embeddings",
    )
    embeddings = resized.model.bert.embeddings.word_embeddings.weight
    assert embeddings.shape == (100, 32) and resized.model.cls.predictions.bias.shape == (100,)
    assert torch.equal(embeddings[:80], source.bert.embeddings.word_embeddings.weight)
    assert resized.model.cls.predictions.decoder.weight is embeddings
    fresh = BertPretraining(
        tokenizer=tokenizer,
        from_pretrained=str(tmp_path / "pretrained"),
        reinit_word_embeddings=True,
    )
    assert not torch.equal(
        fresh.model.bert.embeddings.word_embeddings.weight[5:80],
        source.bert.embeddings.word_embeddings.weight[5:80],
    )
    assert torch.equal(
        fresh.model.bert.encoder.layer[0].output.dense.weight,
        source.bert.encoder.layer[0].output.dense.weight,
    )
    assert torch.isfinite(fresh(make_batch())["loss"])
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        BertPretraining(vocab_size=80, from_pretrained=str(tmp_path / "nothing"))


def test_from_pretrained_refuses_another_tokenizer(tmp_path, tokenizer):
    """A folder with its own tokenizer must agree with the data's, unless embeddings are new."""
    folder = tmp_path / "pretrained"
    BertForPreTraining(BertConfig(vocab_size=80, pad_token_id=0, **TINY)).save_pretrained(folder)
    make_tokenizer(folder, num_words=75)  # w0..w74: the data's tokenizer extends it
    extended = BertPretraining(tokenizer=tokenizer, from_pretrained=str(folder))
    assert extended.model.config.vocab_size == 100
    make_tokenizer(folder, num_words=75, prefix="v")  # same size, other words
    with pytest.raises(ValueError, match="another tokenizer"):
        BertPretraining(tokenizer=tokenizer, from_pretrained=str(folder))
    transfer = BertPretraining(
        tokenizer=tokenizer, from_pretrained=str(folder), reinit_word_embeddings=True
    )
    assert transfer.model.config.vocab_size == 100


def test_bf16_working_copy_trains_a_bf16_copy_against_fp32_masters(tmp_path, monkeypatch):
    torch.manual_seed(0)
    kwargs = dict(
        vocab_size=100, lr=3e-3, warmup_steps=2, trainable=["bert.encoder.*", "cls.*"], **TINY
    )
    module = BertPretraining(speed=Speed(bf16_working_copy=True), **kwargs, **no_dropout())
    assert "speed" not in module.hparams
    batch = make_batch(seed=0)
    with torch.no_grad():
        before = float(module(batch)["loss"])
    frozen = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    fit(module, tmp_path, max_steps=30, accumulate_grad_batches=2, gradient_clip_val=1.0)
    assert all(p.dtype == torch.float32 for p in module.model.parameters())  # the masters
    for name, parameter in module.model.named_parameters():
        changed = not torch.equal(parameter, frozen[name])
        assert changed == (name in module.trainable_names), name
    assert "bert.embeddings.position_embeddings.weight" not in module.trainable_names
    with torch.no_grad():
        assert float(module(batch)["loss"]) < before - 0.3
    # The bf16 copy computes the fp32 model's loss up to bf16 rounding.
    working = Bf16WorkingCopy(module.model)
    with torch.no_grad():
        fp32 = pretraining_losses(module.model, batch)["loss"]
        bf16 = pretraining_losses(working.module, batch)["loss"]
    assert torch.allclose(bf16, fp32, rtol=2e-2)
    explicit = BertPretraining(speed=Speed(bf16_working_copy=True), **kwargs)
    with pytest.raises(ValueError, match="trainer.precision 32-true"):
        fit(explicit, tmp_path, precision="bf16-mixed")
    # Chosen by `auto` (on a machine with AMX) for a 32-true run, the copy steps aside for a
    # run that casts itself.
    monkeypatch.setattr("bertlab.model.module.probe_device", lambda: AMX)
    module = BertPretraining(**kwargs)
    assert module.speed.bf16_working_copy
    fit(module, tmp_path / "autocast", max_steps=3, precision="bf16-mixed")
    assert module.compute_dtype is None


@pytest.mark.skipif(
    "ATEN_CPU_CAPABILITY" in os.environ or "ONEDNN_MAX_CPU_ISA" in os.environ,
    reason="inductor's CPU code gave NaN under the ISA-limit emulation (speed.compile is off)",
)
def test_compile_computes_the_same_loss_and_gradients():
    torch.manual_seed(0)
    eager = BertPretraining(vocab_size=100, **TINY, **no_dropout())
    compiled = BertPretraining(vocab_size=100, speed=Speed(compile=True), **TINY, **no_dropout())
    compiled.load_state_dict(eager.state_dict())
    compiled.setup("fit")
    batch = make_batch()
    losses = []
    for module in (eager, compiled):
        loss = module(batch)["loss"]
        loss.backward()
        losses.append(loss)
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    for (name, a), (_, b) in zip(
        eager.model.named_parameters(), compiled.model.named_parameters(), strict=True
    ):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name
    assert list(compiled.state_dict()) == list(eager.state_dict())  # keys unchanged


def test_callbacks_final_checkpoint_and_throughput(tmp_path):
    from bertlab.train.checkpointing import Checkpoint
    from bertlab.train.throughput import ThroughputMonitor

    module = BertPretraining(vocab_size=100, warmup_steps=1, **TINY)
    checkpoint = Checkpoint(dirpath=tmp_path, monitor="val_loss", save_last=True)
    monitor = ThroughputMonitor(peak_flops=1e12, window=4, log_every_n_steps=5)
    # 5 steps, validation every 3 batches: fit ends between two validations.
    callbacks = [checkpoint, monitor]
    fit(module, tmp_path, 5, val_check_interval=3, callbacks=callbacks, enable_checkpointing=True)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 5
    assert any(p.name.startswith("epoch") for p in tmp_path.iterdir())  # the step-3 validation
    batches = Batches(6).batches[3:5]  # the window restarts after the validation
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    assert monitor.last["throughput/padding_efficiency"] == pytest.approx(real / padded)
    assert monitor.last["throughput/tokens_per_sec"] > 0
    assert 0 < monitor.last["throughput/mfu"] <= 1
    assert monitor.last["throughput/samples_per_sec"] * real / 8 == pytest.approx(
        monitor.last["throughput/tokens_per_sec"]
    )


def test_sinusoidal_position_init_relates_neighbours_at_the_initial_scale():
    from bertlab.model.module import BertPretraining

    def table(position_init: str) -> torch.Tensor:
        module = BertPretraining(
            vocab_size=100, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=128, max_position_embeddings=64, objective="mlm",
            position_init=position_init, initializer_range=0.05,
        )  # fmt: skip
        return module.model.bert.embeddings.position_embeddings.weight.detach()

    sinusoids, drawn = table("sinusoidal"), table("random")
    assert float(sinusoids.std()) == pytest.approx(0.05, rel=1e-3)
    cosine = torch.nn.functional.cosine_similarity
    assert float(cosine(sinusoids[10], sinusoids[11], dim=0)) > 0.9  # neighbours look alike
    assert abs(float(cosine(drawn[10], drawn[11], dim=0))) < 0.5
    with pytest.raises(ValueError, match="model.position_init"):
        table("learned")
