"""Round trip on the real starter: GGUF → Hugging Face folder → Quantdesk → GGUF.

The starter GGUF was made by llama.cpp's own converter, so converting the Hugging
Face folder rebuilt from it (tests/convert/roundtrip.py) must give back its
vocabulary, every tokenizer key and the same tokens for any text; and, since the
F16 weights go through unchanged, the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest

from quant.convert import ConvertResult, convert_hf
from tests.convert.conftest import llama_logits, relative_error
from tests.convert.roundtrip import ROUNDTRIP_TEXTS, rebuild_gemma3, tokenizer_metadata

pytestmark = pytest.mark.slow

# F16 keeps 11 significant bits; the weights pass through bit for bit, so anything
# beyond one rounding step of them would be a conversion error.
F16_ROUNDING = 2.0**-10


@dataclass(frozen=True)
class RoundTrip:
    original: Path  # the starter GGUF, as llama.cpp's converter wrote it
    f16: Path  # the same model, tensors expanded to F16
    folder: Path  # the Hugging Face folder rebuilt from it
    converted: Path  # that folder converted by Quantdesk
    result: ConvertResult


@pytest.fixture(scope="module")
def trip(
    starter_model: Path, f16_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> RoundTrip:
    root = tmp_path_factory.mktemp("gemma3-roundtrip")
    folder = rebuild_gemma3(starter_model, f16_model, root / "gemma-3-270m")
    out = root / "gemma-3-270m-F16.gguf"
    result = convert_hf(folder, out)
    return RoundTrip(starter_model, f16_model, folder, out, result)


def _tokenize_all(path: Path) -> list[list[int]]:
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        return [
            list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=special))
            for text in ROUNDTRIP_TEXTS
            for special in (False, True)
        ]
    finally:
        llm.close()


def _differences(want: Any, got: Any) -> list[str]:
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{len(got)} entries, expected {len(want)}"]
        pairs = enumerate(zip(want, got, strict=True))
        return [f"[{i}] {g!r} != {w!r}" for i, (w, g) in pairs if w != g]
    return [] if want == got else [f"{got!r} != {want!r}"]


def test_vocabulary_and_tokenizer_keys_are_the_originals(trip: RoundTrip) -> None:
    want = tokenizer_metadata(trip.original)
    got = tokenizer_metadata(trip.converted)
    # tokenizer.ggml.{model, pre, tokens, scores, token_type, bos/eos/unknown/padding
    # token ids, add_bos/add_sep/add_eos_token, add_space_prefix}.
    assert len(want) == 13
    assert sorted(got) == sorted(want)
    assert len(want["tokenizer.ggml.tokens"]) == 262144
    differences = {k: d for k in want if (d := _differences(want[k], got[k]))}
    assert differences == {}, {k: d[:5] for k, d in differences.items()}
    # What code indentation turns into: Gemma's whitespace pieces, as llama.cpp needs them.
    tokens = got["tokenizer.ggml.tokens"]
    assert tokens[138:168] == [" " * n for n in range(2, 32)]
    assert trip.result.tokenizer["bos"] == "<bos>"
    assert trip.result.warnings == ()


def test_every_text_tokenizes_like_the_original(trip: RoundTrip) -> None:
    want = _tokenize_all(trip.original)
    got = _tokenize_all(trip.converted)
    assert len(got) == 2 * len(ROUNDTRIP_TEXTS)
    mismatched = [
        (ROUNDTRIP_TEXTS[i // 2], bool(i % 2), w, g)
        for i, (w, g) in enumerate(zip(want, got, strict=True))
        if w != g
    ]
    assert mismatched == []


def test_indentation_reads_and_prints_like_sentencepiece(trip: RoundTrip) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(
        model_proto=(trip.folder / "tokenizer.model").read_bytes()
    )
    code = "def f(x):\n    if x:\n        return [\n            x,\n  ]\n\t\treturn 0\n"
    llm = llama_cpp.Llama(str(trip.converted), vocab_only=True, verbose=False)
    try:
        ids = list(llm.tokenize(code.encode("utf-8"), add_bos=False, special=False))
        assert ids == sp.encode(code)
        assert " " * 8 in [sp.id_to_piece(i).replace("\u2581", " ") for i in ids]
        # A model that writes code gets its indentation printed as spaces.
        assert llm.detokenize(ids).decode("utf-8") == code
    finally:
        llm.close()


def test_logits_match_the_original_within_f16_rounding(trip: RoundTrip) -> None:
    prompt = "<start_of_turn>user\ndef add(a, b):\n    return a + b<end_of_turn>\n"
    llm = llama_cpp.Llama(str(trip.original), vocab_only=True, verbose=False)
    try:
        ids = list(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
    finally:
        llm.close()
    want = llama_logits(trip.f16, ids)
    got = llama_logits(trip.converted, ids)
    assert relative_error(got, want) <= F16_ROUNDING
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
