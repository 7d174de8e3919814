"""Per-family conversion: config.json → GGUF keys, tensor names, layout transforms.

Each supported Hugging Face architecture maps to one llama.cpp architecture; which
families convert, their names, config defaults and block layouts live in the one
families table (:mod:`quant.facts.families`), shared with the facts reader and the
memory model.
What llama.cpp expects of each (tensor set, RoPE flavour, norms) mirrors
``src/models/<arch>.cpp`` and ``src/llama-model.cpp`` of llama.cpp; the
transforms that follow from it are:

- Llama, Mistral, Mixtral: llama.cpp applies RoPE to interleaved pairs, while
  Hugging Face checkpoints store Q and K rows in "rotate half" order, so the rows
  of every head of Q and K (weights and biases) are permuted back.
- Qwen, Gemma, Phi-3: llama.cpp uses the NeoX (half-split) RoPE, the same as the
  checkpoint, so Q and K are copied as they are.
- Gemma 2 and 3: their RMSNorm multiplies by ``1 + weight``; llama.cpp multiplies by
  ``weight``, so every norm gets +1. The embedding scaling by √hidden is applied by
  llama.cpp itself, so the embedding is not pre-scaled. llama.cpp scales queries by
  1/√head_dim (1/√(hidden/heads) for the 27B shapes); a checkpoint whose
  ``query_pre_attn_scalar`` differs has the difference folded into the queries.
- Phi-3/Phi-4: fused ``qkv_proj`` and ``gate_up_proj`` are what llama.cpp's phi3
  expects (``attn_qkv`` and a double-width ``ffn_up``), so they are kept fused.
- Mixtral and Qwen3-MoE: per-expert matrices are stacked into 3-D ``*_exps`` tensors.
- Tied embeddings: no ``output`` tensor; llama.cpp reuses ``token_embd``.
- Llama 3 RoPE scaling becomes a ``rope_freqs`` tensor of per-frequency divisors;
  Phi-3 LongRoPE becomes ``rope_factors_long``/``rope_factors_short``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from quant.convert.errors import CheckpointError
from quant.convert.safetensors_io import Checkpoint, TensorEntry
from quant.errors import UnsupportedArchitectureError
from quant.facts.families import (
    BY_HF_ARCHITECTURE,
    CONVERTIBLE_ARCHITECTURES,
    Family,
    FamilySpec,
    SwaLayout,
    sliding_layers,
)
from quant.untrusted import short_text, terminal_text

logger = logging.getLogger(__name__)

# Private switches for tests that prove the logit comparison catches a missing
# transform; conversion always runs with both on.
_PERMUTE_QK = True
_GEMMA_NORM_OFFSET = True


class TensorKind(StrEnum):
    """How a tensor's output type is chosen."""

    MATRIX = "matrix"  # weights: the requested output type
    VECTOR = "vector"  # norms, biases, RoPE factors: always F32
    ROUTER = "router"  # MoE expert router: F32, routing is precision-sensitive


class RopeKind(StrEnum):
    NONE = "none"
    LINEAR = "linear"
    LLAMA3 = "llama3"
    YARN = "yarn"
    LONGROPE = "longrope"


# Sizes the converter never takes from a config class default: a tensor's shape must
# come from the checkpoint's own config, or the weights would be read with the wrong one.
_SHAPE_KEYS = frozenset(
    {"num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"}
)


def family_spec(config: Mapping[str, Any]) -> tuple[str, FamilySpec]:
    """The first supported entry of ``config["architectures"]`` and its spec."""
    archs = config.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if not isinstance(archs, list):
        archs = [archs]
    for name in archs:
        spec = BY_HF_ARCHITECTURE.get(name) if isinstance(name, str) else None
        if spec is not None and spec.converts:
            return name, spec
    # Names from the folder's config: escaped and cut, a few at most.
    named = ", ".join(terminal_text(a, 80) for a in archs[:4]) + (
        f" and {len(archs) - 4:,} more" if len(archs) > 4 else ""
    )
    named = named or f"model_type {terminal_text(config.get('model_type'), 80)!r}"
    extra = ""
    if config.get("auto_map"):
        extra = " (it relies on custom code in the model folder, which Quantdesk never runs)"
    raise UnsupportedArchitectureError(
        f"architecture {named} is not supported by the converter{extra}; supported: "
        f"{', '.join(CONVERTIBLE_ARCHITECTURES)}"
    )


