"""What the Convert form shows before a job starts.

The source in one line (what it is, and whether it is converted or expanded
first) with its facts, and for each target type the size llama.cpp's
per-tensor mix would give and the quality the advisor predicts for it
(:func:`quant.plan.quality.predict_made`: measured, calibrated or a prior range,
and carrying the source's own loss when the source is already quantized). Reading
headers and planning every tensor for a dozen types takes a moment on a large
model: call :func:`preview_conversion` off the GUI thread.

In size-budget mode the form shows a size axis instead (:func:`budget_axis`):
the range a Quantdesk mix can take for this model, with llama.cpp's stock types
marked where their files would fall; :func:`resolve_budget` turns what the user
asked for (``3.2GB``, ``4.25bpw``, ``fit``) into the job's budget, the same for
the CLI and the page.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.gguf.types import GGMLType
from quant.plan.advisor import Task
from quant.plan.formats import QualityEstimate, QuantType
from quant.plan.memory import KvType, plan_tensors, repacked_types, weights_bytes
from quant.plan.mix import STOCK_TYPES, candidate_types, fit_budget, parse_budget
from quant.plan.quality import QualityEvidence, predict_made
from quant.units import format_params

logger = logging.getLogger(__name__)

# Tensor types a source may hold without having been quantized already.
_FULL_PRECISION = frozenset({"F32", "F16", "BF16", "Q8_0"})


@dataclass(frozen=True)
class SourceInfo:
    """A source as the form shows it: ``note`` is one line; ``facts`` when headers were read."""

    source: str
    note: str
    facts: ModelFacts | None = field(default=None, compare=False)

    @property
    def parameters(self) -> int | None:
        return int(self.facts.parameters) if self.facts is not None else None


@dataclass(frozen=True)
class TypePreview:
    """One target type: its bits per weight and, with a known source, size and quality."""

    name: str
    bits_per_weight: float
    needs_imatrix: bool
    description: str
    size_bytes: float | None = None
    kld: float | None = None
    same_top_token: float | None = None
    quality: QualityEstimate | None = None


@dataclass(frozen=True)
class ConversionPreview:
    source: SourceInfo
    types: list[TypePreview]
    # The size-budget axis, when the source's facts were read.
    axis: BudgetAxis | None = None


def describe_source(text: str) -> SourceInfo:
    """What ``text`` names (a GGUF file, an HF folder or a hub repo id), in one line, with the
    facts read from its headers (never from the network)."""
    from quant.facts import SourceKind, detect_source, inspect_model

    text = text.strip()
    if not text:
        return SourceInfo(text, "")
    try:
        kind = detect_source(text, need_weights=True)
    except (QuantError, OSError) as exc:
        return SourceInfo(text, str(exc))
    if kind is SourceKind.HUB:
        return SourceInfo(text, "Hub repo: downloaded (resumable) and converted first")
    try:
        facts = inspect_model(text, offline=True)
    except QuantError as exc:
        return SourceInfo(text, str(exc))
    if kind is SourceKind.HF_FOLDER:
        return SourceInfo(text, "Hugging Face folder: converted to F16 GGUF first", facts)
    params = format_params(facts.parameters, short=True)
    note = f"GGUF {facts.architecture}, {facts.file_type or '?'}, {params} parameters"
    quantized = sorted(
        {t.type for t in facts.tensors if len(t.shape) > 1 and t.type not in _FULL_PRECISION}
    )
    if quantized:
        note += (
            f" — already quantized ({', '.join(quantized)}): it is expanded to F16 first, "
            "and the new files carry its loss as well"
        )
    return SourceInfo(text, note, facts)


def preview_type(
    name: str,
    facts: ModelFacts | None,
    *,
    imatrix: bool,
    evidence: QualityEvidence | None = None,
) -> TypePreview | None:
    """``name``'s preview for a source with ``facts``; None for a name llama.cpp does not know.

    ``evidence``: measurements of the model, which replace the prior."""
    try:
        qtype = QuantType.from_name(name)
    except ValueError:
        return None
    spec = qtype.spec
    preview = TypePreview(
        name,
        spec.effective_bpw,
        spec.needs_imatrix,
        spec.description or spec.label,
    )
    if facts is None or not facts.parameters:
        return preview
    q = predict_made(spec, facts, imatrix=imatrix, evidence=evidence)
    return TypePreview(
        preview.name,
        preview.bits_per_weight,
        preview.needs_imatrix,
        preview.description,
        size_bytes=_predicted_size(facts, qtype),
        kld=q.kld,
        same_top_token=q.same_top_token,
        quality=q,
    )


def _predicted_size(facts: ModelFacts, qtype: QuantType) -> float:
    """The file size llama.cpp's per-tensor mix gives (tensors planned one by one, plus the
    source's header and metadata)."""
    weights = weights_bytes(plan_tensors(facts, qtype))
    tensor_bytes = sum(t.n_bytes for t in facts.tensors)
    header = max(0, facts.file_size_bytes - tensor_bytes) if tensor_bytes else 0
    return float(weights + header)


