"""The format table: every llama.cpp type and serving format, with priors a user can trust."""

from __future__ import annotations

import json

import pytest

from quant.gguf.types import LlamaFileType
from quant.plan.formats import (
    GGUF_FORMATS,
    GPU_FORMATS,
    FormatFamily,
    GpuFormat,
    ImatrixNeed,
    QuantType,
    density_factor,
    format_table,
    predict_quality,
    same_top_token_from_kld,
    size_factor,
    spec_for_key,
)

# The file types the issue names, most to least precise.
ISSUE_TYPES = [
    "F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0",
    "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "IQ3_M", "Q3_K_S", "IQ3_XXS", "Q2_K", "IQ2_M",
    "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
]  # fmt: skip


def test_every_llama_cpp_type_and_gpu_format_is_in_the_table() -> None:
    assert [t.value for t in QuantType] == ISSUE_TYPES
    assert set(GGUF_FORMATS) == set(QuantType)
    assert {f.value for f in GpuFormat} == {"BF16", "FP8", "INT8", "AWQ", "GPTQ", "NVFP4"}
    assert len(format_table()) == len(ISSUE_TYPES) + 6
    for t in QuantType:
        # Each GGUF type is a llama.cpp file type the quantizer accepts.
        assert t.file_type is LlamaFileType[t.value]


def test_bits_per_weight_order_follows_precision() -> None:
    table = [GGUF_FORMATS[t] for t in QuantType]
    classes = [s.precision_bits for s in table]
    assert classes == sorted(classes, reverse=True)
    # Within a class the effective size may interleave (IQ4_NL 4.68 vs Q4_K_S 4.67),
    # but a lower class is never larger than a higher one's smallest member, bar Q3_K_L.
    assert GGUF_FORMATS[QuantType.Q8_0].effective_bpw > GGUF_FORMATS[QuantType.Q6_K].effective_bpw
    assert GGUF_FORMATS[QuantType.Q2_K].effective_bpw < GGUF_FORMATS[QuantType.Q3_K_S].effective_bpw
    # Whole-file bpw is never below the nominal block bpw (outputs stay at 6+ bits).
    for spec in GGUF_FORMATS.values():
        assert spec.effective_bpw >= spec.nominal_bpw - 0.01, spec.label
    assert GGUF_FORMATS[QuantType.Q4_K_M].effective_bpw == pytest.approx(4.89)
    assert GPU_FORMATS[GpuFormat.AWQ].effective_bpw == pytest.approx(4.16)


