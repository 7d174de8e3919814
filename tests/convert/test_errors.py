"""Bad input gives one clear sentence and leaves no output file behind."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import quant.convert.writer as writer_mod
from quant.convert import CheckpointError, UnsupportedDtypeError, convert_hf
from quant.errors import Cancelled, InsufficientResourcesError, UnsupportedArchitectureError
from quant.progress import CancelToken, Progress
from tests.convert import checkpoints as ckpt


def assert_no_output(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if ".gguf" in p.name]
    assert leftovers == [], f"files left behind: {leftovers}"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_missing_config(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("llama")
    (built.path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


class _Trap:
    """Unpickling this calls Path.touch(marker): proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_pickle_checkpoint_is_refused_unopened(
    build: Callable[..., ckpt.Built], tmp_path: Path, out_dir: Path
) -> None:
    built = build("llama")
    (built.path / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (built.path / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(CheckpointError, match="pickle") as info:
        convert_hf(built.path, out_dir / "m.gguf")
    assert "never unpickles" in str(info.value)
    assert not marker.exists()
    assert_no_output(out_dir)


def test_missing_shard(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("llama", shards=2)
    (built.path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors.*missing"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_truncated_shard(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("llama", shards=2)
    shard = built.path / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model-00001-of-00002\.safetensors is truncated"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_unsupported_dtype(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("qwen3")
    entries = {}
    for name, value in built.weights.items():
        dtype, shape, raw, _ = ckpt.encode_tensor(value, "F32")
        entries[name] = (dtype, shape, raw)
    name = "model.layers.1.self_attn.k_proj.weight"
    shape = built.weights[name].shape
    entries[name] = ("F8_E4M3", shape, bytes(int(np.prod(shape))))
    ckpt.save_safetensors(built.path / "model.safetensors", entries)
    with pytest.raises(UnsupportedDtypeError, match=r"k_proj\.weight is stored as F8_E4M3"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_shape_disagreeing_with_config(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("mistral")
    config = json.loads((built.path / "config.json").read_text())
    config["intermediate_size"] = 128
    (built.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"has shape \[96, 64\] but config\.json implies"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_missing_tensor(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("qwen2")
    weights = dict(built.weights)
    del weights["model.layers.1.mlp.up_proj.weight"]
    ckpt.write_weights(built.path, weights)
    with pytest.raises(CheckpointError, match=r"lacks blk\.1\.ffn_up\.weight"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_missing_expert(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("qwen3moe")
    weights = {k: v for k, v in built.weights.items() if ".experts.7." not in k}
    for p in built.path.glob("*.safetensors*"):
        p.unlink()
    ckpt.write_weights(built.path, weights)
    with pytest.raises(CheckpointError, match="expert 7 is missing"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_unknown_architecture_names_supported_ones(
    build: Callable[..., ckpt.Built], out_dir: Path
) -> None:
    built = build("llama")
    config = json.loads((built.path / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_falcon.FalconForCausalLM"}
    (built.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError) as info:
        convert_hf(built.path, out_dir / "m.gguf")
    message = str(info.value)
    assert "FalconForCausalLM" in message
    assert "LlamaForCausalLM" in message and "Qwen3MoeForCausalLM" in message
    assert "never runs" in message
    assert_no_output(out_dir)


def test_qwen3_moe_without_topk_renormalisation_is_refused(
    build: Callable[..., ckpt.Built], out_dir: Path
) -> None:
    built = build("qwen3moe", norm_topk_prob=False)
    with pytest.raises(UnsupportedArchitectureError, match="norm_topk_prob"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_disk_too_small(
    build: Callable[..., ckpt.Built], out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build("llama")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(InsufficientResourcesError) as info:
        convert_hf(built.path, out_dir / "m.gguf")
    message = str(info.value)
    assert "not enough free disk space" in message
    assert "(4096 bytes) is available" in message
    needed = int(re.search(r"GGUF needs .*? \((\d+) bytes\)", message).group(1))
    assert needed > sum(2 * v.size for v in built.weights.values())  # F16 output
    assert_no_output(out_dir)


def test_values_beyond_f16_range_suggest_bf16(
    build: Callable[..., ckpt.Built], out_dir: Path
) -> None:
    built = build("qwen3")
    weights = dict(built.weights)
    weights["model.layers.0.mlp.down_proj.weight"] = (
        weights["model.layers.0.mlp.down_proj.weight"] * 1e6
    )
    ckpt.write_weights(built.path, weights)
    with pytest.raises(CheckpointError, match=r"beyond F16's range.*--outtype bf16"):
        convert_hf(built.path, out_dir / "m.gguf", outtype="f16")
    assert_no_output(out_dir)
    convert_hf(built.path, out_dir / "m.gguf", outtype="bf16")
    assert (out_dir / "m.gguf").is_file()


def test_nan_weights_are_reported(build: Callable[..., ckpt.Built], out_dir: Path) -> None:
    built = build("qwen3")
    weights = dict(built.weights)
    weights["model.layers.1.self_attn.o_proj.weight"][3, 5] = np.nan
    ckpt.write_weights(built.path, weights)
    with pytest.raises(CheckpointError, match=r"o_proj.*NaN|attn_output.*NaN"):
        convert_hf(built.path, out_dir / "m.gguf")
    assert_no_output(out_dir)


def test_cancel_midway_leaves_no_file_and_keeps_old_output(
    build: Callable[..., ckpt.Built], out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build("mixtral")
    target = out_dir / "m.gguf"
    target.write_bytes(b"previous conversion")
    monkeypatch.setattr(writer_mod, "_PROGRESS_INTERVAL_S", 0.0)
    token = CancelToken()
    seen: list[Progress] = []

    def on_progress(p: Progress) -> None:
        seen.append(p)
        if p.stage == "convert" and p.done >= 5:
            token.cancel()

    with pytest.raises(Cancelled):
        convert_hf(built.path, target, on_progress=on_progress, cancel=token, overwrite=True)
    convert_events = [p for p in seen if p.stage == "convert"]
    assert 5 <= convert_events[-1].done < convert_events[-1].total
    assert target.read_bytes() == b"previous conversion"
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.gguf"]


def test_existing_output_is_kept_unless_overwrite_is_asked(
    build: Callable[..., ckpt.Built], out_dir: Path
) -> None:
    built = build("llama")
    target = out_dir / "m.gguf"
    target.write_bytes(b"the user's earlier file")
    with pytest.raises(CheckpointError, match=r"already exists.*--force"):
        convert_hf(built.path, target)
    assert target.read_bytes() == b"the user's earlier file"
    convert_hf(built.path, target, overwrite=True)
    assert target.read_bytes()[:4] == b"GGUF"


def test_output_never_replaces_a_file_of_the_model_folder_or_a_non_gguf(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("llama")
    config = built.path / "config.json"
    before = config.read_bytes()
    with pytest.raises(CheckpointError, match=r"must be a \.gguf"):
        convert_hf(built.path, config, overwrite=True)
    planted = built.path / "old.gguf"
    planted.write_bytes(b"keep")
    with pytest.raises(CheckpointError, match=r"already exists; choose another name$"):
        convert_hf(built.path, planted, overwrite=True)
    assert config.read_bytes() == before
    assert planted.read_bytes() == b"keep"
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(CheckpointError, match=r"must be a \.gguf"):
        convert_hf(built.path, other)
    assert other.read_text() == "mine"
