"""Model families: the one table the facts reader, the converter and the memory model read.

Two tables, each keyed the way its readers meet a model:

- :data:`ARCHITECTURES`: llama.cpp architectures, by the name a GGUF stores in
  ``general.architecture``, each with the tensors one block holds in llama.cpp
  (``src/llama-arch.cpp``, ``src/models/<arch>.cpp``). The memory model
  synthesises a tensor list from it when the facts come from a config, and it
  reaches beyond the families below because a GGUF of any architecture can be
  planned for.
- :data:`FAMILIES`: the Hugging Face model families Quantdesk reads from a
  ``config.json``: the ``model_type`` and ``architectures`` names that identify
  each, the llama.cpp architecture it becomes, the defaults of its
  ``transformers`` config class, and what the parameter count and the converter
  need to know about its layout. ``converts`` says whether the HF → GGUF
  converter handles it (the facts reader handles every row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Family(StrEnum):
    """Hugging Face model families whose layer layout Quantdesk knows (``model_type``)."""

    LLAMA = "llama"
    MISTRAL = "mistral"
    MIXTRAL = "mixtral"
    QWEN2 = "qwen2"
    QWEN2_MOE = "qwen2_moe"
    QWEN3 = "qwen3"
    QWEN3_MOE = "qwen3_moe"
    GEMMA = "gemma"
    GEMMA2 = "gemma2"
    GEMMA3 = "gemma3"
    PHI3 = "phi3"


class SwaLayout(StrEnum):
    """How llama.cpp lays out sliding-window layers for a family."""

    NONE = "none"
    EVERY_OTHER = "every-other"  # Gemma 2: even layers slide
    PERIODIC = "periodic"  # Gemma 3: (pattern - 1) sliding layers, then one global


# ----------------------------------------------------------------------------------
# llama.cpp architectures


@dataclass(frozen=True)
class BlockLayout:
    """The tensors one block of a llama.cpp architecture holds, beyond the Llama layout."""

    # Per-head RMS norms on queries and keys (attn_q_norm, attn_k_norm).
    qk_norm: bool = False
    # Biases on the Q, K and V projections.
    attn_bias: bool = False
    # Norms after attention and after the feed-forward block.
    post_norms: bool = False
    # Q, K and V in one attn_qkv matrix.
    fused_qkv: bool = False
    # Gate and up projections in one double-width ffn_up matrix.
    fused_gate_up: bool = False
    # A two-matrix MLP (up, down) without a gate.
    no_gate: bool = False
    # The model keeps a recurrent state outside the KV cache.
    recurrent: bool = False
    # llama.cpp calls an 80-block model with grouped-query attention "70B", which
    # changes its quantization mix (src/llama-model.cpp, load_hparams).
    names_70b: bool = False


_PLAIN = BlockLayout()
_QK_NORM = BlockLayout(qk_norm=True)
_ATTN_BIAS = BlockLayout(attn_bias=True)
_FUSED_NO_GATE = BlockLayout(fused_qkv=True, no_gate=True)
_RECURRENT = BlockLayout(recurrent=True)

# general.architecture → block layout. Architectures not listed have the Llama layout.
ARCHITECTURES: dict[str, BlockLayout] = {
    "llama": BlockLayout(names_70b=True),
    "qwen2": BlockLayout(attn_bias=True, names_70b=True),
    "qwen2moe": _ATTN_BIAS,
    "qwen2vl": _ATTN_BIAS,
    "qwen3": _QK_NORM,
    "qwen3moe": _QK_NORM,
    "gemma": _PLAIN,
    "gemma2": BlockLayout(post_norms=True),
    "gemma3": BlockLayout(qk_norm=True, post_norms=True),
    "phi3": BlockLayout(fused_qkv=True, fused_gate_up=True),
    "phi2": BlockLayout(attn_bias=True, fused_qkv=True, no_gate=True),
    "olmo2": _QK_NORM,
    "olmoe": _QK_NORM,
    "cohere2": _QK_NORM,
    "glm4moe": _QK_NORM,
    "starcoder": BlockLayout(no_gate=True),
    "starcoder2": BlockLayout(attn_bias=True, no_gate=True),
    "falcon": _FUSED_NO_GATE,
    "bloom": _FUSED_NO_GATE,
    "gpt2": _FUSED_NO_GATE,
    "mpt": _FUSED_NO_GATE,
    "gptneox": _FUSED_NO_GATE,
    "mamba": _RECURRENT,
    "mamba2": _RECURRENT,
    "rwkv6": _RECURRENT,
    "rwkv7": _RECURRENT,
    "jamba": _RECURRENT,
    "lfm2": _RECURRENT,
}


def block_layout(architecture: str) -> BlockLayout:
    """The block layout of a llama.cpp architecture (the Llama layout when unknown)."""
    return ARCHITECTURES.get(architecture.lower(), _PLAIN)


# ----------------------------------------------------------------------------------
# Hugging Face families


@dataclass(frozen=True)
class FamilySpec:
    family: Family
    # The GGUF architecture llama.cpp's converter writes for this family.
    gguf_arch: str
    # config.json "model_type" values (a multimodal config's text_config included).
    model_types: tuple[str, ...]
    # config.json "architectures" class names.
    hf_architectures: tuple[str, ...]
    # The transformers config class whose defaults apply to missing keys.
    config_class: str
    defaults: Mapping[str, Any]
    moe: bool = False
    shared_expert: bool = False
    swa: SwaLayout = SwaLayout.NONE
    # The converter handles this family.
    converts: bool = False
    # llama.cpp ropes interleaved pairs where the checkpoint stores Q and K rows in
    # "rotate half" order, so the converter permutes them back.
    permute_qk: bool = False
    # The family's RMSNorm multiplies by 1 + weight; llama.cpp's by weight.
    norm_offset: bool = False

    @property
    def layout(self) -> BlockLayout:
        return block_layout(self.gguf_arch)

    @property
    def qkv_bias(self) -> bool:
        """Q, K and V have biases even when the config does not say (``attention_bias``)."""
        return self.layout.attn_bias

    @property
    def qk_norm(self) -> bool:
        return self.layout.qk_norm

    @property
    def post_norms(self) -> bool:
        return self.layout.post_norms

    @property
    def fused_phi(self) -> bool:
        """Phi-3's fused ``qkv_proj`` and ``gate_up_proj``, kept fused in the GGUF."""
        return self.layout.fused_qkv and self.layout.fused_gate_up

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.post_norms else 2


