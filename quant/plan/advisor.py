"""The format advisor: which file to run on this machine, for this task, and why.

:func:`recommend` lists every candidate — llama.cpp types planned from the
model, the GGUF files a hub repo already has, the file itself for a GGUF, and
NVIDIA serving formats on NVIDIA machines — with the memory each takes where,
its predicted speed and quality loss, whether and how it fits, and ranks them
by the rules in ``docs/advice-rules.md``:

1. Highest precision that fits, with room for the KV cache at the asked context
   (rule 1). A full GPU fit beats a partial offload when both are fast enough.
2. Each task has a minimum and a preferred precision (rules 6, 7, 9, 11): code,
   math and long context prefer ≥ 8 bits; small models need more bits; a mixture
   of experts prefers 8 bits for important work; below 4 bits only when nothing
   else fits, and only with an importance matrix (rule 5).
3. Speed: an option below the task's reading speed ranks after those above it;
   when nothing is fast enough, the fastest acceptable option leads (rule 1:
   "drop precision … to gain needed speed").
4. Format preferences: FP8 on compute capability ≥ 8.9 for code, math and long
   context (rule 3); AWQ over GPTQ, and no GPTQ for code or math (rules 4, 6, 9);
   GGUF on CPUs and Apple Silicon, where serving formats do not run (rule 5).
5. The KV cache is a separate dial (rule 10): the reasons say when an 8-bit
   cache would help, and "what would fit" tries it.
6. Two lanes on datacenter NVIDIA GPUs (rule 14): an option runs *here*
   (llama.cpp in Quantdesk's chat) or in *a serving engine* (vLLM, SGLang). On
   a datacenter GPU the serving lane leads among options equally fast and
   precise enough, and FP8 counts as the quality ceiling for code, math and
   long context on compute capability ≥ 8.9 (rule 3); the best option that
   runs here is always named next to it (:attr:`Recommendation.best_here`).
   Consumer and laptop GPUs, CPUs and Apple Silicon keep GGUF first.

Quality numbers say where they come from (measured, calibrated, prior:
:mod:`quant.plan.quality`); measurements of the model, when given
(``quality=``), replace the prior.

Every value object has ``to_dict()``; the CLI's ``--json`` and the GUI show the
same object.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from quant.facts.model import ModelFacts, RemoteFile, SourceKind, TensorInfo
from quant.gguf.types import GGMLType, LlamaFileType, file_type_from_filename
from quant.hardware.profile import HardwareProfile
from quant.plan.formats import (
    FormatFamily,
    FormatSpec,
    GpuFormat,
    ImatrixNeed,
    Provenance,
    QualityEstimate,
    QuantType,
    quant_type_for_file_type,
)
from quant.plan.memory import (
    CUDA_CONTEXT_BYTES,
    GIB,
    KvType,
    MemoryEstimate,
    Placement,
    PlannedTensor,
    RuntimeOptions,
    compute_buffer_bytes,
    estimate_memory,
    fits_memory,
    gpu_budgets,
    kv_cache,
    longest_context,
    max_gpu_layers,
    padded_ctx,
    plan_tensors,
    source_tensors,
    tensor_bytes,
)
from quant.plan.quality import (
    Calibration,
    QualityEvidence,
    QualityMeasurement,
    added_loss,
    calibration,
    find_measurement,
    from_original,
    inherit,
    model_key,
    quality_sentence,
)
from quant.plan.speed import CalibrationStore, SpeedEstimate, estimate_serving_speed, estimate_speed
from quant.progress import CancelToken, ProgressCallback, check_cancel
from quant.units import format_params, format_rate, human_bytes

logger = logging.getLogger(__name__)


class Task(StrEnum):
    """What the user wants the model for, most to least precision-sensitive."""

    MATH = "math"
    CODE = "code"
    LONG_CONTEXT = "long-context"
    CHAT = "chat"
    RETRIEVAL = "retrieval"
    CREATIVE = "creative"

    @property
    def sensitive(self) -> bool:
        """Multi-step reasoning, code and long documents (docs/advice-rules.md#rule-6)."""
        return self in (Task.MATH, Task.CODE, Task.LONG_CONTEXT)

    @property
    def default_ctx(self) -> int:
        return {Task.LONG_CONTEXT: 32768, Task.RETRIEVAL: 16384}.get(self, 4096)

    @property
    def speed_floor(self) -> float:
        """Generation tokens/s below which the task feels slow.

        People read about 5–8 tokens per second; chat and creative writing are
        read as they stream, while code, math and documents are read after.
        """
        return {Task.CHAT: 8.0, Task.CREATIVE: 8.0, Task.CODE: 6.0}.get(self, 5.0)


class Fit(StrEnum):
    """The fit badge of one option."""

    GPU = "gpu"
    PARTIAL = "partial"
    CPU = "cpu"
    TOO_LARGE = "too-large"

    @property
    def label(self) -> str:
        return {
            Fit.GPU: "fits on GPU",
            Fit.PARTIAL: "partial offload",
            Fit.CPU: "CPU only",
            Fit.TOO_LARGE: "too large",
        }[self]

    @property
    def rank(self) -> int:
        return {Fit.GPU: 2, Fit.PARTIAL: 1, Fit.CPU: 0, Fit.TOO_LARGE: -1}[self]


class Engine(StrEnum):
    """What runs an option: llama.cpp inside Quantdesk, or an NVIDIA serving engine."""

    HERE = "here"
    SERVING = "serving"

    @property
    def label(self) -> str:
        return {
            Engine.HERE: "here (llama.cpp in Quantdesk)",
            Engine.SERVING: "a serving engine (vLLM, SGLang)",
        }[self]

    @property
    def short(self) -> str:
        return {Engine.HERE: "here", Engine.SERVING: "vLLM/SGLang"}[self]


class OptionSource(StrEnum):
    PLANNED = "planned"  # a quantization Quantdesk can make from the model
    THIS_FILE = "this-file"  # the GGUF that was inspected
    HUB_FILE = "hub-file"  # a GGUF the hub repo already has


# Generation below this is not worth running for any task.
USABLE_TOKENS_PER_S = 1.5
# The fastest fitting option is mentioned when it is this much faster than the pick.
MUCH_FASTER = 3.0
# Context a serving engine's activations are sized for (vLLM's batched-token budget).
SERVING_BATCH_TOKENS = 2048


@dataclass(frozen=True)
class Option:
    """One way to run the model, with its predictions and the reasons for its rank."""

    family: FormatFamily
    file_type: str
    label: str
    source: OptionSource
    fit: Fit
    gpu_layers: int
    n_layers: int
    ctx: int
    kv_type: KvType
    ram_bytes: int
    vram_bytes: int
    weights_bytes: int
    kv_bytes: int
    precision_bits: int
    effective_bpw: float
    imatrix: ImatrixNeed
    speed: SpeedEstimate
    quality: QualityEstimate
    reasons: tuple[str, ...] = ()
    filename: str | None = None
    rank: int = 0
    meets_task: bool = False
    memory: MemoryEstimate | None = None

    @property
    def fits(self) -> bool:
        return self.fit is not Fit.TOO_LARGE

    @property
    def engine(self) -> Engine:
        """GGUF files run here, in Quantdesk's chat; serving formats in vLLM or SGLang."""
        return Engine.HERE if self.family is FormatFamily.GGUF else Engine.SERVING

    @property
    def key(self) -> str:
        return f"{self.family.value}:{self.file_type}" + (
            f"@{self.filename}" if self.filename else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "format": self.family.value,
            "file_type": self.file_type,
            "label": self.label,
            "source": self.source.value,
            "engine": self.engine.value,
            "filename": self.filename,
            "fit": self.fit.value,
            "fit_label": self.fit.label,
            "gpu_layers": self.gpu_layers,
            "n_layers": self.n_layers,
            "ctx": self.ctx,
            "kv_type": self.kv_type.value,
            "ram_bytes": self.ram_bytes,
            "vram_bytes": self.vram_bytes,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "precision_bits": self.precision_bits,
            "effective_bpw": round(self.effective_bpw, 3),
            "imatrix": self.imatrix.value,
            "meets_task": self.meets_task,
            "speed": self.speed.to_dict(),
            "quality": self.quality.to_dict(),
            "reasons": list(self.reasons),
            "memory": self.memory.to_dict() if self.memory else None,
        }


@dataclass(frozen=True)
class Recommendation:
    """The ranked options for one model, machine, task and context."""

    model: str
    parameters: int
    task: Task
    ctx: int
    kv_type: KvType
    hardware: str
    options: tuple[Option, ...]
    summary: str
    nothing_fits: bool
    suggestions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # A Quantdesk mix for the memory this machine has, when the stock types leave
    # much of it unused or none of them fits (see mix_offer).
    mix_offer: MixOffer | None = None
    #: The machine has a datacenter NVIDIA GPU: options run here or in a serving engine.
    two_lanes: bool = False

    @property
    def top(self) -> Option | None:
        return self.options[0] if self.options and self.options[0].fits else None

    @property
    def best_here(self) -> Option | None:
        """The best option that runs in Quantdesk's own chat (llama.cpp), if any fits."""
        return next((o for o in self.options if o.fits and o.engine is Engine.HERE), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "parameters": self.parameters,
            "task": self.task.value,
            "ctx": self.ctx,
            "kv_type": self.kv_type.value,
            "hardware": self.hardware,
            "summary": self.summary,
            "nothing_fits": self.nothing_fits,
            "suggestions": list(self.suggestions),
            "notes": list(self.notes),
            "top": self.top.key if self.top else None,
            "best_here": self.best_here.key if self.best_here else None,
            "two_lanes": self.two_lanes,
            "options": [o.to_dict() for o in self.options],
            "mix_offer": self.mix_offer.to_dict() if self.mix_offer else None,
        }


@dataclass(frozen=True)
class MixOffer:
    """ "A Quantdesk mix for your budget": the largest file that runs here, searched per tensor."""

    budget_bytes: int
    bits_per_weight: float
    # The largest stock type that fits (None when none does) and the bytes it leaves.
    stock: str | None
    stock_bytes: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "bits_per_weight": round(self.bits_per_weight, 3),
            "stock": self.stock,
            "stock_bytes": self.stock_bytes,
            "text": self.text,
        }


