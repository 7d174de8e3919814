"""Conversion mechanics: metadata, tensor layout, streaming, progress."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import quant.convert.writer as writer_mod
from quant.convert import convert_hf
from quant.progress import Progress
from tests.convert import checkpoints as ckpt


def reader(path: Path) -> Any:
    import gguf

    return gguf.GGUFReader(path)


def kv(r: Any, key: str) -> Any:
    field = r.get_field(key)
    return None if field is None else field.contents()


def tensor_shapes(r: Any) -> dict[str, tuple[int, ...]]:
    # GGUF lists dimensions innermost first; reverse to numpy order.
    return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in r.tensors}


def test_hyperparameters_become_gguf_keys(build: Callable[..., ckpt.Built], tmp_path: Path) -> None:
    built = build("gemma2")
    out = tmp_path / "g.gguf"
    convert_hf(built.path, out)
    r = reader(out)
    assert kv(r, "general.architecture") == "gemma2"
    assert kv(r, "gemma2.block_count") == 3
    assert kv(r, "gemma2.embedding_length") == 64
    assert kv(r, "gemma2.feed_forward_length") == 96
    assert kv(r, "gemma2.attention.head_count") == 4
    assert kv(r, "gemma2.attention.head_count_kv") == 2
    assert kv(r, "gemma2.attention.key_length") == 32
    assert kv(r, "gemma2.context_length") == 256
    assert kv(r, "gemma2.attention.sliding_window") == 6
    assert kv(r, "gemma2.attention.sliding_window_pattern") == [True, False, True]
    assert kv(r, "gemma2.attn_logit_softcapping") == pytest.approx(3.0)
    assert kv(r, "gemma2.final_logit_softcapping") == pytest.approx(5.0)
    assert kv(r, "gemma2.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert "output.weight" not in tensor_shapes(r)  # tied embeddings


def test_moe_experts_are_stacked(build: Callable[..., ckpt.Built], tmp_path: Path) -> None:
    built = build("qwen3moe")
    out = tmp_path / "moe.gguf"
    result = convert_hf(built.path, out, outtype="f32")
    r = reader(out)
    shapes = tensor_shapes(r)
    assert shapes["blk.0.ffn_gate_exps.weight"] == (8, 32, 64)
    assert shapes["blk.1.ffn_down_exps.weight"] == (8, 64, 32)
    assert shapes["blk.0.ffn_gate_inp.weight"] == (8, 64)
    assert kv(r, "qwen3moe.expert_count") == 8
    assert kv(r, "qwen3moe.expert_used_count") == 2
    assert kv(r, "qwen3moe.expert_feed_forward_length") == 32
    stacked = next(t for t in r.tensors if t.name == "blk.1.ffn_up_exps.weight")
    data = np.asarray(stacked.data).reshape(8, 32, 64)
    np.testing.assert_array_equal(
        data[5], built.weights["model.layers.1.mlp.experts.5.up_proj.weight"]
    )
    assert result.active_parameters < result.parameters
    assert result.size_label.startswith("8x")


def test_llama3_rope_scaling_becomes_rope_freqs(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("llama")
    out = tmp_path / "l.gguf"
    convert_hf(built.path, out)
    r = reader(out)
    freqs = np.asarray(next(t for t in r.tensors if t.name == "rope_freqs.weight").data)
    # head_dim 16, original context 64: the fastest pair is kept, the slow ones divided by 8.
    assert freqs.shape == (8,)
    assert freqs[0] == pytest.approx(1.0)
    assert freqs[-1] == pytest.approx(8.0)
    assert np.all(np.diff(freqs) >= 0)


def test_general_metadata_from_cache_layout_and_readme(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("qwen3", name="models--acme--Tiny-Qwen3/snapshots/0123abcd")
    (built.path / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# Tiny\n")
    result = convert_hf(built.path, tmp_path, outtype="q8_0")
    assert result.output == tmp_path / "Tiny-Qwen3-Q8_0.gguf"
    r = reader(result.output)
    assert kv(r, "general.name") == "Tiny-Qwen3"
    assert kv(r, "general.license") == "apache-2.0"
    assert kv(r, "general.source.repo_url") == "https://huggingface.co/acme/Tiny-Qwen3"
    assert kv(r, "general.file_type") == 7
    assert kv(r, "general.size_label") == result.size_label
    expected_params = sum(v.size for v in built.weights.values())
    assert result.parameters == expected_params


def test_small_blocks_give_identical_file(
    build: Callable[..., ckpt.Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading in blocks of a few rows (permuted heads, experts) changes nothing."""
    built = build("mixtral")
    whole = tmp_path / "whole.gguf"
    convert_hf(built.path, whole, outtype="q8_0")
    monkeypatch.setattr(writer_mod, "BLOCK_BYTES", 700)
    blocks = tmp_path / "blocks.gguf"
    convert_hf(built.path, blocks, outtype="q8_0")

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert digest(whole) == digest(blocks)


def test_progress_reports_tensors_bytes_and_eta(
    build: Callable[..., ckpt.Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build("llama", shards=3)
    monkeypatch.setattr(writer_mod, "_PROGRESS_INTERVAL_S", 0.0)
    events: list[Progress] = []
    result = convert_hf(built.path, tmp_path / "p.gguf", on_progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "check" and stages[-1] == "done"
    convert = [e for e in events if e.stage == "convert"]
    assert [e.done for e in convert] == sorted(e.done for e in convert)
    assert [e.bytes_done for e in convert] == sorted(e.bytes_done for e in convert)
    assert convert[-1].done == convert[-1].total == result.n_tensors
    assert convert[-1].bytes_done == convert[-1].bytes_total == result.source_bytes
    assert any(e.eta_s is not None for e in convert)
    assert events[-1].fraction == 1.0


@pytest.mark.parametrize(
    "family",
    ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3"],
)
def test_facts_and_memory_model_see_the_file_the_converter_writes(
    family: str, build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    """One families table: the facts reader names the architecture the converter writes,
    and the memory model plans, from the folder alone, exactly the file's tensors."""
    from quant.facts import inspect_model
    from quant.facts.gguf import inspect_gguf
    from quant.plan.memory import synthesize_tensors

    built = build(family)
    out = tmp_path / "m.gguf"
    convert_hf(built.path, out, outtype="f32")
    folder = inspect_model(built.path)
    written = inspect_gguf(out)
    assert folder.architecture == written.architecture == kv(reader(out), "general.architecture")
    planned = {t.name: t.shape for t in synthesize_tensors(folder)}
    # RoPE factor tables are computed from the config, not weights the plan counts.
    real = {t.name: t.shape for t in written.tensors if not t.name.startswith("rope_")}
    assert planned == real
