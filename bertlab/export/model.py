"""Export a bertlab checkpoint as a Hugging Face model folder that verifies itself.

checkpoint (.ckpt) -> config.json + model.safetensors + tokenizer files (+ sentencepiece.model)
+ README.md (model card) + CHANGELOG.md, loadable with plain transformers.

Decisions:
- The checkpoint is read with `torch.load(weights_only=True)`: no code from a checkpoint runs.
  It must have Lightning's `state_dict` and `hyper_parameters` and BertPretraining's `model.`
  weights, else it is "not a bertlab checkpoint", one line, before anything is written.
- The network is rebuilt from the checkpoint's `bert_config` (BertPretraining saves the model's
  own `config.to_dict()`), so export needs neither the run's arguments nor a `from_pretrained`
  folder that may be gone. A checkpoint without it is rebuilt by BertPretraining itself from the
  saved hyperparameters: one builder, no second copy of the size logic here. The weights are the
  state dict minus `model.`, loaded strictly (a missing or extra tensor is an error).
- The tokenizer is the one the model was trained with: `--tokenizer`, else the module's or data
  module's hyperparameters, else the run's config, else the samples' meta.json. When the samples
  record a fingerprint, the tokenizer exported must have it, and its size must be the model's
  vocabulary: a model shipped with another tokenizer is garbage that loads without complaint.
- Verification happens inside the temporary folder, before it is renamed into place: reload
  with AutoModelForPreTraining, AutoModelForMaskedLM and AutoTokenizer; the logits must equal the
  checkpoint model's (fp32, max abs difference <= 1e-5); the reloaded tokenizer must give the
  source tokenizer's ids and, for SentencePiece, the raw model's (bertlab.tokenizer.training's
  parity check); `pipeline("fill-mask")` must answer the widget sentence. Any failure is a
  ValueError and no folder appears.
- `--dtype float16|bfloat16`: the strict 1e-5 check compares with the checkpoint model cast to
  that dtype (what was meant to be written); a looser check (max difference <= 1e-2 (fp16) or
  5e-2 (bf16) times the largest |logit|) compares with the fp32 model and catches overflow. Both
  numbers go into the card.
- `--embeddings_only`: `word_embeddings.safetensors` holding one tensor under the Hugging Face
  name `bert.embeddings.word_embeddings.weight` (so `load_state_dict(strict=False)` puts it in
  place), with the tokenizer and a card; verified bit-exact against the checkpoint.
- The output folder follows bertlab.files.output_folder's rule: new, empty, or an earlier
  export_model folder replaced with --overwrite; never the checkpoint's, the config's or the
  tokenizer's folder or one inside them. Folders exported before the rule's marker are recognised by
  their files (config.json or word_embeddings.safetensors, README.md, tokenizer files).
- Texts for the checks are the first lines of the training corpus (from the samples' meta.json)
  when it is still there, else a few built-in sentences; the card says which.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bertlab.export.model_card import (
    EMBEDDINGS_FILE,
    EMBEDDINGS_KEY,
    check_license,
    front_matter,
    render_changelog,
    render_embeddings_card,
    render_model_card,
    widget_sentence,
)
from bertlab.export.run_facts import RunFacts, collect_run_facts
from bertlab.files.artefacts import (
    check_checkpoint_bytes,
    check_model_folder,
    refuse_nonfinite,
    torch_load_reason,
)
from bertlab.files.output_folder import Legacy, check_inputs, check_output_folder, output_folder
from bertlab.model.conversion import transformers_model
from bertlab.model.network import like_saved
from bertlab.model.prenorm import is_pre_layer_norm
from bertlab.model.rotary import is_rotary
from bertlab.tokenizer.export import (
    TOKENIZER_FILES,
    check_texts,
    check_tokenizer,
    copy_tokenizer_files,
    tokenizer_info,
    verify_tokenizer_folder,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STRICT_TOLERANCE = 1e-5
LOOSE_TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2}
MODEL_PREFIX = "model."
COMMAND = "export_model"
# What export_model wrote before the output marker existed.
LEGACY = Legacy(
    names={
        *TOKENIZER_FILES, "config.json", "model.safetensors", EMBEDDINGS_FILE, "README.md",
        "CHANGELOG.md", "generation_config.json",
    },
    required={"README.md", "tokenizer_config.json"},
)  # fmt: skip


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """The checkpoint dict, checked to be a bertlab BertPretraining checkpoint."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ValueError(f"--ckpt_path {ckpt_path} does not exist or is not a file")
    check_checkpoint_bytes(path, "--ckpt_path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # A truncated file can also be a bare OSError ([Errno 22] Invalid argument), naming nothing.
    except (
        pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, OSError,
    ) as error:  # fmt: skip
        raise ValueError(
            f"--ckpt_path {ckpt_path}: not a checkpoint torch.load(weights_only=True) can read "
            f"({torch_load_reason(error)})"
        ) from None
    missing = [
        key
        for key in ("state_dict", "hyper_parameters")
        if not isinstance(checkpoint, dict) or key not in checkpoint
    ]
    if missing:
        raise ValueError(
            f"--ckpt_path {ckpt_path}: not a bertlab checkpoint (no {' or '.join(missing)}; "
            "expected a Lightning checkpoint of `bertlab fit`)"
        )
    embeddings = MODEL_PREFIX + "bert.embeddings.word_embeddings.weight"
    if embeddings not in checkpoint["state_dict"]:
        raise ValueError(
            f"--ckpt_path {ckpt_path}: not a bertlab checkpoint (its state_dict has no "
            f"{embeddings}; expected BertPretraining's weights)"
        )
    refuse_nonfinite(checkpoint["state_dict"].items(), f"--ckpt_path {ckpt_path}")
    return checkpoint


def rebuild_model(checkpoint: dict[str, Any], tokenizer: str | None):
    """The checkpoint's BertForPreTraining in fp32, eval mode, weights loaded strictly."""
    from transformers import BertConfig, BertForPreTraining

    state = {
        key[len(MODEL_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    if checkpoint.get("bert_config"):
        config = BertConfig.from_dict(dict(checkpoint["bert_config"]))
        model = like_saved(BertForPreTraining(config))
    else:
        from bertlab.model.module import BertPretraining

        accepted = inspect.signature(BertPretraining.__init__).parameters
        hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted}
        # A from_pretrained folder decides the sizes when it is still there; else the hparams do.
        start = hparams.get("from_pretrained")
        if start and not Path(start).is_dir():
            hparams["from_pretrained"] = None
        hparams.update(tokenizer=tokenizer)
        model = BertPretraining(**hparams).model
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape mismatch is raised even with strict=False
        first = str(error).strip().splitlines()[-1].strip()
        raise ValueError(f"checkpoint weights do not fit the rebuilt model: {first}") from None
    # Tied weights (decoder = word embeddings) may be stored once; everything else must match.
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            "checkpoint weights do not fit the model rebuilt from its config "
            f"(missing: {missing[:3]}, unexpected: {result.unexpected_keys[:3]})"
        )
    model.tie_weights()
    return model.float().eval()


def resolve_tokenizer(tokenizer: str | None, facts: RunFacts) -> Path:
    """The tokenizer folder: --tokenizer, else the one the run recorded; it must exist whole."""
    if tokenizer is not None:
        path, source = Path(tokenizer), "--tokenizer"
    elif facts.tokenizer_path:
        path, source = Path(facts.tokenizer_path), "the run (hyperparameters/config/meta.json)"
    else:
        raise ValueError(
            "the checkpoint records no tokenizer folder; pass --tokenizer DIR (or --config with "
            "data.tokenizer)"
        )
    if not path.is_dir():
        raise ValueError(
            f"tokenizer folder {path} (from {source}) does not exist; pass --tokenizer DIR"
        )
    # Before anything loads it: a damaged file is named with where the folder came from.
    check_model_folder(path, f"tokenizer folder {path} (from {source})")
    return path


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def verify_model_folder(
    folder: Path, reference, texts: list[str], dtype: str, widget: str
) -> dict[str, Any]:
    """Reload `folder` with transformers' Auto classes; compare logits with `reference`."""
    import transformers
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    inputs = _check_inputs(folder, texts, min(64, reference.config.max_position_embeddings))
    meant = reference if dtype == "float32" else _rounded_copy(reference, dtype)
    # transformers has no pre-LN or RoFormer class with a next-sentence head: those models are
    # masked LMs.
    with_nsp = not (is_pre_layer_norm(reference) or is_rotary(reference))
    mlm = AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.float32).eval()
    # Logits of real tokens: a padded position's mean nothing (RoBERTa's classes, which pre-LN
    # exports to, give padding another position id than BERT does).
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        want = meant(**inputs)
        got_mlm = mlm(**inputs)
        strict = _max_diff(want.prediction_logits[real], got_mlm.logits[real])
        if with_nsp:
            pre = AutoModelForPreTraining.from_pretrained(folder, dtype=torch.float32).eval()
            got_pre = pre(**inputs)
            strict = max(
                strict,
                _max_diff(want.prediction_logits[real], got_pre.prediction_logits[real]),
                _max_diff(want.seq_relationship_logits, got_pre.seq_relationship_logits),
            )
    if not strict <= STRICT_TOLERANCE:
        raise ValueError(
            f"export check failed: reloaded logits differ from the checkpoint's by {strict:.3g} "
            f"(> {STRICT_TOLERANCE})"
        )
    result: dict[str, Any] = {
        "reloaded with": ("AutoModelForPreTraining, " if with_nsp else "")
        + "AutoModelForMaskedLM, AutoTokenizer",
        "max |logit difference| vs the checkpoint (fp32 compute)": f"{strict:.3g} "
        f"(tolerance {STRICT_TOLERANCE}"
        + (f", against the checkpoint cast to {dtype}" if dtype != "float32" else "")
        + f"; {inputs['input_ids'].shape[0]} sequence pairs)",
    }
    if dtype != "float32":
        result[f"max |logit difference| vs fp32 ({dtype} weights)"] = _check_rounding(
            reference, got_mlm.logits, inputs, real, dtype
        )
    fill = transformers.pipeline("fill-mask", model=str(folder), device=-1)
    length, positions = len(fill.tokenizer(widget)["input_ids"]), mlm.config.max_position_embeddings
    if length > positions:  # the model cannot read it, and neither could the Hub's widget
        raise ValueError(
            f"--widget_text: the widget sentence is {length} tokens, more than the model's "
            f"{positions} positions; give a shorter --widget_text"
        )
    answer = fill(widget, top_k=1)
    top = answer[0] if answer and isinstance(answer[0], dict) else answer[0][0]
    result["fill-mask pipeline"] = f"answers the widget sentence (top token {top['token_str']!r})"
    return result


def _check_inputs(folder: Path, texts: list[str], limit: int) -> dict[str, torch.Tensor]:
    """Sentence pairs of `texts`, tokenized by the exported folder's own tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    pairs = (texts * 2)[: min(8, 2 * (len(texts) // 2) or 2)]  # an even count: A/B pairs
    batch = tok(
        pairs[0::2], pairs[1::2], padding=True, truncation=True, max_length=limit,
        return_tensors="pt",
    )  # fmt: skip
    batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _rounded_copy(reference, dtype: str):
    """`reference` with its weights rounded to `dtype` and computing in fp32: what a folder of
    `dtype` weights should give when reloaded in fp32."""
    meant = like_saved(type(reference)(reference.config))
    rounded = {k: v.to(DTYPES[dtype]).float() for k, v in reference.state_dict().items()}
    meant.load_state_dict(rounded)
    return meant.eval()


def _check_rounding(reference, got: torch.Tensor, inputs: dict, real: torch.Tensor, dtype: str):
    """The reloaded low-precision logits against fp32's, within a tolerance scaled to them."""
    with torch.no_grad():
        original = reference(**inputs).prediction_logits[real]
    loose = _max_diff(original, got[real])
    bound = LOOSE_TOLERANCE[dtype] * max(float(original.abs().max()), 1.0)
    if not loose <= bound:
        raise ValueError(
            f"export check failed: {dtype} logits differ from fp32 by {loose:.3g} "
            f"(> {bound:.3g}); export in float32"
        )
    return f"{loose:.3g} (looser tolerance {bound:.3g} = {LOOSE_TOLERANCE[dtype]} x max |logit|)"


def _write_embeddings(folder: Path, reference, dtype: str, facts: RunFacts) -> tuple[int, int]:
    from safetensors.torch import load_file, save_file

    matrix = reference.bert.embeddings.word_embeddings.weight.detach().to(DTYPES[dtype])
    matrix = matrix.contiguous()
    metadata = {
        "format": "pt",
        "source": "bertlab",
        "checkpoint": Path(facts.checkpoint).name,
        "global_step": str(facts.global_step),
    }
    save_file({EMBEDDINGS_KEY: matrix}, str(folder / EMBEDDINGS_FILE), metadata=metadata)
    loaded = load_file(str(folder / EMBEDDINGS_FILE))
    if set(loaded) != {EMBEDDINGS_KEY} or not torch.equal(loaded[EMBEDDINGS_KEY], matrix):
        raise ValueError("export check failed: the embeddings file does not read back identical")
    return tuple(matrix.shape)


def _quiet_transformers() -> None:
    """No progress bars or load reports: AutoModelForMaskedLM not using the NSP head is expected,
    and the export's own summary is what the user needs to read."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _readable_by_umask(folder: Path) -> None:
    """Give the folder and files the permissions the user's umask allows (not mkdtemp's 0700):
    an exported model is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def export_model(
    ckpt_path: str,
    output_dir: str,
    config: str | None = None,
    tokenizer: str | None = None,
    language: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    widget_text: str | None = None,
    embeddings_only: bool = False,
    dtype: str = "float32",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a bertlab checkpoint as a Hugging Face model folder, verified before it appears.

    Args:
        ckpt_path: A checkpoint written by `bertlab fit` (checkpoints/*.ckpt).
        output_dir: The folder to write (config.json, model.safetensors, tokenizer files,
            README.md model card, CHANGELOG.md).
        config: The run's config (default: the config.yaml LightningCLI saved beside the
            checkpoint's log folder); optional, the checkpoint alone is enough.
        tokenizer: The tokenizer folder (default: the one the run recorded).
        language: The model's language code for the model card (e.g. en, ja; en,ja for
            several); the first also picks the default widget sentence.
        license: The Hub's license identifier for the model card (apache-2.0, mit, cc-by-4.0,
            ...; other for a license of your own).
        datasets: Hub dataset ids for the model card (e.g. wikipedia).
        widget_text: The Hub widget's example; [MASK] is replaced by the tokenizer's mask token.
        embeddings_only: Write only the word embeddings (safetensors) and the tokenizer.
        dtype: float32, float16 or bfloat16 weights.
        overwrite: Replace an earlier export_model folder in output_dir.
    """
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if config is not None and Path(config).is_dir():
        raise ValueError(f"--config {config} is a folder; give the run's config.yaml in it")
    if config is not None and not Path(config).is_file():
        raise ValueError(f"--config {config} does not exist")
    code = r"[a-z]{2,3}(-[A-Za-z0-9]+)*"
    if language is not None and not re.fullmatch(rf"{code}(,\s*{code})*", language):
        # The card's `language:` is an ISO 639 code for the Hub; a name or a phrase is not one.
        raise ValueError(
            f"--language {language!r} is not a language code such as en, ja, pt-BR (or a "
            "comma-separated list of them)"
        )
    if embeddings_only and widget_text is not None:
        raise ValueError(
            "--widget_text: an --embeddings_only export has no masked-LM head, so its card has "
            "no fill-mask widget; leave --widget_text out"
        )
    check_license(license)
    for name in datasets or []:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", str(name)):
            raise ValueError(f"--datasets {name!r} is not a Hub dataset id (name or owner/name)")
    inputs = [("--ckpt_path", ckpt_path), ("--config", config), ("--tokenizer", tokenizer)]
    check_output_folder(output_dir, COMMAND, inputs, overwrite, legacy=LEGACY)
    _quiet_transformers()
    checkpoint = load_checkpoint(ckpt_path)
    facts = collect_run_facts(checkpoint, ckpt_path, config)
    tokenizer_dir = resolve_tokenizer(tokenizer, facts)
    check_inputs(output_dir, [("the tokenizer folder", tokenizer_dir)])  # recorded, not given
    reference = rebuild_model(checkpoint, str(tokenizer_dir))
    source_tok = check_tokenizer(tokenizer_dir, reference.config.vocab_size, facts.samples_meta)
    lines, where = check_texts(facts.samples_meta)
    texts = [text for _, text in lines]
    name = Path(output_dir).resolve().name
    languages = [code.strip() for code in language.split(",")] if language else None
    widget = widget_sentence(widget_text, languages and languages[0], source_tok.mask_token,
                             texts[0])  # fmt: skip
    meta = front_matter(languages, license, datasets, widget, embeddings_only)
    exported_at = datetime.now(timezone.utc).strftime("%Y-%m-%d")

    with output_folder(output_dir, COMMAND) as tmp:
        copy_tokenizer_files(tokenizer_dir, tmp)
        info = tokenizer_info(tmp, tokenizer_dir, source_tok)
        checks = {"tokenizer": verify_tokenizer_folder(tmp, source_tok, lines, where)}
        if embeddings_only:
            shape = _write_embeddings(tmp, reference, dtype, facts)
            card = render_embeddings_card(name, facts, info, meta, shape, dtype)
        else:
            model = transformers_model(copy.deepcopy(reference))
            model.to(DTYPES[dtype])
            model.config.architectures = [type(model).__name__]
            model.config.tokenizer_class = info["class"]
            model.save_pretrained(tmp)
            checks.update(verify_model_folder(tmp, reference, texts, dtype, widget))
            parameters = sum(p.numel() for p in reference.parameters())
            card = render_model_card(
                name, reference.config.to_dict(), facts, info, meta, checks, parameters, dtype
            )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        changelog = render_changelog(name, facts, dtype, embeddings_only, exported_at)
        (tmp / "CHANGELOG.md").write_text(changelog, encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
        _readable_by_umask(tmp)

    print(f"export_model: wrote {output_dir} ({', '.join(files)})")
    if language is None:
        print("  note: no --language given, so the card names no language")
    for key, value in checks.items():
        print(f"  {key}: {value}")
    return {"output_dir": str(output_dir), "files": files, "checks": checks}