@dataclass(frozen=True)
class RopeScaling:
    kind: RopeKind = RopeKind.NONE
    factor: float = 1.0
    original_context: int = 0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()
    attn_factor: float | None = None


@dataclass(frozen=True)
class HParams:
    """The hyper-parameters llama.cpp needs, read from config.json."""

    hf_architecture: str
    spec: FamilySpec
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_kv: int
    head_dim: int
    n_rot: int
    vocab_size: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    rope: RopeScaling = RopeScaling()
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    rope_theta_swa: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    query_scale: float = 1.0  # folded into Q (Gemma 2) or the Q norm (Gemma 3)
    attention_bias: bool = False
    warnings: tuple[str, ...] = field(default=())

    @property
    def family(self) -> Family:
        return self.spec.family

    @property
    def gguf_arch(self) -> str:
        return self.spec.gguf_arch


# Upper bounds on what a config may declare: far above any real model (Llama 3.1 405B has
# 126 layers and a 16,384-wide hidden state), low enough that a hostile config cannot
# make the converter allocate gigabytes of plans.
_LIMITS = {
    "num_hidden_layers": 1024,
    "hidden_size": 1 << 17,
    "num_attention_heads": 4096,
    "intermediate_size": 1 << 20,
    "vocab_size": 1 << 22,
    "max_position_embeddings": 1 << 24,
    "head_dim": 4096,
    "num_local_experts": 4096,
    "num_experts": 4096,
}