# A mix is offered when the largest stock type that fits leaves this share unused.
MIX_UNUSED_SHARE = 0.05


def mix_offer(c: _Ctx, options: Sequence[Option]) -> MixOffer | None:
    """Offer a mix when the best stock GGUF leaves memory unused or none fits.

    The budget is the largest file the memory model lets run at the planned
    context with its KV cache (:func:`quant.plan.mix.fit_budget`).
    """
    from quant.plan.mix import BudgetError, fit_budget

    try:
        budget = fit_budget(
            c.facts,
            c.profile,
            ctx=c.ctx,
            kv_type=c.kv_type,
            options=c.options,
            margin_bytes=c.margin_bytes,
        )
    except BudgetError:
        return None
    stock = [
        o
        for o in options
        if o.family is FormatFamily.GGUF and o.source is OptionSource.PLANNED and o.fits
    ]
    n_params = max(1, c.facts.parameters)
    bpw = 8.0 * budget / n_params
    if bpw < 2.0:
        return None
    if not stock:
        return MixOffer(
            budget,
            bpw,
            None,
            0,
            f"No stock type fits, but a Quantdesk mix of {human_bytes(budget)} ({bpw:.2f} bits "
            "per weight) would: each tensor gets the type that costs this model least.",
        )
    best = max(stock, key=lambda o: o.weights_bytes)
    unused = budget - best.weights_bytes
    if best.precision_bits >= 16 or unused < MIX_UNUSED_SHARE * budget:
        return None
    return MixOffer(
        budget,
        bpw,
        best.file_type,
        best.weights_bytes,
        f"The largest stock type that fits, {best.label}, leaves {human_bytes(unused)} unused: "
        f"a Quantdesk mix of {human_bytes(budget)} ({bpw:.2f} bits per weight) uses it, each "
        "tensor at the type that costs this model least.",
    )


# ----------------------------------------------------------------------------------
# Task thresholds


@dataclass(frozen=True)
class TaskBits:
    minimum: int
    preferred: int
    why: str


