"""What a training run's own files say about it: the facts a model card reports.

Sources, most to least authoritative, all optional but the checkpoint:
- the Lightning checkpoint: `global_step`, `epoch`, the module's `hyper_parameters` (and the data
  module's), callback states (ModelCheckpoint's monitored score), loop progress (batches seen and
  optimizer steps, from which gradient accumulation follows when no config says it);
- the run's `config.yaml` (LightningCLI saves it in the log folder, `<log_dir>/checkpoints/x.ckpt`
  beside it): precision, batch size, accumulation, devices, schedule, the samples' folders. A
  `--config` the user passes fills in what that file lacks, or stands in for it when the
  checkpoint was moved away from its log folder; the saved file wins where both speak, since it
  records what actually ran (command-line overrides included);
- the training samples' `meta.json`: corpus files, tokens and samples per pass, max_seq_len, the
  tokenizer folder;
- TensorBoard scalars in the log folder: the validation loss logged at or before the checkpoint's
  step (not a later one: exporting an early checkpoint must not report the final run's loss)
  when the checkpoint callback did not monitor it, and the test loss of a
  `bertlab test --ckpt_path <this checkpoint>` run found beside it.

Decisions:
- Facts are gathered into a plain dataclass; a fact nothing records stays None and the card says
  "not recorded" rather than guessing. The one estimate (tokens seen = batches x batch size x
  devices x mean tokens per sample, when no counter was logged) is labelled as one.
- Reading is forgiving (a missing side file is simply absent), except the checkpoint itself,
  whose shape is checked by the exporter, and the samples' meta.json when it is there but
  damaged: the export's tokenizer check rests on it, and a check skipped because its input is
  unreadable would pass without looking (a one-line error naming the file instead).
"""

from __future__ import annotations

import glob
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertlab.files.artefacts import read_json_object
from bertlab.files.tensorboard_logs import read_scalars
from bertlab.files.yaml_config import read_yaml

VAL_LOSS_TAG = re.compile(r"^val(idation)?[_/]loss(_epoch)?$")
TEST_LOSS_TAG = re.compile(r"^test[_/]loss(_epoch)?$")
TOKENS_TAG = re.compile(r"(^|/)tokens(_seen)?$")


@dataclass
class RunFacts:
    checkpoint: str
    global_step: int | None = None
    epoch: int | None = None
    lightning_version: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    data_hparams: dict[str, Any] = field(default_factory=dict)
    config_path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    samples_meta_path: str | None = None
    samples_meta: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None
    batch_size: int | None = None
    accumulate_grad_batches: int | None = None
    num_devices: int | None = None
    batches_seen: int | None = None
    optimizer_steps: int | None = None
    tokens_seen: int | None = None
    tokens_seen_estimated: bool = False
    val_loss: float | None = None
    test_loss: float | None = None
    monitored: dict[str, float] = field(default_factory=dict)
    tokenizer_path: str | None = None


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A LightningCLI section as a flat dict (plain mapping or class_path/init_args)."""
    value = config.get(name) or {}
    if not isinstance(value, dict):
        return {}
    if "init_args" in value and isinstance(value["init_args"], dict):
        return {**value["init_args"], "class_path": value.get("class_path")}
    return value


def read_config(path: str | Path) -> dict[str, Any]:
    """A run's YAML config as a dict (a `fit:` wrapper from a multi-command file is unwrapped)."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of sections (model, data, ...)")
    if "fit" in data and isinstance(data["fit"], dict) and "model" not in data:
        data = data["fit"]
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section (sections flattened as _section does)."""
    merged = dict(base)
    for name, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**_section(merged, name), **_section(over, name)}
        else:
            merged[name] = value
    return merged


def _refuse_contradictions(path: str | Path, given: dict[str, Any], recorded: dict) -> None:
    """A --config value that the run's own records (the checkpoint's hyperparameters, the
    config.yaml saved beside it) contradict is refused naming both: that file is not the
    run's config, and the export would silently describe what the run did instead."""
    from bertlab.model.resume import same

    conflicts = []
    for section in ("model", "data", "trainer"):
        theirs = _section(recorded, section)
        for key, mine in _section(given, section).items():
            if key == "class_path" or isinstance(mine, (dict, list)) or key not in theirs:
                continue
            if theirs[key] is not None and not same(mine, theirs[key]):
                conflicts.append(f"{section}.{key} {mine!r} (the run: {theirs[key]!r})")
    if conflicts:
        raise ValueError(
            f"--config {path} is not this checkpoint's run: "
            + ", ".join(conflicts[:3])
            + ("..." if len(conflicts) > 3 else "")
            + "; give the run's own config, or leave --config out"
        )


