"""Converted models compute what the original computes: llama.cpp vs a numpy reference.

Every supported architecture is built as a tiny random checkpoint, converted, loaded
with llama-cpp-python, and its logits for a prompt are compared with the
independent forward pass in ``reference.py``. Negative tests prove the comparison
is sharp enough to catch a missing layout transform.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jinja2
import numpy as np
import pytest

import quant.convert.architectures as arch
from quant.convert import convert_hf
from tests.convert import checkpoints as ckpt
from tests.convert import reference
from tests.convert.conftest import (
    F32_TOLERANCE,
    llama_logits,
    llama_tokenize,
    loaded,
    relative_error,
)

PROMPT = "Hello world! def add(a, b):\n    return a + b  # déjà vu 日本語 🦙 1234"

FAMILIES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3"]


def prompt_ids(gguf: Path, n: int = 24) -> list[int]:
    ids = llama_tokenize(gguf, PROMPT)
    assert len(ids) >= n, "prompt too short to exercise positions and sliding windows"
    return ids[:n]


def convert_and_compare(
    built: ckpt.Built,
    tmp_path: Path,
    outtype: str = "f32",
    n_ctx: int = 128,
    rope_context: int | None = None,
) -> float:
    out = tmp_path / f"{built.path.name}-{outtype}.gguf"
    convert_hf(built.path, out, outtype=outtype)
    ids = prompt_ids(out)
    got = llama_logits(out, ids, n_ctx=n_ctx)
    want = reference.forward(built.config, built.weights, ids, rope_context=rope_context)
    return relative_error(got, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_conversion_matches_reference_logits(
    family: str, build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    err = convert_and_compare(build(family), tmp_path)
    assert err < F32_TOLERANCE, f"{family}: logits differ from the reference by {err:.2e}"


def test_llama_attention_biases_are_permuted_with_their_rows(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    err = convert_and_compare(build("llama", attention_bias=True), tmp_path)
    assert err < F32_TOLERANCE


def test_missing_qk_permutation_is_caught(
    build: Callable[..., ckpt.Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build("llama")
    monkeypatch.setattr(arch, "_PERMUTE_QK", False)
    err = convert_and_compare(built, tmp_path)
    assert err > 50 * F32_TOLERANCE, f"unpermuted Q/K went unnoticed (error {err:.2e})"


def test_missing_gemma_norm_offset_is_caught(
    build: Callable[..., ckpt.Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build("gemma2")
    monkeypatch.setattr(arch, "_GEMMA_NORM_OFFSET", False)
    err = convert_and_compare(built, tmp_path)
    assert err > 50 * F32_TOLERANCE, f"Gemma norms without +1 went unnoticed (error {err:.2e})"


def test_gemma_query_pre_attn_scalar_is_folded(
    build: Callable[..., ckpt.Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny Gemma 2 uses query_pre_attn_scalar 24 with head_dim 32: without the
    # folded factor llama.cpp would scale queries by 1/sqrt(32) instead of 1/sqrt(24).
    built = build("gemma2")
    monkeypatch.setattr(arch, "_gemma_query_scale", lambda qpas, llama_scalar: 1.0)
    err = convert_and_compare(built, tmp_path)
    assert err > 10 * F32_TOLERANCE, f"unscaled queries went unnoticed (error {err:.2e})"


def test_phi3_long_rope_factors_apply_beyond_original_context(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    # llama.cpp picks LongRoPE's long factors when the context exceeds the original
    # 512 tokens; the reference does the same when told the sequence is that long.
    built = build("phi3")
    err_long = convert_and_compare(built, tmp_path, n_ctx=1024, rope_context=1024)
    assert err_long < F32_TOLERANCE
    out = tmp_path / f"{built.path.name}-f32.gguf"
    ids = prompt_ids(out)
    short = reference.forward(built.config, built.weights, ids)
    long = reference.forward(built.config, built.weights, ids, rope_context=1024)
    assert relative_error(short, long) > 50 * F32_TOLERANCE, "factors too similar to tell apart"


@pytest.mark.parametrize(("outtype", "tolerance"), [("f16", 0.01), ("bf16", 0.05), ("q8_0", 0.08)])
def test_reduced_precision_outputs_stay_close(
    outtype: str, tolerance: float, build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    import gguf

    built = build("llama")
    err = convert_and_compare(built, tmp_path, outtype=outtype)
    assert err < tolerance
    reader = gguf.GGUFReader(tmp_path / f"llama-{outtype}.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == outtype.upper()
    assert types["token_embd.weight"] == outtype.upper()
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["rope_freqs.weight"] == "F32"


def test_gemma3_multimodal_checkpoint_converts_its_text_model(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    """Gemma3ForConditionalGeneration: nested text_config, prefixed names, vision skipped."""
    built = build("gemma3", name="gemma3-mm")
    text_cfg = {k: v for k, v in built.config.items() if k not in ("architectures",)}
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text_cfg,
        "vision_config": {"hidden_size": 16},
    }
    (built.path / "config.json").write_text(json.dumps(config))
    renamed = {
        ("language_model." + k if k.startswith("model.") else k): v
        for k, v in built.weights.items()
    }
    renamed["vision_tower.vision_model.embeddings.patch_embedding.weight"] = np.ones(
        (4, 4), np.float32
    )
    renamed["multi_modal_projector.mm_input_projection_weight"] = np.ones((4, 4), np.float32)
    (built.path / "model.safetensors").unlink()
    ckpt.write_weights(built.path, renamed)
    mm = ckpt.Built(built.path, config, built.weights)
    err = convert_and_compare(mm, tmp_path)
    assert err < F32_TOLERANCE


def test_converted_model_chats_with_its_template(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("qwen2")
    out = tmp_path / "chat.gguf"
    convert_hf(built.path, out)
    with loaded(out, n_ctx=256) as llm:
        assert llm.metadata["tokenizer.chat_template"] == ckpt.CHAT_TEMPLATE
        reply = llm.create_chat_completion(
            [{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0.0
        )
    choice = reply["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    assert reply["usage"]["completion_tokens"] >= 1
    # The prompt llama.cpp ran is the template rendered and tokenized with its special
    # tokens intact, exactly as the source tokenizer encodes it.
    rendered = jinja2.Template(ckpt.CHAT_TEMPLATE).render(
        messages=[{"role": "user", "content": "Say hello"}], add_generation_prompt=True
    )
    assert reply["usage"]["prompt_tokens"] == len(built.hf_tokenizer.encode(rendered).ids)