def _get(cfg: Mapping[str, Any], spec: FamilySpec, key: str, *, required: bool = True) -> Any:
    if cfg.get(key) is not None:
        return cfg[key]
    if key in spec.defaults and key not in _SHAPE_KEYS:
        return spec.defaults[key]
    if required:
        raise CheckpointError(
            f"config.json has no {key!r}, which a {spec.family.value} model needs; "
            "the config is incomplete, download it again"
        )
    return None


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language-model part of a config (multimodal Gemma 3 nests it in text_config)."""
    cfg = dict(config)
    nested = config.get("text_config")
    if isinstance(nested, dict):
        cfg.update(nested)
    return cfg


def read_hparams(config: Mapping[str, Any]) -> HParams:
    """Read and check the hyper-parameters of a supported architecture."""
    hf_arch, spec = family_spec(config)
    try:
        return _read_hparams(config, hf_arch, spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"config.json of this {hf_arch} has a missing or malformed value ({exc!r}); "
            "download the config again"
        ) from exc


def _read_hparams(config: Mapping[str, Any], hf_arch: str, spec: FamilySpec) -> HParams:
    cfg = text_config(config)
    warnings: list[str] = []

    def num(key: str) -> int:
        value = _get(cfg, spec, key)
        cap = _LIMITS.get(key, 1 << 24)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= cap:
            raise CheckpointError(
                f"config.json: {key} = {short_text(repr(value), 40)}, expected a positive "
                f"integer up to {cap:,}; the config is damaged or not a language model's"
            )
        return value

    def positive(key: str, value: object) -> float:
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number) or number <= 0:
            raise CheckpointError(
                f"config.json: {key} = {short_text(repr(value), 40)}, expected a positive "
                "number; the config is damaged"
            )
        return number

    n_layer = num("num_hidden_layers")
    n_embd = num("hidden_size")
    n_head = num("num_attention_heads")
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    if not 0 < n_kv <= n_head:
        raise CheckpointError(
            f"config.json: num_key_value_heads = {n_kv} must be between 1 and "
            f"num_attention_heads = {n_head}"
        )
    if n_head % n_kv:
        raise CheckpointError(
            f"config.json: num_attention_heads = {n_head} is not a multiple of "
            f"num_key_value_heads = {n_kv}"
        )
    head_dim = int(cfg.get("head_dim") or spec.defaults.get("head_dim") or n_embd // n_head)
    if not 0 < head_dim <= _LIMITS["head_dim"]:
        raise CheckpointError(f"config.json: head_dim = {head_dim} is not a usable head size")
    n_ff = num("intermediate_size")
    vocab_size = num("vocab_size")
    n_ctx = num("max_position_embeddings")
    rope_params = cfg.get("rope_parameters")
    theta = cfg.get("rope_theta")
    if theta is None and isinstance(rope_params, dict):
        theta = rope_params.get("rope_theta")
    rope_theta = positive("rope_theta", theta if theta is not None else spec.defaults["rope_theta"])
    rms_eps = positive("rms_norm_eps", _get(cfg, spec, "rms_norm_eps"))
    tied = bool(_get(cfg, spec, "tie_word_embeddings"))
    if spec.family is Family.GEMMA2:
        tied = True  # llama.cpp's gemma2 has no separate output tensor

    n_rot = head_dim
    if spec.family is Family.PHI3:
        n_rot = int(head_dim * float(_get(cfg, spec, "partial_rotary_factor")))
    rope = _rope_scaling(cfg, spec, head_dim=n_rot, n_ctx=n_ctx, warnings=warnings)

    hp: dict[str, Any] = {}
    if spec.moe:
        if spec.family is Family.MIXTRAL:
            hp["n_expert"] = num("num_local_experts")
            hp["n_ff_exp"] = n_ff
        else:
            hp["n_expert"] = num("num_experts")
            hp["n_ff_exp"] = int(_get(cfg, spec, "moe_intermediate_size"))
            if not bool(_get(cfg, spec, "norm_topk_prob")):
                raise UnsupportedArchitectureError(
                    f"{hf_arch} with norm_topk_prob = false is not supported: llama.cpp's "
                    "qwen3moe always renormalises the selected experts' weights, so the "
                    "converted model would compute different outputs"
                )
            dense = cfg.get("mlp_only_layers") or []
            step = int(_get(cfg, spec, "decoder_sparse_step"))
            if dense or step != 1:
                raise UnsupportedArchitectureError(
                    f"{hf_arch} with dense layers (mlp_only_layers = {dense}, "
                    f"decoder_sparse_step = {step}) is not supported: llama.cpp's qwen3moe "
                    "expects experts in every layer"
                )
        hp["n_expert_used"] = int(_get(cfg, spec, "num_experts_per_tok"))
        if not 0 < hp["n_expert_used"] <= hp["n_expert"]:
            raise CheckpointError(
                f"config.json: num_experts_per_tok = {hp['n_expert_used']} must be between 1 "
                f"and the expert count {hp['n_expert']}"
            )

    if spec.swa is not SwaLayout.NONE:
        window = int(_get(cfg, spec, "sliding_window"))
        hp["sliding_window"] = window
        hp["swa_layers"] = sliding_layers(
            spec,
            n_layer,
            cfg.get("layer_types"),
            lambda: int(_get(cfg, spec, "sliding_window_pattern")),
        )
        if spec.family is Family.GEMMA3:
            hp["rope_theta_swa"] = positive(
                "rope_local_base_freq", _get(cfg, spec, "rope_local_base_freq")
            )
        else:
            hp["rope_theta_swa"] = rope_theta
        attn_cap = _get(cfg, spec, "attn_logit_softcapping", required=False)
        final_cap = _get(cfg, spec, "final_logit_softcapping", required=False)
        if spec.family is Family.GEMMA3 and attn_cap:
            raise UnsupportedArchitectureError(
                f"{hf_arch} with attn_logit_softcapping = {attn_cap} is not supported: "
                "llama.cpp's gemma3 has no attention soft-capping"
            )
        hp["attn_softcap"] = float(attn_cap) if attn_cap else None
        hp["final_softcap"] = float(final_cap) if final_cap else None
        qpas = float(_get(cfg, spec, "query_pre_attn_scalar"))
        big = (spec.family is Family.GEMMA2 and n_layer == 46) or (
            spec.family is Family.GEMMA3 and n_layer == 62
        )
        hp["query_scale"] = _gemma_query_scale(qpas, n_embd / n_head if big else float(head_dim))

    if spec.family in (Family.MISTRAL, Family.QWEN2, Family.PHI3):
        sw = cfg.get("sliding_window")
        use = cfg.get("use_sliding_window", spec.family is not Family.QWEN2)
        if sw and use and int(sw) < n_ctx:
            warnings.append(
                f"the model was trained with a {sw}-token sliding window, which llama.cpp "
                f"does not apply to {spec.gguf_arch}; outputs for prompts longer than {sw} "
                "tokens may differ from the original"
            )

    attention_bias = bool(cfg.get("attention_bias", spec.qkv_bias))
    return HParams(
        hf_architecture=hf_arch,
        spec=spec,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_head=n_head,
        n_kv=n_kv,
        head_dim=head_dim,
        n_rot=n_rot,
        vocab_size=vocab_size,
        n_ctx=n_ctx,
        rope_theta=rope_theta,
        rms_eps=rms_eps,
        tied=tied,
        rope=rope,
        attention_bias=attention_bias,
        warnings=tuple(warnings),
        **hp,
    )


def _gemma_query_scale(qpas: float, llama_scalar: float) -> float:
    """Factor that makes llama.cpp's query scaling equal 1/√query_pre_attn_scalar.

    llama.cpp (src/models/gemma2.cpp, gemma3.cpp) scales queries by 1/√(hidden/heads)
    for the 27B layer counts (46 and 62 layers) and by 1/√head_dim otherwise; that
    divisor is ``llama_scalar``.
    """
    return math.sqrt(llama_scalar / qpas)


def _rope_scaling(
    cfg: Mapping[str, Any],
    spec: FamilySpec,
    *,
    head_dim: int,
    n_ctx: int,
    warnings: list[str],
) -> RopeScaling:
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not isinstance(rs, dict):
        return RopeScaling()
    kind = str(rs.get("rope_type") or rs.get("type") or "default")
    if kind == "default":
        return RopeScaling()
    if kind == "linear":
        return RopeScaling(RopeKind.LINEAR, factor=float(rs["factor"]))
    if kind == "llama3":
        return RopeScaling(
            RopeKind.LLAMA3,
            factor=float(rs["factor"]),
            original_context=int(rs["original_max_position_embeddings"]),
            low_freq_factor=float(rs.get("low_freq_factor", 1.0)),
            high_freq_factor=float(rs.get("high_freq_factor", 4.0)),
        )
    if kind == "yarn":
        orig = int(
            rs.get("original_max_position_embeddings")
            or cfg.get("original_max_position_embeddings")
            or n_ctx
        )
        return RopeScaling(RopeKind.YARN, factor=float(rs["factor"]), original_context=orig)
    if kind in ("longrope", "su"):
        short = tuple(float(x) for x in rs["short_factor"])
        long = tuple(float(x) for x in rs["long_factor"])
        if len(short) != head_dim // 2 or len(long) != head_dim // 2:
            raise CheckpointError(
                f"config.json: LongRoPE factors have {len(short)} and {len(long)} entries, "
                f"expected {head_dim // 2} (half the rotary dimension)"
            )
        orig = int(
            cfg.get("original_max_position_embeddings")
            or rs.get("original_max_position_embeddings")
            or n_ctx
        )
        scale = n_ctx / orig
        attn = rs.get("attention_factor")
        if attn is None:
            attn = 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(orig))
        return RopeScaling(
            RopeKind.LONGROPE,
            factor=scale,
            original_context=orig,
            short_factor=short,
            long_factor=long,
            attn_factor=float(attn),
        )
    if kind == "dynamic":
        warnings.append(
            "dynamic NTK RoPE scaling is not stored in GGUF; llama.cpp runs the model with "
            "its trained RoPE, which is the same up to the trained context length"
        )
        return RopeScaling()
    raise UnsupportedArchitectureError(
        f"RoPE scaling type {kind!r} in config.json is not supported for "
        f"{spec.family.value}; supported: linear, llama3, yarn, longrope"
    )


def llama3_rope_divisors(hp: HParams) -> npt.NDArray[np.float32]:
    """Per-frequency divisors llama.cpp applies to RoPE frequencies (``rope_freqs``).

    Llama 3.1 keeps high frequencies, divides low ones by ``factor`` and blends
    in between, measured by wavelength against the original context.
    """
    rs = hp.rope
    inv = hp.rope_theta ** (-np.arange(0, hp.n_rot, 2, dtype=np.float64) / hp.n_rot)
    wavelen = 2 * math.pi / inv
    low_wavelen = rs.original_context / rs.low_freq_factor
    high_wavelen = rs.original_context / rs.high_freq_factor
    smooth = (rs.original_context / wavelen - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor
    )
    blended = 1.0 / ((1.0 - smooth) / rs.factor + smooth)
    div = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, rs.factor, blended))
    return div.astype(np.float32)


def add_hparams(writer: Any, hp: HParams) -> None:
    """Write the architecture keys to a ``gguf.GGUFWriter``."""
    import gguf

    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_block_count(hp.n_layer)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_kv)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_rope_dimension_count(hp.n_rot)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    writer.add_vocab_size(hp.vocab_size)

    rs = hp.rope
    if rs.kind is RopeKind.LINEAR:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rs.factor)
    elif rs.kind is RopeKind.YARN:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rs.factor)
        writer.add_rope_scaling_orig_ctx_len(rs.original_context)
    elif rs.kind is RopeKind.LONGROPE:
        writer.add_rope_scaling_orig_ctx_len(rs.original_context)
        if rs.attn_factor is not None:
            writer.add_rope_scaling_attn_factors(rs.attn_factor)

    if hp.n_expert:
        writer.add_expert_count(hp.n_expert)
        writer.add_expert_used_count(hp.n_expert_used)
        if hp.family is Family.QWEN3_MOE:
            writer.add_expert_feed_forward_length(hp.n_ff_exp)

    if hp.swa_layers:
        writer.add_sliding_window(hp.sliding_window)
        writer.add_sliding_window_pattern(list(hp.swa_layers))
        if hp.rope_theta_swa is not None:
            writer.add_rope_freq_base_swa(hp.rope_theta_swa)
    if hp.attn_softcap:
        writer.add_attn_logit_softcapping(hp.attn_softcap)
    if hp.final_softcap:
        writer.add_final_logit_softcapping(hp.final_softcap)


# --- tensors -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: where its data comes from and what happens to it on the way.

    ``sources`` are concatenated along the first axis in order (experts are
    stacked this way). Per block of rows: rows are permuted within each of
    ``permute_heads`` heads, then ``add`` is added, then the block is multiplied by
    ``mul``. ``values`` holds a computed tensor that has no source (RoPE factors).
    """

    name: str
    shape: tuple[int, ...]  # numpy order (outermost first)
    kind: TensorKind
    sources: tuple[TensorEntry, ...] = ()
    permute_heads: int = 0
    add: float = 0.0
    mul: float = 1.0
    values: tuple[float, ...] = ()

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def source_bytes(self) -> int:
        return sum(s.nbytes for s in self.sources)


