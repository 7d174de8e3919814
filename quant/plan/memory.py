"""The memory model: what a model takes in RAM and on each GPU when llama.cpp runs it.

Everything here mirrors the llama.cpp bundled with llama-cpp-python 0.3.36 and
names the upstream file it follows. The parts:

- **Weights**, per tensor. For an existing GGUF the tensor list is exact. For a
  planned quant the per-tensor types are chosen the way ``llama_model_quantize``
  chooses them (``src/llama-quant.cpp``: ``llama_tensor_get_type_impl``, the
  ``use_more_bits`` layers, the fallbacks when a row is not a whole number of
  blocks, 1D tensors kept as they are). When the facts come from a config, the
  tensor list is synthesised from the architecture's shapes first.
- **KV cache**, per layer: KV heads × head dim for K and for V, at the cache
  type's real block size; sliding-window layers get ``pad(min(n_ctx, n_swa·n_seq
  + n_ubatch), 256)`` cells unless the full-size SWA cache is on, which is
  llama.cpp's default in this version (``src/llama-kv-cache-iswa.cpp``,
  ``llama_context_default_params`` in ``src/llama-context.cpp``).
- **Compute buffer**: the scheduler reserves the largest graph (a full
  ``n_ubatch`` with every row an output). Its size is the largest of three
  phases, fitted against llama.cpp's own reports for the starter model and
  tiny models at several contexts and batch sizes (see :func:`compute_buffer_bytes`).
- **Output buffer**: logits for ``n_seq`` rows (``n_vocab × 4`` bytes each).
- **Runtime**: the vocabulary (token strings, lookup maps, BPE merges),
  llama-cpp-python's own arrays, the context's bookkeeping, and on NVIDIA the
  CUDA context.
- **Placement**: ``n_gpu_layers = k`` puts the output layer on the GPU first and
  then the last ``k - 1`` repeating layers; token embeddings always stay on the
  CPU (``src/llama-model.cpp``, ``load_tensors``: ``i_gpu_start = n_layer + 1 -
  k``). Several GPUs share the offloaded layers in proportion to their free memory.

RAM on the CPU is what the process's resident set grows by. With mmap (the
default) llama.cpp maps the file with ``MAP_POPULATE`` on Linux, so every
weight page of a CPU-resident layer is resident after load: the prediction
includes the mapped weights. Tensors that the CPU backend repacks for its
faster kernels (Q4_0, Q4_K, IQ4_NL with AVX2; more types with ARM dot-product
support; ``ggml/src/ggml-cpu/repack.cpp``) are copied into a second buffer and
count twice. ``ram_bytes`` is the resident memory after load and a short
exchange (a prompt under a batch, a few dozen generated tokens); ``ram_peak_bytes``
adds the compute pages a full batch at full context touches on the CPU.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from typing import Any

from quant.errors import QuantError
from quant.facts.families import block_layout
from quant.facts.model import ModelFacts, SourceKind, TensorInfo
from quant.gguf.types import GGMLType, LlamaFileType
from quant.hardware.profile import GpuInfo, HardwareProfile
from quant.plan.formats import QuantType

logger = logging.getLogger(__name__)

MIB = 1024**2
GIB = 1024**3

# llama.cpp pads the context to this many cells (src/llama-context.cpp) and the
# SWA cache likewise (src/llama-kv-cache-iswa.cpp).
CTX_PAD = 256

# --- runtime constants, measured (see benchmarks/predictions.py) ------------------
# Vocabulary in memory, per token: the token text, its score and attributes, and the
# text → id map (llama.cpp src/llama-vocab.cpp). Measured by loading vocab-only
# models: 168 B/token for Gemma 3's 262k SPM vocab, 133–144 B/token for synthetic
# 32k–128k SPM vocabs; BPE vocabs add their merge ranks, ~145 B per merge (314 B per
# token all told for a 128k BPE vocab).
VOCAB_BYTES_PER_TOKEN = 170
VOCAB_BYTES_PER_MERGE = 145
# llama-cpp-python's per-token arrays (candidates, sampler buffers) and the compute
# pages a short exchange touches (one logits row): 42 B per vocab entry, measured
# on the starter model as the RSS growth beyond llama.cpp's own buffers.
BINDING_BYTES_PER_TOKEN = 42
# Context bookkeeping, graph metadata, thread pool: measured 2.2 MiB on the starter.
RUNTIME_BASE_BYTES = int(2.2 * MIB)
# CUDA context, cuBLAS workspace and kernels resident on each NVIDIA GPU in use.
# Measured on an H100 (driver 580, CUDA 13, llama-cpp-python 0.3.36 built for sm_90):
# device memory in use after loading and answering, less the weights, KV cache and
# compute buffers, was 698 MiB at 2k, 8k and 32k context, fully and partly offloaded
# (benchmarks/gpu/offload_check.py). Older GPUs and drivers take somewhat less.
CUDA_CONTEXT_BYTES = 698 * MIB


class KvType(StrEnum):
    """The KV cache's storage type (llama.cpp ``--cache-type-k/-v``)."""

    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"

    @property
    def ggml_type(self) -> GGMLType:
        return {KvType.F16: GGMLType.F16, KvType.Q8_0: GGMLType.Q8_0, KvType.Q4_0: GGMLType.Q4_0}[
            self
        ]

    @property
    def needs_flash_attention(self) -> bool:
        """llama.cpp only quantizes the V cache with flash attention on."""
        return self is not KvType.F16


class Placement(StrEnum):
    """Where a model runs for a given GPU-layer count."""

    GPU = "gpu"  # every layer and the output on GPUs
    PARTIAL = "partial"  # some layers on GPUs, the rest on the CPU
    CPU = "cpu"


