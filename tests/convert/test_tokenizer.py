"""The converted GGUF tokenizes text exactly like the source tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import quant.convert.tokenizer as tokmod
from quant.convert import TokenizerError, convert_hf
from tests.convert import checkpoints as ckpt
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
