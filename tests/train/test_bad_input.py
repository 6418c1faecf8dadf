"""Bad input through the real `bertlab fit`: one line naming the file and line (or the flag),
exit status 2, no traceback, and no checkpoint or other output that looks complete.

Run: .venv/bin/python -m pytest tests/train/test_bad_input.py -q

Each case is a copy of a few real English samples with one thing broken, trained with the
`bertlab` command in a forked process (tests/faults.py). The library-level checks of the same
problems are in tests/data/test_data.py; the unknown and mistyped command-line flags and a
mismatched `--data.tokenizer` in tests/train/test_cli.py. Bad lines sit in the first batch (no
shuffling), so the error comes at the first step, with workers (where the error crosses a process
boundary).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from faults import forked_bertlab

REPO = Path(__file__).resolve().parents[2]
NUM_LINES = 40


def copy_samples(source: Path, target: Path, lines: list[bytes] | None = None) -> Path:
    """target/: the first NUM_LINES samples of source's first shard (or `lines`), as one shard."""
    target.mkdir(parents=True)
    meta = json.loads((source / "meta.json").read_text())
    first = source / meta["shards"][0]["file"]
    if lines is None:
        with gzip.open(first, "rb") as f:
            lines = [next(f) for _ in range(NUM_LINES)]
    (target / "shard-00000.jsonl.gz").write_bytes(gzip.compress(b"".join(lines)))
    meta["shards"] = [{"file": "shard-00000.jsonl.gz", "num_samples": len(lines), "num_tokens": 0}]
    meta["num_samples"] = len(lines)
    (target / "meta.json").write_text(json.dumps(meta))
    return target


def good_lines(samples: Path) -> list[bytes]:
    with gzip.open(samples / "train" / "shard-00000.jsonl.gz", "rb") as f:
        return [next(f) for _ in range(NUM_LINES)]


def fit(train: Path, valid: Path, root: Path, *extra: str, workers: int = 0) -> tuple[int, str]:
    configs = [e for e in extra if e.startswith("--config=")]  # before the flags they'd replace
    extra = tuple(e for e in extra if e not in configs)
    return forked_bertlab(
        "fit",
        f"--config={REPO / 'configs' / 'tiny.yaml'}",
        *configs,
        f"--data.train_files={train}",
        f"--data.val_files={valid}",
        "--data.test_files=null",
        "--data.batch_size=8",
        "--data.shuffle_buffer_size=1",
        f"--data.num_workers={workers}",
        "--model.hidden_size=32",
        "--model.num_hidden_layers=1",
        "--model.num_attention_heads=2",
        "--model.intermediate_size=64",
        "--model.max_position_embeddings=64",
        "--model.warmup_steps=1",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=2",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--throughput.peak_flops=0",
        f"--trainer.default_root_dir={root}",
        *extra,
        log_path=root.with_suffix(".log"),
    )


def assert_one_line_error(status: int, output: str, *fragments: str) -> str:
    assert status == 2, f"exit {status}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def assert_nothing_complete(root: Path) -> None:
    """No checkpoint, and no run folder: a refused run removes the one it made."""
    assert not root.exists(), sorted(root.rglob("*"))


def broken(line: bytes, **changes) -> bytes:
    sample = json.loads(line)
    sample.update(changes)
    return json.dumps(sample).encode() + b"\n"


@pytest.fixture(scope="module")
def valid(en_samples, tmp_path_factory) -> Path:
    return copy_samples(en_samples / "valid", tmp_path_factory.mktemp("bad") / "valid")


@pytest.mark.parametrize(
    "case, workers, message",
    [
        ("malformed_json", 2, "shard-00000.jsonl.gz:3: malformed JSON"),
        ("too_long", 0, "shard-00000.jsonl.gz:3: sample of 1"),
        ("token_id", 0, "shard-00000.jsonl.gz:3: token id 3000 is outside the vocabulary"),
        ("truncated_gzip", 0, "shard-00000.jsonl.gz: truncated or corrupt gzip after line"),
    ],
)
def test_bad_shard_is_one_line_naming_file_and_line(
    en_samples, valid, tmp_path, case, workers, message
):
    lines = good_lines(en_samples)
    if case == "malformed_json":
        lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"
    elif case == "too_long":
        ids = json.loads(lines[2])["input_ids"]
        lines[2] = broken(lines[2], input_ids=ids + [5] * 64, token_type_ids=[0] * (len(ids) + 64))
    elif case == "token_id":
        ids = json.loads(lines[2])["input_ids"]
        lines[2] = broken(lines[2], input_ids=[ids[0], 3000, *ids[2:]])
    train = copy_samples(en_samples / "train", tmp_path / "train", lines)
    if case == "truncated_gzip":
        shard = train / "shard-00000.jsonl.gz"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    status, output = fit(train, valid, tmp_path / "run")
    assert_one_line_error(
        status, output, str(train / "shard-00000.jsonl.gz").split("shard")[0], message
    )
    assert_nothing_complete(tmp_path / "run")


def test_skip_bad_samples_counts_and_finishes(en_samples, valid, tmp_path):
    lines = good_lines(en_samples)
    lines[2] = b"{not json\n"
    train = copy_samples(en_samples / "train", tmp_path / "train", lines)
    status, output = fit(train, valid, tmp_path / "run", "--data.on_bad_sample=skip")
    assert status == 0, output[-3000:]
    assert "skipping a bad sample (--data.on_bad_sample skip)" in output
    assert "shard-00000.jsonl.gz:3: malformed JSON" in output
    assert list((tmp_path / "run").rglob("last.ckpt"))