@dataclass(frozen=True)
class RuntimeOptions:
    """The llama.cpp context settings the estimate assumes.

    Defaults are llama-cpp-python 0.3.36's ``Llama`` defaults: ``n_batch`` and
    ``n_ubatch`` 512, flash attention off, one sequence, mmap on, and llama.cpp's
    own default of a full-size SWA cache.
    """

    n_ubatch: int = 512
    flash_attn: bool = False
    swa_full: bool = True
    n_seq: int = 1
    # Count llama-cpp-python's own arrays (False: llama.cpp used directly).
    python_binding: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_ubatch": self.n_ubatch,
            "flash_attn": self.flash_attn,
            "swa_full": self.swa_full,
            "n_seq": self.n_seq,
            "python_binding": self.python_binding,
        }


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor as it is (or will be) stored in the GGUF file."""

    name: str
    # ggml order: shape[0] is the row length.
    shape: tuple[int, ...]
    type: GGMLType
    n_bytes: int
    # Block index for "blk.N." tensors; None for token embeddings, output and others.
    layer: int | None

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


def tensor_layer(name: str) -> int | None:
    """The block a GGUF tensor belongs to ("blk.12.attn_q.weight" → 12)."""
    m = _BLK_RE.match(name)
    return int(m.group(1)) if m else None


_BLK_RE = re.compile(r"blk\.(\d+)\.")


# (block size, bytes per block) per type, looked up once: the planner asks often.
_BLOCKS: dict[GGMLType, tuple[int, int]] = {t: (t.block_size, t.type_size) for t in GGMLType}


def row_bytes(t: GGMLType, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` elements (``ggml_row_size``)."""
    block, size = _BLOCKS[t]
    return (n_per_row // block) * size


def tensor_bytes(t: GGMLType, shape: Sequence[int]) -> int:
    if not shape:
        return 0
    n_rows = math.prod(shape[1:]) if len(shape) > 1 else 1
    return n_rows * row_bytes(t, shape[0])


# ----------------------------------------------------------------------------------
# Tensor list synthesis for facts read from a config (no tensor list). The block
# layout of each architecture comes from the families table (quant.facts.families).


def synthesize_tensors(
    facts: ModelFacts, source_type: GGMLType = GGMLType.BF16
) -> tuple[TensorInfo, ...]:
    """The GGUF tensor list a converter would write for ``facts``, in ``source_type``.

    1D tensors (norms, biases) and the MoE router are F32, as llama.cpp's converter
    writes them. Feed-forward widths that the facts do not give (the expert width of
    an MoE, or a missing dense width) are solved from the parameter count.
    """
    layout = block_layout(facts.architecture)
    n_embd = facts.embedding_length
    n_layer = facts.n_layers
    n_vocab = facts.vocab_size
    hd_k = facts.head_dim or (n_embd // max(facts.n_heads, 1))
    hd_v = facts.head_dim_v or hd_k
    n_head = facts.n_heads
    if n_embd <= 0 or n_layer <= 0 or n_vocab <= 0 or n_head <= 0:
        raise QuantError(
            f"{facts.name}: cannot plan memory without embedding length, layers, heads and "
            "vocabulary size; inspect the model's config.json or GGUF header for them"
        )
    moe = facts.is_moe
    n_expert = facts.n_experts

    def attn_params(layer: int) -> int:
        n_kv = facts.kv_heads_for_layer(layer)
        return n_embd * (n_head * hd_k + n_kv * hd_k + n_kv * hd_v) + n_head * hd_v * n_embd

    n_ff = facts.feed_forward_length
    n_ff_exp = _int_extra(facts, "expert_feed_forward_length")
    n_ff_shexp = _int_extra(facts, "expert_shared_feed_forward_length") or _int_extra(
        facts, "shared_expert_feed_forward_length"
    )
    n_shared = _int_extra(facts, "expert_shared_count") or (1 if n_ff_shexp else 0)
    ffn_mats = 2 if layout.no_gate else 3
    embed = n_vocab * n_embd * (1 if facts.tied_embeddings else 2)
    attn_total = sum(attn_params(i) for i in range(n_layer))
    if moe and not n_ff_exp:
        shared = n_layer * ffn_mats * n_embd * n_ff_shexp * max(n_shared, 1 if n_ff_shexp else 0)
        rest = facts.parameters - embed - attn_total - shared - n_layer * n_embd * n_expert
        n_ff_exp = max(1, rest // max(1, n_layer * n_expert * ffn_mats * n_embd))
        n_ff_exp = _round_up(n_ff_exp, 64)
    elif not moe and n_ff <= 0:
        rest = facts.parameters - embed - attn_total
        n_ff = _round_up(max(1, rest // max(1, n_layer * ffn_mats * n_embd)), 64)

    out: list[TensorInfo] = []

    def add(name: str, shape: tuple[int, ...], typ: GGMLType | None = None) -> None:
        t = typ or (GGMLType.F32 if len(shape) == 1 else source_type)
        out.append(TensorInfo(name, shape, t.name, tensor_bytes(t, shape)))

    add("token_embd.weight", (n_embd, n_vocab))
    add("output_norm.weight", (n_embd,))
    if not facts.tied_embeddings:
        add("output.weight", (n_embd, n_vocab))
    for il in range(n_layer):
        p = f"blk.{il}."
        n_kv = facts.kv_heads_for_layer(il)
        add(p + "attn_norm.weight", (n_embd,))
        if layout.fused_qkv:
            add(p + "attn_qkv.weight", (n_embd, n_head * hd_k + n_kv * (hd_k + hd_v)))
        else:
            add(p + "attn_q.weight", (n_embd, n_head * hd_k))
            add(p + "attn_k.weight", (n_embd, n_kv * hd_k))
            add(p + "attn_v.weight", (n_embd, n_kv * hd_v))
            if layout.attn_bias:
                add(p + "attn_q.bias", (n_head * hd_k,))
                add(p + "attn_k.bias", (n_kv * hd_k,))
                add(p + "attn_v.bias", (n_kv * hd_v,))
        if layout.qk_norm:
            add(p + "attn_q_norm.weight", (hd_k,))
            add(p + "attn_k_norm.weight", (hd_k,))
        add(p + "attn_output.weight", (n_head * hd_v, n_embd))
        if layout.post_norms:
            add(p + "post_attention_norm.weight", (n_embd,))
            add(p + "post_ffw_norm.weight", (n_embd,))
        add(p + "ffn_norm.weight", (n_embd,))
        if moe:
            add(p + "ffn_gate_inp.weight", (n_embd, n_expert), GGMLType.F32)
            if ffn_mats == 3:
                add(p + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert))
            add(p + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert))
            add(p + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert))
            if n_ff_shexp:
                width = n_ff_shexp * max(n_shared, 1)
                add(p + "ffn_gate_shexp.weight", (n_embd, width))
                add(p + "ffn_up_shexp.weight", (n_embd, width))
                add(p + "ffn_down_shexp.weight", (width, n_embd))
        elif layout.fused_gate_up:
            add(p + "ffn_up.weight", (n_embd, 2 * n_ff))
            add(p + "ffn_down.weight", (n_ff, n_embd))
        else:
            if ffn_mats == 3:
                add(p + "ffn_gate.weight", (n_embd, n_ff))
            add(p + "ffn_up.weight", (n_embd, n_ff))
            add(p + "ffn_down.weight", (n_ff, n_embd))
    return tuple(out)


def _int_extra(facts: ModelFacts, key: str) -> int:
    value = facts.extra.get(key)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    return 0


def _round_up(n: int, multiple: int) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def _has_gguf_names(tensors: Iterable[TensorInfo]) -> bool:
    return any(t.name == "token_embd.weight" or t.name.startswith("blk.") for t in tensors)


def source_tensors(facts: ModelFacts) -> tuple[TensorInfo, ...]:
    """The facts' GGUF tensor list, or one synthesised from the architecture."""
    if facts.tensors and _has_gguf_names(facts.tensors):
        return facts.tensors
    src = GGMLType.BF16
    if facts.file_type and facts.file_type.upper() in ("F16", "FP16", "FLOAT16"):
        src = GGMLType.F16
    return synthesize_tensors(facts, src)


# ----------------------------------------------------------------------------------
# Per-tensor type choice (mirrors src/llama-quant.cpp, written independently)


class _Cat(Enum):
    TOKEN_EMBD = 1
    ATTN_Q = 2
    ATTN_V = 3
    ATTN_K = 4
    ATTN_QKV = 5
    ATTN_KV_B = 6
    ATTN_OUTPUT = 7
    FFN_UP = 8
    FFN_GATE = 9
    FFN_DOWN = 10
    OUTPUT = 11
    OTHER = 12


def _category(name: str) -> _Cat:
    if name == "output.weight":
        return _Cat.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return _Cat.TOKEN_EMBD
    for needle, cat in (
        ("attn_qkv.weight", _Cat.ATTN_QKV),
        ("attn_kv_b.weight", _Cat.ATTN_KV_B),
        ("attn_v.weight", _Cat.ATTN_V),
        ("attn_k.weight", _Cat.ATTN_K),
        ("attn_q.weight", _Cat.ATTN_Q),
        ("attn_output.weight", _Cat.ATTN_OUTPUT),
        ("ffn_up", _Cat.FFN_UP),
        ("ffn_gate", _Cat.FFN_GATE),
        ("ffn_down", _Cat.FFN_DOWN),
    ):
        if needle in name:
            return cat
    return _Cat.OTHER


_ATTN_V_LIKE = {_Cat.ATTN_V, _Cat.ATTN_QKV, _Cat.ATTN_KV_B}

# Substrings of tensors llama.cpp never quantizes (tensor_allows_quantization).
_NEVER_QUANTIZED = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "time_mix_",
    "attn_rel_b.weight",
    "position_embd",
    "pos_embd",
    "token_types",
)


def allows_quantization(name: str, n_dims: int) -> bool:
    """Whether llama.cpp quantizes this tensor at all (norms, 1-D tensors and a few
    special tables keep their type)."""
    if n_dims < 2 or not name.endswith("weight"):
        return False
    return not any(s in name for s in _NEVER_QUANTIZED)


# ftype → default tensor type (llama_ftype_get_default_type).
_DEFAULT_TYPE: dict[LlamaFileType, GGMLType] = {
    LlamaFileType.F32: GGMLType.F32,
    LlamaFileType.F16: GGMLType.F16,
    LlamaFileType.BF16: GGMLType.BF16,
    LlamaFileType.Q4_0: GGMLType.Q4_0,
    LlamaFileType.Q4_1: GGMLType.Q4_1,
    LlamaFileType.Q5_0: GGMLType.Q5_0,
    LlamaFileType.Q5_1: GGMLType.Q5_1,
    LlamaFileType.Q8_0: GGMLType.Q8_0,
    LlamaFileType.Q2_K: GGMLType.Q2_K,
    LlamaFileType.Q2_K_S: GGMLType.Q2_K,
    LlamaFileType.Q3_K_S: GGMLType.Q3_K,
    LlamaFileType.Q3_K_M: GGMLType.Q3_K,
    LlamaFileType.Q3_K_L: GGMLType.Q3_K,
    LlamaFileType.Q4_K_S: GGMLType.Q4_K,
    LlamaFileType.Q4_K_M: GGMLType.Q4_K,
    LlamaFileType.Q5_K_S: GGMLType.Q5_K,
    LlamaFileType.Q5_K_M: GGMLType.Q5_K,
    LlamaFileType.Q6_K: GGMLType.Q6_K,
    LlamaFileType.IQ2_XXS: GGMLType.IQ2_XXS,
    LlamaFileType.IQ2_XS: GGMLType.IQ2_XS,
    LlamaFileType.IQ2_S: GGMLType.IQ2_XS,
    LlamaFileType.IQ2_M: GGMLType.IQ2_S,
    LlamaFileType.IQ3_XS: GGMLType.IQ3_S,
    LlamaFileType.IQ3_XXS: GGMLType.IQ3_XXS,
    LlamaFileType.IQ3_S: GGMLType.IQ3_S,
    LlamaFileType.IQ3_M: GGMLType.IQ3_S,
    LlamaFileType.IQ1_S: GGMLType.IQ1_S,
    LlamaFileType.IQ1_M: GGMLType.IQ1_M,
    LlamaFileType.IQ4_NL: GGMLType.IQ4_NL,
    LlamaFileType.IQ4_XS: GGMLType.IQ4_XS,
}

# Where a row that is not a whole number of 256-blocks falls back to
# (tensor_type_fallback); the fallback itself falls back to F16 when rows are
# not a multiple of 32 either.
_FALLBACK: dict[GGMLType, GGMLType] = {
    GGMLType.IQ1_S: GGMLType.IQ4_NL,
    GGMLType.IQ1_M: GGMLType.IQ4_NL,
    GGMLType.IQ2_XXS: GGMLType.IQ4_NL,
    GGMLType.IQ2_XS: GGMLType.IQ4_NL,
    GGMLType.IQ2_S: GGMLType.IQ4_NL,
    GGMLType.IQ3_XXS: GGMLType.IQ4_NL,
    GGMLType.IQ3_S: GGMLType.IQ4_NL,
    GGMLType.IQ4_XS: GGMLType.IQ4_NL,
    GGMLType.Q2_K: GGMLType.Q4_0,
    GGMLType.Q3_K: GGMLType.Q4_0,
    GGMLType.TQ1_0: GGMLType.Q4_0,
    GGMLType.TQ2_0: GGMLType.Q4_0,
    GGMLType.Q4_K: GGMLType.Q5_0,
    GGMLType.Q5_K: GGMLType.Q5_1,
    GGMLType.Q6_K: GGMLType.Q8_0,
}

_IQ2_FAMILY = {
    LlamaFileType.IQ2_XXS,
    LlamaFileType.IQ2_XS,
    LlamaFileType.IQ1_S,
    LlamaFileType.IQ2_S,
    LlamaFileType.IQ2_M,
    LlamaFileType.IQ1_M,
}


@dataclass(frozen=True)
class MixParams:
    """The model facts llama.cpp's type choice looks at."""

    arch: str
    n_layer: int
    n_head: int
    n_kv_heads: int
    n_expert: int
    is_70b: bool
    has_imatrix: bool

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_kv_heads if self.n_kv_heads > 0 else 1

    @classmethod
    def from_facts(cls, facts: ModelFacts, *, imatrix: bool) -> MixParams:
        arch = facts.architecture.lower()
        # llama.cpp's model type 70B: 80 blocks with grouped-query attention
        # (src/llama-model.cpp, load_hparams for llama and qwen2).
        is_70b = (
            block_layout(arch).names_70b
            and facts.n_layers == 80
            and facts.n_heads != facts.n_kv_heads
        )
        return cls(
            arch=arch,
            n_layer=facts.n_layers,
            n_head=facts.n_heads,
            n_kv_heads=max(1, facts.n_kv_heads),
            n_expert=facts.n_experts,
            is_70b=is_70b,
            has_imatrix=imatrix,
        )


def _more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth, and every third layer between.

    (For i_layer < n_layers/8 the first test already holds, so C's and Python's
    remainders of a negative difference never disagree here.)
    """
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


class _MixState:
    def __init__(self, n_attention_wv: int, n_layer: int, tied: bool) -> None:
        self.n_attention_wv = n_attention_wv
        self.i_attention_wv = 0
        self.n_ffn = n_layer
        self.i_ffn_down = 0
        self.i_ffn_gate = 0
        self.i_ffn_up = 0
        self.tied = tied


def _choose(
    st: _MixState,
    mp: MixParams,
    ft: LlamaFileType,
    *,
    name: str,
    shape: Sequence[int],
    t: GGMLType,
    cat: _Cat,
) -> GGMLType:
    """One tensor's type before the row-size fallback (llama_tensor_get_type_impl)."""
    F = LlamaFileType  # noqa: N806 - reads like the upstream enum
    G = GGMLType  # noqa: N806
    falcon = mp.arch == "falcon"
    n_expert = mp.n_expert

    def layer_of(counter: int) -> int:
        if max(1, n_expert) > 1:
            lay = tensor_layer(name)
            return lay if lay is not None else counter
        return counter

    if cat is _Cat.OUTPUT or (st.tied and cat is _Cat.TOKEN_EMBD):
        nx = shape[0]
        if falcon or nx % _BLOCKS[t][0] != 0:
            return G.Q8_0
        if ft in _IQ2_FAMILY or ft is F.IQ3_XXS:
            return G.Q5_K
        if t is not G.Q8_0:
            return G.Q6_K
        return t
    if cat is _Cat.TOKEN_EMBD:
        if ft in (F.IQ2_XXS, F.IQ2_XS, F.IQ1_S, F.IQ1_M):
            return G.Q2_K
        if ft in (F.IQ2_S, F.IQ2_M, F.IQ3_XXS):
            return G.IQ3_S
        return t
    if ft in _IQ2_FAMILY:
        if cat in _ATTN_V_LIKE:
            st.i_attention_wv += 1
            if mp.n_gqa >= 4 or n_expert >= 4:
                return G.Q4_K
            return G.IQ3_S if ft in (F.IQ2_S, F.IQ2_M) else G.Q2_K
        if n_expert == 8 and cat is _Cat.ATTN_K:
            return G.Q4_K
        if cat is _Cat.FFN_DOWN:
            i = st.i_ffn_down
            st.i_ffn_down += 1
            if i < st.n_ffn // 8:
                return G.IQ3_S if ft in (F.IQ2_S, F.IQ2_M) else G.Q2_K
            return t
        if cat is _Cat.ATTN_OUTPUT:
            if n_expert == 8:
                return G.Q5_K
            if ft in (F.IQ1_S, F.IQ1_M):
                return G.IQ2_XXS
            if ft in (F.IQ2_S, F.IQ2_M):
                return G.IQ3_S
        return t
    if cat in _ATTN_V_LIKE:
        new = t
        i_wv = st.i_attention_wv
        if ft is F.Q2_K:
            new = G.Q4_K if mp.n_gqa >= 4 else G.Q3_K
        elif ft is F.Q2_K_S and mp.n_gqa >= 4:
            new = G.Q4_K
        elif ft is F.IQ3_XXS:
            new = G.Q4_K if mp.n_gqa >= 4 else (G.IQ3_XXS if mp.has_imatrix else G.IQ3_S)
        elif (ft in (F.IQ3_XS, F.IQ3_S) and mp.n_gqa >= 4) or ft is F.IQ3_M:
            new = G.Q4_K
        elif ft is F.Q3_K_M:
            new = G.Q5_K if i_wv < 2 else G.Q4_K
        elif ft is F.Q3_K_L or (ft in (F.IQ4_NL, F.IQ4_XS) and mp.n_gqa >= 4):
            new = G.Q5_K
        elif ft in (F.Q4_K_M, F.Q5_K_M) and _more_bits(i_wv, st.n_attention_wv):
            new = G.Q6_K
        elif ft is F.Q4_K_S and i_wv < 4:
            new = G.Q5_K
        if mp.is_70b and new in (G.Q3_K, G.Q4_K):
            new = G.Q5_K
        if n_expert == 8:
            new = G.Q8_0
        st.i_attention_wv += 1
        return new
    if cat is _Cat.ATTN_K:
        if n_expert == 8:
            return G.Q8_0
        if ft is F.IQ3_XS:
            return G.IQ3_XXS
        if ft is F.IQ3_XXS:
            return G.IQ2_S
        return t
    if cat is _Cat.ATTN_Q:
        if ft is F.IQ3_XS:
            return G.IQ3_XXS
        if ft is F.IQ3_XXS:
            return G.IQ2_S
        return t
    if cat is _Cat.FFN_DOWN:
        i_layer = layer_of(st.i_ffn_down)
        n_layer = st.n_ffn
        st.i_ffn_down += 1
        new = t
        if ft is F.Q2_K:
            new = G.Q3_K
        elif ft is F.Q2_K_S:
            if i_layer < n_layer // 8:
                new = G.Q4_K
        elif ft is F.IQ3_XXS and not mp.has_imatrix:
            new = G.Q4_K if i_layer < n_layer // 8 else G.Q3_K
        elif ft is F.Q3_K_M:
            if i_layer < n_layer // 16:
                new = G.Q5_K
            elif not falcon or _more_bits(i_layer, n_layer):
                new = G.Q4_K
            else:
                new = G.Q3_K
        elif ft is F.IQ3_M and (
            i_layer < n_layer // 8 or (n_expert == 8 and _more_bits(i_layer, n_layer))
        ):
            new = G.Q4_K
        elif ft is F.Q3_K_L:
            new = G.Q4_K if falcon else G.Q5_K
        elif ft is F.Q4_K_M:
            if falcon:
                if i_layer < n_layer // 16:
                    new = G.Q6_K
                elif _more_bits(i_layer, n_layer):
                    new = G.Q5_K
                else:
                    new = G.Q4_K
            elif _more_bits(i_layer, n_layer):
                new = G.Q6_K
        elif i_layer < n_layer // 8 and ft in (F.IQ4_NL, F.IQ4_XS) and not mp.has_imatrix:
            new = G.Q5_K
        elif ft is F.Q5_K_M and _more_bits(i_layer, n_layer):
            new = G.Q6_K
        elif ft is F.Q4_K_S and not falcon and i_layer < n_layer // 8:
            new = G.Q5_K
        elif ft in (F.Q4_0, F.Q5_0) and mp.has_imatrix and i_layer < n_layer // 8:
            new = G.Q4_1 if ft is F.Q4_0 else G.Q5_1
        return new
    if cat is _Cat.ATTN_OUTPUT:
        if not falcon:
            if n_expert == 8:
                if ft in (
                    F.Q2_K,
                    F.IQ3_XS,
                    F.IQ3_XXS,
                    F.Q3_K_S,
                    F.Q3_K_M,
                    F.IQ4_NL,
                    F.Q4_K_S,
                    F.Q4_K_M,
                    F.IQ3_S,
                    F.IQ3_M,
                    F.IQ4_XS,
                ):
                    return G.Q5_K
                return t
            return {
                F.Q2_K: G.Q3_K,
                F.IQ3_XXS: G.IQ3_S,
                F.Q3_K_M: G.Q4_K,
                F.Q3_K_L: G.Q5_K,
                F.IQ3_M: G.Q4_K,
            }.get(ft, t)
        return G.Q4_K if ft is F.Q3_K_L else t
    if cat is _Cat.ATTN_QKV:
        if ft in (F.Q3_K_M, F.Q3_K_L, F.IQ3_M):
            return G.Q4_K
        if ft is F.Q4_K_M:
            return G.Q5_K
        if ft is F.Q5_K_M:
            return G.Q6_K
        return t
    if cat in (_Cat.FFN_GATE, _Cat.FFN_UP):
        if cat is _Cat.FFN_GATE:
            i_layer = layer_of(st.i_ffn_gate)
            st.i_ffn_gate += 1
        else:
            i_layer = layer_of(st.i_ffn_up)
            st.i_ffn_up += 1
        if ft is F.IQ3_XS and st.n_ffn // 8 <= i_layer < 7 * st.n_ffn // 8:
            return G.IQ3_XXS
        return t
    return t


def _fallback(t: GGMLType, ncols: int) -> GGMLType:
    if ncols % _BLOCKS[t][0] == 0:
        return t
    new = _FALLBACK.get(t, t)
    if ncols % _BLOCKS[new][0] != 0:
        return GGMLType.F16
    return new


def _llama_sort_key(name: str) -> tuple[int, str]:
    lay = tensor_layer(name)
    return (-1 if lay is None else lay, name)


def plan_tensors(
    facts: ModelFacts,
    file_type: LlamaFileType | QuantType | None = None,
    *,
    imatrix: bool = True,
    source: Sequence[TensorInfo] | None = None,
) -> tuple[PlannedTensor, ...]:
    """Every tensor of ``facts`` as llama.cpp would store it in ``file_type``.

    ``file_type=None`` (or the file's own type for a GGUF) gives the tensors as
    they are. ``imatrix`` changes the few choices llama.cpp makes differently
    with an importance matrix (IQ3_XXS, IQ4 ffn_down, Q4_0 first layers).
    ``source`` reuses a tensor list from :func:`source_tensors`.
    """
    ft = file_type.file_type if isinstance(file_type, QuantType) else file_type
    existing = bool(facts.tensors) and _has_gguf_names(facts.tensors)
    if ft is None or (existing and facts.kind is SourceKind.GGUF and facts.file_type == ft.name):
        if not existing:
            src = source if source is not None else source_tensors(facts)
            return tuple(_as_planned(t) for t in src)
        return tuple(_as_planned(t) for t in facts.tensors)
    default = _DEFAULT_TYPE.get(ft)
    if default is None:
        raise QuantError(
            f"file type {ft.name} is not one the memory model plans; "
            "choose a type from the format table (for example Q4_K_M)"
        )
    src_tensors = sorted(
        source if source is not None else source_tensors(facts),
        key=lambda t: _llama_sort_key(t.name),
    )
    names = [t.name for t in src_tensors]
    n_wv = sum(1 for n in names if _category(n) in _ATTN_V_LIKE)
    tied = "output.weight" not in names
    st = _MixState(n_wv, facts.n_layers, tied)
    mp = MixParams.from_facts(facts, imatrix=imatrix)
    out: list[PlannedTensor] = []
    for t in src_tensors:
        src_type = _ggml_type(t.type)
        if not allows_quantization(t.name, len(t.shape)):
            new = src_type
        elif _BLOCKS[default][0] == 1:
            new = default
        else:
            new = _choose(st, mp, ft, name=t.name, shape=t.shape, t=default, cat=_category(t.name))
            new = _fallback(new, t.shape[0])
        out.append(
            PlannedTensor(t.name, t.shape, new, tensor_bytes(new, t.shape), tensor_layer(t.name))
        )
    return tuple(out)


def _ggml_type(name: str) -> GGMLType:
    try:
        return GGMLType.from_name(name)
    except ValueError:
        # safetensors dtypes that have no ggml twin are converted to F16.
        return {"F64": GGMLType.F32, "FLOAT16": GGMLType.F16}.get(name.upper(), GGMLType.F16)


def _as_planned(t: TensorInfo) -> PlannedTensor:
    typ = _ggml_type(t.type)
    n_bytes = t.n_bytes or tensor_bytes(typ, t.shape)
    return PlannedTensor(t.name, t.shape, typ, n_bytes, tensor_layer(t.name))


def weights_bytes(plan: Iterable[PlannedTensor]) -> int:
    return sum(t.n_bytes for t in plan)


def parameter_count(plan: Iterable[PlannedTensor]) -> int:
    return sum(t.n_elements for t in plan)


def effective_bpw(plan: Sequence[PlannedTensor]) -> float:
    """Whole-model bits per weight, as llama.cpp's quantize README reports them."""
    n = parameter_count(plan)
    return 8.0 * weights_bytes(plan) / n if n else 0.0


# ----------------------------------------------------------------------------------
# KV cache


@dataclass(frozen=True)
class KvCacheEstimate:
    """The KV cache's size, per layer, for one context setting."""

    n_ctx: int
    cells_full: int
    cells_swa: int
    kv_type: KvType
    per_layer_bytes: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.per_layer_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_ctx": self.n_ctx,
            "cells_full": self.cells_full,
            "cells_swa": self.cells_swa,
            "kv_type": self.kv_type.value,
            "total_bytes": self.total_bytes,
        }


