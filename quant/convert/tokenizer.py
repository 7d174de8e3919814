"""Tokenizer files → GGUF vocabulary that llama.cpp tokenizes identically.

Two kinds are read:

- Byte-level BPE from ``tokenizer.json`` (Llama 3, Qwen, Phi-4, Mistral Nemo …):
  tokens, merges, added tokens, and the pre-tokenizer, whose llama.cpp name
  (``tokenizer.ggml.pre``) is identified from the pre-tokenizer's split regex and
  the ``ignore_merges`` flag. The names and regexes llama.cpp knows are listed in
  its ``src/llama-vocab.cpp``. An unknown pre-tokenizer is refused: a wrong one
  silently changes how text is split into tokens.
- SentencePiece from ``tokenizer.model`` (Llama 2, Mistral 7B, Gemma): pieces,
  scores and piece types, plus the dummy-prefix flag. The model file is a protobuf
  message, decoded here directly so the ``sentencepiece`` package is never needed.
  The normaliser's whitespace-collapsing flag is not written: llama.cpp reads it
  only for T5-style (UGM) vocabularies, and its converter leaves it out here.

Added tokens (``added_tokens_decoder`` in ``tokenizer_config.json``, the
``added_tokens`` of ``tokenizer.json``, ``added_tokens.json``) are written the way
llama.cpp's own converter (``convert_hf_to_gguf.py``) writes them, because
llama.cpp's tokenizer assumes that spelling: special ones, and those that look
special (``<unused0>``, ``<mask>``, ``<|…|>``), become CONTROL tokens; the others
become USER_DEFINED tokens whose SentencePiece ``▁`` is turned back into the space
it stands for. llama.cpp matches user-defined tokens against the raw text, before
it escapes spaces, and prints their text as it is: Gemma's whitespace pieces
spelled ``▁▁`` would never match a run of spaces and would print as ``▁▁``. In a
SentencePiece vocabulary added tokens score -1000 and padding rows -10000, as
upstream writes them.

Special tokens and the add-BOS/EOS/SEP flags come from ``tokenizer_config.json``
and ``tokenizer.json``'s post-processor (then ``config.json``); the chat template
from ``chat_template.jinja``, ``chat_template.json`` or ``tokenizer_config.json``,
in that order.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from quant.convert.errors import TokenizerError
from quant.untrusted import UntrustedValueError, open_regular, read_json_file

# A chat template file larger than this is not a chat template.
MAX_TEMPLATE_BYTES = 1024 * 1024

logger = logging.getLogger(__name__)


class TokenType(IntEnum):
    """GGUF token types (gguf-py ``TokenType``; the same numbers as SentencePiece's)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Pre-tokenizer split regexes as they appear in tokenizer.json, and the llama.cpp
# pre-tokenizer names whose regexes match them (src/llama-vocab.cpp).
CL100K_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


# The spelling of a space inside SentencePiece pieces (U+2581).
SPM_SPACE = "\u2581"
# Scores llama.cpp's converter gives SentencePiece added tokens and padding rows.
ADDED_TOKEN_SCORE = -1000.0
PAD_TOKEN_SCORE = -10000.0


def looks_special(text: str) -> bool:
    """Whether an added token is a control token even when not marked special.

    Some tokenizers (Gemma, DeepSeek Coder, Command R) leave control tokens
    unmarked; llama.cpp's converter treats these spellings as control tokens
    (``does_token_look_special`` in convert_hf_to_gguf.py).
    """
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


@dataclass(frozen=True)
class AddedToken:
    """One entry of a tokenizer's added tokens."""

    content: str
    special: bool

    def gguf_token(self) -> tuple[str, TokenType]:
        """The text and type llama.cpp expects for this token."""
        if self.special or looks_special(self.content):
            return self.content, TokenType.CONTROL
        return self.content.replace(SPM_SPACE, " "), TokenType.USER_DEFINED


class TokenizerModel(StrEnum):
    """GGUF ``tokenizer.ggml.model`` values."""

    BPE = "gpt2"
    SPM = "llama"


@dataclass(frozen=True)
class Vocab:
    """Everything the GGUF tokenizer section holds."""

    model: TokenizerModel
    pre: str  # tokenizer.ggml.pre
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    scores: tuple[float, ...] = ()
    merges: tuple[str, ...] = ()
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_sep: bool | None = None
    add_space_prefix: bool | None = None
    chat_template: str | list[dict[str, str]] | None = None
    warnings: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        def text(i: int | None) -> str | None:
            return None if i is None else self.tokens[i]

        return {
            "model": self.model.value,
            "pre": self.pre,
            "tokens": len(self.tokens),
            "bos": text(self.bos_id),
            "eos": text(self.eos_id),
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "chat_template": self.chat_template is not None,
        }


def _read_json(path: Path) -> Any:
    try:
        return read_json_file(path)
    except (OSError, UntrustedValueError) as exc:
        raise TokenizerError(f"{path.name} cannot be read ({exc}); download it again") from exc


def load_vocab(folder: Path, config: Mapping[str, Any], n_vocab: int) -> Vocab:
    """Read the tokenizer of ``folder`` and pad it to the embedding's ``n_vocab`` rows."""
    tj_path = folder / "tokenizer.json"
    sp_path = folder / "tokenizer.model"
    tok_config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        loaded = _read_json(folder / "tokenizer_config.json")
        tok_config = loaded if isinstance(loaded, dict) else {}
    tj: dict[str, Any] | None = None
    if tj_path.is_file():
        loaded = _read_json(tj_path)
        tj = loaded if isinstance(loaded, dict) else None

    try:
        added = _added_tokens(folder, tj, tok_config)
        _ids_within(added, tj, n_vocab)
        if tj is not None and _is_byte_level_bpe(tj):
            base = _bpe_from_tokenizer_json(tj, added)
        elif sp_path.is_file():
            base = _spm_from_model(sp_path, tj, added)
        else:
            base = None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TokenizerError(
            f"the tokenizer files in {folder} are malformed ({exc!r}); download them again"
        ) from exc
    if base is None and tj is not None:
        kind = (tj.get("model") or {}).get("type", "non-BPE")
        raise TokenizerError(
            f"{tj_path.name} in {folder} is a {kind} tokenizer without byte-level "
            "pre-tokenization, and there is no tokenizer.model; download the model's "
            "tokenizer.model (SentencePiece) as well"
        )
    if base is None:
        raise TokenizerError(
            f"{folder} has no tokenizer.json or tokenizer.model; download the tokenizer files "
            "with the model"
        )

    tokens, types, scores = list(base.tokens), list(base.types), list(base.scores)
    warnings = list(base.warnings)
    if len(tokens) > n_vocab:
        raise TokenizerError(
            f"the tokenizer has {len(tokens)} tokens but the model's embedding has only "
            f"{n_vocab} rows; the tokenizer files do not belong to these weights"
        )
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]")
        types.append(TokenType.UNUSED)
        if scores:
            scores.append(PAD_TOKEN_SCORE)
    _dedupe(tokens, types, warnings)

    token_ids = {t: i for i, t in enumerate(tokens)}
    for i, t in base.added_content.items():
        token_ids.setdefault(t, i)

    def special_id(name: str) -> int | None:
        value = _token_content(tok_config, name)
        if value is not None and value in token_ids:
            return token_ids[value]
        cfg_value = config.get(f"{name}_token_id")
        if isinstance(cfg_value, list):
            cfg_value = cfg_value[0] if cfg_value else None
        if isinstance(cfg_value, int) and 0 <= cfg_value < len(tokens):
            return cfg_value
        return base.default_ids.get(name)

    ids = {name: special_id(name) for name in ("bos", "eos", "unk", "pad")}

    add_bos = _flag(tok_config, "add_bos_token", base.add_bos)
    add_eos = _flag(tok_config, "add_eos_token", base.add_eos)
    separators = {t for t in (_token_content(tok_config, n) for n in ("sep", "eos")) if t}
    add_sep = _pair_adds_sep((tj or {}).get("post_processor"), separators)
    if add_sep is None and isinstance(tok_config.get("add_sep_token"), bool):
        add_sep = bool(tok_config["add_sep_token"])
    if add_bos and ids["bos"] is None:
        warnings.append("the tokenizer asks for a BOS token but names none; BOS is not added")
        add_bos = False
    if add_eos and ids["eos"] is None:
        add_eos = False

    return Vocab(
        model=base.model,
        pre=base.pre,
        tokens=tuple(tokens),
        token_types=tuple(int(t) for t in types),
        scores=tuple(scores),
        merges=base.merges,
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        unk_id=ids["unk"],
        pad_id=ids["pad"],
        add_bos=add_bos,
        add_eos=add_eos,
        add_sep=add_sep,
        add_space_prefix=base.add_space_prefix,
        chat_template=load_chat_template(folder, tok_config),
        warnings=tuple(warnings),
    )


