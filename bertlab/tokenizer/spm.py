"""SentencePiece models: train one, and turn one into a transformers tokenizer folder.

Decisions:
- The special tokens are part of the SentencePiece model itself: [PAD] (pad_id 0) and [UNK]
  (unk_id 1) are its pad/unknown pieces, [CLS] [SEP] [MASK] are user-defined symbols at ids 2-4,
  and there is no <s>/</s>. User-defined symbols are matched in raw text by SentencePiece too, so
  a literal "[MASK]" is one piece on both sides. A model trained elsewhere must have the same
  five pieces at the same ids (control symbols are accepted for [CLS] [SEP] [MASK]); otherwise
  it is refused with the spm_train flags that make one, rather than renumbered: ids 0-4 are a
  contract of every bertlab tokenizer, and renumbering would make the folder's tokenizer
  disagree with its own `sentencepiece.model`.
- `--lowercase` is SentencePiece's `nmt_nfkc_cf` rule (NFKC + case folding), so lowercasing is
  a property of the model, carried into tokenizer.json by its precompiled charsmap; there is no
  separate lowercasing step that could drift from the model.
- tokenizer.json is built from the model proto, never from a transformers model class (their
  defaults lowercase, strip accents or skip NFKC): the Precompiled normalizer is the model's own
  charsmap; SentencePiece's whitespace handling (drop leading/trailing space, collapse runs) is
  Replace + Strip; `add_dummy_prefix` is the Metaspace pre-tokenizer's prepend_scheme "first"
  (only at the start of the text, not after a special token, as SentencePiece does); the post
  processor is BERT's [CLS] A [SEP] B [SEP] with token types 0/1; the decoder turns "▁" back
  into spaces and drops the dummy prefix.
- [MASK] absorbs the spaces before it (lstrip): "is [MASK]." tokenizes as "▁is [MASK] ." just as
  masking "▁Paris" in "▁is ▁Paris ." does during training, with or without the space.
- Without a dummy prefix, text is also stripped on the left, so a line with leading spaces
  tokenizes exactly as SentencePiece does; the price is that a space right after a literal
  special token is dropped ("[MASK] x" as "[MASK]x"), which only matters for spaced languages,
  which keep the default dummy prefix.
- Unigram scores of a trained model are rounded to multiples of 1/64. SentencePiece sums path
  scores in float32, tokenizers in float64; segmentations that tie mathematically ("w"+"ww" vs
  "ww"+"w") then round to different winners (~0.2% of lines with URLs). On a 1/64 grid both sums
  are exact (up to 2^18 in size), ties are exact, and both break them the same way, so parity is
  exact. A converted model keeps its scores (its ids are the user's), and parity tolerates only
  such rounding ties there.
- `tokenizer_class` is `PreTrainedTokenizerFast`, which takes tokenizer.json as it is
  (transformers 5 maps the name to TokenizersBackend, transformers 4 knows it too), also inside
  an exported model folder whose config says "bert"; the raw model is kept beside it as
  `sentencepiece.model` (a name no transformers class picks up by itself).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE, Unigram

from bertlab.files.artefacts import check_readable
from bertlab.tokenizer.special import SPECIAL_TOKENS

MODEL_FILE = "sentencepiece.model"
SCORE_GRID = 64
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6
SPM_TYPES = {"unigram": 1, "bpe": 2}
COMPATIBLE_FLAGS = (
    "--pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 --pad_piece=[PAD] --unk_piece=[UNK] "
    "--user_defined_symbols=[CLS],[SEP],[MASK]"
)


def train_sentencepiece(
    lines: Iterable[str],
    model_type: str,
    vocab_size: int,
    lowercase: bool,
    add_dummy_prefix: bool,
    character_coverage: float,
    seed: int,
    num_threads: int,
) -> model_pb2.ModelProto:
    """Train a SentencePiece model with the BERT special tokens; scores rounded (see above)."""
    spm.set_random_generator_seed(seed)
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=writer,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            add_dummy_prefix=add_dummy_prefix,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_piece=SPECIAL_TOKENS[0],
            unk_piece=SPECIAL_TOKENS[1],
            user_defined_symbols=list(SPECIAL_TOKENS[2:]),
            # bertlab samples the input itself (seeded, same for every model type).
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise _vocab_size_error(str(error), vocab_size) from None
    proto = model_pb2.ModelProto()
    proto.ParseFromString(writer.getvalue())
    for piece in proto.pieces:
        if piece.type == NORMAL:
            piece.score = round(piece.score * SCORE_GRID) / SCORE_GRID
    return proto


def _vocab_size_error(message: str, vocab_size: int) -> Exception:
    """SentencePiece's size complaints as one line naming --vocab_size; other errors unchanged."""
    if match := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
        return ValueError(
            f"--vocab_size {vocab_size} is too small for this corpus: its characters and the "
            f"special tokens need at least {match[1]} pieces (raise --vocab_size or lower "
            "--character_coverage)"
        )
    if match := re.search(
        r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message
    ):
        return ValueError(
            f"--vocab_size {vocab_size} is too large for this corpus: SentencePiece can make at "
            f"most {match[1]} pieces from it"
        )
    return RuntimeError(f"SentencePiece training failed: {message}")


def read_model(path: str, flag: str = "--spm_model") -> model_pb2.ModelProto:
    """Parse a SentencePiece .model file; ValueError naming it when it is missing or not one."""
    file = Path(path)
    if file.is_dir():
        models = sorted(p.name for p in file.glob("*.model"))
        hint = f" ({path}/{models[0]}?)" if models else ""
        raise ValueError(f"{flag} {path} is a folder; give the .model file{hint}")
    if not file.is_file():
        raise ValueError(f"{flag} {path} does not exist")
    if file.stat().st_size == 0:  # parses as a model of no pieces: say what is wrong instead
        raise ValueError(f"{flag} {path} is empty (0 bytes), not a SentencePiece model")
    check_readable(file, flag)
    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(file.read_bytes())
        spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    except Exception as error:  # protobuf and sentencepiece raise their own types
        raise ValueError(f"{flag} {path} is not a SentencePiece model ({error})") from None
    return proto