def padded_ctx(ctx: int) -> int:
    return _round_up(max(1, ctx), CTX_PAD)


def kv_cache(
    facts: ModelFacts,
    ctx: int,
    kv_type: KvType = KvType.F16,
    options: RuntimeOptions | None = None,
) -> KvCacheEstimate:
    """KV cache bytes per layer at ``ctx`` tokens (llama.cpp pads to 256 cells)."""
    opts = options or RuntimeOptions()
    n_ctx = padded_ctx(ctx)
    cells_full = n_ctx
    cells_swa = n_ctx
    window = facts.sliding_window or 0
    if facts.n_swa_layers and window and not opts.swa_full:
        cells_swa = _round_up(min(n_ctx, window * max(1, opts.n_seq) + opts.n_ubatch), CTX_PAD)
    hd_k = facts.head_dim or (facts.embedding_length // max(1, facts.n_heads))
    hd_v = facts.head_dim_v or hd_k
    typ = kv_type.ggml_type
    per_layer = []
    for il in range(facts.n_layers):
        n_kv = facts.kv_heads_for_layer(il)
        if n_kv <= 0:
            per_layer.append(0)  # recurrent or KV-sharing layer: no cache of its own
            continue
        is_swa = il < len(facts.swa_layers) and facts.swa_layers[il]
        cells = cells_swa if is_swa else cells_full
        per_layer.append(cells * (row_bytes(typ, n_kv * hd_k) + row_bytes(typ, n_kv * hd_v)))
    return KvCacheEstimate(n_ctx, cells_full, cells_swa, kv_type, tuple(per_layer))


# ----------------------------------------------------------------------------------
# Compute and output buffers


def _n_masks(facts: ModelFacts) -> int:
    return 2 if facts.n_swa_layers and facts.n_swa_layers < facts.n_layers else 1


def _ffn_width(facts: ModelFacts) -> int:
    n_ff = facts.feed_forward_length
    if facts.is_moe:
        exp = _int_extra(facts, "expert_feed_forward_length") or n_ff
        n_ff = max(n_ff if not exp else 0, exp * max(1, facts.n_experts_used))
    return max(n_ff, facts.embedding_length)


def compute_buffer_bytes(
    facts: ModelFacts,
    ctx: int,
    options: RuntimeOptions | None = None,
    *,
    n_outputs: int | None = None,
    n_kv: int | None = None,
) -> int:
    """The compute buffer llama.cpp's scheduler reserves (or a batch touches).

    The buffer holds the largest of three phases of the graph, for a batch of
    ``n_ubatch`` tokens (ggml-alloc reuses memory between phases):

    - logits: ``n_outputs × n_vocab`` F32 plus two ``n_embd`` rows per token;
    - attention: the masks (``n_kv × n_ubatch``, F32, or F16 with flash
      attention; two with sliding-window layers), and without flash attention
      the ``n_head × n_kv × n_ubatch`` F32 score matrix plus 22 bytes per
      embedding element per token of other activations;
    - feed-forward: the masks (still live) plus three ``n_ff`` and two
      ``n_embd`` F32 rows per token.

    The constants were fitted on llama.cpp's "compute buffer size" reports for the
    starter model (n_ctx 512–32768, n_ubatch 64 and 512, flash attention on and
    off) and synthetic Llama models with 8–16 heads; the formula reproduces every
    one of those reports within 3.5 MiB. The reserve assumes every token of the
    batch is an output (``n_outputs = n_ubatch``); pass ``n_outputs=1`` for what
    llama-cpp-python actually computes, and ``n_kv`` for a partly filled cache.
    """
    opts = options or RuntimeOptions()
    n_ub = opts.n_ubatch
    kv_cells = n_kv if n_kv is not None else padded_ctx(ctx)
    n_out = n_ub if n_outputs is None else n_outputs
    n_embd = facts.embedding_length
    fa = opts.flash_attn
    masks = _n_masks(facts) * kv_cells * n_ub * (2 if fa else 4)
    logits = n_out * facts.vocab_size * 4 + n_ub * 8 * n_embd
    if fa:
        attention = masks + n_ub * 8 * n_embd
    else:
        attention = masks + n_ub * (4 * facts.n_heads * kv_cells + 22 * n_embd)
    ffn = masks + n_ub * (12 * _ffn_width(facts) + 8 * n_embd)
    return max(logits, attention, ffn)


def output_buffer_bytes(facts: ModelFacts, options: RuntimeOptions | None = None) -> int:
    """Logits kept for the caller: ``n_vocab × 4`` bytes per sequence."""
    opts = options or RuntimeOptions()
    return facts.vocab_size * 4 * max(1, opts.n_seq)


def runtime_bytes(facts: ModelFacts, options: RuntimeOptions | None = None) -> int:
    """Vocabulary, binding arrays and context bookkeeping in RAM."""
    opts = options or RuntimeOptions()
    n_vocab = facts.vocab_size
    tok = (facts.tokenizer_model or "").lower()
    # SPM ("llama") and WPM/UGM vocabularies have no merges; BPE ("gpt2") has about
    # one merge per token. Unknown: assume BPE, the larger, as most recent models use it.
    merges = 0 if tok in ("llama", "bert", "t5", "rwkv", "none", "no_vocab") else n_vocab
    total = VOCAB_BYTES_PER_TOKEN * n_vocab + VOCAB_BYTES_PER_MERGE * merges + RUNTIME_BASE_BYTES
    if opts.python_binding:
        total += BINDING_BYTES_PER_TOKEN * n_vocab
    return total


# ----------------------------------------------------------------------------------
# Placement and the whole estimate


@dataclass(frozen=True)
class DeviceMemory:
    """Memory on one device, by what uses it."""

    device: str
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    other_bytes: int
    layers: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.other_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "other_bytes": self.other_bytes,
            "total_bytes": self.total_bytes,
            "layers": self.layers,
        }


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted memory for one model × file type × context × KV type × GPU layers."""

    file_type: str | None
    ctx: int
    kv_type: KvType
    n_layers: int
    n_gpu_layers: int
    placement: Placement
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    repack_bytes: int
    runtime_bytes: int
    # Resident system RAM after load and a short exchange.
    ram_bytes: int
    # ram_bytes plus the compute pages a full batch at full context touches.
    ram_peak_bytes: int
    # Per GPU (NVIDIA), or the Metal working set on Apple (one entry).
    vram_bytes: tuple[int, ...]
    devices: tuple[DeviceMemory, ...]
    unified_memory: bool = False
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    notes: tuple[str, ...] = ()

    @property
    def reclaimable_bytes(self) -> int:
        """Mapped file pages of repacked weights: resident, but clean and never read
        again, so the kernel drops them when memory runs short."""
        return self.repack_bytes

    @property
    def ram_required_bytes(self) -> int:
        """RAM the run needs: the peak resident set less what the kernel can reclaim."""
        return self.ram_peak_bytes - self.reclaimable_bytes

    @property
    def total_bytes(self) -> int:
        """All memory the model takes, counting unified memory once."""
        if self.unified_memory:
            return self.ram_peak_bytes
        return self.ram_peak_bytes + sum(self.vram_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_type": self.file_type,
            "ctx": self.ctx,
            "kv_type": self.kv_type.value,
            "n_layers": self.n_layers,
            "n_gpu_layers": self.n_gpu_layers,
            "placement": self.placement.value,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "output_bytes": self.output_bytes,
            "repack_bytes": self.repack_bytes,
            "runtime_bytes": self.runtime_bytes,
            "ram_bytes": self.ram_bytes,
            "ram_peak_bytes": self.ram_peak_bytes,
            "ram_required_bytes": self.ram_required_bytes,
            "vram_bytes": list(self.vram_bytes),
            "total_bytes": self.total_bytes,
            "unified_memory": self.unified_memory,
            "devices": [d.to_dict() for d in self.devices],
            "options": self.options.to_dict(),
            "notes": list(self.notes),
        }


# Types the CPU backend repacks into interleaved layouts (ggml-cpu/repack.cpp,
# ggml_repack_get_optimal_repack_type), by the features that enable them.
def repacked_types(features: Iterable[str]) -> frozenset[GGMLType]:
    f = {x.lower() for x in features}
    out: set[GGMLType] = set()
    if "avx2" in f:
        out |= {GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.IQ4_NL, GGMLType.MXFP4}
    if "avx512f" in f:
        out.add(GGMLType.Q2_K)
    if "neon" in f and ("dotprod" in f or "i8mm" in f):
        out |= {
            GGMLType.Q4_0,
            GGMLType.Q4_K,
            GGMLType.Q5_K,
            GGMLType.Q6_K,
            GGMLType.Q8_0,
            GGMLType.IQ4_NL,
            GGMLType.MXFP4,
        }
    return frozenset(out)


def _is_repacked(t: PlannedTensor, types: frozenset[GGMLType]) -> bool:
    return (
        t.type in types
        and len(t.shape) == 2
        and t.shape[1] % 8 == 0
        and t.name.endswith(".weight")
        and _category(t.name) is not _Cat.TOKEN_EMBD
    )


@dataclass(frozen=True)
class _Split:
    """Per-layer bytes of a plan."""

    layers: tuple[int, ...]  # repeating layers
    input_bytes: int  # token embeddings and other non-block tensors
    output_bytes: int  # output.weight (or its tied copy) and output_norm
    repack_layers: tuple[int, ...]
    repack_output: int
    tied_output_bytes: int  # token_embd duplicated onto the output device when tied


def _split(plan: Sequence[PlannedTensor], n_layer: int, repack: frozenset[GGMLType]) -> _Split:
    layers = [0] * n_layer
    rep = [0] * n_layer
    inp = out = rep_out = 0
    has_output = any(t.name == "output.weight" for t in plan)
    tied_bytes = 0
    for t in plan:
        if t.layer is not None and t.layer < n_layer:
            layers[t.layer] += t.n_bytes
            if _is_repacked(t, repack):
                rep[t.layer] += t.n_bytes
        elif t.name.startswith("output"):
            out += t.n_bytes
            if _is_repacked(t, repack):
                rep_out += t.n_bytes
        else:
            inp += t.n_bytes
            if t.name == "token_embd.weight" and not has_output:
                tied_bytes = t.n_bytes
                if t.type in repack and len(t.shape) == 2 and t.shape[1] % 8 == 0:
                    rep_out += t.n_bytes
    return _Split(tuple(layers), inp, out, tuple(rep), rep_out, tied_bytes)


# Splits of recent plans, keyed by the plan object (kept alive by the cache, so its
# id cannot be reused while cached): the advisor asks for the same plan many times.
_SPLIT_CACHE: dict[int, tuple[Sequence[PlannedTensor], int, frozenset[GGMLType], _Split]] = {}
_SPLIT_CACHE_SIZE = 64


def _split_cached(
    plan: Sequence[PlannedTensor], n_layer: int, repack: frozenset[GGMLType]
) -> _Split:
    hit = _SPLIT_CACHE.get(id(plan))
    if hit is not None and hit[0] is plan and hit[1] == n_layer and hit[2] == repack:
        return hit[3]
    sp = _split(plan, n_layer, repack)
    if len(_SPLIT_CACHE) >= _SPLIT_CACHE_SIZE:
        _SPLIT_CACHE.pop(next(iter(_SPLIT_CACHE)))
    _SPLIT_CACHE[id(plan)] = (plan, n_layer, repack, sp)
    return sp


def _gpu_targets(profile: HardwareProfile | None) -> tuple[list[GpuInfo], bool]:
    """The devices llama.cpp would offload to, and whether memory is unified (Apple)."""
    if profile is None:
        return [], False
    if profile.apple is not None:
        a = profile.apple
        metal = GpuInfo(
            vendor="apple",
            name=f"{a.chip} GPU",
            memory_total_bytes=a.gpu_working_set_bytes,
            memory_free_bytes=a.gpu_working_set_bytes,
            memory_bandwidth_gbps=a.memory_bandwidth_gbps,
        )
        return [metal], True
    return [g for g in profile.gpus if g.memory_total_bytes > 0], False


def estimate_memory(
    facts: ModelFacts,
    *,
    file_type: LlamaFileType | QuantType | None = None,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    n_gpu_layers: int = 0,
    profile: HardwareProfile | None = None,
    options: RuntimeOptions | None = None,
    plan: Sequence[PlannedTensor] | None = None,
    imatrix: bool = True,
) -> MemoryEstimate:
    """Predict RAM and VRAM for running ``facts`` in ``file_type`` with llama.cpp.

    ``ctx`` defaults to the model's trained context. ``n_gpu_layers`` follows
    llama.cpp (0 … n_layers + 1; larger values mean all, negative means all);
    without a GPU in ``profile`` it is taken as 0. ``plan`` reuses a tensor
    plan from :func:`plan_tensors` (the estimate is then cheap to repeat).
    """
    opts = options or RuntimeOptions()
    notes: list[str] = []
    if kv_type.needs_flash_attention and not opts.flash_attn:
        opts = replace(opts, flash_attn=True)
        notes.append(f"a {kv_type.value} KV cache needs flash attention; the estimate turns it on")
    n_ctx = padded_ctx(ctx if ctx and ctx > 0 else facts.context_length or 4096)
    tensors = tuple(plan) if plan is not None else plan_tensors(facts, file_type, imatrix=imatrix)
    n_layer = facts.n_layers
    gpus, unified = _gpu_targets(profile)
    features = profile.cpu.features if profile else ()
    repack = repacked_types(features)
    sp = _split_cached(tensors, n_layer, repack)
    kv = kv_cache(facts, n_ctx, kv_type, opts)

    max_ngl = n_layer + 1
    ngl = max_ngl if n_gpu_layers < 0 else min(n_gpu_layers, max_ngl)
    if not gpus:
        ngl = 0
    i_gpu_start = n_layer + 1 - ngl
    on_gpu = [il >= i_gpu_start for il in range(n_layer)]
    output_on_gpu = ngl >= 1

    # Share of offloaded layers per GPU, in proportion to free memory (llama.cpp's
    # default tensor_split).
    gpu_of: dict[int, int] = {}
    if ngl > 0:
        free = [max(1, g.memory_free_bytes or g.memory_total_bytes) for g in gpus]
        cum = list(_cumulative(free))
        for il in range(i_gpu_start, n_layer + 1):
            frac = (il - i_gpu_start) / ngl
            gpu_of[il] = next((k for k, c in enumerate(cum) if frac < c), len(gpus) - 1)

    compute_full = compute_buffer_bytes(facts, n_ctx, opts)
    # What a batch at full context touches with one output row (llama-cpp-python
    # asks for logits of the last token only).
    compute_touched = compute_buffer_bytes(facts, n_ctx, opts, n_outputs=1)
    out_buf = output_buffer_bytes(facts, opts)
    rt = runtime_bytes(facts, opts)

    gpu_weights = [0] * len(gpus)
    gpu_kv = [0] * len(gpus)
    gpu_layers = [0] * len(gpus)
    cpu_weights = sp.input_bytes
    cpu_kv = 0
    repack_bytes = 0
    cpu_layers = 0
    for il in range(n_layer):
        if on_gpu[il]:
            k = gpu_of[il]
            gpu_weights[k] += sp.layers[il]
            gpu_kv[k] += kv.per_layer_bytes[il]
            gpu_layers[k] += 1
        else:
            cpu_weights += sp.layers[il]
            cpu_kv += kv.per_layer_bytes[il]
            repack_bytes += sp.repack_layers[il]
            cpu_layers += 1
    if output_on_gpu:
        gpu_weights[gpu_of[n_layer]] += sp.output_bytes + sp.tied_output_bytes
    else:
        cpu_weights += sp.output_bytes
        repack_bytes += sp.repack_output

    # CPU compute: the whole graph when the output or any layer runs on the CPU; a
    # small host buffer for inputs and the final rows otherwise.
    host_small = opts.n_ubatch * 8 * facts.embedding_length
    if output_on_gpu and cpu_layers == 0:
        cpu_compute_reserved = cpu_compute_touched = host_small
    else:
        cpu_compute_reserved = compute_full
        cpu_compute_touched = compute_touched
    gpu_compute = [
        compute_full if (gpu_layers[k] or (output_on_gpu and gpu_of.get(n_layer) == k)) else 0
        for k in range(len(gpus))
    ]

    devices: list[DeviceMemory] = []
    vram: list[int] = []
    for k, g in enumerate(gpus):
        used = gpu_layers[k] > 0 or gpu_compute[k] > 0
        other = CUDA_CONTEXT_BYTES if (used and not unified and g.vendor == "nvidia") else 0
        dm = DeviceMemory(
            device=g.name if not unified else "Metal",
            weights_bytes=gpu_weights[k],
            kv_bytes=gpu_kv[k],
            compute_bytes=gpu_compute[k],
            other_bytes=other,
            layers=gpu_layers[k],
        )
        devices.append(dm)
        vram.append(dm.total_bytes if used else 0)

    ram_base = cpu_weights + repack_bytes + cpu_kv + out_buf + rt
    if unified:
        # Metal maps the same pages the CPU sees: the GPU's share lives in RAM too.
        ram_base += sum(gpu_weights) + sum(gpu_kv) + sum(gpu_compute)
    ram_peak = ram_base + cpu_compute_touched
    cpu_dev = DeviceMemory(
        device="CPU",
        weights_bytes=cpu_weights + repack_bytes,
        kv_bytes=cpu_kv,
        compute_bytes=cpu_compute_reserved,
        other_bytes=out_buf + rt,
        layers=cpu_layers,
    )
    if ngl == 0:
        placement = Placement.CPU
    elif cpu_layers == 0 and output_on_gpu:
        placement = Placement.GPU
    else:
        placement = Placement.PARTIAL
    if block_layout(facts.architecture).recurrent:
        notes.append(f"{facts.architecture} keeps recurrent state the model does not count")
    ft_name = (
        file_type.value
        if isinstance(file_type, QuantType)
        else file_type.name
        if isinstance(file_type, LlamaFileType)
        else facts.file_type
    )
    return MemoryEstimate(
        file_type=ft_name,
        ctx=n_ctx,
        kv_type=kv_type,
        n_layers=n_layer,
        n_gpu_layers=ngl,
        placement=placement,
        weights_bytes=weights_bytes(tensors),
        kv_bytes=kv.total_bytes,
        compute_bytes=cpu_compute_reserved + sum(gpu_compute),
        output_bytes=out_buf,
        repack_bytes=repack_bytes,
        runtime_bytes=rt,
        ram_bytes=ram_base,
        ram_peak_bytes=ram_peak,
        vram_bytes=tuple(vram),
        devices=(cpu_dev, *devices),
        unified_memory=unified,
        options=opts,
        notes=tuple(notes),
    )


def _cumulative(values: Sequence[int]) -> Iterable[float]:
    total = float(sum(values))
    acc = 0.0
    for v in values:
        acc += v
        yield acc / total


def gpu_budgets(profile: HardwareProfile, margin_bytes: int | None = None) -> tuple[int, ...]:
    """Bytes each GPU can take: free VRAM (the working-set limit on Apple) minus a margin.

    The default margin is 5% of the device's memory, at least 512 MiB, for the
    display, other programs and allocator slack.
    """
    gpus, unified = _gpu_targets(profile)
    out = []
    for g in gpus:
        size = g.memory_total_bytes
        free = g.memory_free_bytes or size
        if unified and profile.apple is not None:
            # The working set can only be used as far as RAM is free.
            free = min(free, profile.memory.available_bytes)
        margin = margin_bytes if margin_bytes is not None else max(512 * MIB, size // 20)
        out.append(max(0, free - margin))
    return tuple(out)


def fits_gpus(estimate: MemoryEstimate, budgets: Sequence[int]) -> bool:
    return all(v <= b for v, b in zip(estimate.vram_bytes, budgets, strict=False))


def fits_memory(estimate: MemoryEstimate, ram_budget: int, budgets: Sequence[int]) -> bool:
    """Whether a run fits: the RAM it needs within ``ram_budget``, each GPU's VRAM within
    its budget (:func:`gpu_budgets`). The advisor's fit and chat's check before a load."""
    return estimate.ram_required_bytes <= ram_budget and fits_gpus(estimate, budgets)


def max_gpu_layers(
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    file_type: LlamaFileType | QuantType | None = None,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    options: RuntimeOptions | None = None,
    margin_bytes: int | None = None,
    plan: Sequence[PlannedTensor] | None = None,
) -> int:
    """The largest ``n_gpu_layers`` whose VRAM fits every GPU's budget (0 when none does)."""
    budgets = gpu_budgets(profile, margin_bytes)
    if not budgets:
        return 0
    tensors = tuple(plan) if plan is not None else plan_tensors(facts, file_type)
    lo, hi = 0, facts.n_layers + 1
    # VRAM grows with the layer count, so the answer is the last count that fits.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        est = estimate_memory(
            facts,
            ctx=ctx,
            kv_type=kv_type,
            n_gpu_layers=mid,
            profile=profile,
            options=options,
            plan=tensors,
        )
        if fits_gpus(est, budgets):
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_fits(
    facts: ModelFacts,
    plan: Sequence[PlannedTensor],
    *,
    ctx: int,
    ram_budget: int,
    gpu_budgets: Sequence[int],
    kv_type: KvType = KvType.F16,
    n_gpu_layers: int | None = None,
    profile: HardwareProfile | None = None,
    options: RuntimeOptions | None = None,
    margin_bytes: int | None = None,
) -> bool:
    """Whether ``plan`` runs at ``ctx`` within ``ram_budget`` and ``gpu_budgets``.

    ``n_gpu_layers`` None places as many layers on the GPUs of ``profile`` as fit
    (as the advisor places a model); a number keeps that placement.
    """
    ngl = n_gpu_layers
    if ngl is None:
        ngl = 0
        if profile is not None:
            ngl = max_gpu_layers(
                facts,
                profile,
                ctx=ctx,
                kv_type=kv_type,
                options=options,
                margin_bytes=margin_bytes,
                plan=plan,
            )
    est = estimate_memory(
        facts,
        ctx=ctx,
        kv_type=kv_type,
        n_gpu_layers=ngl,
        profile=profile,
        options=options,
        plan=plan,
    )
    return fits_memory(est, ram_budget, gpu_budgets)


