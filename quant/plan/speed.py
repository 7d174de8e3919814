"""The speed model: generation and prompt tokens per second, as a range, with its bound.

Generation reads every weight a token touches once per token, plus the KV cache
filled so far, so it is bound by memory bandwidth::

    seconds per token = Σ over devices  bytes read there / (efficiency × bandwidth)

(active experts only for a mixture of experts; a partly offloaded model adds the
time of its VRAM part and of its RAM part). A device whose arithmetic is slower
than its memory for this model (a few CPU cores and a small model) is bound by
compute instead; the larger of the two times counts. Prompt processing runs
batches through matrix multiplications and is bound by compute: two FLOPs per
weight per token plus the attention over the context, divided by an efficiency
times the device's peak (CPU: cores × clock × FLOPs per cycle of its widest
vector unit; GPU: a table by name or compute capability). On a GPU each batch
also pays a fixed cost per offloaded layer, narrow matrices reach only part of
the efficiency, attention without flash attention a tenth of it, and on compute
capability 9.0 and later each weight type its own share (quantized ones about
half of 16-bit's, for prompts and generation alike); all measured on an H100
(``GPU_UBATCH_LAYER_OVERHEAD_S``, :func:`gpu_width_share`, ``ATTENTION_SHARE``,
:func:`large_gpu`).

Efficiencies are ranges (what llama.cpp commonly reaches); a measured run on this
machine narrows them: :func:`record_measurement` stores the efficiency a real
run achieved, keyed by machine, and later estimates use it
(:func:`calibrated_efficiency`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import platformdirs

from quant.atomic import atomic_write_text
from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.gguf.types import GGMLType, LlamaFileType
from quant.hardware.profile import GpuInfo, HardwareProfile
from quant.plan.formats import QuantType
from quant.plan.memory import (
    KvType,
    PlannedTensor,
    RuntimeOptions,
    padded_ctx,
    plan_tensors,
    row_bytes,
)

logger = logging.getLogger(__name__)


class Resource(StrEnum):
    """What limits a phase on one device; each has its own efficiency."""

    CPU_MEMORY = "cpu-memory"
    GPU_MEMORY = "gpu-memory"
    CPU_COMPUTE = "cpu-compute"
    GPU_COMPUTE = "gpu-compute"


# (low, typical, high) share of the peak llama.cpp reaches. CPU generation: 0.55 of
# numpy-measured bandwidth on this project's 2-core test machine (starter model),
# 0.4–0.75 across the laptops and desktops llama.cpp users report. GPU generation:
# 0.31 of peak for a 1.2B F16 model on an H100 (docs/llama-cpp.md#measured), where kernel
# launches weigh (modelled separately below), up to ~0.85 for large models.
DEFAULT_EFFICIENCY: dict[Resource, tuple[float, float, float]] = {
    Resource.CPU_MEMORY: (0.40, 0.55, 0.75),
    Resource.GPU_MEMORY: (0.50, 0.70, 0.85),
    Resource.CPU_COMPUTE: (0.20, 0.35, 0.55),
    Resource.GPU_COMPUTE: (0.10, 0.25, 0.45),
}
# A calibrated efficiency is trusted to this much either way.
CALIBRATED_SPREAD = 0.15
# Fixed GPU time per token per layer (kernel launches and synchronisation). Measured
# on an H100 through llama-cpp-python: the starter model (18 layers, Q4_K_M) fully
# offloaded generates 750–805 tokens/s while its bytes alone would allow ~40,000,
# i.e. ~65 µs per offloaded layer (benchmarks/gpu/offload_check.py). It is a floor under
# the bandwidth time, not an addition to it: an 8B F16 model generates at its bandwidth
# alone (docs/llama-cpp.md#measured).
GPU_LAYER_OVERHEAD_S = 65e-6
# Prompt processing on a GPU runs each batch of up to n_ubatch tokens through every
# offloaded layer once: a fixed cost per layer and batch (kernel launches, the graph),
# plus the matrix work and the attention. Fitted on an H100 (benchmarks/gpu/prompt_check.py,
# tests/data/measured/h100_prompt_speed.json and h100_8b_prompt_speed.json): a Llama-3-8B
# shape in F16 processes 128 tokens in 11.9 ms, 512 in 28.5 ms and 2,048 in 146 ms with
# flash attention off; the gap between 128 and 512 gives 215 µs per layer and batch.
GPU_UBATCH_LAYER_OVERHEAD_S = 215e-6
# The fixed cost varies with the driver and the host CPU: the range's ends scale it.
_LAUNCH_SPREAD = {"low": 1.25, "mid": 1.0, "high": 0.8}
# Narrow matrices leave a GPU's tensor cores idle: the starter's 640-wide layers reach
# about a seventh of the compute share wide ones do (the same fit, with the starter's
# shape). The share grows with the square of the width up to GPU_FULL_WIDTH, from which a
# model's matrices fill the GPU.
GPU_FULL_WIDTH = 1650
# Attention's own kernels reach this share of the matrix efficiency: with flash attention
# the fused kernel, without it separate products and a softmax over the whole context
# (the 512- against the 2,048-token runs of both shapes, flash attention off and on).
ATTENTION_SHARE = {True: 1.0, False: 0.1}


def gpu_width_share(embedding_length: int) -> float:
    """The share of a GPU's compute efficiency a model's matrices of this width reach."""
    if embedding_length <= 0:
        return 1.0
    return float(min(1.0, (embedding_length / GPU_FULL_WIDTH) ** 2))


# On GPUs of compute capability 9.0 and later (Hopper, datacenter Blackwell), llama.cpp's
# speed depends on the weights' type: 16-bit matrices go to cuBLAS, which uses the newer
# tensor-core instructions, while quantized ones run in llama.cpp's own kernels (MMQ for
# prompts, MMVQ for generation), which do not, and an H100 is too wide for one token's
# matrix-vector products to reach its bandwidth. Shares of the generic efficiency
# (DEFAULT_EFFICIENCY) reached per weight type, measured with the 8B shape on an H100
# (512-token prompts; generation after 512 tokens). Other quantized types take the
# shares of the K-quants. Older GPUs are not corrected: nothing here measured them.
LARGE_GPU_CC = (9, 0)
# (prompt, generation) share per weight type; quantized types not named take the K-quants'.
_LARGE_GPU_SHARES = {
    GGMLType.F16: (1.55, 1.0),
    GGMLType.BF16: (1.55, 1.0),
    GGMLType.F32: (1.55, 1.0),
    GGMLType.Q8_0: (0.71, 0.76),
    GGMLType.Q6_K: (0.48, 0.5),
}
_LARGE_GPU_SHARES_QUANT = (0.63, 0.5)


def large_gpu(gpu: GpuInfo) -> bool:
    """Whether llama.cpp's speed on ``gpu`` depends on the weight type (see above)."""
    cc = gpu.compute_capability_tuple if gpu.vendor == "nvidia" else None
    return cc is not None and cc >= LARGE_GPU_CC