def test_samples_of_another_tokenizer(en_samples, tmp_path):
    """valid/meta.json says another tokenizer than train/meta.json made it."""
    train = copy_samples(en_samples / "train", tmp_path / "train")
    other = copy_samples(en_samples / "valid", tmp_path / "other")
    meta = json.loads((other / "meta.json").read_text())
    meta["tokenizer"]["fingerprint"] = "0123456789abcdef"
    (other / "meta.json").write_text(json.dumps(meta))
    status, output = fit(train, other, tmp_path / "run")
    assert_one_line_error(status, output, "were made with different tokenizers", str(other))
    assert_nothing_complete(tmp_path / "run")


def test_recorded_tokenizer_changed_since_the_samples_were_made(en_samples, tmp_path):
    """The tokenizer folder meta.json names now holds another tokenizer (retrained in place)."""
    tokenizer = tmp_path / "tokenizer"
    meta = json.loads((en_samples / "train" / "meta.json").read_text())
    shutil.copytree(meta["tokenizer"]["path"], tokenizer)
    vocab = json.loads((tokenizer / "tokenizer.json").read_text())
    words = vocab["model"]["vocab"]
    first, second = [w for w in words if not w.startswith("[")][:2]
    words[first], words[second] = words[second], words[first]  # same size, other ids
    (tokenizer / "tokenizer.json").write_text(json.dumps(vocab))
    # vocab.txt too, as a retrain writes it (else the folder is damaged, not another tokenizer).
    (tokenizer / "vocab.txt").write_text("".join(f"{w}\n" for w in sorted(words, key=words.get)))
    folders = {}
    for split in ("train", "valid"):
        folders[split] = copy_samples(en_samples / split, tmp_path / split)
        split_meta = json.loads((folders[split] / "meta.json").read_text())
        split_meta["tokenizer"]["path"] = str(tokenizer)
        (folders[split] / "meta.json").write_text(json.dumps(split_meta))
    status, output = fit(folders["train"], folders["valid"], tmp_path / "run")
    assert_one_line_error(status, output, str(tokenizer), "has changed since", "fingerprint")
    assert_nothing_complete(tmp_path / "run")


def test_empty_shard_folder(en_samples, valid, tmp_path):
    (tmp_path / "empty").mkdir()
    status, output = fit(tmp_path / "empty", valid, tmp_path / "run")
    assert_one_line_error(status, output, str(tmp_path / "empty"), "meta.json")
    assert_nothing_complete(tmp_path / "run")


@pytest.mark.parametrize(
    "yaml_text, fragments",
    [
        ("model:\n  hidden_sise: 64\n", ["hidden_sise"]),
        ("model:\n  hidden_size: wide\n", ["hidden_size", "wide"]),
    ],
    ids=["unknown_key", "wrong_type"],
)
def test_bad_config_file(en_samples, valid, tmp_path, yaml_text, fragments):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    train = copy_samples(en_samples / "train", tmp_path / "train")
    status, output = fit(train, valid, tmp_path / "run", f"--config={config}")
    assert_one_line_error(status, output, *fragments)
    assert_nothing_complete(tmp_path / "run")


def test_a_refusal_inside_the_run_removes_only_the_folder_it_made(en_samples, valid, tmp_path):
    """Refused after Lightning began (a held-out text that is not UTF-8): its version_N goes, an
    earlier run's folder beside it stays; an unreachable validation interval is said first."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait, s'il vous pla\xeet\n".encode("latin-1"))
    train = copy_samples(en_samples / "train", tmp_path / "train")
    earlier = tmp_path / "run" / "lightning_logs" / "version_0"
    earlier.mkdir(parents=True)
    (earlier / "notes.txt").write_text("an earlier run's")
    heldout = f"--heldout.texts=[{latin1}]"
    status, output = fit(train, valid, tmp_path / "run", heldout, "--trainer.val_check_interval=9")
    assert_one_line_error(status, output, str(latin1), "not UTF-8")
    assert "warning: --trainer.val_check_interval 9 is beyond the run's last batch" in output
    assert sorted(p.name for p in (tmp_path / "run" / "lightning_logs").iterdir()) == ["version_0"]
    assert [p.name for p in earlier.iterdir()] == ["notes.txt"]


def test_precision_the_device_cannot_do(en_samples, valid, tmp_path):
    """Lightning would quietly train 16-mixed on a CPU as bf16-mixed."""
    train = copy_samples(en_samples / "train", tmp_path / "train")
    status, output = fit(train, valid, tmp_path / "run", "--trainer.precision=16-mixed")
    message = "--trainer.precision 16-mixed (fp16 mixed precision) needs a CUDA GPU"
    assert_one_line_error(status, output, message)
    assert_nothing_complete(tmp_path / "run")


def test_heldout_output_never_overwrites_a_file_it_did_not_write(en_samples, valid, tmp_path):
    """heldout.output is appended to: a user's notes, or the held-out text itself, would be lost."""
    train = copy_samples(en_samples / "train", tmp_path / "train")
    text = tmp_path / "heldout.txt"
    text.write_text("The cat sat on the mat.\n\nA second document is here.\n", encoding="utf-8")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    not_ours = "exists and is not a result of held-out evaluations"
    for output, says in ((notes, not_ours), (text, "is --heldout.texts")):
        heldout = (f"--heldout.texts=[{text}]", f"--heldout.output={output}")
        status, log = fit(train, valid, tmp_path / "run", *heldout)
        assert_one_line_error(status, log, f"--heldout.output {output}", says)
    assert notes.read_text(encoding="utf-8") == "my notes\n"
    assert text.read_text(encoding="utf-8").startswith("The cat sat")