def task_bits(task: Task, facts: ModelFacts, ctx: int) -> TaskBits:
    """The minimum and preferred precision (bits) for ``task`` on this model."""
    params = facts.parameters
    long_ctx = task is Task.LONG_CONTEXT or ctx > 16384
    if params and params <= 2_000_000_000:
        # Rule 7: 1B at 4 bits can become unusable for structured tasks.
        return TaskBits(
            8 if task in (Task.CODE, Task.MATH) else 6,
            8,
            f"a {format_params(params)} model suffers more from quantization than a large one",
        )
    if task.sensitive or long_ctx:
        why = (
            "long contexts compound quantization error"
            if long_ctx and task not in (Task.CODE, Task.MATH)
            else f"{task.value} is sensitive to quantization"
        )
        return TaskBits(4, 8, why)
    if facts.is_moe and task is not Task.CREATIVE:
        return TaskBits(4, 8, "expert routing in a mixture of experts is precision-sensitive")
    return TaskBits(4, 4, f"{task.value} tolerates 4-bit weights well")


# ----------------------------------------------------------------------------------
# Hardware


def describe_hardware(profile: HardwareProfile) -> str:
    ram = human_bytes(profile.memory.total_bytes)
    if profile.apple is not None:
        a = profile.apple
        return (
            f"{a.chip}, {human_bytes(a.unified_memory_bytes)} unified memory "
            f"(GPU working set {human_bytes(a.gpu_working_set_bytes)})"
        )
    if profile.gpus:
        parts = []
        for g in profile.gpus:
            cc = f", CC {g.compute_capability}" if g.compute_capability else ""
            parts.append(f"{g.name} ({human_bytes(g.memory_total_bytes)}{cc})")
        return " + ".join(parts) + f", {ram} RAM"
    return f"{profile.cpu.brand} (CPU only), {ram} RAM"


def _nvidia(profile: HardwareProfile) -> list[Any]:
    return [g for g in profile.gpus if g.vendor == "nvidia" and g.memory_total_bytes > 0]


def _best_cc(profile: HardwareProfile) -> tuple[int, int] | None:
    ccs = [g.compute_capability_tuple for g in _nvidia(profile) if g.compute_capability_tuple]
    return min(ccs) if ccs else None


# NVIDIA's datacenter GPUs by name (a word of the name, so "RTX A4000" is not an A40).
_DATACENTER = re.compile(
    r"\b(H100|H200|H800|H20|GH200|GB200|GB300|B100|B200|B300|A100|A800|A40|A30|A10G?|"
    r"L40S?|L20|L4|T4|V100|P100)\b",
    re.IGNORECASE,
)
# A card this large that is not a GeForce is a workstation or datacenter card too.
SERVING_CLASS_VRAM = 40 * GIB


def serving_class(profile: HardwareProfile) -> bool:
    """Whether the machine has a datacenter-class NVIDIA GPU, where serving engines lead.

    Rule 14: GGUF is the lane for CPUs, Apple Silicon, laptops and consumer
    GeForce cards; a datacenter GPU (H100, A100, L40S, …, or any non-GeForce card
    of 40 GB or more) serves models with vLLM or SGLang.
    """
    if profile.apple is not None:
        return False
    for g in _nvidia(profile):
        if _DATACENTER.search(g.name):
            return True
        if "geforce" not in g.name.lower() and g.memory_total_bytes >= SERVING_CLASS_VRAM:
            return True
    return False


def _ram_budget(profile: HardwareProfile) -> int:
    return profile.memory.available_bytes


# ----------------------------------------------------------------------------------
# Building options


@dataclass
class _Ctx:
    facts: ModelFacts
    profile: HardwareProfile
    task: Task
    ctx: int
    kv_type: KvType
    options: RuntimeOptions
    store: CalibrationStore | None
    use_calibration: bool
    training_tokens: float | None
    margin_bytes: int | None
    has_gpu: bool
    source: tuple[TensorInfo, ...] = ()
    plans: dict[str, tuple[PlannedTensor, ...]] = field(default_factory=dict)
    evidence: QualityEvidence = field(default_factory=QualityEvidence)
    key: str = ""
    cal: Calibration | None = None
    two_lanes: bool = False

    def measured(
        self, file_type: str, base_type: str | None, *, imatrix: bool
    ) -> QualityMeasurement | None:
        """A measurement of ``file_type`` made from this model (from a ``base_type`` file)."""
        return find_measurement(
            self.evidence.measurements, self.key, file_type, base_type, imatrix=imatrix
        )


def _place_gguf(
    c: _Ctx,
    plan: Sequence[PlannedTensor],
    ctx: int,
    kv_type: KvType,
    file_type: QuantType | None = None,
) -> tuple[Fit, MemoryEstimate]:
    """Where a GGUF runs best on the machine: all on GPU, partly, or on the CPU."""
    facts, profile = c.facts, c.profile
    ngl = 0
    if c.has_gpu:
        ngl = max_gpu_layers(
            facts,
            profile,
            ctx=ctx,
            kv_type=kv_type,
            options=c.options,
            margin_bytes=c.margin_bytes,
            plan=plan,
        )
    est = estimate_memory(
        facts,
        file_type=file_type,  # labels the estimate; the tensors come from ``plan``
        ctx=ctx,
        kv_type=kv_type,
        n_gpu_layers=ngl,
        profile=profile,
        options=c.options,
        plan=plan,
    )
    if not fits_memory(est, _ram_budget(profile), gpu_budgets(profile, c.margin_bytes)):
        return Fit.TOO_LARGE, est
    if est.placement is Placement.GPU:
        return Fit.GPU, est
    if est.placement is Placement.PARTIAL:
        return Fit.PARTIAL, est
    return Fit.CPU, est


def _plan(c: _Ctx, qt: QuantType | None, *, key: str | None = None) -> tuple[PlannedTensor, ...]:
    k = key or (qt.value if qt else "__file__")
    if k not in c.plans:
        c.plans[k] = plan_tensors(c.facts, qt.file_type if qt else None, source=c.source)
    return c.plans[k]