def permute_rows(block: npt.NDArray[np.float32], n_heads: int) -> npt.NDArray[np.float32]:
    """Reorder rows of whole heads from half-split to interleaved RoPE pairs.

    Within a head of ``d`` rows, output row 2i is input row i and output row 2i+1
    is input row i + d/2. ``block`` must hold whole heads (``n_heads`` of them).
    """
    rows = block.shape[0]
    rest = block.shape[1:]
    d = rows // n_heads
    return block.reshape(n_heads, 2, d // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
_VISION = re.compile(r"^(model\.)?(vision_tower|multi_modal_projector|vision_model)\.")
_EXPERT = re.compile(
    r"^model\.layers\.(\d+)\.(block_sparse_moe|mlp)\.experts\.(\d+)\."
    r"(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$"
)


def canonical_name(name: str) -> str | None:
    """The text-model name of a checkpoint tensor, or None for tensors to skip."""
    if _IGNORED.search(name) or _VISION.match(name):
        return None
    for prefix, repl in (
        ("language_model.model.", "model."),
        ("model.language_model.", "model."),
        ("language_model.lm_head.", "lm_head."),
    ):
        if name.startswith(prefix):
            return repl + name[len(prefix) :]
    return name


class _Expected:
    """Expected source shapes per GGUF tensor kind, from the hyper-parameters."""

    def __init__(self, hp: HParams) -> None:
        import gguf

        t = gguf.MODEL_TENSOR
        e, hd = hp.n_embd, hp.head_dim
        q, kv = hp.n_head * hd, hp.n_kv * hd
        up_rows = 2 * hp.n_ff if hp.spec.fused_phi else hp.n_ff
        self.weights: dict[Any, tuple[int, ...]] = {
            t.TOKEN_EMBD: (hp.vocab_size, e),
            t.OUTPUT: (hp.vocab_size, e),
            t.OUTPUT_NORM: (e,),
            t.ATTN_NORM: (e,),
            t.FFN_NORM: (e,),
            t.FFN_PRE_NORM: (e,),
            t.ATTN_POST_NORM: (e,),
            t.FFN_POST_NORM: (e,),
            t.ATTN_Q: (q, e),
            t.ATTN_K: (kv, e),
            t.ATTN_V: (kv, e),
            t.ATTN_QKV: (q + 2 * kv, e),
            t.ATTN_OUT: (e, q),
            t.ATTN_Q_NORM: (hd,),
            t.ATTN_K_NORM: (hd,),
            t.FFN_GATE: (hp.n_ff, e),
            t.FFN_UP: (up_rows, e),
            t.FFN_DOWN: (e, hp.n_ff),
            t.FFN_GATE_INP: (hp.n_expert, e),
            t.FFN_GATE_EXP: (hp.n_ff_exp, e),
            t.FFN_UP_EXP: (hp.n_ff_exp, e),
            t.FFN_DOWN_EXP: (e, hp.n_ff_exp),
        }
        self.biases: dict[Any, tuple[int, ...]] = {
            t.ATTN_Q: (q,),
            t.ATTN_K: (kv,),
            t.ATTN_V: (kv,),
            t.ATTN_QKV: (q + 2 * kv,),
            t.ATTN_OUT: (e,),
            t.FFN_GATE: (hp.n_ff,),
            t.FFN_UP: (up_rows,),
            t.FFN_DOWN: (e,),
        }


def required_tensors(hp: HParams) -> list[str]:
    """GGUF tensor names this model must provide (llama.cpp's required set, plus the
    biases the config promises)."""
    names = ["token_embd.weight", "output_norm.weight"]
    if not hp.tied:
        names.append("output.weight")
    spec = hp.spec
    for i in range(hp.n_layer):
        b = f"blk.{i}."
        names += [b + "attn_norm.weight", b + "attn_output.weight", b + "ffn_norm.weight"]
        if spec.fused_phi:
            names += [b + "attn_qkv.weight", b + "ffn_up.weight", b + "ffn_down.weight"]
        else:
            names += [b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"]
            if spec.moe:
                names += [
                    b + "ffn_gate_inp.weight",
                    b + "ffn_gate_exps.weight",
                    b + "ffn_up_exps.weight",
                    b + "ffn_down_exps.weight",
                ]
            else:
                names += [b + "ffn_gate.weight", b + "ffn_up.weight", b + "ffn_down.weight"]
        if hp.attention_bias and not spec.fused_phi:
            # llama.cpp treats these biases as optional: a missing one would go unnoticed.
            names += [b + "attn_q.bias", b + "attn_k.bias", b + "attn_v.bias"]
            if spec.permute_qk:
                names.append(b + "attn_output.bias")
        if spec.qk_norm:
            names += [b + "attn_q_norm.weight", b + "attn_k_norm.weight"]
        if spec.post_norms:
            names += [b + "post_attention_norm.weight", b + "post_ffw_norm.weight"]
    return names


def plan_tensors(hp: HParams, checkpoint: Checkpoint) -> list[TensorPlan]:
    """Map every checkpoint tensor to its GGUF tensor, checking names and shapes."""
    import gguf

    t = gguf.MODEL_TENSOR
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == hp.gguf_arch)
    name_map = gguf.get_tensor_name_map(arch_enum, hp.n_layer)
    expected = _Expected(hp)
    spec = hp.spec

    groups: dict[str, dict[int, TensorEntry]] = {}
    singles: list[tuple[str, TensorEntry]] = []
    unknown: list[str] = []
    for raw_name, entry in checkpoint.tensors.items():
        name = canonical_name(raw_name)
        if name is None:
            continue
        if name == "lm_head.weight" and hp.tied:
            continue
        m = _EXPERT.match(name)
        if m and spec.moe:
            layer, block, expert, which = m.groups()
            key = f"model.layers.{layer}.{block}.experts.{which}.weight"
            groups.setdefault(key, {})[int(expert)] = entry
        else:
            singles.append((name, entry))

    plans: list[TensorPlan] = []
    for name, entry in singles:
        mapped = name_map.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            unknown.append(entry.name)
            continue
        ttype, gguf_name = mapped
        is_bias = gguf_name.endswith(".bias")
        table = expected.biases if is_bias else expected.weights
        if ttype not in table:
            unknown.append(entry.name)
            continue
        _check_shape(entry, table[ttype])
        plans.append(_plan_for(hp, ttype, gguf_name, entry, is_bias))

    for key, experts in groups.items():
        mapped = name_map.get_type_and_name(key, try_suffixes=(".weight",))
        if mapped is None:
            unknown.extend(e.name for e in experts.values())
            continue
        ttype, gguf_name = mapped
        missing = [x for x in range(hp.n_expert) if x not in experts]
        if missing or len(experts) != hp.n_expert:
            raise CheckpointError(
                f"{key}: the checkpoint has {len(experts)} experts but config.json says "
                f"{hp.n_expert}"
                + (f" (expert {missing[0]} is missing)" if missing else "")
                + "; the download may be incomplete"
            )
        per_expert = {
            t.FFN_GATE_EXP: expected.weights[t.FFN_GATE_EXP],
            t.FFN_UP_EXP: expected.weights[t.FFN_UP_EXP],
            t.FFN_DOWN_EXP: expected.weights[t.FFN_DOWN_EXP],
        }[ttype]
        sources = tuple(experts[x] for x in range(hp.n_expert))
        for s in sources:
            _check_shape(s, per_expert)
        plans.append(TensorPlan(gguf_name, (hp.n_expert, *per_expert), TensorKind.MATRIX, sources))

    if unknown:
        shown = ", ".join(sorted(unknown)[:4])
        more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        raise CheckpointError(
            f"the checkpoint has tensors a {hp.hf_architecture} should not have ({shown}{more}); "
            "it may be a variant Quantdesk does not know, so it was not converted"
        )

    have = {p.name for p in plans}
    missing_names = [n for n in required_tensors(hp) if n not in have]
    if missing_names:
        raise CheckpointError(
            f"the checkpoint lacks {missing_names[0]}"
            + (f" and {len(missing_names) - 1} more tensors" if len(missing_names) > 1 else "")
            + f" that a {hp.hf_architecture} needs; the download may be incomplete"
            + (
                ""
                if hp.tied or missing_names[0] != "output.weight"
                else " (lm_head.weight is missing and tie_word_embeddings is false)"
            )
        )
    plans.extend(_generated(hp))

    # Read shards front to back: sort by file and offset of the first source.
    shard_order = {p: i for i, p in enumerate(checkpoint.shards)}

    def order(p: TensorPlan) -> tuple[int, int]:
        if not p.sources:
            return (-1, 0)
        return (shard_order.get(p.sources[0].path, 0), p.sources[0].offset)

    plans.sort(key=order)
    return plans


def _check_shape(entry: TensorEntry, want: tuple[int, ...]) -> None:
    if entry.shape != want:
        raise CheckpointError(
            f"tensor {entry.name} in {entry.path.name} has shape {list(entry.shape)} but "
            f"config.json implies {list(want)}; the config and the weights do not belong together"
        )
    entry.require_readable()


def _plan_for(
    hp: HParams, ttype: Any, gguf_name: str, entry: TensorEntry, is_bias: bool
) -> TensorPlan:
    import gguf

    t = gguf.MODEL_TENSOR
    spec = hp.spec
    kind = TensorKind.VECTOR if len(entry.shape) == 1 else TensorKind.MATRIX
    if ttype == t.FFN_GATE_INP:
        kind = TensorKind.ROUTER
    permute = 0
    if spec.permute_qk and _PERMUTE_QK:
        if ttype == t.ATTN_Q:
            permute = hp.n_head
        elif ttype == t.ATTN_K:
            permute = hp.n_kv
    add = 0.0
    norm_types = (
        t.ATTN_NORM,
        t.FFN_NORM,
        t.FFN_PRE_NORM,
        t.OUTPUT_NORM,
        t.ATTN_POST_NORM,
        t.FFN_POST_NORM,
        t.ATTN_Q_NORM,
        t.ATTN_K_NORM,
    )
    if spec.norm_offset and _GEMMA_NORM_OFFSET and ttype in norm_types:
        add = 1.0
    mul = 1.0
    if hp.query_scale != 1.0 and not is_bias:
        # Gemma 3 normalises Q after the projection, so the factor goes on the Q norm.
        target = t.ATTN_Q if spec.family is Family.GEMMA2 else t.ATTN_Q_NORM
        if ttype == target:
            mul = hp.query_scale
    return TensorPlan(gguf_name, entry.shape, kind, (entry,), permute, add, mul)


def _generated(hp: HParams) -> list[TensorPlan]:
    rs = hp.rope
    half = hp.n_rot // 2
    if rs.kind is RopeKind.LLAMA3:
        values = tuple(float(x) for x in llama3_rope_divisors(hp))
        return [TensorPlan("rope_freqs.weight", (half,), TensorKind.VECTOR, values=values)]
    if rs.kind is RopeKind.LONGROPE:
        return [
            TensorPlan(
                "rope_factors_long.weight", (half,), TensorKind.VECTOR, values=rs.long_factor
            ),
            TensorPlan(
                "rope_factors_short.weight", (half,), TensorKind.VECTOR, values=rs.short_factor
            ),
        ]
    return []


def parameter_count(plans: Sequence[TensorPlan], hp: HParams) -> tuple[int, int, int]:
    """Total parameters, parameters active per token, and parameters in experts."""
    total = 0
    expert = 0
    for p in plans:
        if p.values:
            continue
        total += p.n_elements
        if "_exps." in p.name:
            expert += p.n_elements
    active = total
    if hp.n_expert:
        active = total - expert + expert * hp.n_expert_used // hp.n_expert
    return total, active, expert


def size_label(total: int, expert: int, n_expert: int) -> str:
    """A short size label: "7.2B", or for MoE experts × (shared + one expert): "8x7.0B"."""

    def fmt(n: float) -> str:
        for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
            if n >= div:
                v = n / div
                return f"{v:.0f}{suffix}" if v >= 100 else f"{v:.1f}{suffix}"
        return str(int(n))

    if n_expert:
        return f"{n_expert}x{fmt(total - expert + expert / n_expert)}"
    return fmt(total)
