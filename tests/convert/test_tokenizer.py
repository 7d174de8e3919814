"""The converted GGUF tokenizes text exactly like the source tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

import quant.convert.tokenizer as tokmod
from quant.convert import TokenizerError, convert_hf
from tests.convert import checkpoints as ckpt
from tests.convert import roundtrip
from tests.convert.conftest import llama_tokenize

CHAT_TEXT = "<|start|>user\nWhat is 2+2? Café 🦙<|end|>\n<|start|>assistant\n"


def convert_llama_with(tmp_path: Path, tok: Any, name: str) -> tuple[ckpt.Built, Path]:
    built = ckpt.build_llama(tmp_path / name, tok, num_hidden_layers=1)
    out = tmp_path / f"{name}.gguf"
    convert_hf(built.path, out)
    return built, out


def gguf_kv(path: Path, key: str) -> Any:
    import gguf

    field = gguf.GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


@pytest.mark.parametrize(
    ("style", "pre"),
    [
        ("llama3", "llama-bpe"),
        ("cl100k", "dbrx"),
        ("qwen2", "qwen2"),
        ("tekken", "tekken"),
        ("o200k", "gpt-4o"),
        ("gpt2", "gpt-2"),
    ],
)
def test_bpe_mixed_text_tokenizes_like_source(style: str, pre: str, tmp_path: Path) -> None:
    tok = ckpt.with_bos(ckpt.train_bpe(style, specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>")
    _built, out = convert_llama_with(tmp_path, tok, style)
    assert gguf_kv(out, "tokenizer.ggml.pre") == pre
    assert llama_tokenize(out, ckpt.MIXED_TEXT) == tok.encode(ckpt.MIXED_TEXT).ids
    # Special tokens written in the text are single tokens, as in the source.
    assert llama_tokenize(out, CHAT_TEXT, special=True) == tok.encode(CHAT_TEXT).ids


def test_wrong_pre_tokenizer_changes_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mixed text is sensitive enough to expose a wrongly identified pre-tokenizer.
    tok = ckpt.with_bos(
        ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
    )
    monkeypatch.setattr(tokmod, "identify_pre", lambda tj: "gpt-2")
    _built, out = convert_llama_with(tmp_path, tok, "wrong-pre")
    assert llama_tokenize(out, ckpt.MIXED_TEXT) != tok.encode(ckpt.MIXED_TEXT).ids


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_sentencepiece_mixed_text_tokenizes_like_source(
    family: str, build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    import sentencepiece

    built = build(family)
    out = tmp_path / f"{family}.gguf"
    convert_hf(built.path, out)
    sp = sentencepiece.SentencePieceProcessor(model_proto=built.sp_model)
    text = ckpt.MIXED_TEXT
    if family == "gemma3":
        # A user-defined piece inside the text. (With a dummy prefix, llama.cpp adds a
        # space after such a piece, like transformers' legacy Llama tokenizer, unlike
        # raw SentencePiece; Gemma has no dummy prefix.)
        text += " <start_of_turn>user"
    assert llama_tokenize(out, text) == [sp.bos_id(), *sp.encode(text)]
    assert gguf_kv(out, "tokenizer.ggml.model") == "llama"
    assert gguf_kv(out, "tokenizer.ggml.add_space_prefix") is (family == "mistral")


def test_sentencepiece_model_is_read_without_sentencepiece(spm: dict[str, bytes]) -> None:
    import sentencepiece

    for proto in spm.values():
        parsed = tokmod.parse_sentencepiece(proto)
        sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        assert len(parsed.pieces) == sp.get_piece_size()
        for i in range(sp.get_piece_size()):
            assert parsed.pieces[i] == sp.id_to_piece(i)
            assert parsed.scores[i] == pytest.approx(sp.get_score(i))
            assert (parsed.types[i] == tokmod.TokenType.CONTROL) == sp.is_control(i)
            assert (parsed.types[i] == tokmod.TokenType.BYTE) == sp.is_byte(i)
            assert (parsed.types[i] == tokmod.TokenType.UNKNOWN) == sp.is_unknown(i)
        assert (parsed.bos_id, parsed.eos_id, parsed.unk_id) == (
            sp.bos_id(),
            sp.eos_id(),
            sp.unk_id(),
        )
        assert parsed.pad_id == sp.pad_id() == -1
        assert parsed.byte_fallback


def test_special_tokens_and_flags_are_carried_over(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    llama = build("llama")
    qwen = build("qwen2")
    for built, bos, add_bos, eos in (
        (llama, "<|begin_of_text|>", True, "<|end_of_text|>"),
        (qwen, "<|endoftext|>", False, "<|end|>"),
    ):
        out = tmp_path / f"{built.path.name}.gguf"
        result = convert_hf(built.path, out)
        tok = built.hf_tokenizer
        assert gguf_kv(out, "tokenizer.ggml.bos_token_id") == tok.token_to_id(bos)
        assert gguf_kv(out, "tokenizer.ggml.eos_token_id") == tok.token_to_id(eos)
        assert gguf_kv(out, "tokenizer.ggml.add_bos_token") is add_bos
        assert gguf_kv(out, "tokenizer.chat_template") == ckpt.CHAT_TEMPLATE
        assert result.tokenizer["add_bos"] is add_bos
        # The vocabulary is padded to the embedding's rows with unused tokens.
        tokens = gguf_kv(out, "tokenizer.ggml.tokens")
        types = gguf_kv(out, "tokenizer.ggml.token_type")
        assert len(tokens) == built.config["vocab_size"]
        assert types[-1] == tokmod.TokenType.UNUSED
        assert types[tok.token_to_id(eos)] == tokmod.TokenType.CONTROL


def test_chat_template_file_takes_precedence(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("qwen3")
    template = "{{ messages[0]['content'] }}"
    (built.path / "chat_template.jinja").write_text(template)
    out = tmp_path / "t.gguf"
    convert_hf(built.path, out)
    assert gguf_kv(out, "tokenizer.chat_template") == template


def test_unknown_pre_tokenizer_is_refused(build: Callable[..., ckpt.Built], tmp_path: Path) -> None:
    built = build("qwen3")
    path = built.path / "tokenizer.json"
    tj = json.loads(path.read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
    path.write_text(json.dumps(tj))
    out = tmp_path / "x.gguf"
    with pytest.raises(TokenizerError, match=r"pre-tokenizer llama\.cpp has no exact match"):
        convert_hf(built.path, out)
    assert list(tmp_path.glob("*.gguf*")) == []


def test_missing_tokenizer_is_explained(build: Callable[..., ckpt.Built], tmp_path: Path) -> None:
    built = build("gemma2")
    (built.path / "tokenizer.model").unlink()
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json or tokenizer\.model"):
        convert_hf(built.path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def _with_pieces(proto: bytes, extra: list[tuple[str, int]]) -> bytes:
    """``proto`` with extra pieces (SentencePiece spelling and type) appended, score 0."""
    parsed = tokmod.parse_sentencepiece(proto)
    return roundtrip.sentencepiece_proto(
        [*parsed.pieces, *(p for p, _t in extra)],
        [*parsed.scores, *(0.0 for _ in extra)],
        [*parsed.types, *(t for _p, t in extra)],
        unk_id=parsed.unk_id,
        bos_id=parsed.bos_id,
        eos_id=parsed.eos_id,
        pad_id=parsed.pad_id,
        add_dummy_prefix=parsed.add_dummy_prefix,
    )


def test_added_tokens_are_spelled_as_llama_cpp_matches_them(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    import sentencepiece

    built = build("gemma3")
    n = len(tokmod.parse_sentencepiece(built.sp_model).pieces)
    ud = roundtrip.USER_DEFINED
    extra = [("▁▁▁", ud), ("▁▁▁▁▁▁", ud), ("▁▁▁▁▁▁▁▁", ud), ("<unused0>", ud), ("<img>", ud)]
    proto = _with_pieces(built.sp_model, extra)
    (built.path / "tokenizer.model").write_bytes(proto)
    config_path = built.path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    # Gemma lists its added pieces in SentencePiece spelling; "<unused0>" is not
    # marked special but is a control token all the same. "<img>" is not listed.
    config["added_tokens_decoder"] = {
        str(n + i): {"content": piece, "special": False} for i, (piece, _t) in enumerate(extra[:4])
    }
    config_path.write_text(json.dumps(config))
    out = tmp_path / "added.gguf"
    convert_hf(built.path, out)

    tokens = gguf_kv(out, "tokenizer.ggml.tokens")
    types = gguf_kv(out, "tokenizer.ggml.token_type")
    scores = gguf_kv(out, "tokenizer.ggml.scores")
    t = tokmod.TokenType
    assert tokens[n : n + 5] == ["   ", "      ", "        ", "<unused0>", "<img>"]
    assert types[n : n + 5] == [t.USER_DEFINED] * 3 + [t.CONTROL, t.USER_DEFINED]
    assert scores[n : n + 5] == [-1000.0] * 4 + [0.0]
    # Embedding rows beyond the tokenizer are padding, as llama.cpp's converter pads.
    assert (tokens[-1], types[-1], scores[-1]) == (f"[PAD{len(tokens) - 1}]", t.UNUSED, -10000.0)

    sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    code = "def f(x):\n   if x:\n        return x  # two  spaces\n      y = 1\n"
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    try:
        ids = list(llm.tokenize(code.encode(), add_bos=False, special=False))
        assert ids == sp.encode(code)
        assert {n, n + 1, n + 2} <= set(ids)
        # Indentation the model writes prints as spaces.
        assert llm.detokenize(ids).decode() == code
        # A control token is never read from plain text, only from a template.
        assert n + 3 not in llm.tokenize(b"<unused0>", add_bos=False, special=False)
        assert llm.tokenize(b"<unused0>", add_bos=False, special=True) == [n + 3]
    finally:
        llm.close()


@pytest.mark.parametrize(
    ("text", "special"),
    [
        ("<unused12>", True),
        ("<mask>", True),
        ("<|tool_call|>", True),
        ("<｜User｜>", True),
        ("<start_of_turn>", False),
        ("▁▁", False),
        ("<table>", False),
    ],
)
def test_tokens_that_look_special(text: str, special: bool) -> None:
    assert tokmod.looks_special(text) is special
    gguf_text, kind = tokmod.AddedToken(text, special=False).gguf_token()
    if special:
        assert (gguf_text, kind) == (text, tokmod.TokenType.CONTROL)
    else:
        assert (gguf_text, kind) == (text.replace("▁", " "), tokmod.TokenType.USER_DEFINED)
    assert tokmod.AddedToken(text, special=True).gguf_token() == (text, tokmod.TokenType.CONTROL)


def test_bpe_added_tokens_follow_the_same_rules(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("qwen3")
    tok = built.hf_tokenizer
    tok_path = built.path / "tokenizer.json"
    tj = json.loads(tok_path.read_text())
    next_id = tok.get_vocab_size(with_added_tokens=True)
    tj["added_tokens"] += [
        {"id": next_id, "content": "<|tool|>", "special": False, "normalized": False},
        {"id": next_id + 1, "content": "▁▁", "special": False, "normalized": False},
    ]
    tok_path.write_text(json.dumps(tj))
    out = tmp_path / "bpe-added.gguf"
    convert_hf(built.path, out)
    tokens = gguf_kv(out, "tokenizer.ggml.tokens")
    types = gguf_kv(out, "tokenizer.ggml.token_type")
    assert tokens[next_id : next_id + 2] == ["<|tool|>", "  "]
    assert types[next_id : next_id + 2] == [tokmod.TokenType.CONTROL, tokmod.TokenType.USER_DEFINED]


def test_separator_flag_is_read_from_the_pair_template(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    def pair(*items: str) -> dict[str, Any]:
        return {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": items[0]}}, {"Sequence": {"id": "A"}}],
            "pair": [
                {"Sequence": {"id": x}} if x in "AB" else {"SpecialToken": {"id": x}} for x in items
            ],
        }

    # Gemma and Llama 3 repeat BOS between the texts: no separator (upstream writes False).
    assert tokmod._pair_adds_sep(pair("<bos>", "A", "<bos>", "B"), {"<eos>"}) is False
    # A separator that is the SEP or EOS token.
    assert tokmod._pair_adds_sep(pair("[CLS]", "A", "[SEP]", "B"), {"[SEP]"}) is True
    # Nothing between the texts: the template says nothing about a separator.
    assert tokmod._pair_adds_sep(pair("<s>", "A", "B"), {"</s>"}) is None
    assert tokmod._pair_adds_sep({"type": "ByteLevel"}, {"</s>"}) is None

    built = build("llama")  # BOS template "<|begin_of_text|> $A <|begin_of_text|> $B"
    out = tmp_path / "sep.gguf"
    convert_hf(built.path, out)
    assert gguf_kv(out, "tokenizer.ggml.add_sep_token") is False
    qwen = build("qwen2")  # byte-level post-processor only: no key, like upstream
    out = tmp_path / "nosep.gguf"
    convert_hf(qwen.path, out)
    assert gguf_kv(out, "tokenizer.ggml.add_sep_token") is None
