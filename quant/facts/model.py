"""Model facts: what a model is, read from its headers only.

One value object for a GGUF file, an HF folder, a bare ``config.json`` or a hub
repo id. The memory and speed models plan from these facts; the JSON form is
what ``quantdesk inspect --json`` prints and is documented in the README.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class SourceKind(StrEnum):
    GGUF = "gguf"
    HF_FOLDER = "hf-folder"
    CONFIG = "config"
    HUB = "hub"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    # ggml type name for GGUF ("Q4_K", "F16", …), safetensors dtype for HF ("BF16", …).
    type: str
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class TensorTypeSummary:
    """How much of a model is stored in one tensor type ("Q4_K", "BF16", …)."""

    type: str
    n_tensors: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class RemoteFile:
    """A file in a hub repo (GGUF files are listed for the advisor)."""

    filename: str
    size_bytes: int
    file_type: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    source: str
    kind: SourceKind
    name: str
    architecture: str
    parameters: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    embedding_length: int
    vocab_size: int
    context_length: int
    # Value head dim when it differs from the key head dim (e.g. MLA); else == head_dim.
    head_dim_v: int = 0
    feed_forward_length: int = 0
    active_parameters: int | None = None
    # Per-layer KV heads when they vary between layers; empty = n_kv_heads everywhere.
    n_kv_heads_per_layer: tuple[int, ...] = ()
    sliding_window: int | None = None
    # One flag per layer, True for sliding-window layers; empty = no SWA.
    swa_layers: tuple[bool, ...] = ()
    n_experts: int = 0
    n_experts_used: int = 0
    tied_embeddings: bool = False
    # GGUF: llama.cpp file type name ("Q4_K_M"); HF: dominant dtype ("BF16").
    file_type: str | None = None
    file_size_bytes: int = 0
    bits_per_weight: float | None = None
    tensors: tuple[TensorInfo, ...] = ()
    has_tokenizer: bool = False
    tokenizer_model: str | None = None
    has_chat_template: bool = False
    chat_template: str | None = None
    license: str | None = None
    remote_files: tuple[RemoteFile, ...] = ()
    # Facts that were estimated rather than read, one sentence each.
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # Tensors grouped by type, largest share of bytes first (GGUF and safetensors).
    tensor_types: tuple[TensorTypeSummary, ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def n_swa_layers(self) -> int:
        return sum(1 for s in self.swa_layers if s)

    def kv_heads_for_layer(self, layer: int) -> int:
        if self.n_kv_heads_per_layer and layer < len(self.n_kv_heads_per_layer):
            return self.n_kv_heads_per_layer[layer]
        return self.n_kv_heads

    def to_dict(self, *, with_tensors: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["is_moe"] = self.is_moe
        d["n_swa_layers"] = self.n_swa_layers
        d["swa_layers"] = list(self.swa_layers)
        d["n_kv_heads_per_layer"] = list(self.n_kv_heads_per_layer)
        d.pop("chat_template", None)
        if not with_tensors:
            d.pop("tensors", None)
        else:
            d["tensors"] = [
                {"name": t.name, "shape": list(t.shape), "type": t.type, "n_bytes": t.n_bytes}
                for t in self.tensors
            ]
        d["remote_files"] = [asdict(r) for r in self.remote_files]
        d["tensor_types"] = [asdict(t) for t in self.tensor_types]
        d["notes"] = list(self.notes)
        return d
