"""The advice rules of docs/advice-rules.md, fixed on simulated machines × model configs × tasks."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from app.core.cli import run_cli
from quant.facts import inspect_model
from quant.facts.config_params import facts_from_config
from quant.facts.model import ModelFacts, RemoteFile, SourceKind
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Fit, OptionSource, Recommendation, Task, recommend
from quant.plan.formats import FormatFamily, ImatrixNeed
from quant.plan.memory import KvType

GIB = 1024**3

# --------------------------------------------------------------------------- machines


def _nvidia(name: str, vram: int, cc: str, bandwidth: float, ram: int) -> dict[str, object]:
    return {
        "cpu": {"brand": "AMD Ryzen 9 7950X", "arch": "x86_64", "physical_cores": 16,
                "logical_cores": 32, "features": ["avx2", "fma", "avx512f"]},
        "memory": {"total_bytes": ram * GIB, "available_bytes": int(ram * GIB * 0.8)},
        "gpus": [{"vendor": "nvidia", "name": name, "memory_total_bytes": vram * GIB,
                  "memory_free_bytes": int(vram * GIB * 0.97), "compute_capability": cc,
                  "memory_bandwidth_gbps": bandwidth}],
        "backends": ["cpu", "cuda"],
        "measured_bandwidth_gbps": 60.0,
    }  # fmt: skip


MACHINES: dict[str, dict[str, object]] = {
    "laptop": {
        "cpu": {"brand": "Intel Core i7-1260P", "arch": "x86_64", "physical_cores": 4,
                "logical_cores": 16, "features": ["avx2", "fma", "f16c"]},
        "memory": {"total_bytes": 16 * GIB, "available_bytes": 12 * GIB},
        "measured_bandwidth_gbps": 45.0,
    },
    "m2": {
        "cpu": {"brand": "Apple M2", "arch": "arm64", "physical_cores": 8,
                "features": ["neon", "dotprod", "fp16"]},
        "memory": {"total_bytes": 8 * GIB, "available_bytes": 6 * GIB},
        "apple": {"chip": "Apple M2", "unified_memory_bytes": 8 * GIB,
                  "gpu_working_set_bytes": int(8 * GIB * 2 / 3), "memory_bandwidth_gbps": 100.0},
        "backends": ["cpu", "metal"],
    },
    "rtx3060": _nvidia("NVIDIA GeForce RTX 3060", 12, "8.6", 360.0, 32),
    "rtx4090": _nvidia("NVIDIA GeForce RTX 4090", 24, "8.9", 1008.0, 64),
    "h100": _nvidia("NVIDIA H100 80GB HBM3", 80, "9.0", 3352.0, 256),
}  # fmt: skip

# ----------------------------------------------------------------------------- models

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
QWEN_32B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}
LLAMA_70B = {
    **LLAMA_8B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
    "max_position_embeddings": 40960, "torch_dtype": "bfloat16",
}  # fmt: skip
MODELS = {"8b": LLAMA_8B, "32b": QWEN_32B, "70b": LLAMA_70B, "moe": QWEN3_30B_A3B}


@functools.cache
def model(name: str) -> ModelFacts:
    return facts_from_config(MODELS[name], source=name, kind=SourceKind.CONFIG, name=name)


@functools.cache
def machine(name: str) -> HardwareProfile:
    return HardwareProfile.from_dict(MACHINES[name], source=name)


@functools.cache
def advise(
    machine_name: str, model_name: str, task: Task, ctx: int | None = None,
    kv: KvType = KvType.F16,
) -> Recommendation:  # fmt: skip
    return recommend(
        model(model_name), machine(machine_name), task=task, ctx=ctx, kv_type=kv,
        use_calibration=False,
    )  # fmt: skip


def top(rec: Recommendation) -> tuple[str, str, Fit]:
    assert rec.top is not None, rec.summary
    return rec.top.family.value, rec.top.file_type, rec.top.fit


# ------------------------------------------------------------------------------ rules


def test_70b_on_a_16gb_laptop_fits_at_no_precision_and_says_what_would() -> None:
    rec = advise("laptop", "70b", Task.CHAT)
    assert rec.nothing_fits and rec.top is None
    assert not any(o.fits and o.precision_bits >= 4 for o in rec.options)
    assert "does not fit" in rec.summary
    assert any("smaller model" in s for s in rec.suggestions)
    assert all(o.reasons for o in rec.options)


def test_h100_for_code_on_an_8b_runs_fp8_or_bf16() -> None:
    _, ftype, fit = top(advise("h100", "8b", Task.CODE))
    assert ftype in ("BF16", "FP8") and fit is Fit.GPU
    # FP8 is offered on compute capability 9.0 with its reason.
    rec = advise("h100", "8b", Task.CODE)
    fp8 = next(o for o in rec.options if o.key == "gpu:FP8")
    assert fp8.fits and any("near-lossless" in r for r in fp8.reasons)


def test_fp8_leads_the_8_bit_choices_for_code_on_ada_and_hopper() -> None:
    # A 70B in BF16 does not fit an H100: among 8-bit formats, FP8 (rule 3).
    assert top(advise("h100", "70b", Task.CODE))[:2] == ("gpu", "FP8")
    assert top(advise("h100", "70b", Task.MATH))[:2] == ("gpu", "FP8")


def test_rtx3060_chat_32b_gets_awq_or_partial_offload_gguf() -> None:
    family, ftype, fit = top(advise("rtx3060", "32b", Task.CHAT))
    assert (family, ftype) == ("gpu", "AWQ") or (family == "gguf" and fit is Fit.PARTIAL)
    assert advise("rtx3060", "32b", Task.CHAT).top.precision_bits >= 4  # type: ignore[union-attr]


def test_no_fp8_or_nvfp4_where_the_gpu_cannot_run_them() -> None:
    keys = {o.key for o in advise("rtx3060", "8b", Task.CODE).options}
    assert "gpu:FP8" not in keys and "gpu:NVFP4" not in keys
    assert {"gpu:AWQ", "gpu:GPTQ", "gpu:INT8"} <= keys
    keys4090 = {o.key for o in advise("rtx4090", "8b", Task.CODE).options}
    assert "gpu:FP8" in keys4090 and "gpu:NVFP4" not in keys4090


@pytest.mark.parametrize("machine_name", ["laptop", "m2"])
def test_cpus_and_apple_get_gguf_only(machine_name: str) -> None:
    for model_name in ("8b", "moe"):
        rec = advise(machine_name, model_name, Task.CHAT)
        assert all(o.family is FormatFamily.GGUF for o in rec.options)
    rec = advise("m2", "8b", Task.CHAT)
    assert any("Apple" in n for n in rec.notes)
    # Metal: the 8B at 4 bits runs on the GPU, wholly or for most layers.
    assert top(rec)[2] in (Fit.GPU, Fit.PARTIAL)
    assert top(rec)[0] == "gguf"


def test_code_prefers_q8_0_when_it_fits() -> None:
    assert top(advise("laptop", "8b", Task.CODE))[1] == "Q8_0"
    assert top(advise("rtx3060", "8b", Task.CODE))[1:] == ("Q8_0", Fit.GPU)
    # Chat on the same laptop trades the slow 8 bits for a 4–6-bit balance (rule 5).
    chat = advise("laptop", "8b", Task.CHAT).top
    assert chat is not None and 4 <= chat.precision_bits <= 6


def test_code_does_not_crawl_for_eight_bits_when_four_run_on_the_gpu() -> None:
    # 32B at Q8_0 would spill to RAM on a 4090 at ~2 tokens/s; a 4-bit format fits.
    rec = advise("rtx4090", "32b", Task.CODE)
    assert rec.top is not None and rec.top.fit is Fit.GPU and rec.top.precision_bits == 4
    assert any("Below the preferred 8 bits" in r for r in rec.top.reasons)


def test_long_context_stays_at_eight_bits_or_more() -> None:
    rec = advise("rtx4090", "8b", Task.LONG_CONTEXT)
    assert rec.ctx == 32768
    assert rec.top is not None and rec.top.precision_bits >= 8


def test_moe_prefers_eight_bits() -> None:
    for machine_name in ("rtx4090", "h100"):
        rec = advise(machine_name, "moe", Task.CHAT)
        assert rec.top is not None and rec.top.precision_bits >= 8, machine_name


def test_small_models_keep_more_bits() -> None:
    # Gemma 3 270M from its published config (full-precision weights to start from).
    config = json.loads((Path(__file__).parent / "data/configs/gemma-3-270m.json").read_text())
    facts = facts_from_config(
        config, source="gemma-3-270m", kind=SourceKind.CONFIG, name="gemma-3-270m"
    )
    rec = recommend(facts, machine("laptop"), task=Task.CHAT, use_calibration=False)
    assert rec.top is not None and rec.top.precision_bits >= 6


def test_the_inspected_file_is_listed_with_its_exact_size(starter_model: Path) -> None:
    facts = inspect_model(starter_model)
    rec = recommend(facts, machine("laptop"), task=Task.CHAT, use_calibration=False)
    this = next(o for o in rec.options if o.source is OptionSource.THIS_FILE)
    assert this.weights_bytes == sum(t.n_bytes for t in facts.tensors)


def test_below_four_bits_only_with_an_imatrix_and_said_so() -> None:
    for machine_name in MACHINES:
        for model_name in MODELS:
            for opt in advise(machine_name, model_name, Task.CHAT).options:
                if opt.file_type.startswith(("IQ1", "IQ2", "IQ3_XXS")):
                    assert opt.imatrix is ImatrixNeed.REQUIRED
                    assert any("importance matrix" in r for r in opt.reasons), opt.key
                if opt.fits and opt.precision_bits < 4:
                    assert any("Below 4 bits" in r for r in opt.reasons) or not opt.meets_task


def test_when_only_sub_4_bit_fits_the_advice_says_so() -> None:
    rec = advise("laptop", "32b", Task.CHAT)
    assert rec.nothing_fits
    assert rec.summary.startswith("Nothing fits at 4 bits or more")
    assert rec.top is not None and rec.top.precision_bits < 4
    assert any("smaller model" in s for s in rec.suggestions)


def test_awq_ranks_above_gptq_and_gptq_never_serves_code() -> None:
    for machine_name in ("rtx3060", "rtx4090", "h100"):
        for task in (Task.CHAT, Task.CODE):
            opts = advise(machine_name, "8b", task).options
            rank = {o.file_type: o.rank for o in opts if o.family is FormatFamily.GPU}
            assert rank["AWQ"] < rank["GPTQ"]
            gptq = next(o for o in opts if o.key == "gpu:GPTQ")
            if task is Task.CODE:
                assert not gptq.meets_task


def test_the_kv_cache_is_a_separate_dial() -> None:
    f16 = advise("rtx4090", "8b", Task.LONG_CONTEXT, 131072)
    q8 = advise("rtx4090", "8b", Task.LONG_CONTEXT, 131072, KvType.Q8_0)
    q4_f16 = next(o for o in f16.options if o.key == "gguf:Q4_K_M")
    q4_q8 = next(o for o in q8.options if o.key == "gguf:Q4_K_M")
    assert q4_q8.kv_bytes == pytest.approx(q4_f16.kv_bytes * 34 / 64, rel=0.01)
    assert any("8-bit cache" in r for r in q4_f16.reasons)
    # 16 GiB of f16 cache pushes layers off the GPU; the 8-bit cache brings more back.
    assert q4_q8.gpu_layers >= q4_f16.gpu_layers


def test_nothing_fits_suggests_shorter_context_or_8_bit_kv() -> None:
    rec = advise("m2", "8b", Task.LONG_CONTEXT, 131072)
    assert rec.nothing_fits
    text = " ".join(rec.suggestions)
    assert "shorter context" in text or "8-bit KV" in text


def test_hub_files_get_a_fit_badge_and_predictions() -> None:
    base = model("8b")
    files = (
        RemoteFile("Llama-8B-Q4_K_M.gguf", 4_920_000_000),
        RemoteFile("Llama-8B-Q8_0.gguf", 8_540_000_000),
        RemoteFile("Llama-8B-F16.gguf", 16_070_000_000, "F16"),
        RemoteFile("README.md", 4_000),
    )
    hub = ModelFacts(**{**base.__dict__, "kind": SourceKind.HUB, "remote_files": files})
    rec = recommend(hub, machine("rtx3060"), task=Task.CHAT, use_calibration=False)
    listed = {o.filename: o for o in rec.options if o.source is OptionSource.HUB_FILE}
    assert set(listed) == {"Llama-8B-Q4_K_M.gguf", "Llama-8B-Q8_0.gguf", "Llama-8B-F16.gguf"}
    assert listed["Llama-8B-Q8_0.gguf"].fit is Fit.GPU
    assert listed["Llama-8B-F16.gguf"].fit is Fit.PARTIAL
    assert listed["Llama-8B-Q4_K_M.gguf"].speed.generation > 0
    assert listed["Llama-8B-Q4_K_M.gguf"].quality.kld is not None
    # An existing file beats making the same type.
    assert rec.top is not None and rec.top.source is OptionSource.HUB_FILE
    assert rec.top.file_type == "Q8_0"


def test_every_option_has_reasons_and_the_whole_thing_is_json() -> None:
    rec = advise("rtx4090", "32b", Task.CHAT)
    data = json.loads(json.dumps(rec.to_dict()))
    assert data["top"] == rec.top.key if rec.top else None
    assert [o["rank"] for o in data["options"]] == list(range(1, len(rec.options) + 1))
    first = data["options"][0]
    for key in ("format", "file_type", "fit", "gpu_layers", "ctx", "kv_type", "ram_bytes",
                "vram_bytes", "speed", "quality", "reasons"):  # fmt: skip
        assert key in first
    assert first["speed"]["generation_tok_s"]["low"] <= first["speed"]["generation_tok_s"]["high"]


# -------------------------------------------------------------------------------- CLI


def test_cli_prints_a_table_and_the_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA_8B))
    hw = tmp_path / "laptop.json"
    hw.write_text(json.dumps(MACHINES["laptop"]))
    assert run_cli(["recommend", str(cfg), "--hardware", str(hw), "--task", "code"]) == 0
    out = capsys.readouterr().out
    assert "GEN TOK/S" in out and "Why Q8_0 (CPU only):" in out
    assert run_cli(
        ["recommend", str(cfg), "--hardware", str(hw), "--ctx", "8192", "--kv", "q8_0", "--json"]
    ) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["ctx"] == 8192 and data["kv_type"] == "q8_0" and data["task"] == "chat"
    assert data["options"][0]["fit"] == "cpu"


def test_cli_explains_a_bad_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hw = tmp_path / "laptop.json"
    hw.write_text(json.dumps(MACHINES["laptop"]))
    missing = tmp_path / "nothing.gguf"
    rc = run_cli(["recommend", str(missing), "--hardware", str(hw)])
    assert rc == 2
    assert "error" in capsys.readouterr().err


def test_an_already_quantized_file_bounds_what_can_be_made_from_it(starter_model: Path) -> None:
    # Re-making the starter's Q4_K_M as BF16 would be bigger with the same loss:
    # the file itself ranks first and the way to more quality is the original weights.
    rec = recommend(inspect_model(starter_model), machine("laptop"), task=Task.CHAT)
    assert rec.options[0].source is OptionSource.THIS_FILE
    this_kld = rec.options[0].quality.kld
    bf16 = next(o for o in rec.options if o.file_type == "BF16")
    assert bf16.quality.kld == this_kld
    assert "original weights" in rec.summary
    assert any("already quantized" in n for n in rec.notes)
