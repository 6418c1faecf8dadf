"""Tests of the streaming data: splitting, equal counts, exact resume, meta.json checks, bad shards.

Run: .venv/bin/python -m pytest tests/data/test_data.py -q

Most tests write tiny synthetic shards whose samples encode their own id in the token ids, so a
batch tells which samples it holds; one test reads the real English samples (`en_samples`).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import make_tokenizer

from bertlab.data.datamodule import BertDataModule, StreamLoader
from bertlab.data.masking import MaskingCollator
from bertlab.data.stream import round_robin_quota
from bertlab.samples.shard_reader import parse_sample
from bertlab.tokenizer.training import tokenizer_fingerprint

VOCAB = 100
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def sample_ids(uid: int) -> list[int]:
    """[CLS] three base-90 digits of uid, a uid-dependent run of filler, [SEP]."""
    digits = [10 + (uid // 8100) % 90, 10 + (uid // 90) % 90, 10 + uid % 90]
    return [2, *digits, *([5] * (uid % 7)), 3]


def write_samples(
    folder: Path,
    sizes: list[int],
    tokenizer: Path | None = None,
    first_uid: int = 0,
    nsp: bool = True,
    gz: bool = True,
    fingerprint: str | None = None,
    max_seq_len: int = 16,
) -> list[int]:
    """Write shards of the given sizes and meta.json as prepare_samples would; return the uids.

    Without `tokenizer`, a word-level tokenizer of VOCAB ids is made beside the folder; without
    `fingerprint`, meta.json records the tokenizer's own.
    """
    folder.mkdir(parents=True)
    if tokenizer is None:
        tokenizer = folder.parent / "tokenizer"
        if not (tokenizer / "tokenizer.json").exists():
            make_tokenizer(tokenizer, num_words=VOCAB - len(SPECIAL))
    if fingerprint is None:
        fingerprint = tokenizer_fingerprint(str(tokenizer)) if tokenizer.is_dir() else "f" * 16
    uid, shards, uids = first_uid, [], []
    for i, size in enumerate(sizes):
        name = f"shard-{i:05d}.jsonl" + (".gz" if gz else "")
        lines = []
        for _ in range(size):
            ids = sample_ids(uid)
            sample = {"input_ids": ids, "token_type_ids": [0] * len(ids)}
            if nsp:
                sample["next_sentence_label"] = uid % 2
            lines.append(json.dumps(sample) + "\n")
            uids.append(uid)
            uid += 1
        data = "".join(lines).encode()
        (folder / name).write_bytes(gzip.compress(data) if gz else data)
        shards.append({"file": name, "num_samples": size, "num_tokens": 0})
    meta = {
        "format": "bertlab.samples",
        "format_version": 1,
        "tokenizer": {
            "path": str(tokenizer),
            "name": tokenizer.name,
            "vocab_size": VOCAB,
            "fingerprint": fingerprint,
            "special_ids": SPECIAL,
        },
        "max_seq_len": max_seq_len,
        "nsp": nsp,
        "num_samples": sum(sizes),
        "shards": shards,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return uids


def decode(batch: dict) -> list[int]:
    """The uids of a batch's samples (undoing the masking from the labels)."""
    ids = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
    digits = (ids[:, 1:4] - 10).tolist()
    return [a * 8100 + b * 90 + c for a, b, c in digits]


def loader(folder, split="train", rank=0, world_size=1, num_workers=0, **kwargs) -> StreamLoader:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("shuffle_buffer_size", 16)
    dm = BertDataModule(**{f"{split}_files": str(folder)}, **kwargs, num_workers=num_workers)
    dl = getattr(dm, f"{split}_dataloader")()
    dl.distributed = (rank, world_size)
    return dl


def take(dl, n=None) -> list[dict]:
    it = iter(dl)
    return [next(it) for _ in range(n)] if n is not None else list(it)


