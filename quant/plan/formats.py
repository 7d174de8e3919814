"""The format table: every llama.cpp file type and the NVIDIA serving formats.

For each format: bits per weight (nominal and whole-file effective), whether an
importance matrix is required or advised, the hardware it needs, and a quality
prior (mean KL divergence, perplexity increase, same-top-token rate) measured on
the reference model, Llama-3-8B. :func:`predict_quality` scales the prior to a
given model (see "Scaling the quality prior" below).

Sources (summarised with their numbers in ``docs/advice-rules.md#quant-types``):

- effective bpw: llama.cpp ``tools/quantize/README.md`` (whole-file bits per
  weight of Llama-3.1-8B);
- ΔPPL, mean KLD with and without imatrix, same top token: llama.cpp
  ``tools/perplexity/README.md`` scoreboard (PR #6936), Llama-3-8B vs FP16;
- imatrix gains at each bit width: llama.cpp PR #4930 (Mistral-7B);
- GPU formats and their compute capability: the vendors' kernel requirements
  (FP8 tensor cores from Ada/Hopper, INT8 tensor cores from Turing, FP4 from
  Blackwell), see ``docs/advice-rules.md#gpu-formats``.

Scaling the quality prior
-------------------------
The scoreboard measures one model. Two effects move the loss of another model:

1. *Size.* Quantization error is absorbed by redundancy: 70B models lose about a
   third of what 8B models lose at 4 bits, and 1B models several times more
   (``docs/advice-rules.md#rule-7``; published int4 results give 2–3 vs 4–8 perplexity points for
   70B vs 7B at int4, a ratio of 0.3–0.6). We use
   ``size_factor = (8e9 / params) ** 0.4``, bounded to [0.35, 4]: 70B → 0.42,
   32B → 0.57, 1B → 2.3, 270M → 3.9. The exponent sits in the middle of the
   0.3–0.5 range those ratios imply; the bounds stop an extrapolation from
   promising a 400B model a free lunch, or calling a 100M model hopeless.
   For a mixture of experts the size is the geometric mean of the active and the
   total parameters: each token runs through a small active network, while the
   redundancy of all the experts still absorbs part of the error.
2. *Training density.* Models trained on more tokens per parameter use their
   weights more fully and lose more: Q4_K_M gives mean KLD 0.0313 on Llama-3-8B
   (15T tokens, ~1900 tokens/param) against 0.0127 on Llama-2-7B (2T tokens,
   ~290 tokens/param). KLD ∝ density ** β fits β = ln(0.0313/0.0127) /
   ln(1875/286) ≈ 0.48. ``density_factor = (tokens_per_param / 1875) ** 0.48``,
   bounded to [0.4, 2]; 1 (Llama-3-like) when the training size is unknown,
   which is the cautious default for today's models.

A prior is a range, not a point: the size exponent is only known to lie in
0.3–0.5 (``SIZE_EXPONENT_RANGE``), and without the training size the density
factor lies between Llama-2's 0.41 and Llama-3's 1 (the low end scales the
point by ``LOW_DENSITY_FACTOR``). The point, used for ranking, is the exponent
0.4 and density 1 (the cautious end for today's models). A measurement of the
model replaces the prior (:mod:`quant.plan.quality`).

The perplexity increase is scaled by the same factor (it tracks KLD closely at
these magnitudes). The same-top-token rate is derived from the scaled KLD with a
power law fitted to the scoreboard's four published pairs (Q8_0, Q6_K, Q4_K_M,
Q2_K): ``1 - same_top ≈ 0.415 · KLD ** 0.44`` (within 1.2 points of each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from quant.gguf.types import LlamaFileType

# Parameters and training density of the reference model (Llama-3-8B, 15T tokens).
REFERENCE_PARAMETERS = 8.0e9
REFERENCE_TOKENS_PER_PARAM = 15e12 / 8.0e9
SIZE_EXPONENT = 0.4
# The exponent's plausible range (rule 7: 70B loses 0.3–0.6 of what 7B loses).
SIZE_EXPONENT_RANGE = (0.3, 0.5)
SIZE_FACTOR_BOUNDS = (0.35, 4.0)
DENSITY_EXPONENT = 0.48
DENSITY_FACTOR_BOUNDS = (0.4, 2.0)
# A model of unknown training size may be trained as sparsely as Llama-2-7B (286 tokens per
# parameter): 0.0127 / 0.0313 of Llama-3-8B's loss at Q4_K_M.
LOW_DENSITY_FACTOR = 0.0127 / 0.0313
# 1 - same_top_token ≈ A · KLD ** B, fitted to the scoreboard (see module docstring).
_TOP1_A = 0.415
_TOP1_B = 0.44


class FormatFamily(StrEnum):
    """Where a format runs: llama.cpp (GGUF) or an NVIDIA serving engine."""

    GGUF = "gguf"
    GPU = "gpu"


class Provenance(StrEnum):
    """Where a quality number comes from, most to least trustworthy."""

    MEASURED = "measured"  # this file, or this type made from this model, was measured
    CALIBRATED = "calibrated"  # the prior fitted to measurements of this model or its family
    PRIOR = "prior"  # published scoreboards scaled to the model: a range

    @property
    def label(self) -> str:
        return {
            Provenance.MEASURED: "measured",
            Provenance.CALIBRATED: "calibrated",
            Provenance.PRIOR: "prior",
        }[self]


class ImatrixNeed(StrEnum):
    """How much a format depends on an importance matrix."""

    NOT_USED = "not-used"  # float formats and Q8_0: nothing to weight
    OPTIONAL = "optional"  # a small gain (≥ 4.5 bpw k-quants)
    ADVISED = "advised"  # a large gain below ~4.5 bpw (PR #4930)
    REQUIRED = "required"  # llama.cpp refuses to quantize without one


class QuantType(StrEnum):
    """A llama.cpp file type the advisor plans with (names as the quantize tool uses)."""

    F32 = "F32"
    BF16 = "BF16"
    F16 = "F16"
    Q8_0 = "Q8_0"
    Q6_K = "Q6_K"
    Q5_K_M = "Q5_K_M"
    Q5_K_S = "Q5_K_S"
    Q4_K_M = "Q4_K_M"
    Q4_K_S = "Q4_K_S"
    Q4_0 = "Q4_0"
    IQ4_NL = "IQ4_NL"
    IQ4_XS = "IQ4_XS"
    Q3_K_L = "Q3_K_L"
    Q3_K_M = "Q3_K_M"
    IQ3_M = "IQ3_M"
    Q3_K_S = "Q3_K_S"
    IQ3_XXS = "IQ3_XXS"
    Q2_K = "Q2_K"
    IQ2_M = "IQ2_M"
    IQ2_XS = "IQ2_XS"
    IQ2_XXS = "IQ2_XXS"
    IQ1_M = "IQ1_M"
    IQ1_S = "IQ1_S"

    @property
    def file_type(self) -> LlamaFileType:
        """The ``llama_ftype`` this type is written as."""
        return LlamaFileType[self.value]

    @property
    def spec(self) -> FormatSpec:
        return GGUF_FORMATS[self]

    @classmethod
    def from_name(cls, name: str) -> QuantType:
        """The type named ``name`` ("q4_k_m", "fp16"); ``ValueError`` when there is none."""
        key = name.strip().upper().replace("-", "_")
        key = {"FP16": "F16", "FP32": "F32"}.get(key, key)
        try:
            return cls(key)
        except ValueError:
            raise ValueError(
                f"unknown GGUF type {name!r} (expected one of {', '.join(m.value for m in cls)})"
            ) from None


class GpuFormat(StrEnum):
    """Weight formats of the NVIDIA serving engines (vLLM, SGLang, TensorRT-LLM)."""

    BF16 = "BF16"
    FP8 = "FP8"
    INT8 = "INT8"
    AWQ = "AWQ"
    GPTQ = "GPTQ"
    NVFP4 = "NVFP4"

    @property
    def spec(self) -> FormatSpec:
        return GPU_FORMATS[self]


@dataclass(frozen=True)
class QualityPrior:
    """Loss against the 16-bit model, measured on the reference model (Llama-3-8B).

    ``None`` where the format cannot be made that way (an IQ2 type without an
    imatrix) — never a guess presented as a measurement; estimated values say so
    in ``source``.
    """

    kld: float | None
    kld_imatrix: float | None
    delta_ppl: float | None
    delta_ppl_imatrix: float | None
    same_top_token: float | None
    source: str


@dataclass(frozen=True)
class FormatSpec:
    """One row of the format table."""

    key: str
    family: FormatFamily
    label: str
    # The precision class the advice rules speak in (16, 8, 6, 5, 4, 3, 2, 1).
    precision_bits: int
    nominal_bpw: float
    effective_bpw: float
    imatrix: ImatrixNeed
    quality: QualityPrior
    # NVIDIA compute capability the format needs; None for GGUF (runs everywhere).
    min_compute_capability: tuple[int, int] | None = None
    weight_bits: int = 16
    activation_bits: int = 16
    runtimes: tuple[str, ...] = ("llama.cpp",)
    description: str = ""

    @property
    def needs_imatrix(self) -> bool:
        return self.imatrix is ImatrixNeed.REQUIRED

    def supported_on(self, compute_capability: tuple[int, int] | None) -> bool:
        """Whether a GPU of ``compute_capability`` can run this format."""
        if self.min_compute_capability is None:
            return True
        if compute_capability is None:
            return False
        return compute_capability >= self.min_compute_capability

    def to_dict(self) -> dict[str, Any]:
        q = self.quality
        return {
            "key": self.key,
            "family": self.family.value,
            "label": self.label,
            "precision_bits": self.precision_bits,
            "nominal_bpw": self.nominal_bpw,
            "effective_bpw": self.effective_bpw,
            "imatrix": self.imatrix.value,
            "min_compute_capability": (
                f"{self.min_compute_capability[0]}.{self.min_compute_capability[1]}"
                if self.min_compute_capability
                else None
            ),
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "runtimes": list(self.runtimes),
            "description": self.description,
            "quality_prior": {
                "kld": q.kld,
                "kld_imatrix": q.kld_imatrix,
                "delta_ppl": q.delta_ppl,
                "delta_ppl_imatrix": q.delta_ppl_imatrix,
                "same_top_token": q.same_top_token,
                "source": q.source,
            },
        }


_SCOREBOARD = "llama.cpp tools/perplexity/README.md scoreboard (PR #6936), Llama-3-8B"
_EST = "estimated: "
# Where a derived number comes from, appended to the scoreboard citation.
_DERIVED = {
    "": "",
    "im0.83": "; imatrix values " + _EST + "PR #4930 gain 0.18%→0.15% (0.83×)",
    "im0.9": "; imatrix values " + _EST + "0.9× KLD (PR #4930 gains at 5–6 bits)",
    "im0.85": "; imatrix values " + _EST + "0.85× KLD (PR #4930 gains at 4 bits)",
    "no1.15": "; values without imatrix " + _EST + "1.15× KLD",
    "no1.2": "; values without imatrix " + _EST + "1.2× KLD",
}

_N, _O, _A, _R = (
    ImatrixNeed.NOT_USED,
    ImatrixNeed.OPTIONAL,
    ImatrixNeed.ADVISED,
    ImatrixNeed.REQUIRED,
)

_GgufRow = tuple[
    QuantType, int, float, float, ImatrixNeed,
    float | None, float | None, float | None, float | None, float | None, str,
]  # fmt: skip

# Effective bpw: llama.cpp tools/quantize/README.md (Llama-3.1-8B, whole file; the
# bundled README gives 3.996 for Q3_K_M where docs/advice-rules.md rounds to ≈3.9). Q4_0 is not
# listed there; 4.64 is what this project's type-mix planner (quant.plan.memory) gives for
# Llama-3.1-8B without an imatrix (Q4_0 body, Q6_K output).
# KLD / ΔPPL / top-1: the scoreboard; where it gives only one of the with/without
# imatrix pair, the other is derived from the imatrix gain at that bit width
# (PR #4930) and the source says "estimated".
# Columns: type, precision class, nominal bpw, effective bpw, imatrix need,
# KLD, KLD with imatrix, ΔPPL, ΔPPL with imatrix, same top token, derivation.
_GGUF_ROWS: tuple[_GgufRow, ...] = (
    (QuantType.F32, 32, 32.0, 32.0, _N, 0.0, 0.0, 0.0, 0.0, 1.0, ""),
    (QuantType.BF16, 16, 16.0, 16.0, _N, 0.0, 0.0, 0.0, 0.0, 1.0, ""),
    (QuantType.F16, 16, 16.0, 16.0, _N, 0.0, 0.0, 0.0, 0.0, 1.0, ""),
    (QuantType.Q8_0, 8, 8.5, 8.50, _N, 0.0014, 0.0014, 0.003, 0.003, 0.977, ""),
    (QuantType.Q6_K, 6, 6.5625, 6.56, _O, 0.0055, 0.0046, 0.022, 0.018, 0.960, "im0.83"),
    (QuantType.Q5_K_M, 5, 5.5, 5.70, _O, 0.0108, 0.0097, 0.057, 0.051, None, "im0.9"),
    (QuantType.Q5_K_S, 5, 5.5, 5.57, _O, 0.0166, 0.0149, 0.105, 0.094, None, "im0.9"),
    (QuantType.Q4_K_M, 4, 4.5, 4.89, _O, 0.0313, 0.0282, 0.175, 0.158, 0.919, ""),
    (QuantType.Q4_K_S, 4, 4.5, 4.67, _O, 0.0431, 0.0320, 0.269, 0.200, None, ""),
    (QuantType.Q4_0, 4, 4.5, 4.64, _A, 0.0719, 0.0611, 0.469, 0.399, None, "im0.85"),
    (QuantType.IQ4_NL, 4, 4.5, 4.68, _A, 0.0411, 0.0357, 0.258, 0.224, None, "no1.15"),
    (QuantType.IQ4_XS, 4, 4.25, 4.46, _A, 0.0417, 0.0363, 0.262, 0.228, None, "no1.15"),
    (QuantType.Q3_K_L, 3, 3.4375, 4.30, _A, 0.0872, 0.0731, 0.556, 0.466, None, ""),
    (QuantType.Q3_K_M, 3, 3.4375, 4.00, _A, 0.1019, 0.0844, 0.657, 0.544, None, ""),
    (QuantType.IQ3_M, 3, 3.66, 3.76, _A, 0.1230, 0.1025, 0.800, 0.667, None, "no1.2"),
    (QuantType.Q3_K_S, 3, 3.4375, 3.64, _A, 0.2282, 0.1998, 1.632, 1.429, None, ""),
    (QuantType.IQ3_XXS, 3, 3.06, 3.25, _R, None, 0.1836, None, 1.227, None, ""),
    (QuantType.Q2_K, 2, 2.625, 3.16, _A, 0.4451, 0.3322, 3.52, 2.63, 0.711, ""),
    (QuantType.IQ2_M, 2, 2.7, 2.93, _R, None, 0.3260, None, 2.37, None, ""),
    (QuantType.IQ2_XS, 2, 2.31, 2.59, _R, None, 0.5463, None, 4.53, None, ""),
    (QuantType.IQ2_XXS, 2, 2.06, 2.38, _R, None, 0.8120, None, 7.86, None, ""),
    (QuantType.IQ1_M, 1, 1.75, 2.15, _R, None, 1.393, None, 19.3, None, ""),
    (QuantType.IQ1_S, 1, 1.5625, 2.00, _R, None, 2.21, None, 52.0, None, ""),
)


def _gguf_spec(row: _GgufRow) -> FormatSpec:
    t, bits, nominal, effective, need, kld, kld_im, dppl, dppl_im, top1, derived = row
    source = "reference" if bits >= 16 else _SCOREBOARD + _DERIVED[derived]
    return FormatSpec(
        key=f"gguf:{t.value}",
        family=FormatFamily.GGUF,
        label=t.value,
        precision_bits=bits,
        nominal_bpw=nominal,
        effective_bpw=effective,
        imatrix=need,
        quality=QualityPrior(kld, kld_im, dppl, dppl_im, top1, source),
        weight_bits=bits,
        activation_bits=32 if bits >= 32 else 16,
    )


GGUF_FORMATS: dict[QuantType, FormatSpec] = {row[0]: _gguf_spec(row) for row in _GGUF_ROWS}

_GpuRow = tuple[GpuFormat, str, int, float, int, tuple[int, int], float, float, str, str]

# GPU formats: no KLD scoreboard exists for them. Their priors are placed against
# the llama.cpp types of similar precision, from the qualitative facts in
# docs/advice-rules.md#gpu-formats ("near-lossless" for FP8/INT8; "~1% MMLU loss on 70B" for AWQ and
# "1–3%" for GPTQ), and every source string says "estimated".
# Effective bpw: group-128 INT4 stores a 16-bit scale and a 4-bit zero point per
# 128 weights (4 + 20/128 ≈ 4.16); NVFP4 one 8-bit scale per 16 weights (4.5).
# Columns: format, label, precision class, bpw, activation bits, compute capability,
# KLD, ΔPPL, source, description.
_GPU_ROWS: tuple[_GpuRow, ...] = (
    (
        GpuFormat.BF16, "BF16/FP16", 16, 16.0, 16, (7, 0), 0.0, 0.0, "reference",
        "16-bit weights; BF16 needs compute capability 8.0, older cards run FP16",
    ),
    (
        GpuFormat.FP8, "FP8 W8A8", 8, 8.0, 8, (8, 9), 0.0020, 0.005,
        _EST + "near-lossless, placed just above Q8_0",
        "FP8 (E4M3) weights and activations on Ada, Hopper and Blackwell tensor cores",
    ),
    (
        GpuFormat.INT8, "INT8 W8A8", 8, 8.0, 8, (7, 5), 0.0030, 0.008,
        _EST + "near-lossless for most tasks (SmoothQuant)",
        "INT8 weights and activations (SmoothQuant) on INT8 tensor cores",
    ),
    (
        GpuFormat.AWQ, "AWQ INT4", 4, 4.16, 16, (7, 5), 0.0282, 0.158,
        _EST + "~1% MMLU loss on 70B; placed at Q4_K_M with imatrix",
        "activation-aware 4-bit weights, group size 128; robust out of domain",
    ),
    (
        GpuFormat.GPTQ, "GPTQ INT4", 4, 4.16, 16, (7, 5), 0.0431, 0.269,
        _EST + "1–3% MMLU loss; placed at Q4_K_S without imatrix",
        "Hessian-based 4-bit weights, group size 128; the widest existing zoo",
    ),
    (
        GpuFormat.NVFP4, "NVFP4", 4, 4.5, 4, (10, 0), 0.0320, 0.200,
        _EST + "placed between AWQ and GPTQ",
        "4-bit floating-point weights and activations on Blackwell",
    ),
)  # fmt: skip


def _gpu_spec(row: _GpuRow) -> FormatSpec:
    f, label, bits, bpw, acts, cc, kld, dppl, source, description = row
    return FormatSpec(
        key=f"gpu:{f.value}",
        family=FormatFamily.GPU,
        label=label,
        precision_bits=bits,
        nominal_bpw=bpw,
        effective_bpw=bpw,
        # Calibrated formats (AWQ, GPTQ, SmoothQuant) carry their calibration inside.
        imatrix=ImatrixNeed.NOT_USED,
        quality=QualityPrior(kld, kld, dppl, dppl, None, source),
        min_compute_capability=cc,
        weight_bits=bits,
        activation_bits=acts,
        runtimes=("vLLM", "SGLang", "TensorRT-LLM"),
        description=description,
    )


GPU_FORMATS: dict[GpuFormat, FormatSpec] = {row[0]: _gpu_spec(row) for row in _GPU_ROWS}


def format_table() -> list[FormatSpec]:
    """Every format, GGUF types from the most to the least precise, then GPU formats."""
    return [*GGUF_FORMATS.values(), *GPU_FORMATS.values()]


@dataclass(frozen=True)
class QualityEstimate:
    """A format's loss on one model (mean KLD against the original weights), with where the
    number comes from.

    ``kld`` is the point the advisor ranks with; ``kld_low``–``kld_high`` the range
    to show (equal to the point for a measured or calibrated value). For a file made
    from an already-quantized file, ``inherited_kld`` is the part of ``kld`` that
    file brings along and ``added_kld`` the part the new type adds on top (what a
    measurement against the file's F16 expansion sees).
    """

    kld: float | None
    delta_ppl: float | None
    same_top_token: float | None
    imatrix: bool
    size_factor: float
    density_factor: float
    # One sentence on how the number was obtained.
    basis: str
    provenance: Provenance = Provenance.PRIOR
    kld_low: float | None = None
    kld_high: float | None = None
    inherited_kld: float | None = None
    added_kld: float | None = None
    added_provenance: Provenance | None = None

    @property
    def low(self) -> float | None:
        return self.kld_low if self.kld_low is not None else self.kld

    @property
    def high(self) -> float | None:
        return self.kld_high if self.kld_high is not None else self.kld

    @property
    def is_range(self) -> bool:
        lo, hi = self.low, self.high
        return lo is not None and hi is not None and hi > lo * 1.05

    def to_dict(self) -> dict[str, Any]:
        return {
            "kld": _round(self.kld, 5),
            "kld_low": _round(self.low, 5),
            "kld_high": _round(self.high, 5),
            "provenance": self.provenance.value,
            "delta_ppl": _round(self.delta_ppl, 4),
            "same_top_token": _round(self.same_top_token, 4),
            "imatrix": self.imatrix,
            "size_factor": round(self.size_factor, 3),
            "density_factor": round(self.density_factor, 3),
            "inherited_kld": _round(self.inherited_kld, 5),
            "added_kld": _round(self.added_kld, 5),
            "added_provenance": self.added_provenance.value if self.added_provenance else None,
            "basis": self.basis,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def size_factor(parameters: int, active_parameters: int | None = None) -> float:
    """How much more (> 1) or less (< 1) a model of this size loses than an 8B one."""
    params = float(max(parameters, 1))
    if active_parameters and 0 < active_parameters < parameters:
        params = math.sqrt(float(active_parameters) * params)
    lo, hi = SIZE_FACTOR_BOUNDS
    return float(min(hi, max(lo, (REFERENCE_PARAMETERS / params) ** SIZE_EXPONENT)))


def size_factor_range(parameters: int, active_parameters: int | None = None) -> tuple[float, float]:
    """The size factor at both ends of ``SIZE_EXPONENT_RANGE`` (low, high), bounded."""
    params = float(max(parameters, 1))
    if active_parameters and 0 < active_parameters < parameters:
        params = math.sqrt(float(active_parameters) * params)
    lo, hi = SIZE_FACTOR_BOUNDS
    ends = [min(hi, max(lo, (REFERENCE_PARAMETERS / params) ** e)) for e in SIZE_EXPONENT_RANGE]
    return float(min(ends)), float(max(ends))


def density_factor(parameters: int, training_tokens: float | None) -> float:
    """How much more a model loses for being trained on more tokens per parameter."""
    if not training_tokens or parameters <= 0:
        return 1.0
    lo, hi = DENSITY_FACTOR_BOUNDS
    ratio = (training_tokens / parameters) / REFERENCE_TOKENS_PER_PARAM
    return float(min(hi, max(lo, ratio**DENSITY_EXPONENT)))


def same_top_token_from_kld(kld: float) -> float:
    """The share of tokens whose most likely next token is unchanged, from mean KLD."""
    if kld <= 0:
        return 1.0
    return float(max(0.0, 1.0 - min(1.0, _TOP1_A * kld**_TOP1_B)))


def predict_quality(
    spec: FormatSpec,
    *,
    parameters: int,
    active_parameters: int | None = None,
    imatrix: bool = True,
    training_tokens: float | None = None,
) -> QualityEstimate:
    """The loss ``spec`` is expected to cause on a model of this size and training.

    ``imatrix`` says whether the file is (or will be) made with an importance
    matrix; for a format that requires one, ``imatrix=False`` gives ``None``
    values (llama.cpp refuses to make it).
    """
    q = spec.quality
    s = size_factor(parameters, active_parameters)
    d = density_factor(parameters, training_tokens)
    use_im = imatrix and spec.imatrix is not ImatrixNeed.NOT_USED
    kld = q.kld_imatrix if use_im else q.kld
    dppl = q.delta_ppl_imatrix if use_im else q.delta_ppl
    if kld is None:
        return QualityEstimate(
            None,
            None,
            None,
            use_im,
            s,
            d,
            f"{spec.label} cannot be made without an importance matrix",
        )
    factor = s * d
    scaled = kld * factor
    scaled_ppl = dppl * factor if dppl is not None else None
    s_lo, s_hi = size_factor_range(parameters, active_parameters)
    d_lo = d if training_tokens else LOW_DENSITY_FACTOR
    low = kld * min(s, s_lo) * min(d, d_lo)
    high = kld * max(s, s_hi) * d
    parts = [f"Llama-3-8B measurement × {s:.2f} for size"]
    if d != 1.0:
        parts.append(f"× {d:.2f} for training density")
    return QualityEstimate(
        kld=scaled,
        delta_ppl=scaled_ppl,
        same_top_token=same_top_token_from_kld(scaled),
        imatrix=use_im,
        size_factor=s,
        density_factor=d,
        basis=" ".join(parts) + ("" if not use_im else " (with imatrix)"),
        provenance=Provenance.PRIOR,
        kld_low=low,
        kld_high=high,
    )


def scoreboard_kld(spec: FormatSpec, *, imatrix: bool = True) -> float | None:
    """The reference model's measured (or derived) KLD for ``spec``, unscaled."""
    q = spec.quality
    use_im = imatrix and spec.imatrix is not ImatrixNeed.NOT_USED
    return q.kld_imatrix if use_im else q.kld


def spec_for_key(key: str) -> FormatSpec:
    """The table row named ``key`` ("gguf:Q4_K_M", "gpu:AWQ", or a bare GGUF name)."""
    family, _, name = key.partition(":")
    if not name:
        return QuantType.from_name(family).spec
    if family == FormatFamily.GPU.value:
        try:
            return GpuFormat(name.upper()).spec
        except ValueError:
            raise ValueError(f"unknown GPU format {name!r}") from None
    return QuantType.from_name(name).spec


def quant_type_for_file_type(file_type: LlamaFileType) -> QuantType | None:
    """The table's type for a llama.cpp file type; None for types outside the table."""
    try:
        return QuantType(file_type.name)
    except ValueError:
        return None
