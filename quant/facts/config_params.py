"""Facts from a Hugging Face ``config.json``: shapes, parameter counts, attention layout.

A ``config.json`` names the model family (``model_type``) and its sizes; the
parameter count follows from the family's layer layout (which projections have
biases, which norms exist, how experts are laid out). Keys a config leaves out
take the default of the family's ``transformers`` config class, and every
default used is listed in the facts' notes.

Multimodal configs (Gemma 3 and others with a ``text_config``) are described by
their language model: that is what a GGUF of the model holds (the vision
encoder goes to a separate projector file), and the vision part is noted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quant.errors import ModelFormatError, UnsupportedArchitectureError
from quant.facts.families import (
    BY_HF_ARCHITECTURE,
    BY_MODEL_TYPE,
    FAMILIES,
    SUPPORTED_MODEL_TYPES,
    Family,
    FamilySpec,
    SwaLayout,
    sliding_layers,
)
from quant.facts.model import ModelFacts, SourceKind

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ConfigShapes",
    "ParameterCount",
    "count_parameters",
    "facts_from_config",
    "resolve_family",
    "shapes_from_config",
]


# More layers than any published model by far; beyond it a config is damaged.
MAX_LAYERS = 1 << 16


@dataclass(frozen=True)
class ConfigShapes:
    """The sizes of a language model, normalised across families."""

    family: Family
    model_type: str
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    context_length: int
    tied_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    n_experts: int = 0
    n_experts_used: int = 0
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    # One flag per layer: True where the feed-forward block is a mixture of experts.
    moe_layers: tuple[bool, ...] = ()
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] = ()
    # Config keys that were missing and took the config class default.
    defaulted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    multimodal: bool = False


@dataclass(frozen=True)
class ParameterCount:
    total: int
    # Parameters one token uses (equal to total for dense models).
    active: int
    # Parts of the total, for people checking the arithmetic.
    breakdown: dict[str, int] = field(default_factory=dict)


class _Config:
    """Typed access to a config dict with the family's defaults, recording which applied."""

    def __init__(self, data: Mapping[str, Any], spec: FamilySpec, source: str) -> None:
        self.data = data
        self.spec = spec
        self.source = source
        self.defaulted: list[str] = []

    def raw(self, key: str) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if key in self.spec.defaults:
            self.defaulted.append(key)
            return self.spec.defaults[key]
        return None

    def int(self, key: str, fallback: int | None = None) -> int:
        value = self.raw(key)
        if value is None:
            if fallback is None:
                raise ModelFormatError(f"{self.source}: config.json has no {key}")
            return fallback
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ModelFormatError(
                f"{self.source}: config.json {key} is {value!r}, expected a whole number"
            )
        if isinstance(value, float) and not value.is_integer():
            raise ModelFormatError(
                f"{self.source}: config.json {key} is {value!r}, expected a whole number"
            )
        return int(value)

    def bool(self, key: str, fallback: bool = False) -> bool:
        value = self.raw(key)
        return fallback if value is None else bool(value)


