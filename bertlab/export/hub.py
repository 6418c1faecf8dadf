"""Publish an exported model folder on the Hugging Face Model Hub.

Decisions:
- huggingface_hub's HTTP API (`HfApi`: create_repo, upload_folder, create_tag), not git and
  git-lfs: one commit with every file, large files handled by the Hub's own upload protocol.
- Everything that can be checked offline is checked before the first network call, so a
  mistake costs no half-made repository: the folder is an export (config.json and weights, or
  the embeddings file, plus README.md), the card's front matter parses and holds the Hub's
  fields, `--repo_id` and `--revision` are well-formed names, and a token exists.
- Token: `--token`, else huggingface_hub's own lookup (`HF_TOKEN`, then the saved login of
  `hf auth login`). None is a one-line error naming the three ways to give one; a dry run needs
  none.
- `--revision TAG` tags the uploaded commit so users can pin it
  (`from_pretrained(..., revision="v1.0")`). An existing tag of that name is an error found
  before uploading (a moved tag would silently change what pinned users load).
- `--private` applies when the repository is created; an existing repository keeps its
  visibility (changing it is a deliberate act on the Hub, not a side effect of an upload).
- Hidden files (a component starting with ".") are never uploaded: the dry-run list and the
  upload use the same rule.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from bertlab.export.model_card import EMBEDDINGS_FILE, check_card
from bertlab.files.artefacts import (
    check_model_folder,
    check_model_weights,
    never_trained_weights,
)
from bertlab.files.output_folder import read_marker

TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
HIDDEN_PATTERNS = [".*", "*/.*"]


def upload_files(model_dir: Path) -> list[tuple[str, int]]:
    """(path relative to model_dir, size in bytes) of every file that would be uploaded."""
    files = []
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files.append((relative.as_posix(), path.stat().st_size))
    return files


def _mask_token(model_dir: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            data = json.loads((model_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        token = data.get("mask_token")
        if isinstance(token, dict):
            token = token.get("content")
        if token:
            return str(token)
    return None


def check_export_folder(model_dir: Path) -> None:
    """ValueError unless model_dir is an export_model folder whose card the Hub will accept."""
    if not model_dir.is_dir():
        raise ValueError(f"--model_dir {model_dir} is not a folder")
    names = {name for name, _ in upload_files(model_dir)}
    has_model = "config.json" in names and (
        "model.safetensors" in names or any(n.startswith("model-") for n in names)
    )
    if not has_model and EMBEDDINGS_FILE not in names:
        raise ValueError(
            f"--model_dir {model_dir}: no config.json and model.safetensors (nor "
            f"{EMBEDDINGS_FILE}); is it an export_model folder?"
        )
    if "tokenizer_config.json" not in names:
        raise ValueError(f"--model_dir {model_dir}: no tokenizer files (tokenizer_config.json)")
    marker = read_marker(model_dir)
    if marker is not None and marker.get("command") != "export_model":
        raise ValueError(
            f"--model_dir {model_dir} holds the output of {marker.get('command')}, not "
            "export_model; give the folder export_model wrote"
        )
    if marker is not None:
        written = set(marker.get("entries") or [])
        if missing := sorted(written - {name.split("/")[0] for name in names}):
            raise ValueError(
                f"--model_dir {model_dir}: {', '.join(missing)} that export_model wrote is gone; "
                "export again"
            )
        if extra := sorted({name.split("/")[0] for name in names} - written):
            print(  # a notes file, a token someone saved there: uploaded for all to read
                f"warning: --model_dir {model_dir} holds {', '.join(extra)}, which export_model "
                "did not write; it would be uploaded too (move it out to keep it private)",
                file=sys.stderr,
            )
    # A dry run must not call a folder with a damaged file fine: read what the Hub would serve.
    check_model_folder(model_dir, f"--model_dir {model_dir}")
    check_model_weights(model_dir, f"--model_dir {model_dir}")  # NaN weights for all to download
    if never_trained_weights(model_dir):
        print(
            f"warning: --model_dir {model_dir}: its weights were never trained (every LayerNorm "
            "still has its initial scale 1 and shift 0); published, they predict nothing",
            file=sys.stderr,
        )
    problems = check_card(model_dir, _mask_token(model_dir))
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"model card: {problems[0]}{more}")


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"--repo_id {repo_id!r} must be ORG/NAME (or USER/NAME)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--repo_id {repo_id!r}: {error}") from None


def check_revision(revision: str | None) -> None:
    if revision is None:
        return
    bad = (
        not TAG_PATTERN.match(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith((".lock", "/", "."))
        or revision == "main"
    )
    if bad:
        raise ValueError(
            f"--revision {revision!r} is not a usable tag name (letters, digits, . _ - /; "
            "e.g. v1.0; not main)"
        )


def resolve_token(token: str | None) -> str:
    """The token to upload with: --token, else HF_TOKEN, else the user's saved login."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise ValueError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`"
        )
    return found


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def push_to_hub(
    model_dir: str,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str = "Upload model exported by bertlab",
) -> dict[str, Any]:
    """Upload an exported model folder to the Hugging Face Model Hub.

    Args:
        model_dir: A folder written by export_model (config.json, model.safetensors, tokenizer
            files, README.md).
        repo_id: The Hub repository, ORG/NAME or USER/NAME; created if it does not exist.
        revision: Tag the upload with this name (e.g. v1.0) so users can pin it.
        private: Create the repository private (an existing repository keeps its visibility).
        dry_run: Check the folder and the card, list the files that would be uploaded, upload
            nothing (no token needed).
        token: A Hugging Face token with write access; default HF_TOKEN or the saved login.
        commit_message: The commit message of the upload.
    """
    folder = Path(model_dir)
    check_repo_id(repo_id)
    check_revision(revision)
    token = None if dry_run else resolve_token(token)  # a refusal first, before any warning
    check_export_folder(folder)
    files = upload_files(folder)
    total = sum(size for _, size in files)
    summary: dict[str, Any] = {
        "repo_id": repo_id,
        "revision": revision,
        "private": private,
        "files": [{"path": name, "size": size} for name, size in files],
        "total_size": total,
    }
    if dry_run:
        width = max(len(name) for name, _ in files)
        print(f"dry run: would upload {len(files)} files ({_human(total)}) to {repo_id}")
        for name, size in files:
            print(f"  {name:<{width}}  {_human(size):>9}")
        print(
            "model card: front matter parses, required fields present"
            + (f"; would tag {revision}" if revision else "")
            + "; nothing was uploaded"
        )
        return {**summary, "uploaded": False}

    api = HfApi(token=token)
    repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None:
        refs = api.list_repo_refs(repo_id, repo_type="model")
        if any(tag.name == revision for tag in refs.tags):
            raise ValueError(f"--revision {revision}: {repo_id} already has this tag; pick another")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=HIDDEN_PATTERNS,
    )
    if revision is not None:
        api.create_tag(
            repo_id,
            tag=revision,
            revision=commit.oid,
            repo_type="model",
            tag_message=commit_message,
        )
    url = str(getattr(repo, "url", f"https://huggingface.co/{repo_id}"))
    tagged = f" tagged {revision}" if revision else ""
    print(f"uploaded {len(files)} files ({_human(total)}) to {url}{tagged}")
    return {**summary, "uploaded": True, "commit": commit.oid, "url": url}