def test_imatrix_required_exactly_where_llama_cpp_refuses_without_one() -> None:
    required = {t.value for t, s in GGUF_FORMATS.items() if s.imatrix is ImatrixNeed.REQUIRED}
    # llama.cpp's tensor_requires_imatrix: IQ1_S/M, IQ2_XXS/XS/S (IQ2_M uses IQ2_S), IQ3_XXS.
    assert required == {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_M", "IQ3_XXS"}
    # Below ~4.5 bpw the imatrix is load-bearing: advised for every other low type.
    for t in (QuantType.Q2_K, QuantType.Q3_K_S, QuantType.Q3_K_M, QuantType.IQ4_XS):
        assert GGUF_FORMATS[t].imatrix is ImatrixNeed.ADVISED
    assert GGUF_FORMATS[QuantType.Q8_0].imatrix is ImatrixNeed.NOT_USED


def test_gpu_formats_name_the_compute_capability_they_need() -> None:
    fp8 = GPU_FORMATS[GpuFormat.FP8]
    assert fp8.supported_on((8, 9)) and fp8.supported_on((9, 0))
    assert not fp8.supported_on((8, 6))  # an RTX 3060 has no FP8 tensor cores
    assert GPU_FORMATS[GpuFormat.AWQ].supported_on((7, 5))
    assert not GPU_FORMATS[GpuFormat.NVFP4].supported_on((9, 0))
    assert GPU_FORMATS[GpuFormat.NVFP4].supported_on((10, 0))
    assert not GPU_FORMATS[GpuFormat.INT8].supported_on(None)
    # GGUF runs on anything llama.cpp runs on.
    assert GGUF_FORMATS[QuantType.Q4_K_M].supported_on(None)
    assert all(s.family is FormatFamily.GPU for s in GPU_FORMATS.values())


def test_quality_prior_on_the_reference_model_is_the_scoreboard() -> None:
    q = predict_quality(GGUF_FORMATS[QuantType.Q4_K_M], parameters=8_000_000_000, imatrix=False)
    assert q.kld == pytest.approx(0.0313)
    assert q.delta_ppl == pytest.approx(0.175)
    q_im = predict_quality(GGUF_FORMATS[QuantType.Q4_K_M], parameters=8_000_000_000)
    assert q_im.kld == pytest.approx(0.0282)
    # The top-token power law reproduces the scoreboard's four published values.
    for t, top1 in (
        (QuantType.Q8_0, 0.977),
        (QuantType.Q6_K, 0.960),
        (QuantType.Q4_K_M, 0.919),
        (QuantType.Q2_K, 0.711),
    ):
        kld = GGUF_FORMATS[t].quality.kld
        assert kld is not None
        assert same_top_token_from_kld(kld) == pytest.approx(top1, abs=0.012), t


def test_small_models_lose_more_and_large_models_less() -> None:
    spec = GGUF_FORMATS[QuantType.Q4_K_M]
    losses = [
        predict_quality(spec, parameters=p).kld
        for p in (270_000_000, 1_000_000_000, 8_000_000_000, 32_000_000_000, 70_000_000_000)
    ]
    assert losses == sorted(losses, reverse=True)
    assert size_factor(70_000_000_000) == pytest.approx((8 / 70) ** 0.4)
    # Bounded both ways: no free lunch for huge models, no infinite loss for tiny ones.
    assert size_factor(10**12) == pytest.approx(0.35)
    assert size_factor(10**6) == pytest.approx(4.0)
    tiny = predict_quality(spec, parameters=270_000_000)
    assert tiny.same_top_token is not None and tiny.same_top_token < 0.919


def test_densely_trained_models_lose_more() -> None:
    # Llama-2-7B (2T tokens) lost 0.0127 KLD at Q4_K_M where Llama-3-8B (15T) lost 0.0313.
    llama2 = density_factor(7_000_000_000, 2e12)
    llama3 = density_factor(8_000_000_000, 15e12)
    assert llama3 == pytest.approx(1.0)
    assert 0.0313 * llama2 == pytest.approx(0.0127, rel=0.15)
    assert density_factor(8_000_000_000, None) == 1.0
    spec = GGUF_FORMATS[QuantType.Q4_K_M]
    dense = predict_quality(spec, parameters=270_000_000, training_tokens=6e12)
    unknown = predict_quality(spec, parameters=270_000_000)
    assert dense.kld is not None and unknown.kld is not None
    assert dense.kld > unknown.kld


def test_moe_size_is_between_active_and_total() -> None:
    spec = GGUF_FORMATS[QuantType.Q4_K_M]
    moe = predict_quality(spec, parameters=30_000_000_000, active_parameters=3_000_000_000)
    dense_total = predict_quality(spec, parameters=30_000_000_000)
    dense_active = predict_quality(spec, parameters=3_000_000_000)
    assert dense_total.kld is not None and moe.kld is not None and dense_active.kld is not None
    assert dense_total.kld < moe.kld < dense_active.kld


def test_types_that_need_an_imatrix_have_no_quality_without_one() -> None:
    q = predict_quality(GGUF_FORMATS[QuantType.IQ2_XXS], parameters=8_000_000_000, imatrix=False)
    assert q.kld is None and "importance matrix" in q.basis
    with_im = predict_quality(GGUF_FORMATS[QuantType.IQ2_XXS], parameters=8_000_000_000)
    assert with_im.kld == pytest.approx(0.8120)


def test_table_is_json_serialisable_and_keys_round_trip() -> None:
    data = json.loads(json.dumps([s.to_dict() for s in format_table()]))
    assert data[0]["key"] == "gguf:F32"
    fp8 = next(d for d in data if d["key"] == "gpu:FP8")
    assert fp8["min_compute_capability"] == "8.9"
    assert "estimated" in fp8["quality_prior"]["source"]
    for spec in format_table():
        assert spec_for_key(spec.key) is spec
    assert spec_for_key("q4_k_m") is GGUF_FORMATS[QuantType.Q4_K_M]
    with pytest.raises(ValueError, match="unknown GGUF type"):
        QuantType.from_name("Q4_K_XL")