def test_round_robin_quota_matches_the_dataloader_order():
    assert round_robin_quota([3, 1, 2], 6) == [3, 1, 2]
    assert round_robin_quota([3, 1, 2], 4) == [2, 1, 1]  # order: w0 w1 w2 w0 | w2 w0
    assert round_robin_quota([3, 1, 2], 5) == [2, 1, 2]
    assert round_robin_quota([0, 5], 3) == [0, 3]


@pytest.mark.parametrize(
    "sizes, world_size, num_workers",
    [
        ([30, 31, 29, 30, 30], 2, 2),  # by shard
        ([200, 13, 9, 7, 5], 2, 1),  # by shard, one shard much larger
        ([57, 40], 2, 2),  # by line: fewer shards than readers
        ([23], 3, 1),  # by line, one shard
    ],
)
def test_every_sample_at_most_once_and_equal_batches_per_rank(
    tmp_path, sizes, world_size, num_workers
):
    uids = write_samples(tmp_path / "train", sizes)
    seen, counts = [], []
    for rank in range(world_size):
        dl = loader(tmp_path / "train", rank=rank, world_size=world_size, num_workers=num_workers)
        batches = take(dl)
        assert len(batches) == len(dl)
        assert all(len(b["input_ids"]) == 4 for b in batches)
        counts.append(len(batches))
        seen += [u for b in batches for u in decode(b)]
    assert len(set(counts)) == 1, counts
    assert len(seen) == len(set(seen)) and set(seen) <= set(uids)
    # Only partial batches and a larger rank's surplus are dropped.
    slots = world_size * num_workers
    shard_mode = len(sizes) >= slots
    assert len(uids) - len(seen) < slots * 4 + (max(sizes) * num_workers if shard_mode else 0)