def _gguf_option(
    c: _Ctx,
    qt: QuantType | None,
    *,
    source: OptionSource,
    plan: Sequence[PlannedTensor],
    filename: str | None = None,
    imatrix: bool = True,
    label: str | None = None,
) -> Option:
    facts = c.facts
    fit, est = _place_gguf(c, plan, c.ctx, c.kv_type, qt)
    speed = estimate_speed(
        facts,
        c.profile,
        plan=plan,
        n_gpu_layers=est.n_gpu_layers,
        ctx=c.ctx,
        kv_type=c.kv_type,
        options=c.options,
        store=c.store,
        use_calibration=c.use_calibration,
    )
    n_params = sum(t.n_elements for t in plan)
    bpw = 8.0 * est.weights_bytes / n_params if n_params else 0.0
    if qt is not None:
        spec = qt.spec
        quality = _quality(c, spec, source=source, imatrix=imatrix)
        bits, need, name = spec.precision_bits, spec.imatrix, qt.value
    else:
        bits = max(1, round(bpw))
        need = ImatrixNeed.NOT_USED
        name = facts.file_type or "GGUF"
        quality = QualityEstimate(None, None, None, False, 1.0, 1.0, "unknown file type")
    return Option(
        family=FormatFamily.GGUF,
        file_type=name,
        label=label or name,
        source=source,
        fit=fit,
        gpu_layers=est.n_gpu_layers,
        n_layers=facts.n_layers,
        ctx=est.ctx,
        kv_type=c.kv_type,
        ram_bytes=est.ram_peak_bytes,
        vram_bytes=sum(est.vram_bytes),
        weights_bytes=est.weights_bytes,
        kv_bytes=est.kv_bytes,
        precision_bits=bits,
        effective_bpw=bpw,
        imatrix=need,
        speed=speed,
        quality=quality,
        filename=filename,
        memory=est,
    )


def _quality(c: _Ctx, spec: FormatSpec, *, source: OptionSource, imatrix: bool) -> QualityEstimate:
    """An option's loss: measured, calibrated to this model, or the prior (a range)."""
    measured = None
    if source is OptionSource.PLANNED and spec.precision_bits < 16:
        need_im = imatrix and spec.imatrix is not ImatrixNeed.NOT_USED
        measured = c.measured(spec.label, None, imatrix=need_im)
    if source is OptionSource.THIS_FILE and c.evidence.this_file is not None:
        m = c.evidence.this_file
        if m.base_type is None:
            measured = m
        else:
            # Made from a quantized file: that file's loss, plus what this one added.
            try:
                base_spec = QuantType.from_name(m.base_type).spec
            except ValueError:
                base_spec = None
            if base_spec is not None:
                base = from_original(
                    base_spec, c.facts, imatrix=False, training_tokens=c.training_tokens, cal=c.cal
                )
                added = added_loss(
                    spec, m.base_type, c.facts, training_tokens=c.training_tokens, cal=c.cal,
                    measured=m,
                )  # fmt: skip
                return inherit(base, m.base_type, added)
    q = from_original(
        spec,
        c.facts,
        imatrix=imatrix,
        training_tokens=c.training_tokens,
        cal=c.cal,
        measured=measured,
    )
    if source is OptionSource.THIS_FILE and q.provenance is Provenance.MEASURED:
        q = replace(q, basis=q.basis.replace("measured on this model", "measured on this file"))
    return q


def _serving_weights(c: _Ctx, spec: FormatSpec) -> tuple[int, float]:
    """Bytes of a serving-format checkpoint and the share of them one token reads."""
    facts = c.facts
    total = 0.0
    active = 0.0
    for t in c.source:
        n = math.prod(t.shape)
        if len(t.shape) >= 2 and t.name.startswith("blk."):
            nbytes = n * spec.effective_bpw / 8
        else:
            nbytes = tensor_bytes(GGMLType.BF16, t.shape)  # embeddings, lm_head, norms
        total += nbytes
        share = (
            max(1, facts.n_experts_used) / facts.n_experts
            if "_exps" in t.name and facts.n_experts > 1
            else 1.0
        )
        if t.name == "token_embd.weight" and not facts.tied_embeddings:
            share = 0.0
        active += nbytes * share
    return int(total), (active / total if total else 1.0)


def _gpu_option(c: _Ctx, fmt: GpuFormat) -> Option:
    facts, profile = c.facts, c.profile
    spec = fmt.spec
    gpus = _nvidia(profile)
    weights, active_share = _serving_weights(c, spec)
    kv_t = KvType.Q8_0 if c.kv_type is not KvType.F16 else KvType.F16
    kv_bytes = kv_cache(facts, c.ctx, kv_t, replace(c.options, swa_full=False)).total_bytes
    activations = compute_buffer_bytes(
        facts,
        c.ctx,
        RuntimeOptions(n_ubatch=SERVING_BATCH_TOKENS, flash_attn=True),
        n_outputs=256,
    )
    overhead = len(gpus) * (CUDA_CONTEXT_BYTES + GIB)
    vram = weights + kv_bytes + activations + overhead
    budget = sum(gpu_budgets(profile, c.margin_bytes)[: len(gpus)])
    fit = Fit.GPU if vram <= budget else Fit.TOO_LARGE
    n_matrix = sum(
        math.prod(t.shape) for t in c.source if len(t.shape) >= 2 and t.name.startswith("blk.")
    )
    active = facts.active_parameters or facts.parameters
    flops = 2.0 * n_matrix * (active / facts.parameters if facts.parameters else 1.0)
    speed = estimate_serving_speed(
        weight_bytes=weights,
        active_fraction=active_share,
        flops_per_token=max(flops, 1.0),
        kv_bytes_at_ctx=kv_bytes,
        n_layers=facts.n_layers,
        profile=profile,
    )
    quality = from_original(spec, facts, imatrix=True, training_tokens=c.training_tokens, cal=c.cal)
    return Option(
        family=FormatFamily.GPU,
        file_type=fmt.value,
        label=spec.label,
        source=OptionSource.PLANNED,
        fit=fit,
        gpu_layers=facts.n_layers + 1 if fit is Fit.GPU else 0,
        n_layers=facts.n_layers,
        ctx=padded_ctx(c.ctx),
        kv_type=kv_t,
        ram_bytes=int(2 * GIB),  # the engine process on the host
        vram_bytes=vram,
        weights_bytes=weights,
        kv_bytes=kv_bytes,
        precision_bits=spec.precision_bits,
        effective_bpw=spec.effective_bpw,
        imatrix=ImatrixNeed.NOT_USED,
        speed=speed,
        quality=quality,
    )


