"""Hub repo ids, against a local fake of the few hub endpoints huggingface_hub calls.

The fake serves ``/api/models/{repo}[/revision/{rev}]`` (file list with sizes)
and ``/{repo}/resolve/{rev}/{file}`` (HEAD, GET and byte ranges), and records
every request, so the tests can check that no weights are ever downloaded.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.core.runtime import import_llama_first

import_llama_first()

import huggingface_hub.constants  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors.numpy import save  # noqa: E402

from quant.errors import HubError, ModelFormatError, UnsupportedArchitectureError  # noqa: E402
from quant.facts import SourceKind, inspect_model, looks_like_repo_id  # noqa: E402
from tests.fakehub import FakeHub, serve_fake_hub  # noqa: E402
from tests.test_facts_config import hf_tensors, tiny  # noqa: E402
from tests.test_facts_gguf import arch_kv, llama_like, n_elements, write_gguf  # noqa: E402


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, tmp_path / "hf-cache") as fake:
        yield fake


def safetensors_repo(config: dict[str, Any], shards: int = 1) -> dict[str, bytes]:
    tensors = hf_tensors(config)
    names = sorted(tensors)
    files: dict[str, bytes] = {"config.json": json.dumps(config).encode()}
    weight_map: dict[str, str] = {}
    for k in range(shards):
        fname = (
            "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        )
        part = names[k::shards]
        files[fname] = save({n: np.zeros(tensors[n], dtype=np.float16) for n in part})
        weight_map.update(dict.fromkeys(part, fname))
    if shards > 1:
        files["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    return files


def test_repo_id_recognition() -> None:
    assert looks_like_repo_id("google/gemma-3-270m")
    assert looks_like_repo_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert not looks_like_repo_id("gemma")
    assert not looks_like_repo_id("models/model.gguf")
    assert not looks_like_repo_id("a/b/c")
    assert not looks_like_repo_id("../x")


def test_safetensors_repo_facts_without_weights(hub: FakeHub, tmp_path: Path) -> None:
    config = tiny("qwen2", tie_word_embeddings=True)
    files = safetensors_repo(config)
    files["tokenizer.json"] = b"{}"
    files["Tiny-Q4_K_M.gguf"] = b"GGUF" + bytes(96)
    files["Tiny-Q8_0.gguf"] = b"GGUF" + bytes(160)
    hub.repos["acme/tiny"] = files
    hub.info["acme/tiny"] = {
        "config": {"tokenizer_config": {"chat_template": "{{ messages }}"}},
        "cardData": {"license": "apache-2.0"},
    }
    facts = inspect_model("acme/tiny", offline=False)
    assert facts.kind is SourceKind.HUB and facts.name == "acme/tiny"
    assert facts.parameters == sum(int(np.prod(s)) for s in hf_tensors(config).values())
    assert facts.architecture == "qwen2" and facts.file_type == "F16"
    assert facts.has_tokenizer and facts.has_chat_template and facts.license == "apache-2.0"
    assert facts.file_size_bytes == len(files["model.safetensors"])
    assert [(r.filename, r.size_bytes, r.file_type) for r in facts.remote_files] == [
        ("Tiny-Q4_K_M.gguf", 100, "Q4_K_M"),
        ("Tiny-Q8_0.gguf", 164, "Q8_0"),
    ]
    # Only the safetensors header was fetched (a byte range), never the weights.
    st_gets = hub.downloads(".safetensors")
    assert st_gets and all(r[2] and r[2].startswith("bytes=0-") for r in st_gets)
    assert not hub.downloads(".gguf")
    cached = {p.name for p in (tmp_path / "hf-cache").rglob("*") if p.is_file()}
    assert "config.json" in cached and not any(n.endswith(".safetensors") for n in cached)


def test_sharded_moe_repo(hub: FakeHub) -> None:
    config = tiny("qwen3_moe", num_experts=4, num_experts_per_tok=1, moe_intermediate_size=32)
    hub.repos["acme/moe"] = safetensors_repo(config, shards=2)
    facts = inspect_model("acme/moe", offline=False)
    total = sum(int(np.prod(s)) for s in hf_tensors(config).values())
    assert facts.parameters == total
    assert facts.is_moe and facts.active_parameters is not None
    assert facts.active_parameters < total
    assert len(hub.downloads("model.safetensors.index.json")) == 1


def test_gguf_only_repo_reads_a_remote_header(hub: FakeHub, tmp_path: Path) -> None:
    specs = llama_like(n_layers=2)
    kv = arch_kv("llama", **{"general.license": "llama3.1"})
    (q4,) = write_gguf(tmp_path / "Tiny-Q4_K_M.gguf", "llama", kv, specs)
    hub.repos["acme/tiny-GGUF"] = {
        "Tiny-Q4_K_M.gguf": q4.read_bytes(),
        "Tiny-Q2_K.gguf": b"GGUF" + bytes(60),
        "mmproj-Tiny-f16.gguf": b"GGUF" + bytes(20),
        "README.md": b"# tiny",
    }
    facts = inspect_model("acme/tiny-GGUF", offline=False)
    assert facts.kind is SourceKind.HUB and facts.name == "acme/tiny-GGUF"
    assert facts.parameters == n_elements(specs)
    assert facts.file_type == "Q4_K_M" and facts.license == "llama3.1"
    assert facts.file_size_bytes == q4.stat().st_size
    assert {r.filename for r in facts.remote_files} == {
        "Tiny-Q4_K_M.gguf",
        "Tiny-Q2_K.gguf",
        "mmproj-Tiny-f16.gguf",
    }
    gets = hub.downloads(".gguf")
    assert gets and all(r[2] is not None for r in gets)  # byte ranges only
    assert all(r[1].endswith("Tiny-Q4_K_M.gguf") for r in gets)


def test_unsupported_config_falls_back_to_the_gguf_header(hub: FakeHub, tmp_path: Path) -> None:
    """llama.cpp may run an architecture Quantdesk's config arithmetic does not know."""
    specs = llama_like(n_layers=1)
    (gguf_file,) = write_gguf(tmp_path / "m-Q8_0.gguf", "mamba2", arch_kv("mamba2", 1), specs)
    hub.repos["acme/ssm"] = {
        "config.json": json.dumps({"model_type": "mamba2"}).encode(),
        "m-Q8_0.gguf": gguf_file.read_bytes(),
    }
    facts = inspect_model("acme/ssm", offline=False)
    assert facts.architecture == "mamba2" and facts.parameters == n_elements(specs)
    del hub.repos["acme/ssm"]["m-Q8_0.gguf"]
    with pytest.raises(UnsupportedArchitectureError, match="mamba2"):
        inspect_model("acme/ssm", offline=False)