def test_shuffled_differently_every_epoch_and_reproducibly(tmp_path):
    write_samples(tmp_path / "train", [40, 40])
    dl = loader(tmp_path / "train")
    epoch0, epoch1 = take(dl), take(dl)
    order0, order1 = [decode(b) for b in epoch0], [decode(b) for b in epoch1]
    assert sorted(sum(order0, [])) == sorted(sum(order1, []))
    assert order0 != order1
    again = take(loader(tmp_path / "train"))
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(epoch0, again, strict=True)
    )
    # Lightning's epoch (set through the sampler) picks the epoch too.
    dl = loader(tmp_path / "train")
    dl.sampler.set_epoch(1)
    assert [decode(b) for b in take(dl)] == order1


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [3, 15])  # mid-epoch; the last batch of epoch 0
def test_state_dict_resumes_with_the_identical_next_batches(tmp_path, num_workers, stop):
    write_samples(tmp_path / "train", [19, 22, 21])
    reference = loader(tmp_path / "train", num_workers=num_workers)
    assert len(reference) == 15
    expected = take(reference) + take(reference, 4)  # epoch 0, then the start of epoch 1
    first = loader(tmp_path / "train", num_workers=num_workers)
    it = iter(first)
    for _ in range(stop):
        next(it)
    state = first.state_dict()
    assert state["epoch"] == 0 and state["batches"] == stop
    del it
    resumed = loader(tmp_path / "train", num_workers=num_workers)
    resumed.load_state_dict(state)
    got = take(resumed) if stop < 15 else []
    got += take(resumed, 4)
    for a, b in zip(expected[stop:], got, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_resume_with_other_workers_is_refused(tmp_path):
    write_samples(tmp_path / "train", [40])
    state = loader(tmp_path / "train", num_workers=0).state_dict()
    with pytest.raises(ValueError, match="num_workers 0 -> 2"):
        loader(tmp_path / "train", num_workers=2).load_state_dict(state)


@pytest.mark.parametrize("world_size, num_workers", [(1, 0), (1, 2), (2, 0), (3, 2)])
def test_evaluation_reads_every_sample_with_fixed_masking(tmp_path, world_size, num_workers):
    uids = write_samples(tmp_path / "valid", [9, 8])
    single = take(loader(tmp_path / "valid", split="val", batch_size=3))
    per_rank = []
    for rank in range(world_size):
        dl = loader(tmp_path / "valid", "val", rank, world_size, num_workers, batch_size=3)
        batches = take(dl)
        assert len(batches) == len(dl)
        per_rank.append([u for b in batches for u in decode(b)])
    assert len({len(b) for b in per_rank}) == 1
    seen = Counter(u for rank in per_rank for u in rank)
    assert set(seen) == set(uids)
    assert sum(seen.values()) - len(uids) <= world_size - 1
    if world_size == 1:  # the same batches, whatever the number of workers, every time
        again = take(loader(tmp_path / "valid", "val", num_workers=num_workers, batch_size=3))
        for a, b in zip(single, again, strict=True):
            assert torch.equal(a["input_ids"], b["input_ids"])
            assert torch.equal(a["labels"], b["labels"])


def test_attributes_from_meta_and_model_checks(tmp_path):
    write_samples(tmp_path / "train", [10], nsp=False)
    dm = BertDataModule(train_files=str(tmp_path / "train"))
    assert dm.tokenizer_path == str(tmp_path / "tokenizer")
    assert (dm.max_seq_len, dm.vocab_size, dm.nsp) == (16, VOCAB, False)
    assert dm.special_ids == SPECIAL
    dm.check_model(max_position_embeddings=16, objective="mlm", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="longer than --model.max_position_embeddings 8"):
        dm.check_model(max_position_embeddings=8, objective="mlm", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="mlm_nsp needs NSP labels"):
        dm.check_model(max_position_embeddings=16, objective="mlm_nsp", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="vocabulary has 99 tokens"):
        dm.check_model(max_position_embeddings=16, objective="mlm", vocab_size=99)


def test_paths_globs_and_lists(tmp_path):
    write_samples(tmp_path / "a", [5, 6], gz=False)
    write_samples(tmp_path / "b", [7], first_uid=100)
    dm = BertDataModule(
        train_files=[str(tmp_path / "a" / "shard-00001.jsonl"), str(tmp_path / "b")]
    )
    assert dm.sets["train"].num_samples == 13
    dm = BertDataModule(train_files=str(tmp_path / "*" / "shard-*"))
    assert dm.sets["train"].num_samples == 18


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file, directory or glob match"),
        (lambda p: p.mkdir(), "has no meta.json"),
        (lambda p: write_samples(p, [0]), "hold no samples"),
        (lambda p: (write_samples(p, [3]), (p / "shard-00000.jsonl.gz").unlink()), "missing"),
    ],
)
def test_clear_errors_for_bad_folders(tmp_path, make, message):
    make(tmp_path / "train")
    with pytest.raises(ValueError, match=message):
        BertDataModule(train_files=str(tmp_path / "train"))


def test_tokenizers_must_agree(tmp_path):
    write_samples(tmp_path / "train", [5])
    write_samples(tmp_path / "valid", [5], fingerprint="0" * 16)
    with pytest.raises(ValueError, match="different tokenizers"):
        BertDataModule(train_files=str(tmp_path / "train"), val_files=str(tmp_path / "valid"))
    write_samples(tmp_path / "gone", [5], tokenizer=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="pass --data.tokenizer"):
        BertDataModule(train_files=str(tmp_path / "gone"))


def _corrupt(folder: Path, line: int, text: str | None = None, truncate: bool = False) -> Path:
    path = folder / "shard-00000.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    if text is not None:
        lines[line - 1] = text + "\n"
    data = gzip.compress("".join(lines).encode())
    path.write_bytes(data[: len(data) // 2] if truncate else data)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"input_ids": [2, 3', "malformed JSON"),
        (json.dumps({"input_ids": [2] + [7] * 20 + [3], "token_type_ids": [0] * 22}), "longer"),
        (json.dumps({"input_ids": [2, 100, 3], "token_type_ids": [0] * 3}), "token id 100"),
        (json.dumps({"input_ids": [2, 7, 3], "token_type_ids": [0, 0]}), "token_type_ids"),
    ],
)
def test_bad_lines_fail_naming_file_and_line(tmp_path, text, message):
    write_samples(tmp_path / "train", [12], nsp=False)
    path = _corrupt(tmp_path / "train", 5, text)
    with pytest.raises(ValueError, match=f"{path}:5: .*{message}"):
        take(loader(tmp_path / "train", shuffle_buffer_size=0))


