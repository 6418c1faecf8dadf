"""The exported folder's README.md (a Hub model card) and CHANGELOG.md, and the card's checks.

Decisions:
- The YAML front matter is written with `yaml.safe_dump` from a dict, never by pasting strings,
  so any widget text (quotes, colons, Japanese) stays valid YAML; it holds what the Hub reads:
  language, license, datasets, `library_name: transformers`, `pipeline_tag: fill-mask`, tags and
  a `widget` whose text contains this tokenizer's own mask token.
- The body is written from the run (bertlab.export.run_facts) and from the exported model's own
  config.json, not from the arguments a user typed: the sizes are those of the weights shipped.
  A fact nothing recorded is printed as "not recorded", never guessed; the one estimate (tokens
  seen) says so.
- The default widget sentence is chosen by language (a handful of languages have a fixed
  sentence); otherwise the first corpus line with a masked word; otherwise English.
- An embeddings-only export gets its own card: no fill-mask widget (it is not a model a pipeline
  can run), the safetensors key and how to load it.
- The license must be one of the Hub's license identifiers (HUB_LICENSES, from the Hub's
  documentation of repository licenses): the Hub refuses a card whose `license:` is not, so a
  typo is caught at export, not at upload; a license of one's own is `other`.
- `check_card` is what push_to_hub --dry_run runs: the front matter parses (huggingface_hub's
  ModelCard parser, offline), the required fields are there, and a fill-mask widget uses the
  tokenizer's mask token. It returns problems as strings; the caller decides they are errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bertlab.export.run_facts import RunFacts
from bertlab.model.prenorm import MARKER as PRE_LN_MARKER
from bertlab.model.rotary import MARKER as ROTARY_MARKER

WIDGET_WORDS = 12  # the most words of a corpus line the default widget takes
WIDGET_BY_LANGUAGE = {
    "en": "Paris is the [MASK] of France.",
    "ja": "日本の首都は[MASK]です。",
    "de": "Berlin ist die [MASK] von Deutschland.",
    "fr": "Paris est la [MASK] de la France.",
    "es": "Madrid es la [MASK] de España.",
    "zh": "北京是中国的[MASK]。",
}
# https://huggingface.co/docs/hub/repositories-licenses (the `license:` values the Hub accepts).
HUB_LICENSES = frozenset(
    [
        "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0",
        "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0",
        "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
        "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
        "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
        "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl",
        "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research",
        "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openrail++",
        "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr",
        "deepfloyd-if-license", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4",
        "gemma", "unknown", "other",
    ]
)  # fmt: skip
REQUIRED_FIELDS = ("license", "library_name", "pipeline_tag", "widget")
EMBEDDINGS_FILE = "word_embeddings.safetensors"
EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"


def check_license(license: str) -> None:
    """Refuse a license the Hub would refuse in the card's front matter."""
    if license not in HUB_LICENSES:
        close = sorted(x for x in HUB_LICENSES if x.split("-")[0] == license.lower().split("-")[0])
        hint = f" (did you mean {', '.join(close[:4])}?)" if close else ""
        raise ValueError(
            f"--license {license!r} is not a Hub license identifier{hint}; give one such as "
            "apache-2.0, mit, cc-by-4.0, or other for a license of your own"
        )


def widget_sentence(
    widget_text: str | None, language: str | None, mask_token: str, corpus_line: str | None
) -> str:
    """The widget example: the user's text, a fixed one for the language, or a corpus line."""
    if widget_text is not None:
        text = widget_text.replace("[MASK]", mask_token)
        if mask_token not in text:
            raise ValueError(f"--widget_text {widget_text!r} has no mask token ({mask_token})")
        if text.count(mask_token) > 1:  # the Hub's fill-mask widget fills exactly one
            raise ValueError(f"--widget_text {widget_text!r} has more than one mask token")
        return text
    if language in WIDGET_BY_LANGUAGE:
        return WIDGET_BY_LANGUAGE[language].replace("[MASK]", mask_token)
    if corpus_line:
        # A widget is a short sentence, and it must fit a small model's positions.
        words = corpus_line.split()[:WIDGET_WORDS]
        if len(words) > 2:
            longest = max(range(len(words)), key=lambda i: len(words[i].strip(".,;:!?")))
            words[longest] = mask_token
            return " ".join(words)
        if len(corpus_line) > 4:
            middle = len(corpus_line) // 2
            return corpus_line[:middle] + mask_token + corpus_line[middle + 2 :]
    return WIDGET_BY_LANGUAGE["en"].replace("[MASK]", mask_token)