def check_model(proto: model_pb2.ModelProto, source: str) -> None:
    """Refuse a model bertlab cannot turn into an exact BERT tokenizer, saying why."""
    model_types = {number: name for name, number in SPM_TYPES.items()}
    if proto.trainer_spec.model_type not in model_types:
        raise ValueError(f"{source}: only unigram and bpe SentencePiece models are supported")
    spec = proto.normalizer_spec
    if not spec.escape_whitespaces or proto.trainer_spec.treat_whitespace_as_suffix:
        raise ValueError(
            f"{source}: models without escape_whitespaces or with treat_whitespace_as_suffix "
            "are not supported"
        )
    found = [(p.piece, p.type) for p in proto.pieces[: len(SPECIAL_TOKENS)]]
    allowed = [{CONTROL}, {UNKNOWN}] + [{USER_DEFINED, CONTROL}] * 3
    if [piece for piece, _ in found] != list(SPECIAL_TOKENS) or any(
        kind not in ok for (_, kind), ok in zip(found, allowed, strict=False)
    ):
        raise ValueError(
            f"{source} lacks the BERT special tokens at ids 0-4 "
            f"({', '.join(SPECIAL_TOKENS)}; it has {', '.join(p for p, _ in found)}); train it "
            f"with {COMPATIBLE_FLAGS}, or use tools/train_tokenizer.py"
        )


def build_backend(proto: model_pb2.ModelProto) -> Tokenizer:
    """The `tokenizers` pipeline that encodes exactly as the SentencePiece model does."""
    trainer, spec = proto.trainer_spec, proto.normalizer_spec
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if trainer.model_type == SPM_TYPES["unigram"]:
        model = Unigram(pieces, unk_id=trainer.unk_id, byte_fallback=trainer.byte_fallback)
    else:
        vocab = {piece: index for index, (piece, _) in enumerate(pieces)}
        model = BPE(
            vocab=vocab,
            merges=_bpe_merges(proto),
            unk_token=trainer.unk_piece,
            fuse_unk=True,
            byte_fallback=trainer.byte_fallback,
            dropout=None,
        )
    backend = Tokenizer(model)

    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
        steps.append(normalizers.Strip(left=not spec.add_dummy_prefix, right=True))
        scheme = "first" if spec.add_dummy_prefix else "never"
    else:
        # Every space is kept, so the dummy prefix is one more "▁" even before a space.
        if spec.add_dummy_prefix:
            steps.append(normalizers.Prepend(" "))
        scheme = "never"
    if steps:
        backend.normalizer = normalizers.Sequence(steps)
    split = trainer.split_by_whitespace
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme=scheme, split=split
    )
    # Not the Metaspace decoder: it drops every "▁" of the first token, and a piece may hold
    # several (models trained without split_by_whitespace). SentencePiece drops one leading space.
    steps = [decoders.Replace("▁", " ")]
    if trainer.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(steps)
    cls, sep = SPECIAL_TOKENS[2], SPECIAL_TOKENS[3]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, 2), (sep, 3)],
    )
    backend.add_special_tokens(special_added_tokens())
    return backend


def special_added_tokens() -> list[AddedToken]:
    """Special tokens as matched in raw text: whole, unnormalized; [MASK] eats spaces before it."""
    return [
        AddedToken(token, special=True, normalized=False, lstrip=token == "[MASK]")
        for token in SPECIAL_TOKENS
    ]


def _bpe_merges(proto: model_pb2.ModelProto) -> list[tuple[str, str]]:
    """BPE merges in SentencePiece's priority: the merged piece with the best score (lowest id)."""
    vocab = {p.piece: index for index, p in enumerate(proto.pieces) if p.type in (NORMAL, BYTE)}
    merges = []
    for piece, index in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((index, cut, left, right))
    merges.sort()
    return [(left, right) for _, _, left, right in merges]


def save_folder(proto: model_pb2.ModelProto, folder: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and sentencepiece.model into `folder`."""
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(proto.SerializeToString())
    pad, unk, cls, sep, mask = special_added_tokens()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_backend(proto),
        pad_token=pad,
        unk_token=unk,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    tokenizer.save_pretrained(str(folder))
    # transformers 5 writes its own class name; PreTrainedTokenizerFast means the same there and
    # also loads the folder unchanged in transformers 4.
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


CHECK_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "  Leading, trailing   and\trepeated  whitespace  ",
    "Numbers 3.14159, 2,718 and 1e-9; URLs like https://example.org/a_b?c=d&e=f.",
    "Ｆｕｌｌｗｉｄｔｈ ＡＳＣＩＩ, ligatures ﬁ ﬂ, accents café naïve Ångström, ß and İ.",
    "吾輩は猫である。名前はまだ無い。",
    "東京都は日本の首都で、人口は約1400万人です！",
    "ｶﾀｶﾅの半角と全角のカタカナ、そして①②③。",
    "Emoji 🙂 and symbols ©®™ → ∞.",
)


def check_text(proto: model_pb2.ModelProto, group: int = 8) -> list[str]:
    """Text that uses every piece of the model, plus built-in sentences, for a parity check."""
    pieces = [p.piece.replace("▁", " ") for p in proto.pieces if p.type == NORMAL]
    lines = list(CHECK_SENTENCES)
    for start in range(0, len(pieces), group):
        lines.append("".join(pieces[start : start + group]))
    return [line for line in lines if line.strip()]
