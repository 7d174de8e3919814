"""The memory model against llama.cpp itself: per-tensor types, KV cache, placement.

The per-tensor type choice is checked against ``llama_model_quantize`` run on tiny
GGUF models written here, and against the starter model's real Q4_K_M file.
"""

from __future__ import annotations

# llama_cpp before gguf: the order CUDA builds need (see docs/llama-cpp.md#import-order).
import llama_cpp

# isort: split
import ctypes
import json
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from quant.facts import inspect_model
from quant.facts.config_params import facts_from_config
from quant.facts.model import ModelFacts, SourceKind
from quant.gguf.types import GGMLType, LlamaFileType
from quant.hardware.profile import HardwareProfile
from quant.plan.formats import QuantType
from quant.plan.memory import (
    CTX_PAD,
    KvType,
    Placement,
    RuntimeOptions,
    compute_buffer_bytes,
    effective_bpw,
    estimate_memory,
    gpu_budgets,
    kv_cache,
    max_gpu_layers,
    parameter_count,
    plan_tensors,
    repacked_types,
    synthesize_tensors,
    weights_bytes,
)

GIB = 1024**3
MIB = 1024**2

LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def write_tiny_llama(
    path: Path,
    *,
    n_embd: int,
    n_head: int,
    n_kv: int,
    n_layer: int,
    n_ff: int,
    n_vocab: int = 256,
    tied: bool = False,
    n_expert: int = 0,
) -> Path:
    """A random F16 Llama GGUF with no tokenizer: enough for llama.cpp to quantize.

    ``n_expert`` > 0 makes every feed-forward block a mixture of experts
    (Mixtral's layout: stacked ``*_exps`` tensors and an F32 router).
    """
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_tokenizer_model("none")
    w.add_vocab_size(n_vocab)
    w.add_file_type(int(LlamaFileType.F16))
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    rng = np.random.default_rng(0)
    hd = n_embd // n_head

    def t(name: str, *shape: int, dtype: type = np.float16) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(dtype))

    t("token_embd.weight", n_vocab, n_embd)
    t("output_norm.weight", n_embd, dtype=np.float32)
    if not tied:
        t("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        t(f"blk.{i}.attn_norm.weight", n_embd, dtype=np.float32)
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_kv * hd, n_embd)
        t(f"blk.{i}.attn_v.weight", n_kv * hd, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        t(f"blk.{i}.ffn_norm.weight", n_embd, dtype=np.float32)
        if n_expert:
            t(f"blk.{i}.ffn_gate_inp.weight", n_expert, n_embd, dtype=np.float32)
            t(f"blk.{i}.ffn_gate_exps.weight", n_expert, n_ff, n_embd)
            t(f"blk.{i}.ffn_up_exps.weight", n_expert, n_ff, n_embd)
            t(f"blk.{i}.ffn_down_exps.weight", n_expert, n_embd, n_ff)
        else:
            t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
            t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
            t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_quantize(src: Path, dst: Path, ftype: LlamaFileType) -> dict[str, tuple[str, int]]:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed for {ftype.name}"
    reader = gguf.GGUFReader(str(dst))
    return {t.name: (t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors}


# Row lengths not divisible by 256 (320) exercise the fallbacks; 256 the regular mixes
# with grouped-query attention (n_gqa 4), which several rules look at.
SHAPES = {
    "fallbacks": {"n_embd": 320, "n_head": 5, "n_kv": 1, "n_layer": 16, "n_ff": 320},
    "gqa4": {"n_embd": 256, "n_head": 8, "n_kv": 2, "n_layer": 16, "n_ff": 256},
    "tied": {"n_embd": 256, "n_head": 4, "n_kv": 4, "n_layer": 8, "n_ff": 256, "tied": True},
    # Eight experts: the Mixtral rules (attn_v/attn_k to Q8_0, attn_output to Q5_K).
    "moe8": {"n_embd": 256, "n_head": 8, "n_kv": 2, "n_layer": 8, "n_ff": 256, "n_expert": 8},
}
FTYPES = ("Q4_K_M", "Q3_K_M", "Q5_K_M", "Q6_K", "Q2_K", "Q3_K_L", "Q4_K_S", "Q4_0")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {k: write_tiny_llama(root / f"{k}.gguf", **v) for k, v in SHAPES.items()}  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_planned_types_match_llama_cpp_quantize(
    shape: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    src = tiny_models[shape]
    facts = inspect_model(src)
    for name in FTYPES:
        ft = LlamaFileType[name]
        actual = llama_quantize(src, tmp_path / f"{name}.gguf", ft)
        plan = plan_tensors(facts, QuantType(name), imatrix=False)
        planned = {t.name: (t.type.name, t.n_bytes) for t in plan}
        wrong = {k: (planned.get(k), v) for k, v in actual.items() if planned.get(k) != v}
        assert not wrong, f"{shape} {name}: planned vs llama.cpp differ: {wrong}"
        assert weights_bytes(plan) == sum(b for _, b in actual.values())


def test_starter_model_mix_is_reproduced_from_its_shapes(starter_model: Path) -> None:
    facts = inspect_model(starter_model)
    assert facts.file_type == "Q4_K_M"
    # Forget the file's tensors: plan Q4_K_M from the architecture's shapes in BF16.
    as_config = replace(facts, tensors=(), kind=SourceKind.CONFIG, file_type="BF16")
    plan = plan_tensors(as_config, QuantType.Q4_K_M)
    actual = {t.name: t.type for t in facts.tensors}
    assert {t.name: t.type.name for t in plan} == actual
    assert weights_bytes(plan) == sum(t.n_bytes for t in facts.tensors)


# Whole-file bits per weight of Llama-3.1-8B, llama.cpp tools/quantize/README.md.
README_BPW = {
    "IQ1_S": 2.0042, "IQ1_M": 2.1460, "IQ2_XXS": 2.3824, "IQ2_XS": 2.5882, "IQ2_M": 2.9294,
    "IQ3_XXS": 3.2548, "IQ3_M": 3.7628, "IQ4_XS": 4.4597, "IQ4_NL": 4.6818, "Q2_K": 3.1593,
    "Q3_K_S": 3.6429, "Q3_K_M": 3.9960, "Q3_K_L": 4.2979, "Q4_K_S": 4.6672, "Q4_K_M": 4.8944,
    "Q5_K_S": 5.5704, "Q5_K_M": 5.7036, "Q6_K": 6.5633, "Q8_0": 8.5008, "F16": 16.0005,
}  # fmt: skip


def test_planned_llama_3_1_8b_sizes_match_llama_cpp_readme() -> None:
    facts = facts_from_config(LLAMA_3_1_8B, source="x", kind=SourceKind.CONFIG, name="8B")
    for name, bpw in README_BPW.items():
        # The README's IQ4 files were made without an imatrix, the IQ1–IQ3 ones with.
        imatrix = not name.startswith("IQ4")
        plan = plan_tensors(facts, QuantType(name), imatrix=imatrix)
        assert effective_bpw(plan) == pytest.approx(bpw, abs=0.0006), name
    assert parameter_count(plan) == facts.parameters


def _facts(**kw: object) -> ModelFacts:
    base = {
        "source": "test",
        "kind": SourceKind.CONFIG,
        "name": "test",
        "architecture": "llama",
        "parameters": 0,
        "n_layers": 4,
        "n_heads": 8,
        "n_kv_heads": 2,
        "head_dim": 64,
        "embedding_length": 512,
        "vocab_size": 1000,
        "context_length": 8192,
        "feed_forward_length": 1024,
    }
    base.update(kw)
    return ModelFacts(**base)  # type: ignore[arg-type]


def test_kv_cache_counts_heads_head_dims_and_real_block_sizes() -> None:
    f = _facts(head_dim_v=32)
    kv = kv_cache(f, 1000, KvType.F16)
    # Padded to 256 cells; K rows 2 heads × 64, V rows 2 heads × 32, two bytes each.
    assert kv.n_ctx == 1024
    assert kv.total_bytes == 4 * 1024 * (2 * 64 + 2 * 32) * 2
    q8 = kv_cache(f, 1000, KvType.Q8_0)
    assert q8.total_bytes == 4 * 1024 * ((128 // 32) * 34 + (64 // 32) * 34)
    q4 = kv_cache(f, 1000, KvType.Q4_0)
    assert q4.total_bytes < q8.total_bytes < kv.total_bytes


def test_sliding_window_layers_are_capped_unless_the_full_swa_cache_is_on() -> None:
    swa = (True, True, True, False)
    f = _facts(sliding_window=512, swa_layers=swa)
    full = kv_cache(f, 32768, KvType.F16, RuntimeOptions(swa_full=True))
    capped = kv_cache(f, 32768, KvType.F16, RuntimeOptions(swa_full=False))
    per_cell = 2 * 64 * 2 * 2
    assert full.total_bytes == 4 * 32768 * per_cell
    # llama.cpp: pad(min(n_ctx, n_swa + n_ubatch), 256) = 1024 cells for the SWA layers.
    assert capped.cells_swa == 1024
    assert capped.total_bytes == (3 * 1024 + 32768) * per_cell
    small_batch = kv_cache(f, 32768, KvType.F16, RuntimeOptions(swa_full=False, n_ubatch=64))
    assert small_batch.cells_swa == 768


def test_output_layer_is_offloaded_first_and_token_embeddings_stay_on_cpu(
    starter_model: Path,
) -> None:
    facts = inspect_model(starter_model)
    gpu = HardwareProfile.from_dict(
        {
            "cpu": {"brand": "x", "physical_cores": 8, "features": ["avx2"]},
            "memory": {"total_bytes": 32 * GIB, "available_bytes": 24 * GIB},
            "gpus": [{"name": "NVIDIA RTX 4090", "memory_total_bytes": 24 * GIB,
                      "compute_capability": "8.9"}],
        }
    )  # fmt: skip
    n = facts.n_layers
    embd = next(t.n_bytes for t in facts.tensors if t.name == "token_embd.weight")
    cpu_only = estimate_memory(facts, ctx=2048, n_gpu_layers=0, profile=gpu)
    one = estimate_memory(facts, ctx=2048, n_gpu_layers=1, profile=gpu)
    full = estimate_memory(facts, ctx=2048, n_gpu_layers=n + 1, profile=gpu)
    assert cpu_only.placement is Placement.CPU and cpu_only.vram_bytes == (0,)
    # n_gpu_layers=1 moves only the output layer; with tied embeddings llama.cpp
    # duplicates token_embd onto the GPU for it, and keeps the input copy on the CPU.
    assert one.placement is Placement.PARTIAL
    assert one.devices[1].layers == 0 and one.devices[1].weights_bytes >= embd
    assert full.placement is Placement.GPU
    assert full.devices[0].weights_bytes == embd  # the CPU keeps the input embeddings
    assert full.devices[1].kv_bytes == full.kv_bytes
    # "All layers" spelled as -1 or a large number is the same as n + 1.
    assert estimate_memory(facts, ctx=2048, n_gpu_layers=-1, profile=gpu) == full
    assert estimate_memory(facts, ctx=2048, n_gpu_layers=999, profile=gpu) == full


def test_max_gpu_layers_fills_the_budget_and_no_more() -> None:
    facts = facts_from_config(LLAMA_3_1_8B, source="x", kind=SourceKind.CONFIG, name="8B")
    prof = HardwareProfile.from_dict(
        {
            "cpu": {"brand": "x", "physical_cores": 8, "features": ["avx2"]},
            "memory": {"total_bytes": 32 * GIB, "available_bytes": 24 * GIB},
            "gpus": [{"name": "RTX 3060", "memory_total_bytes": 6 * GIB,
                      "memory_free_bytes": 6 * GIB, "compute_capability": "8.6"}],
        }
    )  # fmt: skip
    plan = plan_tensors(facts, QuantType.Q4_K_M)
    (budget,) = gpu_budgets(prof)
    k = max_gpu_layers(facts, prof, ctx=8192, plan=plan)
    assert 0 < k < facts.n_layers + 1
    at_k = estimate_memory(facts, ctx=8192, n_gpu_layers=k, profile=prof, plan=plan)
    over = estimate_memory(facts, ctx=8192, n_gpu_layers=k + 1, profile=prof, plan=plan)
    assert at_k.vram_bytes[0] <= budget < over.vram_bytes[0]
    # An 8-bit KV cache frees VRAM for more layers.
    assert max_gpu_layers(facts, prof, ctx=8192, kv_type=KvType.Q8_0, plan=plan) > k


def test_apple_budget_is_the_gpu_working_set_not_all_memory() -> None:
    prof = HardwareProfile.from_dict(
        {
            "cpu": {"brand": "Apple M2", "arch": "arm64", "physical_cores": 8,
                    "features": ["neon", "dotprod"]},
            "memory": {"total_bytes": 8 * GIB, "available_bytes": 7 * GIB},
            "apple": {"chip": "Apple M2", "unified_memory_bytes": 8 * GIB,
                      "gpu_working_set_bytes": 5 * GIB},
        }
    )  # fmt: skip
    (budget,) = gpu_budgets(prof)
    assert budget < 5 * GIB
    facts = facts_from_config(LLAMA_3_1_8B, source="x", kind=SourceKind.CONFIG, name="8B")
    est = estimate_memory(facts, file_type=QuantType.Q4_K_M, ctx=4096, n_gpu_layers=-1,
                          profile=prof)  # fmt: skip
    # Unified memory: the GPU's share is counted once, in RAM.
    assert est.unified_memory and est.ram_bytes > est.vram_bytes[0] > 4 * GIB
    assert est.total_bytes == est.ram_peak_bytes


def test_repacked_weights_count_twice_on_cpus_that_repack() -> None:
    facts = facts_from_config(LLAMA_3_1_8B, source="x", kind=SourceKind.CONFIG, name="8B")
    plan = plan_tensors(facts, QuantType.Q4_K_M)

    def prof(features: list[str]) -> HardwareProfile:
        return HardwareProfile.from_dict(
            {"cpu": {"brand": "x", "physical_cores": 4, "features": features},
             "memory": {"total_bytes": 32 * GIB}}
        )  # fmt: skip

    plain = estimate_memory(facts, ctx=4096, profile=prof(["sse4.2"]), plan=plan)
    avx2 = estimate_memory(facts, ctx=4096, profile=prof(["avx2", "fma"]), plan=plan)
    q4k = sum(t.n_bytes for t in plan if t.type is GGMLType.Q4_K and t.layer is not None)
    assert plain.repack_bytes == 0
    assert avx2.repack_bytes == q4k
    assert avx2.ram_bytes - plain.ram_bytes == q4k
    assert GGMLType.Q6_K in repacked_types(["neon", "dotprod"])
    assert GGMLType.Q6_K not in repacked_types(["avx2"])


def test_config_synthesis_counts_the_published_parameters() -> None:
    facts = facts_from_config(LLAMA_3_1_8B, source="x", kind=SourceKind.CONFIG, name="8B")
    assert facts.parameters == 8_030_261_248
    assert parameter_count(plan_tensors(facts)) == facts.parameters
    moe_cfg = {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
    }  # fmt: skip
    moe = facts_from_config(moe_cfg, source="x", kind=SourceKind.CONFIG, name="30B-A3B")
    tensors = synthesize_tensors(moe)
    assert sum(t.n_elements for t in tensors) == pytest.approx(moe.parameters, rel=0.001)
    # Without the expert width the synthesiser solves it from the parameter count.
    unknown = replace(moe, extra={})
    solved = {t.name: t.shape for t in synthesize_tensors(unknown)}
    assert solved["blk.0.ffn_up_exps.weight"] == (2048, 768, 128)


def test_compute_buffer_grows_with_context_when_attention_dominates() -> None:
    f = _facts(n_heads=32, n_kv_heads=8, head_dim=128, embedding_length=4096,
               vocab_size=32000, feed_forward_length=14336)  # fmt: skip
    small = compute_buffer_bytes(f, 2048)
    large = compute_buffer_bytes(f, 16384)
    fa = compute_buffer_bytes(f, 16384, RuntimeOptions(flash_attn=True))
    # Without flash attention the scores are n_head × n_kv × n_ubatch floats.
    assert large - small == pytest.approx(512 * (16384 - 2048) * (4 * 32 + 4), rel=0.001)
    assert fa < large / 5
    # One output row (what llama-cpp-python asks for) touches far less than the reserve.
    big_vocab = _facts(vocab_size=262144)
    assert (
        compute_buffer_bytes(big_vocab, 2048, n_outputs=1)
        < compute_buffer_bytes(big_vocab, 2048) / 10
    )


def test_context_is_padded_like_llama_cpp() -> None:
    f = _facts()
    assert estimate_memory(f, file_type=QuantType.Q8_0, ctx=1000).ctx == 1024
    assert CTX_PAD == 256
    est = estimate_memory(f, file_type=QuantType.Q8_0, ctx=4096, kv_type=KvType.Q8_0)
    assert est.options.flash_attn and any("flash attention" in n for n in est.notes)


def test_estimate_is_json_ready() -> None:
    import json

    f = _facts()
    est = estimate_memory(f, file_type=QuantType.Q4_K_M, ctx=4096)
    data = json.loads(json.dumps(est.to_dict()))
    assert data["placement"] == "cpu"
    assert data["ram_bytes"] == est.ram_bytes > data["weights_bytes"] > 0
    assert data["devices"][0]["device"] == "CPU"


def test_gguf_types_keep_1d_tensors_and_unknown_types_are_refused() -> None:
    f = _facts()
    plan = plan_tensors(f, QuantType.Q4_K_M)
    norms = [t for t in plan if t.name.endswith("_norm.weight")]
    assert norms and all(t.type is GGMLType.F32 for t in norms)
    from quant.errors import QuantError

    with pytest.raises(QuantError, match="not one the memory model plans"):
        plan_tensors(f, LlamaFileType.MXFP4_MOE)


def test_vram_prediction_matches_the_h100_measurement(starter_model: Path) -> None:
    # Recorded on an H100 with a CUDA build (tests/data/measured/, the command is in
    # the file): device memory in use after loading the starter model's shape and
    # answering, fully and partly offloaded, at three context lengths.
    data = json.loads(
        (Path(__file__).parent / "data/measured/h100_starter_offload.json").read_text()
    )
    profile = HardwareProfile.from_dict(data["hardware"])
    facts = inspect_model(starter_model)
    for run in data["runs"]:
        est = estimate_memory(facts, ctx=run["n_ctx"], n_gpu_layers=run["ngl"], profile=profile)
        measured = run["measured"]["vram_after"]
        assert abs(sum(est.vram_bytes) / measured - 1) < 0.05, (run["ngl"], run["n_ctx"])


def test_vram_prediction_holds_out_of_sample_for_the_f16_expansion(starter_model: Path) -> None:
    # Measured on the H100 after the CUDA allowance was fitted on the Q4_K_M runs:
    # the F16 expansion has other tensor types and twice the weights.
    from quant.gguf.header import read_gguf_header

    measured_file = Path(__file__).parent / "data/measured/h100_starter_f16_offload.json"
    data = json.loads(measured_file.read_text())
    profile = HardwareProfile.from_dict(data["hardware"])
    facts = inspect_model(starter_model)
    f16 = plan_tensors(facts, LlamaFileType.F16)
    assert read_gguf_header(starter_model).n_parameters == sum(t.n_elements for t in f16)
    for run in data["runs"]:
        est = estimate_memory(
            facts, ctx=run["n_ctx"], n_gpu_layers=run["ngl"], profile=profile, plan=f16
        )
        measured = run["measured"]["vram_after"]
        assert abs(sum(est.vram_bytes) / measured - 1) < 0.05, (run["ngl"], run["n_ctx"])