def _added_tokens(
    folder: Path, tj: Mapping[str, Any] | None, tok_config: Mapping[str, Any]
) -> dict[int, AddedToken]:
    """Added tokens by id: ``added_tokens.json``, then ``tokenizer.json``, then
    ``added_tokens_decoder``, a later file overriding an earlier one."""
    added: dict[int, AddedToken] = {}
    legacy = folder / "added_tokens.json"
    if legacy.is_file():
        data = _read_json(legacy)
        if isinstance(data, dict):
            for content, i in data.items():
                if isinstance(i, int):
                    added[i] = AddedToken(str(content), special=False)
    for a in (tj or {}).get("added_tokens") or []:
        added[int(a["id"])] = AddedToken(str(a["content"]), bool(a.get("special")))
    decoder = tok_config.get("added_tokens_decoder") or {}
    if isinstance(decoder, dict):
        for key, a in decoder.items():
            if isinstance(a, dict) and "content" in a:
                added[int(key)] = AddedToken(str(a["content"]), bool(a.get("special")))
    return dict(sorted(added.items()))


def _ids_within(
    added: Mapping[int, AddedToken], tj: Mapping[str, Any] | None, n_vocab: int
) -> None:
    """Token ids the files give are rows of the embedding: checked before a token list is
    sized by the largest of them (an id of 1e9 would ask for gigabytes)."""
    ids = list(added)
    model = (tj or {}).get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        ids += [i for i in vocab.values() if isinstance(i, int)]
    bad = next((i for i in ids if not 0 <= i < n_vocab), None)
    if bad is not None:
        raise TokenizerError(
            f"the tokenizer names token id {bad:,}, but the model's embedding has "
            f"{n_vocab:,} rows; the tokenizer files do not belong to these weights, download "
            "them again"
        )