def _remote_option(c: _Ctx, rf: RemoteFile) -> Option | None:
    ft: LlamaFileType | None = None
    if rf.file_type:
        try:
            ft = LlamaFileType.from_name(rf.file_type)
        except ValueError:
            ft = None
    ft = ft or file_type_from_filename(rf.filename)
    qt = quant_type_for_file_type(ft) if ft else None
    if qt is None:
        return None
    plan = _plan(c, qt)
    planned = sum(t.n_bytes for t in plan)
    if rf.size_bytes > 0 and planned > 0 and abs(rf.size_bytes - planned) > 0.1 * planned:
        # A custom mix (other tensor types than llama.cpp's defaults): keep the
        # layout, scale the bytes to the real file.
        scale = rf.size_bytes / planned
        plan = tuple(replace(t, n_bytes=int(t.n_bytes * scale)) for t in plan)
    name = rf.filename.lower()
    imatrix = qt.spec.imatrix is ImatrixNeed.REQUIRED or "imat" in name or "i1-" in name
    return _gguf_option(
        c,
        qt,
        source=OptionSource.HUB_FILE,
        plan=plan,
        filename=rf.filename,
        imatrix=imatrix,
    )


# ----------------------------------------------------------------------------------
# Ranking


def _format_bonus(o: Option, c: _Ctx) -> int:
    """Tie-breaks between options of the same precision and speed tier."""
    cc = _best_cc(c.profile)
    bonus = 0
    if _eight_bit_ceiling(o, c):
        bonus += 1  # as precise as 16-bit for the ranking, at half the memory
    if o.family is FormatFamily.GGUF:
        bonus += 1  # runs in Quantdesk's own chat
    else:
        if o.file_type == GpuFormat.FP8.value and c.task.sensitive and cc and cc >= (8, 9):
            bonus += 2  # rule 3
        if o.file_type == GpuFormat.AWQ.value:
            # Rule 4: on Ampere and older, chat-shaped work in tight memory: AWQ.
            bonus += 2 if (cc and cc < (8, 9) and not c.task.sensitive) else 1
        if o.file_type == GpuFormat.GPTQ.value:
            bonus -= 1  # only when the artefact exists and the task is forgiving
    if o.source is OptionSource.HUB_FILE or o.source is OptionSource.THIS_FILE:
        bonus += 1  # nothing to make: download or use as is
    return bonus


def _meets_min(o: Option, bits: TaskBits, c: _Ctx) -> bool:
    if (
        o.family is FormatFamily.GPU
        and o.file_type == GpuFormat.GPTQ.value
        and c.task in (Task.CODE, Task.MATH)
    ):
        return False  # rule 6: avoid 4-bit GPTQ for code
    return o.precision_bits >= bits.minimum


# Options within this share of the fastest acceptable option's speed count as equally
# fast when none reaches the task's speed floor (so precision decides among them).
SPEED_BUCKET = 0.8


def _sort_key(o: Option, bits: TaskBits, c: _Ctx, best_slow_speed: float) -> tuple[float, ...]:
    """Larger sorts first. Tiers: acceptable, below the task's bits, unusably slow, too large."""
    gen = o.speed.generation
    kld = o.quality.kld if o.quality.kld is not None else 9.0
    size = float(o.ram_bytes + o.vram_bytes)
    if not o.fits:
        return (0, -size)
    if gen < USABLE_TOKENS_PER_S:
        return (1, gen)
    if not _meets_min(o, bits, c):
        # Below the minimum only when nothing better fits: least loss first.
        return (2, o.precision_bits, -kld, gen)
    floor = c.task.speed_floor
    level = 2 if gen >= 2 * floor else 1 if gen >= floor else 0
    unified = c.profile.apple is not None
    placement = o.fit.rank if (level and not unified) else 0
    bits_now = _ranked_bits(o, c)
    if level:
        precision = float(bits_now)
    else:
        # Nothing is fast enough: among the nearly fastest, the most precise.
        precision = bits_now if gen >= SPEED_BUCKET * best_slow_speed else -1.0 / gen
    # Rule 14: on a datacenter GPU the serving lane leads among options that are fast and
    # precise enough alike; elsewhere every option is in the same lane.
    lane = int(c.two_lanes and o.engine is Engine.SERVING)
    return (
        3,
        level,
        o.precision_bits >= bits.preferred,
        lane,
        placement,
        precision,
        _format_bonus(o, c),
        -kld,
        gen,
    )


def _rule3_applies(c: _Ctx) -> bool:
    """Rule 3's conditions: code, math or long context on compute capability ≥ 8.9."""
    cc = _best_cc(c.profile)
    long_ctx = c.task is Task.LONG_CONTEXT or c.ctx > 16384
    return (c.task.sensitive or long_ctx) and cc is not None and cc >= (8, 9)


def _fp8_rule(o: Option, c: _Ctx) -> bool:
    """Rule 3: FP8 on compute capability ≥ 8.9 for code, math and long context."""
    return o.family is FormatFamily.GPU and o.file_type == GpuFormat.FP8.value and _rule3_applies(c)


def _eight_bit_ceiling(o: Option, c: _Ctx) -> bool:
    """Rules 3 and 14: on a datacenter GPU of compute capability ≥ 8.9, for code, math and
    long context, near-lossless 8 bits (FP8 to serve, Q8_0 here) count as the quality
    ceiling: half the memory of 16-bit, and no slower (FP8) or twice as fast (Q8_0)."""
    if not c.two_lanes or not _rule3_applies(c):
        return False
    if o.family is FormatFamily.GPU:
        return o.file_type == GpuFormat.FP8.value
    return o.file_type == QuantType.Q8_0.value and o.source is not OptionSource.THIS_FILE


def _ranked_bits(o: Option, c: _Ctx) -> int:
    """The precision an option ranks with: its own, except the 8-bit ceiling of rule 3."""
    if _eight_bit_ceiling(o, c):
        return 16
    return o.precision_bits


# ----------------------------------------------------------------------------------
# Reasons


def _source_bounded(options: list[Option]) -> bool:
    """True when the inspected file is quantized and bounds what can be made from it."""
    return any(o.quality.inherited_kld is not None for o in options)