def test_skip_bad_lines_keeps_batch_counts(tmp_path, caplog):
    write_samples(tmp_path / "train", [12], nsp=False)
    _corrupt(tmp_path / "train", 5, "not json")
    batches = take(loader(tmp_path / "train", shuffle_buffer_size=0, on_bad_sample="skip"))
    assert [len(b["input_ids"]) for b in batches] == [4, 3, 4]
    assert "skipped 1 bad sample" in caplog.text


def test_truncated_gzip_and_wrong_counts_fail(tmp_path):
    write_samples(tmp_path / "train", [400], nsp=False)
    path = _corrupt(tmp_path / "train", 1, truncate=True)
    with pytest.raises(ValueError, match=f"{path}: truncated or corrupt gzip after line"):
        take(loader(tmp_path / "train", on_bad_sample="skip"))
    write_samples(tmp_path / "short", [10], nsp=False)
    meta = json.loads((tmp_path / "short" / "meta.json").read_text())
    meta["shards"][0]["num_samples"] = meta["num_samples"] = 12  # consistent, but not the file's
    (tmp_path / "short" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="has 10 lines but its meta.json says 12"):
        take(loader(tmp_path / "short"))


class _Recorder(pl.LightningModule):
    """A trivial model that records the samples of every training batch it sees."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(decode(batch))
        return (self.weight * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(folder: Path, root: Path, max_steps: int, num_workers: int, ckpt_path=None):
    model = _Recorder()
    every_step = pl.callbacks.ModelCheckpoint(
        dirpath=root, every_n_train_steps=1, save_top_k=-1, save_last=True
    )
    trainer = pl.Trainer(
        max_steps=max_steps,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[every_step],
        accelerator="cpu",
    )
    dm = BertDataModule(train_files=str(folder), batch_size=4, num_workers=num_workers)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize("num_workers, epoch_end", [(0, 7), (2, 6)])
def test_lightning_resumes_from_a_checkpoint_exactly(tmp_path, num_workers, epoch_end):
    """Resume from a mid-epoch checkpoint and one at the end of epoch 0: the same batches."""
    write_samples(tmp_path / "train", [10, 9, 11])
    full = _fit(tmp_path / "train", tmp_path / "full", 12, num_workers)
    assert len(full) == 12
    for step in (3, epoch_end):
        ckpt = next((tmp_path / "full").glob(f"epoch=*-step={step}.ckpt"))
        resumed = _fit(tmp_path / "train", tmp_path / f"from{step}", 12, num_workers, ckpt)
        assert resumed == full[step:], ckpt.name


def test_lightning_continues_after_max_steps(tmp_path):
    """fit(max_steps=4), then fit(max_steps=12, ckpt_path=last): the batches of one 12-step fit."""
    write_samples(tmp_path / "train", [10, 9, 11])
    full = _fit(tmp_path / "train", tmp_path / "full", 12, 0)
    head = _fit(tmp_path / "train", tmp_path / "part", 4, 0)
    tail = _fit(tmp_path / "train", tmp_path / "part", 12, 0, tmp_path / "part" / "last.ckpt")
    assert head + tail == full


def test_real_english_samples(en_samples):
    dm = BertDataModule(
        train_files=str(en_samples / "train"), val_files=str(en_samples / "valid"), batch_size=8
    )
    assert dm.nsp and dm.max_seq_len == 64 and Path(dm.tokenizer_path).is_dir()
    dm.check_model(max_position_embeddings=64, objective="mlm_nsp", vocab_size=dm.vocab_size)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].shape[1] <= 64
    assert batch["next_sentence_label"].shape == (8,)
    labelled = batch["labels"] != -100
    assert 0.05 < labelled.sum() / batch["attention_mask"].sum() < 0.3
    assert not np.isin(batch["labels"][labelled].numpy(), list(dm.special_ids.values())).any()
    val = list(dm.val_dataloader())
    assert sum(len(b["input_ids"]) for b in val) == dm.sets["val"].num_samples
    whole_words = BertDataModule(
        train_files=str(en_samples / "train"), tokenizer=dm.tokenizer_path, whole_word_masking=True
    )
    assert (next(iter(whole_words.train_dataloader()))["labels"] != -100).any()


def _ddp_rank(rank: int, folder: str, init: str, results) -> None:
    """One process of a 2-process gloo group: read an epoch in lockstep, as DDP would."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        dm = BertDataModule(train_files=folder, batch_size=4, num_workers=2)
        seen = []
        for batch in dm.train_dataloader():  # the rank comes from torch.distributed
            dist.all_reduce(torch.ones(1))  # a rank with more batches would hang here
            seen += decode(batch)
        results.put((rank, seen))
    except Exception as e:  # reported by the test rather than lost in the child
        results.put((rank, repr(e)))
    finally:
        dist.destroy_process_group()


