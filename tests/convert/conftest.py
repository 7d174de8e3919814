"""Fixtures for converter tests: tokenizers trained once, tiny checkpoints per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# llama_cpp before anything that imports sentencepiece (gguf does): on CUDA builds
# the reverse order crashes the next model load.
import llama_cpp
import numpy as np
import pytest

from tests.convert import checkpoints as ckpt

# Largest logit difference allowed, relative to the largest reference logit (at least 1).
# Correct F32 conversions land around 1e-6 (1e-4 for Gemma's tabulated GELU); a missing
# Q/K permutation or a wrong norm gives differences of order one.
F32_TOLERANCE = 2e-3


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))


@contextmanager
def loaded(path: Path, n_ctx: int = 128, **kw: Any) -> Iterator[llama_cpp.Llama]:
    """A llama.cpp model with F32 KV cache (so the comparison measures the weights)."""
    llm = llama_cpp.Llama(
        str(path),
        n_ctx=n_ctx,
        logits_all=True,
        verbose=False,
        type_k=0,
        type_v=0,
        n_threads=2,
        **kw,
    )
    try:
        yield llm
    finally:
        llm.close()


def llama_logits(path: Path, ids: list[int], n_ctx: int = 128) -> np.ndarray:
    with loaded(path, n_ctx) as llm:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)


def llama_tokenize(path: Path, text: str, *, special: bool = False) -> list[int]:
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=special))
    finally:
        llm.close()


@pytest.fixture(scope="session")
def bpe() -> dict[str, Any]:
    """Byte-level BPE tokenizers trained on the spot, one per pre-tokenizer style."""
    return {
        "llama3": ckpt.with_bos(
            ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
        ),
        "qwen2": ckpt.train_bpe("qwen2", specials=ckpt.QWEN_SPECIALS),
        "gpt2": ckpt.train_bpe("gpt2", specials=ckpt.QWEN_SPECIALS),
    }


@pytest.fixture(scope="session")
def spm() -> dict[str, bytes]:
    """SentencePiece models: Llama 2 / Mistral style (dummy prefix) and Gemma style."""
    return {
        "prefix": ckpt.train_spm(dummy_prefix=True),
        "gemma": ckpt.train_spm(dummy_prefix=False),
    }


@pytest.fixture
def build(tmp_path: Path, bpe: dict[str, Any], spm: dict[str, bytes]) -> Callable[..., ckpt.Built]:
    """``build(family, **config_overrides)`` writes a tiny checkpoint under tmp_path."""
    tokenizer_of = {
        "llama": bpe["llama3"],
        "qwen2": bpe["qwen2"],
        "qwen3": bpe["qwen2"],
        "qwen3moe": bpe["qwen2"],
        "phi3": bpe["gpt2"],
        "mistral": spm["prefix"],
        "mixtral": spm["prefix"],
        "gemma2": spm["gemma"],
        "gemma3": spm["gemma"],
    }

    def make(family: str, name: str | None = None, **over: Any) -> ckpt.Built:
        return ckpt.BUILDERS[family](tmp_path / (name or family), tokenizer_of[family], **over)

    return make