def find_run_config(ckpt_path: str | Path) -> Path | None:
    """The config.yaml LightningCLI saved for the run this checkpoint belongs to, if any."""
    ckpt = Path(ckpt_path).resolve()
    for folder in (ckpt.parent.parent, ckpt.parent):
        candidate = folder / "config.yaml"
        if candidate.is_file():
            return candidate
    return None


def _first_path(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return str(value) if value else None


def find_samples_meta(train_files: Any, base: Path | None = None) -> Path | None:
    """The meta.json of the samples named by `data.train_files` (a folder, file, glob or list)."""
    first = _first_path(train_files)
    if first is None:
        return None
    candidates = [Path(first)]
    if base is not None and not Path(first).is_absolute():
        candidates.append(base / first)
    for candidate in candidates:
        if glob.has_magic(str(candidate)):
            matches = sorted(glob.glob(str(candidate), recursive=True))
            if not matches:
                continue
            candidate = Path(matches[0])
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "meta.json").is_file():
            return folder / "meta.json"
    return None


def _scalar(value: Any) -> float | None:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _monitored_scores(callbacks: dict[str, Any]) -> dict[str, float]:
    """ModelCheckpoint's (or a subclass') monitored metric at save time, by metric name."""
    scores: dict[str, float] = {}
    for state in (callbacks or {}).values():
        if not isinstance(state, dict) or "current_score" not in state:
            continue
        monitor = state.get("monitor")
        score = _scalar(state.get("current_score"))
        if monitor and score is not None:
            scores[monitor] = score
    return scores


def _progress(loops: dict[str, Any]) -> tuple[int | None, int | None]:
    """Training batches seen and optimizer steps taken, from the fit loop's progress counters."""
    fit = (loops or {}).get("fit_loop") or {}
    try:
        batches = int(fit["epoch_loop.batch_progress"]["total"]["completed"])
    except (KeyError, TypeError, ValueError):
        batches = None
    try:
        optim = fit["epoch_loop.automatic_optimization.optim_progress"]
        steps = int(optim["optimizer"]["step"]["total"]["completed"])
    except (KeyError, TypeError, ValueError):
        steps = None
    return batches, steps


def _loader_world_size(loops: dict[str, Any]) -> int | None:
    """Processes the run trained with, from bertlab's training-loader state (if saved)."""
    fit = (loops or {}).get("fit_loop") or {}
    states = (fit.get("state_dict") or {}).get("combined_loader") or []
    for state in states if isinstance(states, list) else []:
        if isinstance(state, dict) and str(state.get("format", "")).startswith("bertlab.data"):
            return _int_or_none(state.get("world_size"))
    return None


def final_scalars(log_dir: Path, max_step: int | None = None) -> dict[str, float]:
    """Each scalar tag's value at the largest step <= max_step in log_dir's TensorBoard files."""
    if not log_dir.is_dir() or not any(log_dir.glob("events.out.tfevents.*")):
        return {}
    try:
        events = read_scalars(log_dir)
    except ValueError:  # an unreadable log is a missing fact, not a failed export
        return {}
    values: dict[str, float] = {}
    for tag, series in events.items():
        kept = [e for e in series if max_step is None or e.step <= max_step]
        if kept:
            value = _scalar(max(kept, key=lambda e: (e.step, e.wall_time)).value)
            if value is not None:
                values[tag] = value
    return values


def _pick(values: dict[str, float], pattern: re.Pattern) -> float | None:
    for tag in sorted(values):
        if pattern.search(tag):
            return values[tag]
    return None


