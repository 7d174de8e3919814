"""Quantizing with llama.cpp's own mixes: exact size planning, refusals, clean outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant.errors import Cancelled, QuantError
from quant.gguf.header import read_gguf_header
from quant.gguf.types import GGMLType, LlamaFileType
from quant.jobs.quantize import (
    ImatrixRequiredError,
    QuantizeOptions,
    parse_file_types,
    plan_quantization,
    quantize,
)
from quant.progress import CancelToken, Progress


def test_type_lists_parse_with_aliases_and_without_repeats() -> None:
    assert parse_file_types("q4_k_m, Q5_K, iq4_xs,Q4_K_M") == (
        LlamaFileType.Q4_K_M,
        LlamaFileType.Q5_K_M,
        LlamaFileType.IQ4_XS,
    )
    with pytest.raises(QuantError, match="unknown quantization type 'Q4_K_XL'"):
        parse_file_types("Q4_K_XL")


@pytest.mark.parametrize("ftype", ["IQ3_XXS", "IQ2_XS", "IQ1_S", "Q2_K_S"])
def test_low_bit_types_are_refused_without_an_imatrix(
    ftype: str, f16_model: Path, tmp_path: Path
) -> None:
    t = LlamaFileType[ftype]
    with pytest.raises(ImatrixRequiredError, match=rf"{ftype} .*importance matrix.*--imatrix auto"):
        quantize(f16_model, tmp_path / "x.gguf", QuantizeOptions(t))
    assert list(tmp_path.iterdir()) == []


def test_dry_run_predicts_the_exact_size_and_progress_covers_every_tensor(
    f16_model: Path, tmp_path: Path
) -> None:
    options = QuantizeOptions(LlamaFileType.Q8_0, metadata={"quantdesk.test": "hello"})
    plan = plan_quantization(f16_model, options)
    assert plan.type_counts() == {"F32": 109, "Q8_0": 127}
    assert not plan.needs_imatrix

    seen: list[Progress] = []
    out = tmp_path / "gemma-Q8_0.gguf"
    result = quantize(f16_model, out, options, on_progress=seen.append)
    assert result.size_bytes == out.stat().st_size == plan.size_bytes
    assert [p.done for p in seen] == list(range(1, 237))
    assert {p.total for p in seen} == {236}
    assert 8.5 < result.bits_per_weight < 8.8  # token_embd dominates this small model
    info = read_gguf_header(out)
    assert info.file_type is LlamaFileType.Q8_0
    assert info.get("quantdesk.test") == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma-Q8_0.gguf"]


def test_plan_reports_per_tensor_types_of_a_k_quant_mix(f16_model: Path) -> None:
    plan = plan_quantization(f16_model, QuantizeOptions(LlamaFileType.Q4_K_M))
    by_name = {t.name: t for t in plan.tensors}
    # Gemma's 640-wide rows do not divide into 256-blocks: llama.cpp falls back for them.
    assert by_name["blk.0.attn_output.weight"].target_type == "Q4_K"
    assert by_name["blk.0.attn_q.weight"].target_type == "Q5_0"
    assert by_name["blk.0.attn_norm.weight"].target_type == "F32"
    assert (
        plan.size_bytes
        < plan_quantization(f16_model, QuantizeOptions(LlamaFileType.Q8_0)).size_bytes
    )


def test_an_already_quantized_source_is_refused(starter_model: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantError, match=r"already quantized \(Q4_K_M\).*F16, BF16 or Q8_0"):
        quantize(starter_model, tmp_path / "x.gguf", QuantizeOptions(LlamaFileType.Q4_0))


def test_cancel_before_the_native_call_writes_nothing(f16_model: Path, tmp_path: Path) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        quantize(f16_model, tmp_path / "x.gguf", QuantizeOptions(LlamaFileType.Q8_0), cancel=token)
    assert list(tmp_path.iterdir()) == []


def test_output_and_embedding_types_can_be_chosen(f16_model: Path) -> None:
    options = QuantizeOptions(LlamaFileType.Q8_0, token_embedding_type=GGMLType.Q4_0)
    plan = plan_quantization(f16_model, options)
    assert {t.name: t.target_type for t in plan.tensors}["token_embd.weight"] == "Q4_0"
