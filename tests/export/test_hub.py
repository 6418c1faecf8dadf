"""push_to_hub: everything up to the network call, and the call's arguments (no Hub here).

Run: .venv/bin/python -m pytest tests/export/test_hub.py -x -q
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_tool
from tiny import handmade_checkpoint

import bertlab.export.hub
from bertlab.export.hub import push_to_hub
from bertlab.export.model import export_model


@pytest.fixture(scope="module")
def model_dir(en_wordpiece: Path, tmp_path_factory) -> Path:
    """A real export of a tiny untrained BertPretraining, plus a hidden file not to upload."""
    tmp = tmp_path_factory.mktemp("hub")
    handmade_checkpoint(en_wordpiece, tmp / "tiny.ckpt")
    out = tmp / "tiny-bert"
    export_model(str(tmp / "tiny.ckpt"), str(out), language="en", datasets=["wikipedia"])
    (out / ".DS_Store").write_text("editor litter")
    return out


def offline_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no token: no HF_TOKEN, an empty Hugging Face home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    return env


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records each call, uploads nothing."""

    calls: list[tuple[str, tuple, dict]] = []
    existing_tags: list[str] = []

    def __init__(self, token=None):
        self.calls.append(("HfApi", (), {"token": token}))

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        return SimpleNamespace(url=f"https://huggingface.co/{args[0]}")

    def list_repo_refs(self, *args, **kwargs):
        self.calls.append(("list_repo_refs", args, kwargs))
        return SimpleNamespace(tags=[SimpleNamespace(name=t) for t in self.existing_tags])

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", (), kwargs))
        return SimpleNamespace(oid="0123abcd" * 5)

    def create_tag(self, *args, **kwargs):
        self.calls.append(("create_tag", args, kwargs))


@pytest.fixture
def recording_api(monkeypatch):
    RecordingHfApi.calls = []
    RecordingHfApi.existing_tags = []
    monkeypatch.setattr(bertlab.export.hub, "HfApi", RecordingHfApi)
    return RecordingHfApi


def test_dry_run_lists_the_files_and_checks_the_card(model_dir: Path, tmp_path: Path):
    result = run_tool(
        "push_to_hub.py", "--model_dir", model_dir, "--repo_id", "someone/tiny-bert",
        "--revision", "v1.0", "--dry_run", env=offline_env(tmp_path),
    )  # fmt: skip
    expected = sorted(p.name for p in model_dir.iterdir() if not p.name.startswith("."))
    assert f"would upload {len(expected)} files" in result.stdout
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == expected
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(listed)
    assert "front matter parses" in result.stdout and "nothing was uploaded" in result.stdout