def _type_shares(t: GGMLType) -> tuple[float, float]:
    """(prompt, generation) share of the generic efficiency on a large GPU for ``t``."""
    return _LARGE_GPU_SHARES.get(t, _LARGE_GPU_SHARES_QUANT)


# Host-to-GPU copies of CPU-resident weights during prompt processing (llama.cpp
# offloads large batches' matrix multiplications to the GPU); PCIe 4.0 x16 in practice.
PCIE_GBPS = 25.0
# Generation's matrix-vector products on quantized weights run on 8-bit integer dot
# products (AVX2 maddubs, AVX-512 VNNI, NEON sdot), about twice the FP32 FMA rate.
INT8_DOT_SPEEDUP = 2.0
# CPU clock assumed when the brand string does not give it.
DEFAULT_CPU_GHZ = 3.0


class Bound(StrEnum):
    RAM_BANDWIDTH = "RAM bandwidth"
    VRAM_BANDWIDTH = "VRAM bandwidth"
    CPU_COMPUTE = "CPU compute"
    GPU_COMPUTE = "GPU compute"
    GPU_OVERHEAD = "GPU kernel launches"
    PCIE = "PCIe transfers"


@dataclass(frozen=True)
class SpeedEstimate:
    """Predicted tokens per second: generation at the given context and prompt processing."""

    generation_low: float
    generation: float
    generation_high: float
    prompt_low: float
    prompt: float
    prompt_high: float
    # Bytes one generated token reads at the full context.
    bytes_per_token: int
    generation_bound: Bound
    prompt_bound: Bound
    calibrated: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation_tok_s": {
                "low": round(self.generation_low, 2),
                "typical": round(self.generation, 2),
                "high": round(self.generation_high, 2),
            },
            "prompt_tok_s": {
                "low": round(self.prompt_low, 1),
                "typical": round(self.prompt, 1),
                "high": round(self.prompt_high, 1),
            },
            "bytes_per_token": self.bytes_per_token,
            "generation_bound": self.generation_bound.value,
            "prompt_bound": self.prompt_bound.value,
            "calibrated": self.calibrated,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------------
# Device peaks


