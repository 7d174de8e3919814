"""Facts from config.json files and Hugging Face folders.

``tests/data/configs/*.json`` are the published ``config.json`` values of real
models; the parameter counts derived from them are checked against the totals
the model cards publish. Tiny checkpoints written here with the Hugging Face
tensor names check the shape arithmetic exactly against real safetensors headers.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from quant.errors import (
    ModelFileMissingError,
    ModelFormatError,
    QuantError,
    UnsupportedArchitectureError,
)
from quant.facts import SourceKind, detect_source, inspect_model
from quant.facts.config_params import (
    SUPPORTED_MODEL_TYPES,
    count_parameters,
    shapes_from_config,
)

CONFIGS = Path(__file__).parent / "data" / "configs"

# Totals (and active parameters for MoE) published on the model cards.
PUBLISHED: dict[str, tuple[float, float | None]] = {
    "llama-2-7b": (6.74e9, None),
    "llama-3.1-8b": (8.03e9, None),
    "llama-3.1-70b": (70.6e9, None),
    "llama-3.2-1b": (1.24e9, None),
    "mistral-7b-v0.3": (7.25e9, None),
    "qwen2.5-7b": (7.62e9, None),
    "qwen2.5-0.5b": (0.494e9, None),
    "qwen3-8b": (8.19e9, None),
    "qwen3-30b-a3b": (30.5e9, 3.3e9),
    "gemma-2-9b": (9.24e9, None),
    "gemma-3-4b-it": (3.88e9, None),
    "gemma-3-270m": (0.268e9, None),
    "phi-3-mini-4k": (3.82e9, None),
    "phi-4": (14.7e9, None),
    "mixtral-8x7b": (46.7e9, 12.9e9),
    "qwen1.5-moe-a2.7b": (14.3e9, 2.7e9),
    "gemma-7b": (8.54e9, None),
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_derived_parameters_match_published_totals(name: str) -> None:
    total, active = PUBLISHED[name]
    facts = inspect_model(CONFIGS / f"{name}.json")
    assert facts.kind is SourceKind.CONFIG
    assert facts.parameters == pytest.approx(total, rel=0.02)
    if active is None:
        assert not facts.is_moe and facts.active_parameters is None
    else:
        assert facts.is_moe
        assert facts.active_parameters == pytest.approx(active, rel=0.02)
    assert any("derived from the config" in n for n in facts.notes)


def test_every_published_config_is_tested_and_consistent() -> None:
    assert {p.stem for p in CONFIGS.glob("*.json")} == set(PUBLISHED)
    for name in PUBLISHED:
        s = shapes_from_config(load(name), name)
        assert s.n_heads % s.n_kv_heads == 0, name
        if "head_dim" not in load(name) and "head_dim" not in load(name).get("text_config", {}):
            assert s.hidden_size % s.n_heads == 0, name
        assert s.vocab_size > 30000 and s.context_length >= 4096, name
        assert s.intermediate_size > s.hidden_size, name
        assert s.n_experts_used <= s.n_experts


def test_breakdown_adds_up() -> None:
    counts = count_parameters(shapes_from_config(load("mixtral-8x7b"), "mixtral"))
    assert sum(counts.breakdown.values()) == counts.total
    assert counts.breakdown["output"] == counts.breakdown["embeddings"]  # untied


def test_gemma3_270m_config_agrees_with_the_starter_gguf(starter_model: Path) -> None:
    """The config path and the GGUF path describe the same model identically."""
    from_config = inspect_model(CONFIGS / "gemma-3-270m.json")
    from_gguf = inspect_model(starter_model)
    assert from_config.parameters == from_gguf.parameters
    for field in (
        "architecture",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "embedding_length",
        "feed_forward_length",
        "vocab_size",
        "context_length",
        "sliding_window",
        "swa_layers",
        "tied_embeddings",
    ):
        assert getattr(from_config, field) == getattr(from_gguf, field), field


def test_sliding_window_layouts_from_configs() -> None:
    gemma2 = inspect_model(CONFIGS / "gemma-2-9b.json")
    assert gemma2.sliding_window == 4096
    assert gemma2.swa_layers == tuple(i % 2 == 0 for i in range(42))
    gemma3 = inspect_model(CONFIGS / "gemma-3-4b-it.json")
    assert gemma3.sliding_window == 1024 and gemma3.n_swa_layers == 29
    assert gemma3.swa_layers[5] is False and gemma3.swa_layers[6] is True
    phi3 = inspect_model(CONFIGS / "phi-3-mini-4k.json")
    assert phi3.swa_layers == () and phi3.sliding_window is None
    assert any("2047 tokens" in n and "full attention" in n for n in phi3.notes)
    qwen = inspect_model(CONFIGS / "qwen2.5-7b.json")  # use_sliding_window: false
    assert qwen.swa_layers == () and not any("sliding" in n for n in qwen.notes)


def test_sparse_multimodal_config_uses_class_defaults_and_says_so() -> None:
    facts = inspect_model(CONFIGS / "gemma-3-4b-it.json")
    assert (facts.n_heads, facts.n_kv_heads, facts.head_dim) == (8, 4, 256)
    assert facts.vocab_size == 262208 and facts.context_length == 131072
    assert facts.architecture == "gemma3" and facts.extra["model_type"] == "gemma3_text"
    defaults_note = next(n for n in facts.notes if "Gemma3TextConfig defaults" in n)
    assert "num_attention_heads" in defaults_note and "vocab_size" in defaults_note
    assert any("vision encoder" in n for n in facts.notes)


def test_moe_facts() -> None:
    facts = inspect_model(CONFIGS / "qwen3-30b-a3b.json")
    assert (facts.n_experts, facts.n_experts_used) == (128, 8)
    assert facts.architecture == "qwen3moe"
    assert facts.extra["expert_feed_forward_length"] == 768


def test_unknown_architecture_is_named_with_the_supported_list(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "mamba2", "hidden_size": 768}))
    with pytest.raises(UnsupportedArchitectureError) as info:
        inspect_model(config)
    message = str(info.value)
    assert "'mamba2'" in message and "config.json" in message
    for model_type in ("llama", "qwen3_moe", "gemma3", "phi3"):
        assert model_type in message
    assert set(SUPPORTED_MODEL_TYPES) >= {"llama", "mistral", "mixtral", "qwen2", "gemma2"}

    config.write_text(json.dumps({"architectures": ["FalconForCausalLM"]}))
    with pytest.raises(UnsupportedArchitectureError, match="FalconForCausalLM"):
        inspect_model(config)


def test_architectures_without_model_type(tmp_path: Path) -> None:
    data = load("llama-3.1-8b")
    del data["model_type"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    assert (
        inspect_model(config).parameters == inspect_model(CONFIGS / "llama-3.1-8b.json").parameters
    )


def test_bad_config_files(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", ')
    with pytest.raises(ModelFormatError, match=r"config\.json.*not valid JSON"):
        inspect_model(config)
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": "big"}))
    with pytest.raises(ModelFormatError, match="hidden_size is 'big'"):
        inspect_model(config)


# --- Hugging Face folders -----------------------------------------------------------


def hf_tensors(config: dict[str, Any], prefix: str = "model.") -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a transformers checkpoint of ``config`` (torch order)."""
    c = config
    h, v, n_layers = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = c.get("head_dim", h // nh)
    ff = c["intermediate_size"]
    mt = c["model_type"]
    t: dict[str, tuple[int, ...]] = {
        f"{prefix}embed_tokens.weight": (v, h),
        f"{prefix}norm.weight": (h,),
    }
    for i in range(n_layers):
        p = f"{prefix}layers.{i}."
        t[p + "input_layernorm.weight"] = (h,)
        t[p + "post_attention_layernorm.weight"] = (h,)
        if mt == "phi3":
            t[p + "self_attn.qkv_proj.weight"] = ((nh + 2 * nkv) * hd, h)
            t[p + "mlp.gate_up_proj.weight"] = (2 * ff, h)
            t[p + "mlp.down_proj.weight"] = (h, ff)
        else:
            t[p + "self_attn.q_proj.weight"] = (nh * hd, h)
            t[p + "self_attn.k_proj.weight"] = (nkv * hd, h)
            t[p + "self_attn.v_proj.weight"] = (nkv * hd, h)
        t[p + "self_attn.o_proj.weight"] = (h, nh * hd)
        if mt in ("qwen2", "qwen2_moe"):
            t[p + "self_attn.q_proj.bias"] = (nh * hd,)
            t[p + "self_attn.k_proj.bias"] = (nkv * hd,)
            t[p + "self_attn.v_proj.bias"] = (nkv * hd,)
        if mt in ("qwen3", "qwen3_moe", "gemma3_text"):
            t[p + "self_attn.q_norm.weight"] = (hd,)
            t[p + "self_attn.k_norm.weight"] = (hd,)
        if mt in ("gemma2", "gemma3_text"):
            t[p + "pre_feedforward_layernorm.weight"] = (h,)
            t[p + "post_feedforward_layernorm.weight"] = (h,)
        if mt == "mixtral":
            e = c["num_local_experts"]
            t[p + "block_sparse_moe.gate.weight"] = (e, h)
            for j in range(e):
                q = f"{p}block_sparse_moe.experts.{j}."
                t[q + "w1.weight"], t[q + "w2.weight"], t[q + "w3.weight"] = (
                    (ff, h),
                    (h, ff),
                    (ff, h),
                )
        elif mt in ("qwen3_moe", "qwen2_moe"):
            e, eff = c["num_experts"], c["moe_intermediate_size"]
            t[p + "mlp.gate.weight"] = (e, h)
            for j in range(e):
                q = f"{p}mlp.experts.{j}."
                t[q + "gate_proj.weight"], t[q + "up_proj.weight"] = (eff, h), (eff, h)
                t[q + "down_proj.weight"] = (h, eff)
            if mt == "qwen2_moe":
                sff = c["shared_expert_intermediate_size"]
                t[p + "mlp.shared_expert.gate_proj.weight"] = (sff, h)
                t[p + "mlp.shared_expert.up_proj.weight"] = (sff, h)
                t[p + "mlp.shared_expert.down_proj.weight"] = (h, sff)
                t[p + "mlp.shared_expert_gate.weight"] = (1, h)
        elif mt != "phi3":
            t[p + "mlp.gate_proj.weight"] = (ff, h)
            t[p + "mlp.up_proj.weight"] = (ff, h)
            t[p + "mlp.down_proj.weight"] = (h, ff)
    if not c.get("tie_word_embeddings", mt.startswith("gemma")):
        t["lm_head.weight"] = (v, h)
    return t


def tiny(model_type: str, **more: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    }
    config.update(more)
    return config


def write_folder(
    folder: Path, config: dict[str, Any], tensors: dict[str, tuple[int, ...]], shards: int = 1
) -> int:
    """Write config.json and safetensors shards of zeros; return the number of elements."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    weight_map: dict[str, str] = {}
    for k in range(shards):
        part = names[k::shards]
        fname = (
            "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        )
        save_file({n: np.zeros(tensors[n], dtype=np.float16) for n in part}, str(folder / fname))
        weight_map.update(dict.fromkeys(part, fname))
    if shards > 1:
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return sum(int(np.prod(s)) for s in tensors.values())


@pytest.mark.parametrize(
    "config",
    [
        tiny("llama"),
        tiny("llama", tie_word_embeddings=True),
        tiny("mistral"),
        tiny("qwen2", tie_word_embeddings=True),
        tiny("qwen3", head_dim=32, tie_word_embeddings=False),
        tiny("gemma2", head_dim=32),
        tiny("gemma3_text", head_dim=32, sliding_window=128),
        tiny("phi3"),
        tiny("mixtral", num_local_experts=4, num_experts_per_tok=2),
        tiny("qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48),
        tiny(
            "qwen2_moe",
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=48,
            shared_expert_intermediate_size=80,
        ),
    ],
    ids=lambda c: f"{c['model_type']}-{'tied' if c.get('tie_word_embeddings') else 'x'}",
)
def test_folder_counts_equal_config_arithmetic(tmp_path: Path, config: dict[str, Any]) -> None:
    """Exact header counts and the config-derived counts agree for every family."""
    written = write_folder(tmp_path / "m", config, hf_tensors(config))
    facts = inspect_model(tmp_path / "m")
    assert facts.kind is SourceKind.HF_FOLDER
    assert facts.parameters == written
    derived = count_parameters(shapes_from_config(config, "tiny"))
    assert derived.total == written
    assert not any("implies" in n for n in facts.notes)
    assert facts.file_type == "F16"
    assert facts.bits_per_weight == pytest.approx(16.0)
    assert len(facts.tensors) == len(hf_tensors(config))
    if facts.is_moe:
        assert facts.active_parameters == derived.active < facts.parameters


def test_multimodal_folder_counts_the_language_model(tmp_path: Path) -> None:
    text = tiny("gemma3_text", head_dim=32, sliding_window=128)
    config = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": text,
        "vision_config": {"hidden_size": 32},
    }
    tensors = hf_tensors(text, prefix="language_model.model.")
    language = sum(int(np.prod(s)) for s in tensors.values())
    tensors["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"] = (64, 32)
    tensors["multi_modal_projector.mm_input_projection_weight"] = (32, 64)
    write_folder(tmp_path / "mm", config, tensors)
    facts = inspect_model(tmp_path / "mm")
    assert facts.parameters == language
    assert facts.extra["encoder_parameters"] == 64 * 32 * 2
    assert any("encoder" in n for n in facts.notes)


def test_sharded_folder_tokenizer_template_and_license(tmp_path: Path) -> None:
    config = tiny("qwen2")
    folder = tmp_path / "models--acme--tiny-qwen" / "snapshots" / "abc123"
    written = write_folder(folder, config, hf_tensors(config), shards=3)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "Qwen2Tokenizer", "chat_template": "{{ bos }}"})
    )
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# Tiny\n")
    facts = inspect_model(folder)
    assert facts.parameters == written
    assert facts.name == "acme/tiny-qwen"
    assert facts.has_tokenizer and facts.tokenizer_model == "Qwen2Tokenizer"
    assert facts.has_chat_template and facts.chat_template == "{{ bos }}"
    assert facts.license == "apache-2.0"
    assert facts.file_size_bytes == sum(p.stat().st_size for p in folder.glob("*.safetensors"))

    # A shard missing from an incomplete download: counts fall back to the config.
    next(folder.glob("model-00002-*.safetensors")).unlink()
    partial = inspect_model(folder)
    assert partial.parameters == written  # the config arithmetic is exact for this family
    assert any("1 of 3 safetensors shards are missing" in n for n in partial.notes)


def test_chat_template_jinja_file(tmp_path: Path) -> None:
    config = tiny("llama")
    write_folder(tmp_path / "m", config, hf_tensors(config))
    (tmp_path / "m" / "chat_template.jinja").write_text("{% for m in messages %}{% endfor %}")
    (tmp_path / "m" / "tokenizer.model").write_bytes(b"\x00")
    facts = inspect_model(tmp_path / "m")
    assert facts.has_chat_template and facts.has_tokenizer


def test_pickle_only_folder_is_described_from_config(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text((CONFIGS / "llama-2-7b.json").read_text())
    # Not a real pickle: Quantdesk must never try to open it.
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    facts = inspect_model(folder)
    assert facts.parameters == pytest.approx(6.74e9, rel=0.02)
    assert facts.file_size_bytes == (folder / "pytorch_model.bin").stat().st_size
    assert any("pickle" in n and "pytorch_model.bin" in n for n in facts.notes)


def test_packed_quantized_weights_use_the_config_count(tmp_path: Path) -> None:
    config = tiny("llama", quantization_config={"quant_method": "gptq", "bits": 4})
    tensors = hf_tensors(config)
    tensors = {
        (n.replace(".weight", ".qweight") if "proj" in n else n): s for n, s in tensors.items()
    }
    write_folder(tmp_path / "q", config, tensors)
    facts = inspect_model(tmp_path / "q")
    assert facts.parameters == count_parameters(shapes_from_config(config, "q")).total
    assert facts.file_type == "GPTQ" and facts.bits_per_weight is None
    assert any("packed gptq" in n for n in facts.notes)


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match=r"empty: the folder has no config\.json"):
        inspect_model(tmp_path / "empty")
    (tmp_path / "ggufs").mkdir()
    (tmp_path / "ggufs" / "m-Q4_K_M.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelFormatError, match=r"inspect one of them.*m-Q4_K_M\.gguf"):
        inspect_model(tmp_path / "ggufs")


def test_damaged_safetensors_headers(tmp_path: Path) -> None:
    config = tiny("llama")
    folder = tmp_path / "m"
    write_folder(folder, config, hf_tensors(config))
    st = folder / "model.safetensors"
    good = st.read_bytes()

    st.write_bytes(struct.pack("<Q", 1 << 40) + good[8:])
    with pytest.raises(ModelFormatError, match=r"safetensors: the safetensors header claims"):
        inspect_model(folder)

    (n,) = struct.unpack("<Q", good[:8])
    broken = good[:8] + b"[" + good[9:]
    st.write_bytes(broken)
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        inspect_model(folder)

    st.write_bytes(good[: 8 + n + 10])  # header intact, data cut short
    with pytest.raises(ModelFormatError, match="truncated"):
        inspect_model(folder)


def test_one_dispatch_tells_the_four_sources_apart(tmp_path: Path, starter_model: Path) -> None:
    """Inspection, conversion and chat ask the same function what a source is."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny("llama")))
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(starter_model.read_bytes()[:4096])
    assert detect_source(starter_model) is SourceKind.GGUF
    assert detect_source(folder) is SourceKind.HF_FOLDER
    assert detect_source(folder / "config.json") is SourceKind.CONFIG
    assert detect_source("google/gemma-3-270m") is SourceKind.HUB
    # A Path never names a repo: it is looked for on disk only.
    with pytest.raises(ModelFileMissingError, match="no such file or folder"):
        detect_source(Path("google/gemma-3-270m"))
    (tmp_path / "m.safetensors").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="single safetensors file has no config"):
        detect_source(tmp_path / "m.safetensors")

    # Jobs that need weights: a GGUF by its magic, a config alone is not enough.
    assert detect_source(str(renamed), need_weights=True) is SourceKind.GGUF
    with pytest.raises(QuantError, match=r"config\.json: not a GGUF file; pass a \.gguf"):
        detect_source(str(folder / "config.json"), need_weights=True)