def test_no_token_is_a_one_line_error(model_dir: Path, tmp_path: Path):
    result = run_tool(
        "push_to_hub.py", "--model_dir", model_dir, "--repo_id", "someone/tiny-bert",
        check=False, env=offline_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`"
    ]


def test_upload_calls_the_hub_api_with_the_right_arguments(model_dir: Path, recording_api):
    summary = push_to_hub(
        str(model_dir), "someone/tiny-bert", revision="v1.0", private=True, token="hf_test"
    )
    names = [name for name, _, _ in recording_api.calls]
    assert names == ["HfApi", "create_repo", "list_repo_refs", "upload_folder", "create_tag"]
    calls = {name: (args, kwargs) for name, args, kwargs in recording_api.calls}
    assert calls["HfApi"][1] == {"token": "hf_test"}
    assert calls["create_repo"] == (
        ("someone/tiny-bert",),
        {"repo_type": "model", "private": True, "exist_ok": True},
    )
    upload = calls["upload_folder"][1]
    assert upload["repo_id"] == "someone/tiny-bert" and upload["repo_type"] == "model"
    assert upload["folder_path"] == str(model_dir)
    assert ".*" in upload["ignore_patterns"]  # the .DS_Store stays home
    args, kwargs = calls["create_tag"]
    assert args == ("someone/tiny-bert",) and kwargs["tag"] == "v1.0"
    assert kwargs["revision"] == "0123abcd" * 5 and kwargs["repo_type"] == "model"
    assert ".DS_Store" not in [f["path"] for f in summary["files"]]


def test_token_comes_from_hf_token(model_dir: Path, recording_api, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    push_to_hub(str(model_dir), "someone/tiny-bert")
    assert recording_api.calls[0] == ("HfApi", (), {"token": "hf_from_env"})
    assert "create_tag" not in [name for name, _, _ in recording_api.calls]


def test_existing_tag_is_refused_before_uploading(model_dir: Path, recording_api):
    recording_api.existing_tags = ["v1.0"]
    with pytest.raises(ValueError, match="already has this tag"):
        push_to_hub(str(model_dir), "someone/tiny-bert", revision="v1.0", token="hf_test")
    assert "upload_folder" not in [name for name, _, _ in recording_api.calls]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repo_id": "tiny-bert"}, "must be ORG/NAME"),
        ({"repo_id": "someone/tiny bert"}, "--repo_id"),
        ({"revision": "v1 final"}, "--revision"),
        ({"model_dir": "/nonexistent/model"}, "is not a folder"),
    ],
)
def test_bad_arguments_fail_before_any_call(model_dir, recording_api, change, message):
    arguments = {"model_dir": str(model_dir), "repo_id": "someone/tiny-bert", "token": "hf"}
    with pytest.raises(ValueError, match=message):
        push_to_hub(**{**arguments, **change})
    assert recording_api.calls == []


def test_a_broken_card_fails_the_dry_run(model_dir: Path, tmp_path: Path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    card = (broken / "README.md").read_text(encoding="utf-8")
    (broken / "README.md").write_text(card.replace("pipeline_tag: fill-mask\n", ""), "utf-8")
    with pytest.raises(ValueError, match="front matter lacks pipeline_tag"):
        push_to_hub(str(broken), "someone/tiny-bert", dry_run=True)
    (broken / "README.md").write_text(card.replace("license:", "license: [unclosed"), "utf-8")
    with pytest.raises(ValueError, match="does not parse"):
        push_to_hub(str(broken), "someone/tiny-bert", dry_run=True)
    (broken / "README.md").write_text(card.replace("[MASK]", "<mask>", 1), "utf-8")
    with pytest.raises(ValueError, match=r"lacks the tokenizer's mask token \[MASK\]"):
        push_to_hub(str(broken), "someone/tiny-bert", dry_run=True)
    (broken / "README.md").write_text(card.replace("license: apache-2.0", "license: mine"), "utf-8")
    with pytest.raises(ValueError, match="license 'mine' is not one of the Hub's license"):
        push_to_hub(str(broken), "someone/tiny-bert", dry_run=True)


def test_weights_nobody_trained_are_said(model_dir: Path, capsys):
    push_to_hub(str(model_dir), "someone/tiny-bert", dry_run=True)
    assert f"warning: --model_dir {model_dir}: its weights were never trained" in (
        capsys.readouterr().err
    )


def test_weights_holding_nan_are_not_published(model_dir: Path, tmp_path: Path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan"
    shutil.copytree(model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(n for n in weights if n.endswith("query.weight"))
    weights[name][0, 0] = float("inf")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"its weight {name} holds NaN or infinite values"):
        push_to_hub(str(broken), "someone/tiny-bert", dry_run=True)


def test_a_file_export_model_wrote_that_is_gone_or_one_it_did_not_write_is_said(
    model_dir: Path, tmp_path: Path, capsys
):
    """The marker lists what export_model wrote: a missing file is refused before any upload; a
    file a user left there (notes, a token) is named in a warning, since it would go public."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(model_dir, folder)
    (folder / "notes.txt").write_text("hf_my_secret_token")
    push_to_hub(str(folder), "someone/tiny-bert", dry_run=True)
    err = capsys.readouterr().err
    assert "warning: --model_dir" in err and "holds notes.txt, which export_model did not" in err
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="tokenizer.json that export_model wrote is gone"):
        push_to_hub(str(folder), "someone/tiny-bert", dry_run=True)