# Dense FP16/BF16 tensor throughput in TFLOPS (FP32 accumulate), vendor datasheets.
_GPU_TFLOPS: tuple[tuple[str, float], ...] = (
    ("B200", 2250.0),
    ("H200", 989.0),
    ("H100 PCIE", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("A6000", 155.0),
    ("RTX 6000 ADA", 364.0),
    ("5090", 209.0),
    ("5080", 113.0),
    ("4090", 165.0),
    ("4080", 97.0),
    ("4070", 58.0),
    ("4060", 30.0),
    ("3090", 71.0),
    ("3080", 59.0),
    ("3070", 40.0),
    ("3060", 25.0),
    ("2080", 40.0),
    ("T4", 65.0),
    ("V100", 125.0),
)
# When the name is not in the table: a middling card of its generation.
_CC_TFLOPS: dict[tuple[int, int], float] = {
    (7, 0): 100.0,
    (7, 5): 40.0,
    (8, 0): 300.0,
    (8, 6): 40.0,
    (8, 7): 20.0,
    (8, 9): 100.0,
    (9, 0): 800.0,
    (10, 0): 2000.0,
    (12, 0): 150.0,
}
# Memory bandwidth in GB/s for NVIDIA cards when the profile has none (datasheets).
_GPU_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("B200", 8000.0),
    ("H200", 4800.0),
    ("H100 PCIE", 2000.0),
    ("H100", 3350.0),
    ("A100", 1935.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10", 600.0),
    ("A6000", 768.0),
    ("5090", 1792.0),
    ("4090", 1008.0),
    ("4080", 717.0),
    ("4070", 504.0),
    ("4060", 272.0),
    ("3090", 936.0),
    ("3080", 760.0),
    ("3070", 448.0),
    ("3060", 360.0),
    ("T4", 320.0),
    ("V100", 900.0),
)
# Apple GPU FP32 TFLOPS by chip family (FP16 runs at the same rate on Apple GPUs).
_APPLE_TFLOPS: tuple[tuple[str, float], ...] = (
    ("M4 MAX", 18.4),
    ("M4 PRO", 9.2),
    ("M4", 4.3),
    ("M3 ULTRA", 28.0),
    ("M3 MAX", 16.4),
    ("M3 PRO", 7.4),
    ("M3", 4.1),
    ("M2 ULTRA", 27.2),
    ("M2 MAX", 13.6),
    ("M2 PRO", 6.8),
    ("M2", 3.6),
    ("M1 ULTRA", 21.0),
    ("M1 MAX", 10.4),
    ("M1 PRO", 5.2),
    ("M1", 2.6),
)
# Unified-memory bandwidth when the profile has none (Apple specifications).
_APPLE_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("M4 MAX", 410.0),
    ("M4 PRO", 273.0),
    ("M4", 120.0),
    ("M3 ULTRA", 819.0),
    ("M3 MAX", 300.0),
    ("M3 PRO", 150.0),
    ("M3", 100.0),
    ("M2 ULTRA", 800.0),
    ("M2 MAX", 400.0),
    ("M2 PRO", 200.0),
    ("M2", 100.0),
    ("M1 ULTRA", 800.0),
    ("M1 MAX", 400.0),
    ("M1 PRO", 200.0),
    ("M1", 68.0),
)


def _lookup(table: Sequence[tuple[str, float]], name: str) -> float | None:
    upper = name.upper()
    for key, value in table:
        if key in upper:
            return value
    return None


def gpu_tflops(gpu: GpuInfo) -> tuple[float, str | None]:
    """Peak dense 16-bit TFLOPS of ``gpu``, and a note when it is a guess."""
    if gpu.vendor == "apple":
        value = _lookup(_APPLE_TFLOPS, gpu.name)
        return (value, None) if value else (4.0, f"{gpu.name}: GPU throughput assumed 4 TFLOPS")
    value = _lookup(_GPU_TFLOPS, gpu.name)
    if value:
        return value, None
    cc = gpu.compute_capability_tuple
    guess = _CC_TFLOPS.get(cc, 50.0) if cc else 50.0
    return guess, f"{gpu.name}: tensor throughput not in the table; assumed {guess:g} TFLOPS"


def gpu_bandwidth_gbps(gpu: GpuInfo) -> tuple[float, str | None]:
    if gpu.memory_bandwidth_gbps:
        return gpu.memory_bandwidth_gbps, None
    table = _APPLE_BANDWIDTH if gpu.vendor == "apple" else _GPU_BANDWIDTH
    value = _lookup(table, gpu.name)
    if value:
        return value, None
    return 300.0, f"{gpu.name}: memory bandwidth unknown; assumed 300 GB/s"


def cpu_bandwidth_gbps(profile: HardwareProfile) -> tuple[float, str | None]:
    """RAM bandwidth for the CPU: measured, Apple's figure, or an estimate."""
    if profile.measured_bandwidth_gbps:
        return profile.measured_bandwidth_gbps, None
    if profile.apple is not None:
        bw = profile.apple.memory_bandwidth_gbps or _lookup(_APPLE_BANDWIDTH, profile.apple.chip)
        if bw:
            return bw, None
    # Dual-channel DDR4/DDR5 desktops and laptops measure 20–60 GB/s.
    return 30.0, "RAM bandwidth not measured; assumed 30 GB/s (run 'quantdesk hw' to measure)"


def cpu_ghz(brand: str) -> float:
    m = re.search(r"(\d+(?:\.\d+)?)\s*GHz", brand, re.IGNORECASE)
    return float(m.group(1)) if m else DEFAULT_CPU_GHZ