def longest_context(
    facts: ModelFacts,
    *,
    max_ctx: int,
    ram_budget: int,
    kv_type: KvType = KvType.F16,
    n_gpu_layers: int | None = 0,
    profile: HardwareProfile | None = None,
    options: RuntimeOptions | None = None,
    margin_bytes: int | None = None,
    plan: Sequence[PlannedTensor] | None = None,
    min_ctx: int = CTX_PAD,
    step: int = CTX_PAD,
) -> int | None:
    """The longest context that fits: a multiple of ``step`` from ``min_ctx`` to ``max_ctx``.

    "Fits" is :func:`fits_memory` with ``ram_budget`` and the GPUs' budgets in
    ``profile``. ``n_gpu_layers`` None places as many layers on the GPUs as fit at
    each context (as the advisor places a model); a number keeps that placement (as
    a chat load plan does). Memory only grows with the context, so a binary search
    over the memory model's own estimate gives the exact answer. None when not even
    ``min_ctx`` fits. The advisor's "a shorter context would fit" and chat's
    suggestion for a plan that does not fit both come from here, so they agree.
    """
    tensors = tuple(plan) if plan is not None else plan_tensors(facts)
    budgets = gpu_budgets(profile, margin_bytes) if profile is not None else ()

    def fits(ctx: int) -> bool:
        return plan_fits(
            facts,
            tensors,
            ctx=ctx,
            ram_budget=ram_budget,
            gpu_budgets=budgets,
            kv_type=kv_type,
            n_gpu_layers=n_gpu_layers,
            profile=profile,
            options=options,
            margin_bytes=margin_bytes,
        )

    lo = max(1, -(-min_ctx // step))
    hi = max_ctx // step
    if lo > hi or not fits(lo * step):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * step):
            lo = mid
        else:
            hi = mid - 1
    return lo * step