def _bound_by_source_loss(c: _Ctx, cands: list[Option], notes: list[str]) -> list[Option]:
    """Planned types made from an already-quantized file inherit its loss.

    Requantizing a Q4_K_M to BF16 gives a bigger file with the Q4_K_M's loss, so
    every type made from the file carries the file's loss plus what the new type
    adds (measured against the file's F16 expansion when a convert job did so,
    else predicted: :func:`quant.plan.quality.added_loss`), and the file itself
    ranks above them.
    """
    this = next((o for o in cands if o.source is OptionSource.THIS_FILE), None)
    if this is None or this.precision_bits >= 8 or this.quality.kld is None:
        return cands
    notes.append(
        f"This file is already quantized ({this.file_type}): types made from it keep its "
        "loss. For better quality, start from the original weights (an HF folder or hub id)."
    )
    out = []
    for o in cands:
        if o.source is not OptionSource.PLANNED or o.family is not FormatFamily.GGUF:
            out.append(o)
            continue
        spec = QuantType.from_name(o.file_type).spec
        added = added_loss(
            spec,
            this.file_type,
            c.facts,
            training_tokens=c.training_tokens,
            cal=c.cal,
            measured=c.measured(o.file_type, this.file_type, imatrix=False),
        )
        out.append(
            replace(
                o,
                # The weights are no more precise than the file they are made from.
                precision_bits=min(o.precision_bits, this.precision_bits),
                quality=inherit(this.quality, this.file_type, added),
            )
        )
    return out


def _fmt_speed(s: SpeedEstimate) -> str:
    return f"{format_rate(s.generation_low)}–{format_rate(s.generation_high)} tokens/s"


def _imatrix_reasons(o: Option) -> list[str]:
    if o.imatrix is ImatrixNeed.REQUIRED:
        return [
            f"{o.label} requires an importance matrix: llama.cpp will not make it without "
            "one (Quantdesk computes it from calibration text)."
        ]
    if o.imatrix is ImatrixNeed.ADVISED:
        return [
            f"Make {o.label} with an importance matrix: below ~4.5 bits it markedly "
            "reduces the loss."
        ]
    return []


def _reasons(o: Option, bits: TaskBits, c: _Ctx, best_fast: Option | None, top: bool) -> list[str]:
    facts = c.facts
    r: list[str] = []
    if o.fit is Fit.TOO_LARGE:
        need = o.vram_bytes if o.family is FormatFamily.GPU else o.ram_bytes
        where = "GPU memory" if o.family is FormatFamily.GPU else "RAM"
        r.append(f"Needs {human_bytes(need)} of {where}; this machine cannot hold it.")
        return r + _imatrix_reasons(o)
    if o.fit is Fit.GPU:
        r.append(
            f"Fits entirely in GPU memory ({human_bytes(o.vram_bytes)} incl. a "
            f"{human_bytes(o.kv_bytes)} KV cache at {o.ctx} tokens)."
        )
    elif o.fit is Fit.PARTIAL:
        r.append(
            f"Partial offload: {max(0, o.gpu_layers - 1)} of {o.n_layers} layers and the "
            f"output on the GPU ({human_bytes(o.vram_bytes)}), the rest in RAM "
            f"({human_bytes(o.ram_bytes)})."
        )
    else:
        r.append(
            f"Runs on the CPU in {human_bytes(o.ram_bytes)} of RAM, KV cache "
            f"{human_bytes(o.kv_bytes)} at {o.ctx} tokens included."
        )
    if o.memory is not None and o.memory.reclaimable_bytes > 0.05 * o.ram_bytes:
        r.append(
            f"The RAM figure counts {human_bytes(o.memory.reclaimable_bytes)} of weights twice: "
            "the CPU backend repacks them for faster kernels, and the kernel can drop the "
            "file's copy when memory runs short."
        )
    s = o.speed
    r.append(
        f"Generates {_fmt_speed(s)} (bound by {s.generation_bound.value}); reads prompts at "
        f"about {format_rate(s.prompt)} tokens/s."
    )
    sentence = quality_sentence(o.quality)
    if sentence:
        r.append(sentence)
    if o.precision_bits >= bits.preferred:
        if bits.preferred > 4 and o.precision_bits < 16:
            r.append(f"Keeps {o.precision_bits}-bit weights as {bits.why}.")
    elif o.precision_bits >= bits.minimum:
        r.append(
            f"Below the preferred {bits.preferred} bits ({bits.why}); chosen to fit or for speed."
        )
    else:
        r.append(f"Below {bits.minimum} bits: expect clearly worse answers ({bits.why}).")
    r.extend(_imatrix_reasons(o))
    if o.precision_bits <= 2:
        r.append("2-bit and lower quantization is experimental.")
    if o.family is FormatFamily.GPU:
        r.append(
            f"Runs in a serving engine: {o.label} runs in vLLM, SGLang or TensorRT-LLM, not in "
            "llama.cpp (Quantdesk's chat uses GGUF)."
        )
        if o.file_type == GpuFormat.FP8.value:
            r.append("FP8 is near-lossless and 1.4–1.8× faster to serve than BF16 on this GPU.")
            if c.two_lanes and _fp8_rule(o, c):
                r.append(
                    f"On compute capability 8.9 and newer, {c.task.value} runs best in FP8 "
                    "(rule 3): it counts as the quality ceiling here."
                )
    elif c.two_lanes:
        r.append("Runs here: llama.cpp in Quantdesk, ready to chat now.")
        if o.file_type == GpuFormat.GPTQ.value:
            r.append("Prefer AWQ: GPTQ drifts more outside its calibration domain.")
    if facts.is_moe and o.precision_bits < 8:
        r.append("A mixture of experts routes tokens by small score differences; 8 bits is safer.")
    if c.task is Task.CODE and o.precision_bits >= 8 and o.precision_bits < 16:
        r.append("Code keeps 8-bit weights: small errors break syntax and logic.")
    # KV cache dial.
    if c.kv_type is KvType.F16 and o.kv_bytes > 0.15 * o.weights_bytes:
        r.append(
            f"The KV cache is {human_bytes(o.kv_bytes)}; an 8-bit cache (--kv q8_0) would "
            "halve it with little loss."
        )
    if (
        top
        and best_fast is not None
        and best_fast is not o
        and best_fast.speed.generation >= MUCH_FASTER * o.speed.generation
    ):
        r.append(
            f"{best_fast.label} ({best_fast.fit.label}) would be about "
            f"{best_fast.speed.generation / o.speed.generation:.0f}× faster at a "
            "larger quality loss."
        )
    r.extend(o.speed.notes)
    return r


# ----------------------------------------------------------------------------------
# "What would fit"