def cpu_gflops(profile: HardwareProfile) -> float:
    """Peak FP32 GFLOPS of the CPU: cores × clock × FLOPs per cycle of its vector unit.

    Two FMA pipes per core: AVX-512 16 lanes (64 FLOPs/cycle), AVX2+FMA 8 lanes (32),
    NEON 4 lanes (16; Apple's four pipes 32), plain SSE 8.
    """
    f = {x.lower() for x in profile.cpu.features}
    if "avx512f" in f:
        per_cycle = 64
    elif "avx2" in f and "fma" in f:
        per_cycle = 32
    elif "avx2" in f:
        per_cycle = 16
    elif "neon" in f or profile.cpu.arch in ("arm64", "aarch64"):
        per_cycle = 32 if profile.apple is not None else 16
    else:
        per_cycle = 8
    cores = max(1, profile.cpu.physical_cores)
    return cores * cpu_ghz(profile.cpu.brand) * per_cycle


# ----------------------------------------------------------------------------------
# Calibration store


def default_calibration_path() -> Path:
    """``speed_calibration.json`` in Quantdesk's data folder (``$QUANTDESK_HOME/data``)."""
    home = os.environ.get("QUANTDESK_HOME")
    root = (
        Path(home) / "data"
        if home
        else Path(platformdirs.user_data_dir("Quantdesk", appauthor=False))
    )
    return root / "speed_calibration.json"