def _header_file(entries: object, data: int = 64) -> bytes:
    raw = entries if isinstance(entries, bytes) else json.dumps(entries).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


_OK = {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]}


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
        (b'{"w": {"dtype": "F16", "shape": [NaN], "data_offsets": [0, 2]}}', "not valid JSON"),
        (
            b'{"w": {"dtype": "F16", "shape": [1' + b"0" * 400 + b'], "data_offsets": [0, 2]}}',
            "not valid JSON",
        ),
        ({"w": {**_OK, "shape": [4.0, 4]}}, "shape is not a list of non-negative integers"),
        ({"w": {**_OK, "shape": [True, 4]}}, "shape is not a list of non-negative integers"),
        ({"w": {**_OK, "shape": [-4, -4]}}, "shape is not a list of non-negative integers"),
        ({"w": {**_OK, "shape": "4x4"}}, "shape is not a list of non-negative integers"),
        ({"w": {**_OK, "data_offsets": [0, 16, 32]}}, "data_offsets is not two ordered"),
        ({"w": {**_OK, "data_offsets": [32, 0]}}, "data_offsets is not two ordered"),
        ({"w": {**_OK, "dtype": "Q4_K"}}, "unknown dtype 'Q4_K'"),
        ({"w": {**_OK, "dtype": 7}}, "no dtype"),
        ({"w": ["F16", [4, 4]]}, "not an object"),
        ({"w": {**_OK, "data_offsets": [0, 16]}}, "claims 16 bytes but F16 [4, 4] needs 32"),
        ({"a": _OK, "b": {**_OK, "data_offsets": [16, 48]}}, "overlap"),
        ({"w": {**_OK, "data_offsets": [64, 96]}}, "is truncated"),
        ([1, 2, 3], "not a JSON object"),
    ],
)
def test_hostile_safetensors_headers_are_one_sentence(
    tmp_path: Path, header: object, words: str
) -> None:
    """Whatever a header holds, the folder is refused with a sentence naming the file."""
    from quant.convert.errors import CheckpointError
    from quant.convert.safetensors_io import read_header

    folder = tmp_path / "m"
    write_folder(folder, tiny("llama"), hf_tensors(tiny("llama")))
    st = folder / "model.safetensors"
    st.write_bytes(_header_file(header))
    with pytest.raises(ModelFormatError) as info:
        inspect_model(folder)
    message = str(info.value)
    assert "model.safetensors" in message and words in message, message
    assert "\n" not in message and len(message) < 400
    # The converter reads headers through the same parser.
    with pytest.raises(CheckpointError, match=re.escape(words)):
        read_header(st)


def test_a_fifo_named_like_a_shard_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_folder(folder, tiny("llama"), hf_tensors(tiny("llama")))
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(ModelFormatError, match=r"model\.safetensors is not a regular file"):
        inspect_model(folder)