def preview_conversion(
    source: str,
    types: Sequence[str],
    *,
    imatrix: bool,
    known: SourceInfo | None = None,
) -> ConversionPreview:
    """The form's preview: the source described (``known`` when it was already) and each of
    ``types`` (names llama.cpp does not know are left out)."""
    info = known if known is not None else describe_source(source)
    evidence = None
    if info.facts is not None:
        from app.core.quality import evidence_for

        try:
            evidence = evidence_for(info.facts, path=source)
        except OSError as exc:
            logger.info("no quality measurements for the preview: %s", exc)
    previews = [
        preview_type(name, info.facts, imatrix=imatrix, evidence=evidence) for name in types
    ]
    axis = None
    if info.facts is not None and info.facts.parameters:
        try:
            axis = budget_axis(info.facts, imatrix=imatrix)
        except QuantError as exc:
            logger.info("no budget axis for %s: %s", source, exc)
    return ConversionPreview(info, [p for p in previews if p is not None], axis)


# -- size budgets ------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetMark:
    """A stock type on the budget axis: where its file would fall."""

    name: str
    size_bytes: int
    needs_imatrix: bool


@dataclass(frozen=True)
class BudgetAxis:
    """The sizes a Quantdesk mix of this model can take, and the stock types among them."""

    min_bytes: int  # every tensor at its smallest candidate type
    max_bytes: int  # every tensor at F16
    n_parameters: int
    marks: tuple[BudgetMark, ...]

    def bpw(self, n_bytes: float) -> float:
        return 8.0 * n_bytes / max(1, self.n_parameters)


def _header_bytes(facts: ModelFacts) -> int:
    tensor_bytes = sum(t.n_bytes for t in facts.tensors)
    return max(0, facts.file_size_bytes - tensor_bytes) if tensor_bytes else 0


def budget_axis(facts: ModelFacts, *, imatrix: bool = True) -> BudgetAxis:
    """The budget axis for ``facts``: the mix's range and each stock type's predicted size.

    Sizes come from the memory model's per-tensor plans (llama.cpp's own mixes
    for the stock types), so the marks fall where the files will.
    """
    from quant.plan.memory import source_tensors, tensor_bytes

    header = _header_bytes(facts)
    low = high = header
    for t in source_tensors(facts):
        allowed = candidate_types(t.name, t.shape, has_imatrix=imatrix)
        if allowed:
            low += min(tensor_bytes(a, t.shape) for a in allowed)
            high += tensor_bytes(GGMLType.F16, t.shape)
        else:
            n = t.n_bytes or tensor_bytes(GGMLType.from_name(t.type), t.shape)
            low += n
            high += n
    marks = []
    for ft in STOCK_TYPES:
        qt = QuantType.from_name(ft.name)
        if qt.spec.needs_imatrix and not imatrix:
            continue
        marks.append(BudgetMark(ft.name, int(_predicted_size(facts, qt)), qt.spec.needs_imatrix))
    return BudgetAxis(low, high, int(facts.parameters), tuple(marks))


def resolve_budget(
    source: str,
    text: str,
    *,
    hardware: str | None = None,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
) -> tuple[str, tuple[str, ...]]:
    """The job's budget for what the user typed, and the types counting twice against it.

    ``fit`` is the largest file of ``source`` that the memory model lets run on
    this machine (or the profile in ``hardware``) at ``ctx`` tokens (the task's
    default when None, never above the trained context), with its KV cache; on
    a machine without a GPU, the types the CPU keeps a repacked copy of count
    twice. Anything else must be a size :func:`quant.plan.mix.parse_budget`
    reads; raises :class:`~quant.errors.QuantError` with a sentence otherwise.
    """
    if text.strip().lower() != "fit":
        parse_budget(text)
        return text.strip(), ()
    from app.core.profiles import profile_for
    from quant.facts import inspect_model

    profile = profile_for(hardware)
    facts = inspect_model(source)
    want = ctx or task.default_ctx
    if facts.context_length:
        want = min(want, facts.context_length)
    n = fit_budget(facts, profile, ctx=want, kv_type=kv_type)
    has_gpu = profile.apple is not None or any(g.memory_total_bytes > 0 for g in profile.gpus)
    repacked = (
        () if has_gpu else tuple(sorted(t.name for t in repacked_types(profile.cpu.features)))
    )
    logger.info("budget 'fit' for %s at %d tokens: %d bytes", source, want, n)
    return str(n), repacked


__all__ = [
    "BudgetAxis",
    "BudgetMark",
    "ConversionPreview",
    "SourceInfo",
    "TypePreview",
    "budget_axis",
    "describe_source",
    "preview_conversion",
    "preview_type",
    "resolve_budget",
]