def front_matter(
    language: list[str] | str | None,
    license: str,
    datasets: list[str] | None,
    widget: str | None,
    embeddings_only: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if language:
        meta["language"] = [language] if isinstance(language, str) else list(language)
    meta["license"] = license
    if datasets:
        meta["datasets"] = list(datasets)
    if embeddings_only:
        meta["tags"] = ["bert", "bertlab", "word-embeddings"]
        return meta
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "fill-mask"
    meta["tags"] = ["bert", "bertlab", "fill-mask", "pretraining"]
    meta["widget"] = [{"text": widget}]
    return meta


def _number(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _rows(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {name} | {_number(value)} |" for name, value in rows]
    return "\n".join(lines)


def _optimization(facts: RunFacts) -> dict[str, Any]:
    hp = facts.hparams
    return {
        "lr": hp.get("lr"),
        "weight_decay": hp.get("weight_decay"),
        "warmup_steps": hp.get("warmup_steps"),
        "schedule": hp.get("lr_schedule"),
        "max_steps": (facts.config.get("trainer") or {}).get("max_steps"),
    }


def _batch_text(facts: RunFacts) -> str:
    if facts.batch_size is None:
        return "not recorded"
    devices = facts.num_devices or 1
    accumulation = facts.accumulate_grad_batches or 1
    effective = facts.batch_size * devices * accumulation
    return (
        f"{facts.batch_size} per device x {devices} device(s) x {accumulation} accumulation "
        f"= {effective} sequences per optimizer step"
    )


def _corpus_text(facts: RunFacts) -> list[tuple[str, Any]]:
    meta = facts.samples_meta
    if not meta:
        return [("samples", "not recorded (no meta.json found for data.train_files)")]
    # The last two path parts (corpus/train.txt): enough to recognise, no home folders in public.
    sources = ", ".join("/".join(Path(s).parts[-2:]) for s in meta.get("source_files", [])) or None
    return [
        ("corpus files", sources),
        ("training samples per pass", meta.get("num_samples")),
        ("tokens per pass", meta.get("num_tokens")),
        ("max sequence length", meta.get("max_seq_len")),
        ("next-sentence pairs", meta.get("nsp")),
        ("dupe factor", meta.get("dupe_factor")),
    ]


# The row _rows renders of _corpus_text's "corpus files", which card_corpus_files reads back.
CORPUS_ROW = "| corpus files | "


def card_corpus_files(model_dir: Path) -> list[str]:
    """The corpus files a bertlab model card records (their last two path parts), or []."""
    try:
        lines = (Path(model_dir) / "README.md").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    row = next((line for line in lines if line.startswith(CORPUS_ROW)), None)
    if row is None:
        return []
    return [name.strip() for name in row[len(CORPUS_ROW) :].rstrip(" |").split(",")]


def render_model_card(
    name: str,
    bert_config: dict[str, Any],
    facts: RunFacts,
    tokenizer_info: dict[str, Any],
    meta: dict[str, Any],
    verification: dict[str, Any],
    num_parameters: int,
    dtype: str,
) -> str:
    """The README.md of a full model export: front matter, then what the run was."""
    objective = facts.hparams.get("objective", "not recorded")
    rotary = bert_config.get(ROTARY_MARKER) == "rotary"
    mlm_only = bert_config.get(PRE_LN_MARKER) == "pre" or rotary  # no pre-training class
    architecture = (
        "RoFormerForMaskedLM (BERT with rotary positions, MLM head)"
        if rotary
        else "RobertaPreLayerNormForMaskedLM (pre-LayerNorm BERT, MLM head)"
        if bert_config.get(PRE_LN_MARKER) == "pre"
        else "BertForPreTraining (MLM + NSP heads)"
    )
    model_rows = [
        ("architecture", architecture),
        ("layers", bert_config.get("num_hidden_layers")),
        ("hidden size", bert_config.get("hidden_size")),
        ("attention heads", bert_config.get("num_attention_heads")),
        ("feed-forward size", bert_config.get("intermediate_size")),
        ("max positions", bert_config.get("max_position_embeddings")),
        ("vocabulary", bert_config.get("vocab_size")),
        ("parameters", num_parameters),
        ("weights dtype", dtype),
    ]
    tokenizer_rows = [
        ("type", tokenizer_info.get("type")),
        ("vocabulary size", tokenizer_info.get("vocab_size")),
        ("lowercase", tokenizer_info.get("lowercase")),
        ("mask token", f"`{tokenizer_info.get('mask_token')}`"),
        ("fingerprint", tokenizer_info.get("fingerprint")),
        ("raw SentencePiece model", tokenizer_info.get("sentencepiece_model")),
    ]
    sections = [
        "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---",
        *_introduction(name, facts, objective, mlm_only, meta["widget"][0]["text"]),
        "## Model",
        _rows(model_rows),
        "## Tokenizer",
        _rows(tokenizer_rows),
        "## Training data",
        _rows(_corpus_text(facts)),
        "## Training",
        _rows(_training_rows(facts)),
        "## Evaluation",
        _rows(
            [
                ("validation loss (at this checkpoint)", facts.val_loss),
                ("test loss", facts.test_loss),
            ]
        )
        + "\n\nThe losses are the pre-training loss (MLM"
        + (" + NSP" if objective == "mlm_nsp" else "")
        + ") on held-out samples of the same corpus.",
        "## Export check",
        verification_text(verification),
    ]
    return "\n\n".join(sections) + "\n"


def _introduction(name: str, facts: RunFacts, objective: str, mlm_only: bool, widget: str) -> list:
    """The title, what the model is and how it loads, and a usage snippet."""
    started = "from scratch"
    if facts.hparams.get("from_pretrained"):
        started = f"continued from `{Path(facts.hparams['from_pretrained']).name}`"
    return [
        f"# {name}",
        f"A BERT model pre-trained {started} with bertlab "
        f"(objective: `{objective}`: masked language modelling"
        + (" and next-sentence prediction" if objective == "mlm_nsp" else "")
        + "). It loads with plain `transformers`: `AutoModelForMaskedLM`, "
        + ("" if mlm_only else "`AutoModelForPreTraining`, ")
        + '`AutoTokenizer` and `pipeline("fill-mask")`.',
        "## Usage",
        "```python\nfrom transformers import pipeline\n\n"
        f'fill_mask = pipeline("fill-mask", model="{name}")  # a Hub id or this folder\'s path\n'
        f"print(fill_mask({json.dumps(widget, ensure_ascii=False)}))\n```",
    ]


def _training_rows(facts: RunFacts) -> list[tuple[str, Any]]:
    opt = _optimization(facts)
    schedule = (
        f"AdamW, peak lr {_number(opt['lr'])}, weight decay {_number(opt['weight_decay'])}, "
        f"{_number(opt['warmup_steps'])} warmup steps, then {opt['schedule'] or 'not recorded'}"
        + (" decay to 0" if opt["schedule"] == "linear" else "")
        + (f" at step {_number(opt['max_steps'])}" if opt["max_steps"] else "")
    )
    tokens = _number(facts.tokens_seen) + (" (estimated)" if facts.tokens_seen_estimated else "")
    return [
        ("optimizer steps", facts.global_step),
        ("epochs completed", facts.epoch),
        ("tokens seen", tokens),
        ("batch size", _batch_text(facts)),
        ("optimization", schedule),
        ("precision", facts.precision),
        ("trainable parameters", facts.hparams.get("trainable")),
        ("PyTorch Lightning", facts.lightning_version),
    ]


def verification_text(verification: dict[str, Any]) -> str:
    lines = []
    for key, value in verification.items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def render_embeddings_card(
    name: str,
    facts: RunFacts,
    tokenizer_info: dict[str, Any],
    meta: dict[str, Any],
    shape: tuple[int, int],
    dtype: str,
) -> str:
    """The README.md of an embeddings-only export (cross-lingual transfer)."""
    sections = [
        "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---",
        f"# {name}: word embeddings",
        "The word-embedding matrix of a BERT model trained with bertlab, with its tokenizer, for "
        "the cross-lingual transfer workflow (a new language's embeddings learned under a frozen "
        "transformer body, then swapped into a model fine-tuned in another language).",
        "## Contents",
        f"- `{EMBEDDINGS_FILE}`: one tensor under the key `{EMBEDDINGS_KEY}`, shape "
        f"{list(shape)}, dtype {dtype} (the Hugging Face parameter name, so "
        "`model.load_state_dict(tensors, strict=False)` puts it in place).\n"
        "- the tokenizer files (`AutoTokenizer.from_pretrained` loads this folder); row *i* of "
        "the matrix is token id *i*.",
        "## Usage",
        "```python\nfrom safetensors.torch import load_file\nfrom transformers import "
        "AutoModelForMaskedLM, AutoTokenizer\n\n"
        f'tensors = load_file("{name}/{EMBEDDINGS_FILE}")\n'
        'model = AutoModelForMaskedLM.from_pretrained("path/to/a-bert-with-the-same-hidden-size")\n'
        f'model.resize_token_embeddings(tensors["{EMBEDDINGS_KEY}"].shape[0])\n'
        "model.load_state_dict(tensors, strict=False)\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n```',
        "## Tokenizer",
        _rows([(k.replace("_", " "), v) for k, v in tokenizer_info.items()]),
        "## Training",
        _rows(
            [
                ("optimizer steps", facts.global_step),
                ("trainable parameters", facts.hparams.get("trainable")),
                ("validation loss (at this checkpoint)", facts.val_loss),
            ]
            + _corpus_text(facts)
        ),
    ]
    return "\n\n".join(sections) + "\n"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("bertlab", "transformers", "torch"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def render_changelog(
    name: str, facts: RunFacts, dtype: str, embeddings_only: bool, exported_at: str
) -> str:
    what = "word embeddings and tokenizer" if embeddings_only else "model, tokenizer and card"
    return (
        "# Changelog\n\n"
        f"## {exported_at}\n\n"
        f"- Exported {what} of `{name}` ({dtype}) from checkpoint "
        f"`{Path(facts.checkpoint).name}` at optimizer step {_number(facts.global_step)}"
        + (f", validation loss {facts.val_loss:.4f}" if facts.val_loss is not None else "")
        + f" ({_versions()}).\n"
    )


def read_front_matter(readme: Path) -> dict[str, Any]:
    """The card's YAML metadata, parsed by huggingface_hub's own (offline) card parser."""
    from huggingface_hub import ModelCard

    try:
        text = readme.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{readme}: not UTF-8 at byte {error.start}, which the Hub reads cards as; save it "
            "as UTF-8"
        ) from None
    if text.startswith("\ufeff"):  # the Hub's parser wants --- as the first bytes
        raise ValueError(
            f"{readme}: starts with a byte-order mark before its ---, which the Hub does not "
            "read as front matter; save it as UTF-8 without BOM"
        )
    if not text.startswith("---"):
        raise ValueError(f"{readme}: no YAML front matter (the card must start with ---)")
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except (yaml.YAMLError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(f"{readme}: front matter does not parse: {first}") from None
    return card.data.to_dict()


def check_card(model_dir: Path, mask_token: str | None) -> list[str]:
    """Problems with the folder's README.md as a Hub card (empty when it is fine)."""
    readme = model_dir / "README.md"
    if not readme.is_file():
        return [f"{readme} is missing (export_model writes the model card)"]
    try:
        meta = read_front_matter(readme)
    except ValueError as error:
        return [str(error)]
    embeddings_only = (model_dir / EMBEDDINGS_FILE).is_file() and not (
        model_dir / "config.json"
    ).is_file()
    required = ("license",) if embeddings_only else REQUIRED_FIELDS
    problems = [f"{readme}: front matter lacks {field}" for field in required if field not in meta]
    license = meta.get("license")
    if "license" in meta and not (isinstance(license, str) and license in HUB_LICENSES):
        problems.append(
            f"{readme}: license {license!r} is not one of the Hub's license identifiers (the Hub "
            "refuses the card; other, for one's own)"
        )
    if embeddings_only:
        return problems
    if meta.get("library_name") not in (None, "transformers"):
        problems.append(f"{readme}: library_name is {meta['library_name']!r}, not transformers")
    if meta.get("pipeline_tag") not in (None, "fill-mask"):
        problems.append(f"{readme}: pipeline_tag is {meta['pipeline_tag']!r}, not fill-mask")
    widgets = meta.get("widget") or []
    texts = [w.get("text", "") for w in widgets if isinstance(w, dict)]
    if "widget" in meta and not texts:
        problems.append(f"{readme}: widget has no text example")
    if mask_token and texts and not all(mask_token in t for t in texts):
        problems.append(f"{readme}: a widget text lacks the tokenizer's mask token {mask_token}")
    return problems