def _suggestions(c: _Ctx, bits: TaskBits) -> list[str]:
    """Plain sentences on what would make an acceptable option fit."""
    out: list[str] = []
    probe = QuantType.Q4_K_M
    plan = _plan(c, probe)
    fit, _ = _place_gguf(c, plan, c.ctx, c.kv_type)
    if fit is Fit.TOO_LARGE:
        ctx = longest_context(
            c.facts,
            max_ctx=c.ctx,
            ram_budget=_ram_budget(c.profile),
            kv_type=c.kv_type,
            n_gpu_layers=None if c.has_gpu else 0,
            profile=c.profile,
            options=c.options,
            margin_bytes=c.margin_bytes,
            plan=plan,
        )
        if ctx is not None:
            out.append(f"A shorter context ({ctx} tokens) would let {probe.value} fit.")
    if c.kv_type is KvType.F16:
        fit, _ = _place_gguf(c, plan, c.ctx, KvType.Q8_0)
        if fit is not Fit.TOO_LARGE:
            out.append(f"An 8-bit KV cache (--kv q8_0) would let {probe.value} fit.")
    if not c.has_gpu:
        est = estimate_memory(c.facts, ctx=c.ctx, kv_type=c.kv_type, plan=plan, options=c.options)
        out.append(
            f"A GPU that holds part of the {human_bytes(est.ram_peak_bytes)} would allow "
            "partial offload."
        )
    # Largest model that fits at Q4_K_M with this context, scaling from this one.
    budget = _ram_budget(c.profile) + sum(gpu_budgets(c.profile, c.margin_bytes))
    est = estimate_memory(c.facts, ctx=c.ctx, kv_type=c.kv_type, plan=plan, options=c.options)
    per_param = est.ram_required_bytes / max(1, c.facts.parameters)
    max_params = budget / per_param if per_param else 0
    if max_params >= 0.5e9:
        out.append(
            f"A smaller model would: up to about {format_params(int(max_params))} parameters "
            f"at {probe.value} fit this machine at {c.ctx} tokens."
        )
    else:
        out.append("This machine has too little free memory for a useful model at 4 bits.")
    return out


# ----------------------------------------------------------------------------------
# Entry point


def _make_ctx(
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    task: Task,
    ctx: int | None,
    kv_type: KvType,
    options: RuntimeOptions | None,
    store: CalibrationStore | None,
    use_calibration: bool,
    training_tokens: float | None,
    margin_bytes: int | None,
    quality: QualityEvidence | None = None,
    two_lanes: bool = False,
) -> tuple[_Ctx, str | None]:
    """The planning context, with ``ctx`` clamped to the trained context (and a note if so)."""
    note = None
    trained = facts.context_length or 0
    want = ctx if ctx and ctx > 0 else task.default_ctx
    if trained and want > trained:
        note = (
            f"{facts.name} was trained for {trained} tokens; planning for {trained} "
            f"instead of {want}."
        )
        want = trained
    c = _Ctx(
        facts=facts,
        profile=profile,
        task=task,
        ctx=want,
        kv_type=kv_type,
        options=options or RuntimeOptions(),
        store=store,
        use_calibration=use_calibration,
        training_tokens=training_tokens,
        margin_bytes=margin_bytes,
        has_gpu=profile.apple is not None or bool(_nvidia(profile)),
        source=source_tensors(facts),
        evidence=quality or QualityEvidence(),
        two_lanes=two_lanes,
    )
    c.key = model_key(facts)
    if quality is not None:
        c.cal = calibration(facts, quality.measurements, key=c.key)
    return c, note


def _this_file_option(c: _Ctx) -> Option:
    """The GGUF that was inspected, run as it is."""
    facts = c.facts
    qt = None
    if facts.file_type:
        try:
            qt = quant_type_for_file_type(LlamaFileType.from_name(facts.file_type))
        except ValueError:
            qt = None
    return _gguf_option(
        c,
        qt,
        source=OptionSource.THIS_FILE,
        plan=_plan(c, None),
        filename=facts.source.replace("\\", "/").rsplit("/", 1)[-1],
        imatrix=any("imatrix" in str(k) for k in facts.extra),
        label=f"{qt.value if qt else facts.file_type} (this file)",
    )