def _test_runs_of(ckpt: Path, log_dir: Path) -> dict[str, float]:
    """Scalars of sibling runs (`bertlab test --ckpt_path <ckpt>`) that evaluated this file."""
    found: dict[str, float] = {}
    for config_path in sorted(log_dir.parent.glob("*/config.yaml")):
        if config_path.parent == log_dir:
            continue
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        named = config.get("ckpt_path") if isinstance(config, dict) else None
        # The path is as typed, relative to a working directory we do not know: the same file
        # under the same run folder (…/version_N/checkpoints/name.ckpt) is the same checkpoint.
        if named and (Path(named).resolve() == ckpt or Path(named).parts[-3:] == ckpt.parts[-3:]):
            found.update(final_scalars(config_path.parent))
    return found


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def collect_run_facts(
    checkpoint: dict[str, Any], ckpt_path: str | Path, config_path: str | Path | None = None
) -> RunFacts:
    """Everything the checkpoint and the files beside it record about the run."""
    ckpt = Path(ckpt_path).resolve()
    facts = RunFacts(checkpoint=str(ckpt))
    facts.global_step = _int_or_none(checkpoint.get("global_step"))
    facts.epoch = _int_or_none(checkpoint.get("epoch"))
    facts.lightning_version = checkpoint.get("pytorch-lightning_version")
    facts.hparams = {
        k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items() if k[:1] != "_"
    }
    facts.data_hparams = {
        k: v
        for k, v in dict(checkpoint.get("datamodule_hyper_parameters") or {}).items()
        if k[:1] != "_"
    }
    facts.monitored = _monitored_scores(checkpoint.get("callbacks") or {})
    facts.batches_seen, facts.optimizer_steps = _progress(checkpoint.get("loops") or {})

    saved = find_run_config(ckpt)
    for config_file in (Path(config_path) if config_path else None, saved):
        if config_file is not None and config_file.is_file():
            facts.config_path = str(config_file.resolve())
            facts.config = _merge(facts.config, read_config(config_file))
    if config_path:
        recorded = {"model": facts.hparams, "data": facts.data_hparams}
        if saved is not None and saved.is_file():
            recorded = _merge(read_config(saved), recorded)
        _refuse_contradictions(config_path, read_config(config_path), recorded)
    trainer = _section(facts.config, "trainer")
    data = {**_section(facts.config, "data"), **facts.data_hparams}
    model = {**_section(facts.config, "model"), **facts.hparams}

    _training_setup(facts, trainer, data, checkpoint.get("loops") or {})

    base = Path(facts.config_path).parent if facts.config_path else None
    meta_path = find_samples_meta(data.get("train_files"), base)
    if meta_path is not None:
        facts.samples_meta = read_json_object(meta_path, "the run's data.train_files")
        facts.samples_meta_path = str(meta_path.resolve())

    facts.tokenizer_path = (
        model.get("tokenizer")
        or data.get("tokenizer")
        or (facts.samples_meta.get("tokenizer") or {}).get("path")
    )

    _logged_figures(facts, ckpt)
    return facts


def _training_setup(facts: RunFacts, trainer: dict, data: dict, loops: dict) -> None:
    """Precision, batch size, accumulation and processes: the config's, else what the
    checkpoint's progress and the training loader's state imply."""
    precision = trainer.get("precision")
    facts.precision = str(precision) if precision is not None else None
    facts.batch_size = _int_or_none(data.get("batch_size"))
    facts.accumulate_grad_batches = _int_or_none(trainer.get("accumulate_grad_batches"))
    if facts.accumulate_grad_batches is None and facts.batches_seen and facts.optimizer_steps:
        ratio = facts.batches_seen / facts.optimizer_steps
        if abs(ratio - round(ratio)) < 1e-6:
            facts.accumulate_grad_batches = round(ratio)
    if facts.precision is None and "precision" in trainer:
        facts.precision = "32-true (Lightning's default)"
    facts.num_devices = _loader_world_size(loops)
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    if isinstance(devices, list):
        devices = len(devices)
    if facts.num_devices is None and _int_or_none(devices) and _int_or_none(nodes):
        facts.num_devices = devices * nodes


def _logged_figures(facts: RunFacts, ckpt: Path) -> None:
    """Validation and test loss and tokens seen, from the checkpoint and the run's logs."""
    log_dir = ckpt.parent.parent
    # Lightning logs what happens during optimizer step g (its validation included) at logger
    # step g - 1, so "at or before this checkpoint" is logger step <= global_step - 1.
    last_step = facts.global_step - 1 if facts.global_step is not None else None
    logged = final_scalars(log_dir, last_step)
    facts.val_loss = _pick(facts.monitored, VAL_LOSS_TAG)
    if facts.val_loss is None:
        facts.val_loss = _pick(logged, VAL_LOSS_TAG)
    facts.test_loss = _pick(_test_runs_of(ckpt, log_dir), TEST_LOSS_TAG)
    if facts.test_loss is None:
        facts.test_loss = _pick(logged, TEST_LOSS_TAG)
    tokens = _pick(logged, TOKENS_TAG)
    if tokens is not None:
        facts.tokens_seen = int(tokens)
    elif facts.batches_seen and facts.batch_size and facts.samples_meta.get("num_samples"):
        per_sample = facts.samples_meta["num_tokens"] / facts.samples_meta["num_samples"]
        facts.tokens_seen = round(
            facts.batches_seen * facts.batch_size * (facts.num_devices or 1) * per_sample
        )
        facts.tokens_seen_estimated = True