# Defaults of the transformers config classes (configuration_<family>.py).
_LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
}

FAMILIES: dict[Family, FamilySpec] = {
    Family.LLAMA: FamilySpec(
        Family.LLAMA,
        "llama",
        ("llama",),
        ("LlamaForCausalLM",),
        "LlamaConfig",
        _LLAMA_DEFAULTS,
        converts=True,
        permute_qk=True,
    ),
    Family.MISTRAL: FamilySpec(
        Family.MISTRAL,
        "llama",
        ("mistral",),
        ("MistralForCausalLM",),
        "MistralConfig",
        {
            **_LLAMA_DEFAULTS,
            "intermediate_size": 14336,
            "num_key_value_heads": 8,
            "max_position_embeddings": 4096 * 32,
            "sliding_window": 4096,
        },
        converts=True,
        permute_qk=True,
    ),
    Family.MIXTRAL: FamilySpec(
        Family.MIXTRAL,
        "llama",
        ("mixtral",),
        ("MixtralForCausalLM",),
        "MixtralConfig",
        {
            **_LLAMA_DEFAULTS,
            "intermediate_size": 14336,
            "num_key_value_heads": 8,
            "max_position_embeddings": 4096 * 32,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "rope_theta": 1e6,
            "rms_norm_eps": 1e-5,
        },
        moe=True,
        converts=True,
        permute_qk=True,
    ),
    Family.QWEN2: FamilySpec(
        Family.QWEN2,
        "qwen2",
        ("qwen2",),
        ("Qwen2ForCausalLM",),
        "Qwen2Config",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 151936,
            "intermediate_size": 22016,
            "max_position_embeddings": 32768,
            "use_sliding_window": False,
        },
        converts=True,
    ),
    Family.QWEN2_MOE: FamilySpec(
        Family.QWEN2_MOE,
        "qwen2moe",
        ("qwen2_moe",),
        ("Qwen2MoeForCausalLM",),
        "Qwen2MoeConfig",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "max_position_embeddings": 32768,
            "decoder_sparse_step": 1,
            "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632,
            "num_experts_per_tok": 4,
            "num_experts": 60,
            "use_sliding_window": False,
        },
        moe=True,
        shared_expert=True,
    ),
    Family.QWEN3: FamilySpec(
        Family.QWEN3,
        "qwen3",
        ("qwen3",),
        ("Qwen3ForCausalLM",),
        "Qwen3Config",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 151936,
            "intermediate_size": 22016,
            "head_dim": 128,
            "max_position_embeddings": 32768,
            "use_sliding_window": False,
        },
        converts=True,
    ),
    Family.QWEN3_MOE: FamilySpec(
        Family.QWEN3_MOE,
        "qwen3moe",
        ("qwen3_moe",),
        ("Qwen3MoeForCausalLM",),
        "Qwen3MoeConfig",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 24,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            "decoder_sparse_step": 1,
            "moe_intermediate_size": 768,
            "num_experts_per_tok": 8,
            "num_experts": 128,
            "norm_topk_prob": False,
            "use_sliding_window": False,
        },
        moe=True,
        converts=True,
    ),
    Family.GEMMA: FamilySpec(
        Family.GEMMA,
        "gemma",
        ("gemma",),
        ("GemmaForCausalLM",),
        "GemmaConfig",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 256000,
            "hidden_size": 3072,
            "intermediate_size": 24576,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 256,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": True,
        },
    ),
    Family.GEMMA2: FamilySpec(
        Family.GEMMA2,
        "gemma2",
        ("gemma2",),
        ("Gemma2ForCausalLM",),
        "Gemma2Config",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 256000,
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "max_position_embeddings": 8192,
            "sliding_window": 4096,
            "tie_word_embeddings": True,
            "query_pre_attn_scalar": 256,
            "final_logit_softcapping": 30.0,
            "attn_logit_softcapping": 50.0,
        },
        swa=SwaLayout.EVERY_OTHER,
        converts=True,
        norm_offset=True,
    ),
    Family.GEMMA3: FamilySpec(
        Family.GEMMA3,
        "gemma3",
        ("gemma3", "gemma3_text"),
        ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
        "Gemma3TextConfig",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 262208,
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "max_position_embeddings": 131072,
            "sliding_window": 4096,
            "sliding_window_pattern": 6,
            "tie_word_embeddings": True,
            "rope_theta": 1e6,
            "rope_local_base_freq": 10000.0,
            "query_pre_attn_scalar": 256,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
        },
        swa=SwaLayout.PERIODIC,
        converts=True,
        norm_offset=True,
    ),
    Family.PHI3: FamilySpec(
        Family.PHI3,
        "phi3",
        ("phi3",),
        ("Phi3ForCausalLM",),
        "Phi3Config",
        {
            **_LLAMA_DEFAULTS,
            "vocab_size": 32064,
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "partial_rotary_factor": 1.0,
        },
        converts=True,
    ),
}