def resolve_family(config: Mapping[str, Any], source: str) -> tuple[Family, Mapping[str, Any]]:
    """The family of ``config`` and the dict that holds its language-model sizes.

    Raises :class:`UnsupportedArchitectureError` naming the model type and the
    supported ones when the family is unknown.
    """
    model_type = str(config.get("model_type") or "")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = []
    text_config = config.get("text_config")
    if isinstance(text_config, Mapping):
        text_type = str(text_config.get("model_type") or "")
        spec = BY_MODEL_TYPE.get(model_type) or BY_MODEL_TYPE.get(text_type)
        if spec is not None:
            return spec.family, text_config
    spec = BY_MODEL_TYPE.get(model_type)
    if spec is None and not model_type:
        spec = next((BY_HF_ARCHITECTURE[a] for a in architectures if a in BY_HF_ARCHITECTURE), None)
    if spec is None:
        named = model_type or (", ".join(map(str, architectures)) if architectures else "")
        what = f"model type {named!r}" if named else "a config.json without model_type"
        raise UnsupportedArchitectureError(
            f"{source}: {what} is not supported; supported model types are "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return spec.family, config


def shapes_from_config(config: Mapping[str, Any], source: str) -> ConfigShapes:
    """Normalise ``config`` (a parsed config.json) into :class:`ConfigShapes`."""
    if not isinstance(config, Mapping):
        raise ModelFormatError(f"{source}: config.json is not a JSON object")
    family, text = resolve_family(config, source)
    spec = FAMILIES[family]
    c = _Config(text, spec, source)
    notes: list[str] = []
    multimodal = text is not config

    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    if n_layers > MAX_LAYERS:
        raise ModelFormatError(
            f"{source}: config.json has {n_layers:,} layers (the limit is {MAX_LAYERS:,})"
        )
    if n_heads == 0 or n_layers == 0 or hidden == 0:
        raise ModelFormatError(
            f"{source}: config.json has {n_layers} layers, {n_heads} heads and hidden size "
            f"{hidden}; none of them may be 0"
        )
    n_kv_heads = c.int("num_key_value_heads", n_heads)
    head_dim = c.int("head_dim", hidden // n_heads)
    attention_bias = c.raw("attention_bias")
    qkv_bias = spec.qkv_bias or bool(attention_bias)
    o_bias = bool(attention_bias) and not spec.qkv_bias
    tied = c.bool("tie_word_embeddings")

    n_experts = 0
    n_used = 0
    expert_ff = 0
    shared_ff = 0
    moe_layers: tuple[bool, ...] = ()
    if spec.moe:
        if family == Family.MIXTRAL:
            n_experts = c.int("num_local_experts")
            n_used = c.int("num_experts_per_tok")
            expert_ff = c.int("intermediate_size")
            moe_layers = (True,) * n_layers
        else:
            n_experts = c.int("num_experts")
            n_used = c.int("num_experts_per_tok")
            expert_ff = c.int("moe_intermediate_size")
            step = max(1, c.int("decoder_sparse_step", 1))
            only_mlp = c.raw("mlp_only_layers") or []
            dense_layers = {int(i) for i in only_mlp if isinstance(i, int)}
            moe_layers = tuple(
                n_experts > 0 and i not in dense_layers and (i + 1) % step == 0
                for i in range(n_layers)
            )
            if spec.shared_expert:
                shared_ff = c.int("shared_expert_intermediate_size", 0)
        if n_used > n_experts:
            raise ModelFormatError(
                f"{source}: config.json routes each token to {n_used} experts but has only "
                f"{n_experts}"
            )

    window, swa_layers = _sliding_window(c, spec, n_layers, notes)
    vocab_size = c.int("vocab_size")
    intermediate = c.int("intermediate_size")
    context_length = c.int("max_position_embeddings", 0)

    defaulted = tuple(dict.fromkeys(c.defaulted))
    # Keys published configs routinely leave to the class default.
    quiet = {
        "attention_bias",
        "mlp_bias",
        "use_sliding_window",
        "decoder_sparse_step",
        "tie_word_embeddings",
    }
    shown = [k for k in defaulted if k not in quiet]
    if shown:
        notes.append(
            f"config.json leaves out {', '.join(shown)}; the {spec.config_class} defaults "
            "were used for them"
        )
    if multimodal:
        notes.append(
            "The facts describe the language model; the vision encoder in this config "
            "is not counted"
        )

    return ConfigShapes(
        family=family,
        model_type=str(text.get("model_type") or config.get("model_type") or family.value),
        vocab_size=vocab_size,
        hidden_size=hidden,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        context_length=context_length,
        tied_embeddings=tied,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=c.bool("mlp_bias"),
        n_experts=n_experts,
        n_experts_used=n_used,
        expert_intermediate_size=expert_ff,
        shared_expert_intermediate_size=shared_ff,
        moe_layers=moe_layers,
        sliding_window=window,
        swa_layers=swa_layers,
        defaulted=defaulted,
        notes=tuple(notes),
        multimodal=multimodal,
    )


def _sliding_window(
    c: _Config, spec: FamilySpec, n_layers: int, notes: list[str]
) -> tuple[int | None, tuple[bool, ...]]:
    """The window and per-layer SWA flags llama.cpp will use for this config."""
    if spec.swa is not SwaLayout.NONE:
        window = c.int("sliding_window", 0)
        if window <= 0:
            return None, ()

        def pattern() -> int:
            value = c.data.get("sliding_window_pattern", c.data.get("_sliding_window_pattern"))
            if not isinstance(value, int) or value <= 0:
                value = c.int("sliding_window_pattern")
            return value

        return window, sliding_layers(spec, n_layers, c.data.get("layer_types"), pattern)
    window_raw = c.data.get("sliding_window")
    uses = c.data.get("use_sliding_window", True)
    if isinstance(window_raw, int) and window_raw > 0 and uses:
        notes.append(
            f"config.json sets a sliding window of {window_raw} tokens, but llama.cpp runs "
            f"{spec.gguf_arch} models with full attention in every layer"
        )
    return None, ()


def count_parameters(s: ConfigShapes) -> ParameterCount:
    """Parameters of the language model described by ``s``, from its layer shapes."""
    h = s.hidden_size
    q_dim = s.n_heads * s.head_dim
    kv_dim = s.n_kv_heads * s.head_dim
    spec = FAMILIES[s.family]

    embed = s.vocab_size * h
    lm_head = 0 if s.tied_embeddings else s.vocab_size * h
    attn = h * q_dim + 2 * h * kv_dim + q_dim * h
    if s.qkv_bias:
        attn += q_dim + 2 * kv_dim
    if s.o_bias:
        attn += h
    if spec.qk_norm:
        attn += 2 * s.head_dim
    norms = spec.norms_per_layer * h
    dense_mlp = 3 * h * s.intermediate_size
    if s.mlp_bias:
        dense_mlp += 2 * s.intermediate_size + h

    expert_one = 3 * h * s.expert_intermediate_size
    router = h * s.n_experts
    shared = 0
    if s.shared_expert_intermediate_size:
        shared = 3 * h * s.shared_expert_intermediate_size + h  # + its sigmoid gate

    n_moe = sum(1 for m in s.moe_layers if m)
    n_dense = s.n_layers - n_moe
    experts_total = n_moe * s.n_experts * expert_one
    experts_active = n_moe * s.n_experts_used * expert_one
    always = (
        embed
        + lm_head
        + h  # final norm
        + s.n_layers * (attn + norms)
        + n_dense * dense_mlp
        + n_moe * (router + shared)
    )
    breakdown = {
        "embeddings": embed,
        "output": lm_head,
        "attention": s.n_layers * attn,
        "norms": s.n_layers * norms + h,
        "mlp": n_dense * dense_mlp,
        "experts": experts_total,
        "routers_and_shared_experts": n_moe * (router + shared),
    }
    return ParameterCount(
        total=always + experts_total, active=always + experts_active, breakdown=breakdown
    )


def facts_from_config(
    config: Mapping[str, Any],
    *,
    source: str,
    kind: SourceKind,
    name: str,
) -> ModelFacts:
    """Model facts from ``config`` alone: the parameter count is derived from shapes."""
    s = shapes_from_config(config, source)
    counts = count_parameters(s)
    notes = list(s.notes)
    extra: dict[str, Any] = {
        "model_type": s.model_type,
        "family": s.family.value,
        "parameter_breakdown": counts.breakdown,
    }
    architectures = config.get("architectures")
    if isinstance(architectures, list):
        extra["architectures"] = [str(a) for a in architectures]
    dtype = config.get("torch_dtype") or config.get("dtype")
    if isinstance(dtype, str):
        extra["torch_dtype"] = dtype
    if s.expert_intermediate_size:
        extra["expert_feed_forward_length"] = s.expert_intermediate_size
    if s.shared_expert_intermediate_size:
        extra["shared_expert_feed_forward_length"] = s.shared_expert_intermediate_size
    return ModelFacts(
        source=source,
        kind=kind,
        name=name,
        architecture=FAMILIES[s.family].gguf_arch,
        parameters=counts.total,
        n_layers=s.n_layers,
        n_heads=s.n_heads,
        n_kv_heads=s.n_kv_heads,
        head_dim=s.head_dim,
        embedding_length=s.hidden_size,
        vocab_size=s.vocab_size,
        context_length=s.context_length,
        head_dim_v=s.head_dim,
        feed_forward_length=s.intermediate_size,
        active_parameters=counts.active if s.n_experts > 1 else None,
        sliding_window=s.sliding_window,
        swa_layers=s.swa_layers,
        n_experts=s.n_experts,
        n_experts_used=s.n_experts_used,
        tied_embeddings=s.tied_embeddings,
        file_type=_dtype_label(dtype) if isinstance(dtype, str) else None,
        notes=tuple(notes),
        extra=extra,
    )


_DTYPE_LABELS = {
    "bfloat16": "BF16",
    "float16": "F16",
    "float32": "F32",
    "half": "F16",
    "float": "F32",
}


def _dtype_label(dtype: str) -> str:
    return _DTYPE_LABELS.get(dtype.lower(), dtype.upper())