def test_two_process_group_reads_each_sample_at_most_once(tmp_path):
    """2 gloo processes x 2 workers over uneven shards, fewer than the 4 readers."""
    import multiprocessing

    write_samples(tmp_path / "train", [60, 7, 3])
    context = multiprocessing.get_context("fork")  # children inherit the imports: fast
    results = context.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    processes = [
        context.Process(target=_ddp_rank, args=(rank, str(tmp_path / "train"), init, results))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    ranks = dict(results.get(timeout=120) for _ in processes)
    assert all(isinstance(seen, list) for seen in ranks.values()), ranks
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    # By line: 17 or 18 samples a reader, 4 batches each, 8 batches (32 samples) a rank.
    assert len(ranks[0]) == len(ranks[1]) == 32
    seen = ranks[0] + ranks[1]
    assert len(seen) == len(set(seen))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children)
    ),
    max_leaves=20,
)
sample_like = st.fixed_dictionaries(
    {},
    optional={
        "input_ids": st.lists(st.integers(-2, 120), max_size=20) | json_values,
        "token_type_ids": st.lists(st.integers(-1, 2), max_size=20) | json_values,
        "next_sentence_label": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=60), sample_like.map(lambda d: json.dumps(d).encode())))
def test_shard_reader_gives_a_valid_sample_or_a_clear_error(raw):
    try:
        sample = parse_sample(raw, "s.jsonl", 7, max_seq_len=16, vocab_size=VOCAB, nsp=True)
    except ValueError as e:
        assert str(e).startswith("s.jsonl:7: ")
        return
    batch = MaskingCollator(VOCAB, SPECIAL, max_seq_len=16, nsp=True)([sample])
    assert batch["input_ids"].shape[1] <= 16 and int(batch["input_ids"].max()) < VOCAB


def test_batches_can_name_their_source_lines(tmp_path):
    write_samples(tmp_path / "train", [6, 6], nsp=False)
    dm = BertDataModule(train_files=str(tmp_path / "train"), batch_size=4, with_source=True)
    batch = next(iter(dm.train_dataloader()))
    for where, uid in zip(dm.sources(batch), decode(batch), strict=True):
        path, line = where.rsplit(":", 1)
        assert path.endswith(f"shard-0000{uid // 6}.jsonl.gz") and int(line) == uid % 6 + 1


def test_a_rank_of_several_starts_its_workers_from_a_fork_server(tmp_path):
    """A DDP rank's workers (fork server) give the batches forked workers give."""
    write_samples(tmp_path / "train", [30, 31, 29, 30])
    forked = loader(tmp_path / "train", rank=1, world_size=2, num_workers=2)
    assert forked.multiprocessing_context is None
    dataset = forked.dataset
    served = StreamLoader(dataset, num_workers=2, distributed=(1, 2))
    assert served.multiprocessing_context.get_start_method() == "forkserver"
    expected = [decode(b) for b in take(forked)]
    assert [decode(b) for b in take(served)] == expected and expected