# config.json "model_type" values (and the text model types inside a multimodal config).
BY_MODEL_TYPE: dict[str, FamilySpec] = {
    mt: spec for spec in FAMILIES.values() for mt in spec.model_types
}
# config.json "architectures" class names.
BY_HF_ARCHITECTURE: dict[str, FamilySpec] = {
    name: spec for spec in FAMILIES.values() for name in spec.hf_architectures
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(BY_MODEL_TYPE)
# The HF architectures the converter handles.
CONVERTIBLE_ARCHITECTURES: tuple[str, ...] = tuple(
    name for name, spec in BY_HF_ARCHITECTURE.items() if spec.converts
)


def sliding_layers(
    spec: FamilySpec,
    n_layers: int,
    layer_types: object,
    pattern: Callable[[], int],
) -> tuple[bool, ...]:
    """One flag per layer, True where llama.cpp uses the sliding window.

    ``layer_types`` (config.json's per-layer list) wins when it names every
    layer; otherwise the family's layout applies, ``pattern()`` giving the
    period of a periodic one. Empty for a family without sliding-window layers.
    """
    if spec.swa is SwaLayout.NONE:
        return ()
    if isinstance(layer_types, list) and len(layer_types) == n_layers:
        return tuple(str(t) == "sliding_attention" for t in layer_types)
    if spec.swa is SwaLayout.EVERY_OTHER:
        return tuple(i % 2 == 0 for i in range(n_layers))
    period = pattern()
    return tuple((i + 1) % period != 0 for i in range(n_layers))