def test_a_hostile_safetensors_header_on_the_hub_is_one_sentence(hub: FakeHub) -> None:
    """The hub's headers go through the same checked parser as a local folder's."""
    config = tiny("llama")
    nested = b"[" * 100_000 + b"]" * 100_000
    hub.repos["evil/deep"] = {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": len(nested).to_bytes(8, "little") + nested,
    }
    with pytest.raises(ModelFormatError, match=r"evil/deep: model\.safetensors.*nested"):
        inspect_model("evil/deep", offline=False)
    files = safetensors_repo(config, shards=2)
    files["model.safetensors.index.json"] = json.dumps(
        {"weight_map": {"w": "../../elsewhere.safetensors"}}
    ).encode()
    hub.repos["evil/index"] = files
    with pytest.raises(ModelFormatError, match=r"names '\.\./\.\./elsewhere.*does not have"):
        inspect_model("evil/index", offline=False)
    assert not hub.downloads("elsewhere")


def test_pickle_only_repo(hub: FakeHub) -> None:
    hub.repos["old/model"] = {
        "config.json": json.dumps(tiny("llama")).encode(),
        "pytorch_model.bin": b"\x80\x04not a pickle",
    }
    facts = inspect_model("old/model", offline=False)
    assert any("pickle" in n for n in facts.notes)
    assert not hub.downloads(".bin")


def test_unknown_repo_and_missing_files(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="acme/nope: no such model"):
        inspect_model("acme/nope", offline=False)
    hub.repos["acme/empty"] = {"README.md": b"hi"}
    with pytest.raises(HubError, match=r"neither a config\.json nor a GGUF"):
        inspect_model("acme/empty", offline=False)


def test_offline_mode_makes_no_request(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.repos["acme/tiny"] = safetensors_repo(tiny("llama"))
    with pytest.raises(HubError, match="offline mode"):
        inspect_model("acme/tiny", offline=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="acme/tiny: cannot ask the Hugging Face hub in offline"):
        inspect_model("acme/tiny")
    assert hub.requests == []


def test_offline_mode_points_at_a_cached_copy(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.repos["acme/tiny"] = safetensors_repo(tiny("llama"))
    inspect_model("acme/tiny", offline=False)  # caches config.json
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"a downloaded copy is in .*snapshots"):
        inspect_model("acme/tiny")


def test_unreachable_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HubError, match="acme/tiny: cannot reach the Hugging Face hub"):
        inspect_model("acme/tiny", offline=False)