def recommend(
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    training_tokens: float | None = None,
    include_gpu_formats: bool = True,
    margin_bytes: int | None = None,
    options: RuntimeOptions | None = None,
    store: CalibrationStore | None = None,
    use_calibration: bool = True,
    quality: QualityEvidence | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Recommendation:
    """Rank the ways to run ``facts`` on ``profile`` for ``task`` at ``ctx`` tokens.

    ``training_tokens`` (when known) sharpens the quality prior for densely
    trained models. ``store`` is the speed calibration store (the default one when
    None; ``use_calibration=False`` ignores it). ``quality`` holds measurements
    of this model (and its family) and of the file itself: they replace the prior
    (:mod:`quant.plan.quality`).
    """
    from quant.progress import Progress

    notes: list[str] = []
    c, clamped = _make_ctx(
        facts,
        profile,
        task=task,
        ctx=ctx,
        kv_type=kv_type,
        options=options,
        store=store,
        use_calibration=use_calibration,
        training_tokens=training_tokens,
        margin_bytes=margin_bytes,
        quality=quality,
        two_lanes=include_gpu_formats and serving_class(profile),
    )
    if clamped:
        notes.append(clamped)
    want = c.ctx
    apple = profile.apple is not None
    bits = task_bits(task, facts, want)
    cands: list[Option] = []
    types = [t for t in QuantType if t is not QuantType.F32]
    total_steps = len(types) + len(facts.remote_files) + 2
    step = 0

    def progress(msg: str) -> None:
        nonlocal step
        step += 1
        check_cancel(cancel)
        if on_progress:
            on_progress(Progress("recommend", step, total_steps, msg))

    if facts.kind is SourceKind.GGUF and facts.tensors:
        cands.append(_this_file_option(c))
        progress("this file")
    for qt in types:
        cands.append(_gguf_option(c, qt, source=OptionSource.PLANNED, plan=_plan(c, qt)))
        progress(qt.value)
    for rf in facts.remote_files:
        opt = _remote_option(c, rf)
        if opt is not None:
            cands.append(opt)
        progress(rf.filename)
    cands = _bound_by_source_loss(c, cands, notes)
    cc = _best_cc(profile)
    if include_gpu_formats and _nvidia(profile) and not apple:
        for fmt in GpuFormat:
            if fmt.spec.supported_on(cc):
                cands.append(_gpu_option(c, fmt))
    progress("ranking")
    if cc is None and _nvidia(profile):
        notes.append("GPU compute capability unknown; serving formats were left out.")
    if not _nvidia(profile) and include_gpu_formats:
        notes.append(
            "GGUF only: "
            + (
                "Apple Silicon runs llama.cpp through Metal; serving formats need NVIDIA GPUs."
                if apple
                else "serving formats (FP8, AWQ, …) need an NVIDIA GPU."
            )
        )

    slow = [
        o.speed.generation
        for o in cands
        if o.fits
        and _meets_min(o, bits, c)
        and o.speed.generation >= USABLE_TOKENS_PER_S
        and o.speed.generation < task.speed_floor
    ]
    best_slow = max(slow, default=0.0)
    ranked = sorted(cands, key=lambda o: _sort_key(o, bits, c, best_slow), reverse=True)
    fitting = [o for o in ranked if o.fits]
    acceptable = [o for o in fitting if _meets_min(o, bits, c)]
    fastest = max(acceptable, key=lambda o: o.speed.generation, default=None)
    final: list[Option] = []
    for i, o in enumerate(ranked):
        reasons = _reasons(o, bits, c, fastest, top=(i == 0))
        final.append(
            replace(o, rank=i + 1, reasons=tuple(reasons), meets_task=_meets_min(o, bits, c))
        )

    suggestions: list[str] = []
    nothing = not acceptable
    name = facts.name
    if not fitting:
        smallest = min(ranked, key=lambda o: o.ram_bytes + o.vram_bytes)
        summary = (
            f"{name} does not fit this machine at any quantization: even {smallest.label} "
            f"needs {human_bytes(smallest.ram_bytes)} of RAM"
            + (
                f" and {human_bytes(smallest.vram_bytes)} of GPU memory"
                if smallest.vram_bytes
                else ""
            )
            + f", and {human_bytes(_ram_budget(profile))} of RAM is available."
        )
        suggestions = _suggestions(c, bits)
    elif not acceptable and _source_bounded(final):
        top = final[0]
        summary = (
            f"Run {name} as {top.label} ({top.fit.label}): about "
            f"{format_rate(top.speed.generation)} tokens/s. Types made from this file keep "
            f"its loss; for {bits.minimum} bits or more for {task.value}, start from the "
            "original weights."
        )
        suggestions = [
            "Convert the original model (its Hugging Face folder or hub id) to the type you "
            "want: types made from an already-quantized file keep its loss."
        ]
    elif not acceptable:
        top = final[0]
        summary = (
            f"Nothing fits at {bits.minimum} bits or more for {task.value}; the best that fits "
            f"is {top.label} ({top.fit.label}), with clearly more quality loss."
        )
        suggestions = _suggestions(c, bits)
    elif final[0].engine is Engine.SERVING:
        top = final[0]
        summary = (
            f"Serve {name} as {top.label} with vLLM or SGLang ({top.fit.label}): about "
            f"{format_rate(top.speed.generation)} tokens/s per conversation and "
            f"{format_rate(top.speed.prompt)} prompt tokens/s at {top.ctx} tokens of context, "
            f"{human_bytes(top.vram_bytes)} of GPU memory."
        )
        here = next((o for o in final if o.fits and o.engine is Engine.HERE), None)
        if here is not None:
            summary += (
                f" To chat in Quantdesk now: {here.label} ({_placement_words(here)}), about "
                f"{format_rate(here.speed.generation)} tokens/s and "
                f"{format_rate(here.speed.prompt)} prompt tokens/s."
            )
        else:
            summary += " No GGUF file of it fits this machine for Quantdesk's own chat."
    else:
        top = final[0]
        summary = (
            f"Run {name} as {top.label} ({top.fit.label}): about "
            f"{format_rate(top.speed.generation)} tokens/s at {top.ctx} tokens of context"
            + (f", {human_bytes(top.vram_bytes)} of GPU memory" if top.vram_bytes else "")
            + (
                f", {human_bytes(top.ram_bytes)} of RAM."
                if top.family is FormatFamily.GGUF
                else "."
            )
        )
    return Recommendation(
        model=name,
        parameters=facts.parameters,
        task=task,
        ctx=want,
        kv_type=kv_type,
        hardware=describe_hardware(profile),
        options=tuple(final),
        summary=summary,
        nothing_fits=nothing,
        suggestions=tuple(suggestions),
        notes=tuple(notes),
        mix_offer=mix_offer(c, final),
        two_lanes=c.two_lanes,
    )


def _placement_words(o: Option) -> str:
    return {
        Fit.GPU: "fully offloaded",
        Fit.PARTIAL: "partly offloaded",
        Fit.CPU: "on the CPU",
        Fit.TOO_LARGE: "too large",
    }[o.fit]


def file_option(
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    margin_bytes: int | None = None,
    options: RuntimeOptions | None = None,
    store: CalibrationStore | None = None,
    use_calibration: bool = True,
    quality: QualityEvidence | None = None,
) -> Option:
    """How the GGUF file ``facts`` describes runs on ``profile`` as it is.

    The same "this file" option :func:`recommend` lists for a GGUF (fit badge,
    memory, speed, reasons), without planning every other type: a few
    milliseconds, which is what a library listing of many files needs. The
    option is unranked (``rank`` 0). ``ctx`` is clamped to the trained context
    like in :func:`recommend`. Raises :class:`~quant.errors.QuantError` when
    ``facts`` is not a GGUF file with its tensor list.
    """
    from quant.errors import QuantError

    if facts.kind is not SourceKind.GGUF or not facts.tensors:
        raise QuantError(
            f"{facts.name}: a fit for the file itself needs a GGUF file's facts with its "
            f"tensors (got {facts.kind.value}); use recommend() for other sources"
        )
    c, _ = _make_ctx(
        facts,
        profile,
        task=task,
        ctx=ctx,
        kv_type=kv_type,
        options=options,
        store=store,
        use_calibration=use_calibration,
        training_tokens=None,
        margin_bytes=margin_bytes,
        quality=quality,
    )
    option = _this_file_option(c)
    bits = task_bits(task, facts, c.ctx)
    reasons = _reasons(option, bits, c, None, top=False)
    return replace(option, reasons=tuple(reasons), meets_task=_meets_min(option, bits, c))