def machine_key(profile: HardwareProfile) -> str:
    """A stable key for one machine: CPU, memory size and GPUs (not free memory)."""
    parts = [
        profile.cpu.brand,
        str(profile.cpu.physical_cores),
        str(profile.memory.total_bytes // (1024**3)),
        *(f"{g.name}:{g.memory_total_bytes // (1024**3)}" for g in profile.gpus),
        profile.apple.chip if profile.apple else "",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# Measurements kept per machine and resource; the median of these is used.
_KEEP = 8


class CalibrationStore:
    """Measured efficiencies per machine and resource, in a small JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_calibration_path()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable speed calibration %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, key: str, resource: Resource, efficiency: float, detail: str = "") -> None:
        if not math.isfinite(efficiency) or efficiency <= 0:
            return
        data = self._read()
        machines = data.setdefault("machines", {})
        entry = machines.setdefault(key, {})
        runs = entry.setdefault(resource.value, [])
        runs.append({"efficiency": round(efficiency, 4), "at": time.time(), "detail": detail})
        entry[resource.value] = runs[-_KEEP:]
        data["schema"] = 1
        atomic_write_text(self.path, json.dumps(data, indent=1))

    def efficiency(self, key: str, resource: Resource) -> float | None:
        runs = self._read().get("machines", {}).get(key, {}).get(resource.value, [])
        values = [
            float(r["efficiency"])
            for r in runs
            if isinstance(r, dict) and isinstance(r.get("efficiency"), int | float)
        ]
        return statistics.median(values) if values else None


def record_measurement(
    profile: HardwareProfile,
    *,
    resource: Resource,
    tokens_per_second: float,
    work_per_token: float,
    store: CalibrationStore | None = None,
    detail: str = "",
) -> float:
    """Store the efficiency a measured run reached on this machine; return it.

    ``work_per_token`` is bytes read per token for the ``*_MEMORY`` resources and
    FLOPs per token for ``*_COMPUTE``; the efficiency is the achieved rate over
    the device's peak (bandwidth or FLOPS from the profile).
    """
    peak = _peak(profile, resource)
    eff = tokens_per_second * work_per_token / peak
    (store or CalibrationStore()).record(machine_key(profile), resource, eff, detail)
    logger.info("calibrated %s efficiency %.3f (%s)", resource.value, eff, detail)
    return eff


def calibrated_efficiency(
    profile: HardwareProfile, resource: Resource, store: CalibrationStore | None = None
) -> float | None:
    """The median measured efficiency for ``resource`` on this machine, if any."""
    return (store or CalibrationStore()).efficiency(machine_key(profile), resource)


def _peak(profile: HardwareProfile, resource: Resource) -> float:
    if resource is Resource.CPU_MEMORY:
        return cpu_bandwidth_gbps(profile)[0] * 1e9
    if resource is Resource.CPU_COMPUTE:
        return cpu_gflops(profile) * 1e9
    gpus = _gpus(profile)
    if not gpus:
        raise QuantError(
            f"cannot calibrate {resource.value}: the hardware profile has no GPU; "
            "record CPU measurements for a CPU-only machine"
        )
    if resource is Resource.GPU_MEMORY:
        return gpu_bandwidth_gbps(gpus[0])[0] * 1e9
    return gpu_tflops(gpus[0])[0] * 1e12


def _gpus(profile: HardwareProfile) -> list[GpuInfo]:
    if profile.apple is not None:
        a = profile.apple
        return [
            GpuInfo(
                vendor="apple",
                name=a.chip,
                memory_total_bytes=a.gpu_working_set_bytes,
                memory_free_bytes=a.gpu_working_set_bytes,
                memory_bandwidth_gbps=a.memory_bandwidth_gbps,
            )
        ]
    return [g for g in profile.gpus if g.memory_total_bytes > 0]


# ----------------------------------------------------------------------------------
# Work per token


@dataclass(frozen=True)
class TokenWork:
    """What one token costs on each device: bytes read and FLOPs."""

    cpu_bytes: float
    gpu_bytes: float
    cpu_flops_gen: float
    gpu_flops_gen: float
    cpu_flops_prompt: float
    gpu_flops_prompt: float
    cpu_weight_bytes: float  # CPU-resident matrix weights (copied to the GPU for prompts)
    gpu_layers: int
    # The GPU's attention FLOPs of a prompt token (part of gpu_flops_prompt).
    gpu_att_flops_prompt: float = 0.0
    # On a large GPU (see large_gpu): the matrix FLOPs and the bytes of the GPU part, each
    # divided by its weight type's share of the generic efficiency.
    gpu_matrix_flops_large: float = 0.0
    gpu_bytes_large: float = 0.0


def _expert_share(t: PlannedTensor, facts: ModelFacts) -> float:
    if "_exps" in t.name and facts.n_experts > 1:
        return max(1, facts.n_experts_used) / facts.n_experts
    return 1.0


@dataclass(frozen=True)
class _PlanSummary:
    """Per-layer bytes and FLOPs of one plan, the part of token work that does not vary."""

    layer_bytes: tuple[float, ...]  # read per generated token (active experts only)
    layer_flops: tuple[float, ...]  # 2 × active matrix elements
    layer_matrix_bytes: tuple[float, ...]  # all matrix bytes (copied for prompts)
    output_bytes: float
    output_flops: float
    # The same on a large GPU, each tensor divided by its type's share (_type_shares).
    layer_bytes_large: tuple[float, ...]
    layer_flops_large: tuple[float, ...]
    output_bytes_large: float


_SUMMARY_CACHE: dict[int, tuple[Sequence[PlannedTensor], int, int, _PlanSummary]] = {}


def _summary(facts: ModelFacts, plan: Sequence[PlannedTensor]) -> _PlanSummary:
    key = (facts.n_layers, facts.n_experts * 1000 + facts.n_experts_used)
    hit = _SUMMARY_CACHE.get(id(plan))
    if hit is not None and hit[0] is plan and (hit[1], hit[2]) == key:
        return hit[3]
    n_layer = facts.n_layers
    lb = [0.0] * n_layer
    lf = [0.0] * n_layer
    lm = [0.0] * n_layer
    lbl = [0.0] * n_layer
    lfl = [0.0] * n_layer
    ob = of = obl = 0.0
    tied = not any(t.name == "output.weight" for t in plan)
    for t in plan:
        is_matrix = len(t.shape) >= 2
        p_share, g_share = _type_shares(t.type) if is_matrix else (1.0, 1.0)
        if t.layer is not None and t.layer < n_layer:
            share = _expert_share(t, facts)
            lb[t.layer] += t.n_bytes * share
            lbl[t.layer] += t.n_bytes * share / g_share
            if is_matrix:
                lf[t.layer] += 2.0 * t.n_elements * share
                lfl[t.layer] += 2.0 * t.n_elements * share / p_share
                lm[t.layer] += t.n_bytes
        elif t.name.startswith("output") or (tied and t.name == "token_embd.weight"):
            ob += t.n_bytes
            obl += t.n_bytes / g_share
            if is_matrix:
                of += 2.0 * t.n_elements
        # An untied token_embd is read one row per token: negligible.
    summary = _PlanSummary(tuple(lb), tuple(lf), tuple(lm), ob, of, tuple(lbl), tuple(lfl), obl)
    if len(_SUMMARY_CACHE) >= 64:
        _SUMMARY_CACHE.pop(next(iter(_SUMMARY_CACHE)))
    _SUMMARY_CACHE[id(plan)] = (plan, key[0], key[1], summary)
    return summary


def token_work(
    facts: ModelFacts,
    plan: Sequence[PlannedTensor],
    *,
    n_gpu_layers: int,
    fill: int,
    kv_type: KvType,
    options: RuntimeOptions | None = None,
) -> TokenWork:
    """Bytes and FLOPs of one token with ``fill`` tokens already in the cache.

    The output matrix runs for a prompt's last token only, so it counts for
    generation and not for prompt processing.
    """
    opts = options or RuntimeOptions()
    n_layer = facts.n_layers
    ngl = max(0, min(n_gpu_layers, n_layer + 1))
    i_gpu_start = n_layer + 1 - ngl
    s = _summary(facts, plan)
    hd = facts.head_dim or facts.embedding_length // max(1, facts.n_heads)
    hd_v = facts.head_dim_v or hd
    window = facts.sliding_window or 0
    typ = kv_type.ggml_type
    cpu_b = gpu_b = cpu_fg = gpu_fg = cpu_fp = gpu_fp = cpu_w = 0.0
    gpu_att = gpu_ml = gpu_bl = 0.0
    for il in range(n_layer):
        n_kv = facts.kv_heads_for_layer(il)
        is_swa = il < len(facts.swa_layers) and facts.swa_layers[il]
        cells = min(fill, window) if (is_swa and window and not opts.swa_full) else fill
        kv_b = cells * (row_bytes(typ, n_kv * hd) + row_bytes(typ, n_kv * hd_v))
        att = 4.0 * facts.n_heads * hd * cells
        if il >= i_gpu_start:
            gpu_b += s.layer_bytes[il] + kv_b
            gpu_bl += s.layer_bytes_large[il] + kv_b
            gpu_fg += s.layer_flops[il] + att
            gpu_fp += s.layer_flops[il] + att / 2  # a prompt attends to half its length
            gpu_att += att / 2
            gpu_ml += s.layer_flops_large[il]
        else:
            cpu_b += s.layer_bytes[il] + kv_b
            cpu_fg += s.layer_flops[il] + att
            cpu_fp += s.layer_flops[il] + att / 2
            cpu_w += s.layer_matrix_bytes[il]
    if ngl >= 1:
        gpu_b += s.output_bytes
        gpu_bl += s.output_bytes_large
        gpu_fg += s.output_flops
    else:
        cpu_b += s.output_bytes
        cpu_fg += s.output_flops
    return TokenWork(
        cpu_b,
        gpu_b,
        cpu_fg,
        gpu_fg,
        cpu_fp,
        gpu_fp,
        cpu_w,
        max(0, ngl - 1),
        gpu_att_flops_prompt=gpu_att,
        gpu_matrix_flops_large=gpu_ml,
        gpu_bytes_large=gpu_bl,
    )


@dataclass(frozen=True)
class _Eff:
    low: float
    mid: float
    high: float
    calibrated: bool


def _efficiency(
    profile: HardwareProfile, resource: Resource, store: CalibrationStore | None, use_store: bool
) -> _Eff:
    lo, mid, hi = DEFAULT_EFFICIENCY[resource]
    if use_store:
        try:
            cal = calibrated_efficiency(profile, resource, store)
        except OSError as exc:
            logger.warning("speed calibration unreadable: %s", exc)
            cal = None
        if cal:
            return _Eff(cal * (1 - CALIBRATED_SPREAD), cal, cal * (1 + CALIBRATED_SPREAD), True)
    return _Eff(lo, mid, hi, False)


def estimate_speed(
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    file_type: LlamaFileType | QuantType | None = None,
    plan: Sequence[PlannedTensor] | None = None,
    n_gpu_layers: int = 0,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    options: RuntimeOptions | None = None,
    store: CalibrationStore | None = None,
    use_calibration: bool = True,
) -> SpeedEstimate:
    """Tokens per second for ``facts`` in ``file_type`` on ``profile`` with llama.cpp.

    Generation: ``high`` at a short context (512 tokens) with the high efficiency,
    ``low`` with the cache filled to ``ctx`` and the low efficiency, ``typical``
    half way through the context. Prompt: a batch of ``n_ubatch`` tokens.
    """
    opts = options or RuntimeOptions()
    tensors = tuple(plan) if plan is not None else plan_tensors(facts, file_type)
    gpus = _gpus(profile)
    ngl = n_gpu_layers if gpus else 0
    if ngl < 0:
        ngl = facts.n_layers + 1
    n_ctx = padded_ctx(ctx or facts.context_length or 4096)
    notes: list[str] = []
    cpu_bw, note = cpu_bandwidth_gbps(profile)
    if note:
        notes.append(note)
    cpu_peak = cpu_gflops(profile) * 1e9
    gpu_bw = gpu_peak = 0.0
    if gpus and ngl > 0:
        # Several GPUs run their layers one after another: the sum of their
        # bandwidths is not reached; use the average device.
        bws = []
        peaks = []
        for g in gpus:
            bw, n1 = gpu_bandwidth_gbps(g)
            tf, n2 = gpu_tflops(g)
            bws.append(bw)
            peaks.append(tf)
            notes.extend(n for n in (n1, n2) if n)
        gpu_bw = statistics.mean(bws) * 1e9
        gpu_peak = statistics.mean(peaks) * 1e12
    e_cm = _efficiency(profile, Resource.CPU_MEMORY, store, use_calibration)
    e_cc = _efficiency(profile, Resource.CPU_COMPUTE, store, use_calibration)
    e_gm = _efficiency(profile, Resource.GPU_MEMORY, store, use_calibration)
    e_gc = _efficiency(profile, Resource.GPU_COMPUTE, store, use_calibration)
    calibrated = e_cm.calibrated if ngl == 0 else e_gm.calibrated
    large = bool(gpus) and ngl > 0 and all(large_gpu(g) for g in gpus)
    att_share = ATTENTION_SHARE[opts.flash_attn]

    def gen_time(fill: int, pick: str) -> tuple[float, Bound, float]:
        w = token_work(facts, tensors, n_gpu_layers=ngl, fill=fill, kv_type=kv_type, options=opts)
        parts: list[tuple[float, Bound]] = []
        if w.cpu_bytes or w.cpu_flops_gen:
            t_mem = w.cpu_bytes / (getattr(e_cm, pick) * cpu_bw * 1e9)
            t_cmp = w.cpu_flops_gen / (getattr(e_cc, pick) * cpu_peak * INT8_DOT_SPEEDUP)
            parts.append(
                (t_mem, Bound.RAM_BANDWIDTH) if t_mem >= t_cmp else (t_cmp, Bound.CPU_COMPUTE)
            )
        if ngl > 0 and gpu_bw:
            read = w.gpu_bytes_large if large else w.gpu_bytes
            t_mem = read / (getattr(e_gm, pick) * gpu_bw)
            t_cmp = w.gpu_flops_gen / (getattr(e_gc, pick) * gpu_peak)
            # Launches overlap the work of long kernels: a floor, not an addition (an
            # 8B F16 model on an H100 runs at its bandwidth alone).
            t_ovh = GPU_LAYER_OVERHEAD_S * (w.gpu_layers + 1)
            parts.append(
                max(
                    (t_mem, Bound.VRAM_BANDWIDTH),
                    (t_cmp, Bound.GPU_COMPUTE),
                    (t_ovh, Bound.GPU_OVERHEAD),
                )
            )
        total = sum(p[0] for p in parts)
        bound = max(parts, key=lambda p: p[0])[1] if parts else Bound.RAM_BANDWIDTH
        return total, bound, w.cpu_bytes + w.gpu_bytes

    short = min(512, n_ctx)
    t_high, _, _ = gen_time(short, "high")
    t_mid, bound, _ = gen_time(max(short, n_ctx // 2), "mid")
    t_low, _, bytes_full = gen_time(n_ctx, "low")

    def prompt_rate(pick: str) -> tuple[float, Bound]:
        fill = max(opts.n_ubatch, n_ctx // 2 if pick != "high" else opts.n_ubatch)
        w = token_work(facts, tensors, n_gpu_layers=ngl, fill=fill, kv_type=kv_type, options=opts)
        parts: list[tuple[float, Bound]] = []
        if ngl > 0 and gpu_peak:
            rate = getattr(e_gc, pick) * gpu_peak * gpu_width_share(facts.embedding_length)
            att = w.gpu_att_flops_prompt
            matrix = w.gpu_matrix_flops_large if large else w.gpu_flops_prompt - att
            t_gpu = matrix / rate + att / (rate * att_share)
            if w.cpu_flops_prompt:
                if profile.apple is None:
                    # Large batches run on the GPU; the CPU layers' weights cross PCIe.
                    t_pcie = w.cpu_weight_bytes / (PCIE_GBPS * 1e9) / opts.n_ubatch
                    t_cpu_on_gpu = w.cpu_flops_prompt / (getattr(e_gc, pick) * gpu_peak)
                    parts.append((max(t_pcie, t_cpu_on_gpu), Bound.PCIE))
                else:
                    parts.append(
                        (w.cpu_flops_prompt / (getattr(e_cc, pick) * cpu_peak), Bound.CPU_COMPUTE)
                    )
            parts.append((t_gpu, Bound.GPU_COMPUTE))
            batch = max(1, min(opts.n_ubatch, n_ctx))
            launch = GPU_UBATCH_LAYER_OVERHEAD_S * (w.gpu_layers + 1) / batch
            launch *= _LAUNCH_SPREAD[pick]
            parts.append((launch, Bound.GPU_OVERHEAD))
        else:
            parts.append((w.cpu_flops_prompt / (getattr(e_cc, pick) * cpu_peak), Bound.CPU_COMPUTE))
        total = sum(p[0] for p in parts)
        return (1.0 / total if total > 0 else 0.0), max(parts, key=lambda p: p[0])[1]

    p_low, _ = prompt_rate("low")
    p_mid, p_bound = prompt_rate("mid")
    p_high, _ = prompt_rate("high")
    if (
        ngl > 0
        and profile.apple is None
        and not profile.runtime.supports_gpu_offload
        and (profile.runtime.llama_cpp_version)
    ):
        notes.append(
            "the installed llama.cpp runtime has no GPU offload; these GPU speeds need a "
            "CUDA build of llama-cpp-python"
        )
    return SpeedEstimate(
        generation_low=1.0 / t_low,
        generation=1.0 / t_mid,
        generation_high=1.0 / t_high,
        prompt_low=p_low,
        prompt=p_mid,
        prompt_high=p_high,
        bytes_per_token=int(bytes_full),
        generation_bound=bound,
        prompt_bound=p_bound,
        calibrated=calibrated,
        notes=tuple(notes),
    )


def estimate_serving_speed(
    *,
    weight_bytes: float,
    active_fraction: float,
    flops_per_token: float,
    kv_bytes_at_ctx: float,
    n_layers: int,
    profile: HardwareProfile,
) -> SpeedEstimate:
    """Single-stream speed of a GPU serving engine (vLLM & co.) with the whole model on GPU.

    Generation reads the active weights and the KV cache once per token at the
    GPU's bandwidth; prompts are compute-bound at the GPU's tensor throughput.
    Batched serving reaches far more tokens per second in total; this is what
    one conversation sees.
    """
    gpus = _gpus(profile)
    if not gpus:
        raise QuantError(
            "serving formats need an NVIDIA GPU, and the hardware profile has none; "
            "plan GGUF types for this machine instead"
        )
    bw, n1 = gpu_bandwidth_gbps(gpus[0])
    tf, n2 = gpu_tflops(gpus[0])
    notes = [n for n in (n1, n2) if n]
    tp = len(gpus)
    lo, mid, hi = DEFAULT_EFFICIENCY[Resource.GPU_MEMORY]
    clo, cmid, chi = DEFAULT_EFFICIENCY[Resource.GPU_COMPUTE]
    read_short = weight_bytes * active_fraction
    read_full = read_short + kv_bytes_at_ctx
    total_bw = bw * 1e9 * tp
    ovh = GPU_LAYER_OVERHEAD_S * 0.5 * n_layers  # CUDA graphs halve launch costs

    def gen(nbytes: float, eff: float) -> float:
        return 1.0 / (nbytes / (eff * total_bw) + ovh)

    # Serving engines run 16-bit matrices through cuBLAS too: on a large GPU at least the
    # share llama.cpp's 16-bit path was measured at.
    peak = tf * 1e12 * tp * (_type_shares(GGMLType.BF16)[0] if large_gpu(gpus[0]) else 1.0)
    return SpeedEstimate(
        generation_low=gen(read_full, lo),
        generation=gen(read_short + kv_bytes_at_ctx / 2, mid),
        generation_high=gen(read_short, hi),
        prompt_low=clo * peak / flops_per_token,
        prompt=cmid * peak / flops_per_token,
        prompt_high=chi * peak / flops_per_token,
        bytes_per_token=int(read_full),
        generation_bound=Bound.VRAM_BANDWIDTH,
        prompt_bound=Bound.GPU_COMPUTE,
        calibrated=False,
        notes=tuple(notes),
    )


def generation_bytes_per_token(
    facts: ModelFacts,
    plan: Sequence[PlannedTensor],
    *,
    fill: int,
    kv_type: KvType = KvType.F16,
    options: RuntimeOptions | None = None,
) -> float:
    """Bytes one generated token reads on a CPU-only run (for calibration)."""
    w = token_work(facts, plan, n_gpu_layers=0, fill=fill, kv_type=kv_type, options=options)
    return w.cpu_bytes


def prompt_flops_per_token(
    facts: ModelFacts,
    plan: Sequence[PlannedTensor],
    *,
    fill: int,
    kv_type: KvType = KvType.F16,
    options: RuntimeOptions | None = None,
) -> float:
    """FLOPs per prompt token on a CPU-only run (for calibration)."""
    w = token_work(facts, plan, n_gpu_layers=0, fill=fill, kv_type=kv_type, options=options)
    return w.cpu_flops_prompt


def record_generation(
    profile: HardwareProfile,
    facts: ModelFacts,
    *,
    tokens_per_second: float,
    fill: int,
    n_gpu_layers: int = 0,
    kv_type: KvType = KvType.F16,
    plan: Sequence[PlannedTensor] | None = None,
    store: CalibrationStore | None = None,
) -> float | None:
    """Calibrate from a measured generation rate (CPU-only or fully offloaded runs).

    Returns the efficiency stored, or None for a partly offloaded run, whose time
    cannot be divided between the two memories.
    """
    tensors = tuple(plan) if plan is not None else plan_tensors(facts)
    if 0 < n_gpu_layers <= facts.n_layers:
        logger.info("not calibrating from a partly offloaded run")
        return None
    ngl = facts.n_layers + 1 if n_gpu_layers != 0 else 0
    w = token_work(facts, tensors, n_gpu_layers=ngl, fill=fill, kv_type=kv_type)
    resource = Resource.GPU_MEMORY if ngl else Resource.CPU_MEMORY
    work = w.gpu_bytes if ngl else w.cpu_bytes
    return record_measurement(
        profile,
        resource=resource,
        tokens_per_second=tokens_per_second,
        work_per_token=work,
        store=store,
        detail=f"{facts.name} generation at {fill} tokens",
    )