def _flag(tok_config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = tok_config.get(key)
    return value if isinstance(value, bool) else default


def _dedupe(tokens: list[str], types: list[int], warnings: list[str]) -> None:
    # llama.cpp aborts on a vocabulary with two identical token texts.
    seen: set[str] = set()
    for i, t in enumerate(tokens):
        if t in seen:
            tokens[i] = f"[DUP{i}]"
            types[i] = TokenType.UNUSED
            warnings.append(f"token {i} repeats the text {t!r}; it is stored as unused")
        seen.add(tokens[i])


def load_chat_template(
    folder: Path, tok_config: Mapping[str, Any]
) -> str | list[dict[str, str]] | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            with open_regular(jinja) as fh:
                raw = fh.read(MAX_TEMPLATE_BYTES + 1)
        except (OSError, UntrustedValueError) as exc:
            raise TokenizerError(f"{jinja.name} cannot be read ({exc})") from exc
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise TokenizerError(f"{jinja.name} is larger than a chat template can be")
        return raw.decode("utf-8", "replace")
    js = folder / "chat_template.json"
    if js.is_file():
        data = _read_json(js)
        value = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(value, str):
            return value
    value = tok_config.get("chat_template")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = [
            {"name": str(v["name"]), "template": str(v["template"])}
            for v in value
            if isinstance(v, dict) and "name" in v and "template" in v
        ]
        return named or None
    return None


@dataclass(frozen=True)
class _Base:
    model: TokenizerModel
    pre: str
    tokens: tuple[str, ...]
    types: tuple[int, ...]
    scores: tuple[float, ...]
    merges: tuple[str, ...]
    added_content: Mapping[int, str]
    default_ids: Mapping[str, int | None]
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool | None = None
    warnings: tuple[str, ...] = ()


# --- byte-level BPE (tokenizer.json) ----------------------------------------------------


def _components(node: Any) -> list[dict[str, Any]]:
    """Flatten a tokenizer.json pipeline node (possibly a Sequence) into its parts."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        parts = node.get("pretokenizers") or node.get("processors") or node.get("normalizers")
        out: list[dict[str, Any]] = []
        for p in parts or []:
            out.extend(_components(p))
        return out
    return [node]


def _is_byte_level_bpe(tj: Mapping[str, Any]) -> bool:
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        return False
    kinds = {c.get("type") for c in _components(tj.get("pre_tokenizer"))}
    decoder_kinds = {c.get("type") for c in _components(tj.get("decoder"))}
    return "ByteLevel" in kinds or "ByteLevel" in decoder_kinds


def identify_pre(tj: Mapping[str, Any]) -> str:
    """The llama.cpp pre-tokenizer name that splits text like ``tj``'s pre-tokenizer."""
    parts = _components(tj.get("pre_tokenizer"))
    ignore_merges = bool((tj.get("model") or {}).get("ignore_merges", False))
    splits = [p for p in parts if p.get("type") == "Split"]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    others = [p for p in parts if p.get("type") not in ("Split", "ByteLevel")]
    if not splits and len(byte_level) == 1 and not others and byte_level[0].get("use_regex", True):
        return "gpt-2"
    if len(splits) == 1 and not others and all(not b.get("use_regex", True) for b in byte_level):
        pattern = (splits[0].get("pattern") or {}).get("Regex")
        if pattern == CL100K_REGEX:
            # The same split regex; llama.cpp's "llama-bpe" also looks whole words
            # up before merging, which is what ignore_merges means.
            return "llama-bpe" if ignore_merges else "dbrx"
        if pattern == QWEN2_REGEX:
            return "qwen2"
        if pattern == TEKKEN_REGEX:
            return "tekken"
        if pattern == O200K_REGEX:
            return "gpt-4o"
        shown = repr(pattern)[:80]
    else:
        shown = "+".join(str(p.get("type")) for p in parts) or "none"
    raise TokenizerError(
        f"tokenizer.json uses a pre-tokenizer llama.cpp has no exact match for ({shown}); "
        "converting it would silently change how text is split into tokens. Supported: the "
        "GPT-2 byte-level, Llama 3 / cl100k, Qwen2, Tekken and o200k pre-tokenizers"
    )


def _bpe_from_tokenizer_json(tj: Mapping[str, Any], added: Mapping[int, AddedToken]) -> _Base:
    model = tj["model"]
    vocab: dict[str, int] = model.get("vocab") or {}
    size = max([*vocab.values(), *added, -1]) + 1
    tokens: list[str | None] = [None] * size
    types = [TokenType.NORMAL] * size
    for text, i in vocab.items():
        tokens[i] = text
    for i, a in added.items():
        tokens[i], types[i] = a.gguf_token()
    filled: list[str] = []
    for i, t in enumerate(tokens):
        if t is None:
            filled.append(f"[PAD{i}]")
            types[i] = TokenType.UNUSED
        else:
            filled.append(t)

    merges: list[str] = []
    for m in model.get("merges") or []:
        merges.append(" ".join(m) if isinstance(m, list) else str(m))

    warnings: list[str] = []
    pre = identify_pre(tj)
    for c in _components(tj.get("pre_tokenizer")):
        if c.get("type") == "ByteLevel" and c.get("add_prefix_space"):
            warnings.append(
                "the tokenizer adds a space before the text, which llama.cpp's BPE does not; "
                "the first word of a prompt may be tokenized differently"
            )
    norms = [n.get("type") for n in _components(tj.get("normalizer"))]
    if any(n not in ("NFC",) for n in norms):
        warnings.append(
            f"the tokenizer normalises text ({', '.join(str(n) for n in norms)}), which "
            "llama.cpp does not; unusual input may tokenize differently"
        )

    add_bos, add_eos, first, last = _template_flags(tj.get("post_processor"))
    return _Base(
        model=TokenizerModel.BPE,
        pre=pre,
        tokens=tuple(filled),
        types=tuple(int(t) for t in types),
        scores=(),
        merges=tuple(merges),
        added_content={i: a.content for i, a in added.items()},
        default_ids={"bos": first, "eos": last, "unk": None, "pad": None},
        add_bos=add_bos,
        add_eos=add_eos,
        warnings=tuple(warnings),
    )


def _pair_adds_sep(post: Any, separators: set[str]) -> bool | None:
    """Whether the post-processor puts a separator between the texts of a pair.

    This is how llama.cpp's converter reads ``add_sep_token`` from a
    ``TemplateProcessing`` (gguf-py ``SpecialVocab``): with the leading and trailing
    special tokens of the single-text template taken off the pair template, what
    lies between ``$A`` and ``$B`` adds a separator when it is the SEP or EOS token.
    None when the template does not say.
    """

    def special(item: Any) -> str | None:
        tok = item.get("SpecialToken") if isinstance(item, dict) else None
        return str(tok.get("id")) if isinstance(tok, dict) else None

    def sequence(item: Any) -> str | None:
        seq = item.get("Sequence") if isinstance(item, dict) else None
        return str(seq.get("id")) if isinstance(seq, dict) else None

    for c in _components(post):
        if c.get("type") == "RobertaProcessing":
            return True
        if c.get("type") != "TemplateProcessing":
            continue
        single = c.get("single") or []
        pair = list(c.get("pair") or [])
        first = special(single[0]) if len(single) > 1 else None
        last = special(single[-1]) if len(single) > 1 else None
        if first and pair and special(pair[0]) == first:
            pair = pair[1:]
        if last and pair and special(pair[-1]) == last:
            pair = pair[:-1]
        if len(pair) < 3 or sequence(pair[0]) != "A" or sequence(pair[-1]) != "B":
            return None
        middle = pair[1:-1]
        adds = special(middle[0]) in separators and last is None
        if len(middle) == 2 and special(middle[1]) in separators:
            adds = True
        return adds
    return None


def _token_content(tok_config: Mapping[str, Any], name: str) -> str | None:
    value = tok_config.get(f"{name}_token")
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template_flags(post: Any) -> tuple[bool, bool, int | None, int | None]:
    """Whether the post-processor adds a special token before/after a single text."""
    for c in _components(post):
        if c.get("type") != "TemplateProcessing":
            continue
        single = c.get("single") or []
        specials = c.get("special_tokens") or {}
        first = _special_id(single[0], specials) if single else None
        last = _special_id(single[-1], specials) if len(single) > 1 else None
        return first is not None, last is not None, first, last
    return False, False, None, None


def _special_id(item: Any, specials: Mapping[str, Any]) -> int | None:
    tok = item.get("SpecialToken") if isinstance(item, dict) else None
    if not tok:
        return None
    ids = (specials.get(tok.get("id")) or {}).get("ids") or []
    return int(ids[0]) if ids else None


# --- SentencePiece (tokenizer.model) ------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Decode protobuf wire-format fields: (field number, wire type, value)."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field_no, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value = buf[i : i + 8]
            i += 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value = buf[i : i + length]
            i += length
        elif wire == 5:
            value = buf[i : i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ValueError("truncated message")
        yield field_no, wire, value


def _piece(buf: bytes) -> tuple[str, float, int]:
    """One ``SentencePiece`` message: piece text (field 1), score (2), type (3)."""
    # Fast path for the layout SentencePiece writes (a short piece, its score, the
    # type only when not NORMAL): a 262k-piece vocabulary is read in about a second.
    n = len(buf)
    if n >= 7 and buf[0] == 0x0A and buf[1] < 0x80:
        end = 2 + buf[1]
        if end + 5 <= n and buf[end] == 0x15:
            score = struct.unpack_from("<f", buf, end + 1)[0]
            rest = n - end - 5
            if rest == 0:
                return buf[2:end].decode("utf-8"), score, 1
            if rest == 2 and buf[end + 5] == 0x18 and buf[end + 6] < 0x80:
                return buf[2:end].decode("utf-8"), score, buf[end + 6]
    piece, score, ptype = "", 0.0, 1
    for f, w, v in _fields(buf):
        if f == 1 and w == 2:
            piece = v.decode("utf-8")
        elif f == 2 and w == 5:
            score = struct.unpack("<f", v)[0]
        elif f == 3 and w == 0:
            ptype = v
    return piece, score, ptype


@dataclass(frozen=True)
class SentencePieceModel:
    """The parts of a SentencePiece ``ModelProto`` that a GGUF vocabulary needs."""

    pieces: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    model_type: int  # 1 unigram, 2 BPE, 3 word, 4 char
    byte_fallback: bool
    unk_id: int
    bos_id: int
    eos_id: int
    pad_id: int
    normalizer: str
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool


def parse_sentencepiece(data: bytes) -> SentencePieceModel:
    """Decode a ``tokenizer.model`` (sentencepiece_model.proto, proto2 defaults)."""
    pieces: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    trainer: dict[int, Any] = {}
    normalizer: dict[int, Any] = {}
    for field_no, wire, value in _fields(data):
        if field_no == 1 and wire == 2:  # SentencePiece pieces
            piece, score, ptype = _piece(value)
            pieces.append(piece)
            scores.append(score)
            types.append(ptype)
        elif field_no == 2 and wire == 2:  # TrainerSpec
            trainer = {f: v for f, _w, v in _fields(value)}
        elif field_no == 3 and wire == 2:  # NormalizerSpec
            normalizer = {f: v for f, _w, v in _fields(value)}

    def signed(v: int) -> int:
        return v - (1 << 64) if v >= 1 << 63 else v

    name = normalizer.get(1, b"")
    return SentencePieceModel(
        pieces=tuple(pieces),
        scores=tuple(scores),
        types=tuple(types),
        model_type=int(trainer.get(3, 1)),
        byte_fallback=bool(trainer.get(35, 0)),
        unk_id=signed(int(trainer.get(40, 0))),
        bos_id=signed(int(trainer.get(41, 1))),
        eos_id=signed(int(trainer.get(42, 2))),
        pad_id=signed(int(trainer.get(43, (1 << 64) - 1))),
        normalizer=name.decode("utf-8") if isinstance(name, bytes) else "",
        add_dummy_prefix=bool(normalizer.get(3, 1)),
        remove_extra_whitespaces=bool(normalizer.get(4, 1)),
    )


def _spm_from_model(
    path: Path, tj: Mapping[str, Any] | None, added: Mapping[int, AddedToken]
) -> _Base:
    try:
        sp = parse_sentencepiece(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TokenizerError(
            f"{path.name} is not a readable SentencePiece model ({exc}); download it again"
        ) from exc
    if not sp.pieces:
        raise TokenizerError(f"{path.name} holds no tokens; download it again")
    # User-defined pieces keep their type (SentencePiece, like llama.cpp, matches them
    # whole before anything else), spelled the way llama.cpp matches them.
    tokens = [
        p.replace(SPM_SPACE, " ") if t == TokenType.USER_DEFINED else p
        for p, t in zip(sp.pieces, sp.types, strict=True)
    ]
    types = list(sp.types)
    scores = list(sp.scores)
    warnings: list[str] = []
    if sp.model_type != 2:
        warnings.append(
            "tokenizer.model is a unigram SentencePiece model; llama.cpp tokenizes it with "
            "score-ordered merges, which can split rare words differently"
        )
    if sp.normalizer not in ("identity", ""):
        warnings.append(
            f"tokenizer.model normalises text ({sp.normalizer}), which llama.cpp does not; "
            "text with compatibility characters may tokenize differently"
        )

    for i, a in added.items():
        while len(tokens) <= i:
            tokens.append(f"[PAD{len(tokens)}]")
            types.append(TokenType.UNUSED)
            scores.append(PAD_TOKEN_SCORE)
        tokens[i], types[i] = a.gguf_token()
        scores[i] = ADDED_TOKEN_SCORE

    add_bos, add_eos = True, False
    if tj is not None:
        tb, te, _f, _l = _template_flags(tj.get("post_processor"))
        if tj.get("post_processor"):
            add_bos, add_eos = tb, te

    def valid(i: int) -> int | None:
        return i if 0 <= i < len(tokens) else None

    return _Base(
        model=TokenizerModel.SPM,
        pre="default",
        tokens=tuple(tokens),
        types=tuple(types),
        scores=tuple(scores),
        merges=(),
        added_content={i: a.content for i, a in added.items()},
        default_ids={
            "bos": valid(sp.bos_id),
            "eos": valid(sp.eos_id),
            "unk": valid(sp.unk_id),
            "pad": valid(sp.pad_id),
        },
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=sp.add_dummy_prefix,
        warnings=tuple(warnings),
    )


# --- GGUF -----------------------------------------------------------------------------


def add_vocab(writer: Any, vocab: Vocab) -> None:
    """Write the tokenizer section to a ``gguf.GGUFWriter``."""
    writer.add_tokenizer_model(vocab.model.value)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.token_types))
    if vocab.scores:
        writer.add_token_scores(list(vocab.scores))
    if vocab.merges:
        writer.add_token_merges(list(vocab.merges))
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    if vocab.unk_id is not None:
        writer.add_unk_token_id(vocab.unk_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.add_sep is not None:
        writer.add_add_sep_token(vocab.add_sep)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def metadata_bytes(vocab: Vocab) -> int:
    """A generous estimate of the bytes the tokenizer section takes in the file."""
    n = sum(len(t.encode("utf-8")) + 8 for t in vocab.tokens)
    n += sum(len(m.encode("utf-8")) + 8 for m in vocab.merges)
    n += 8 * len(vocab.tokens)
    if isinstance(vocab.chat_template, str):
        n += len(vocab.chat_template.encode("utf-8"))
    elif vocab.chat_template:
        n += sum(len(t["template"].encode("utf-8")) for t in vocab.chat_template)
    return n
