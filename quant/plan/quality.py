"""Quality predictions that learn from measurements.

Every quality number the advisor shows says where it comes from
(:class:`~quant.plan.formats.Provenance`):

* **measured**: this very file was measured (a report card, ``quantdesk
  quality``), or, for a type Quantdesk would make, that type made from this model
  was (a convert report);
* **calibrated**: the scoreboard prior times a factor fitted to the measurements
  of this model (same architecture, tensor names and shapes: :func:`model_key`)
  or, failing those, of its family and size (same architecture, parameters
  within ``FAMILY_SIZE_RATIO``);
* **prior**: the published scoreboard scaled to the model
  (:func:`quant.plan.formats.predict_quality`), shown as a range.

**Files made from an already-quantized file.** Against the original weights, a
type made from a quantized file S loses S's own loss plus what the new type
adds. The added part is what a measurement against S's F16 expansion sees (the
convert pipeline measures exactly that when it requantizes). Its prior follows
from how rounding works, tensor by tensor (:mod:`quant.plan.rounding`): each of
S's layer matrices whose type llama.cpp's mix for the new type changes takes
the rounding error of moving from its grid onto the new one (far less than a
fresh rounding where one grid nests in the other, Q4_K into Q5_K); one that
keeps its type changes nothing, and what remains is the 8-bit rounding of
activations that llama.cpp's quantized kernels do, which the scoreboard puts at
about Q8_0's loss (``_OWN_GRID``). The added loss is the type's scoreboard KLD
per unit of the rounding it causes on the reference model, times the rounding
it causes on S's layer matrices (:func:`requant_load`), plus the activation
rounding on the share that keeps its type. 16-bit types add nothing.
The calibration factor is fitted on the same footing, so a measurement of one
type made from S corrects the prediction of every other.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any

from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.plan.formats import (
    FormatSpec,
    ImatrixNeed,
    Provenance,
    QualityEstimate,
    QuantType,
    predict_quality,
    same_top_token_from_kld,
    scoreboard_kld,
    size_factor,
    spec_for_key,
)
from quant.plan.memory import plan_tensors, source_tensors
from quant.plan.rounding import BlockLoad, block_load

MEASUREMENT_SCHEMA = 1
# Models of one architecture whose sizes differ by less than this ratio are one family size.
FAMILY_SIZE_RATIO = 1.5
# What requantizing onto a file's own grid costs on the reference model (activation rounding).
_OWN_GRID = QuantType.Q8_0
_ORDER = {Provenance.MEASURED: 0, Provenance.CALIBRATED: 1, Provenance.PRIOR: 2}


def article(type_name: str) -> str:
    """``type_name`` with "a" or "an" as it is read aloud ("an F16", "a Q4_K_M")."""
    return ("an " if type_name[:1].upper() in "AEFHILMNORSX" else "a ") + type_name


def model_key(facts: ModelFacts) -> str:
    """The identity of a model across its files: architecture and its matrices' names and shapes.

    A model's F16 file, its quantizations and its F16 expansion share it; another
    model (or another size of the family) does not.
    """
    items = sorted(
        f"{t.name}:{'x'.join(str(d) for d in t.shape)}"
        for t in source_tensors(facts)
        if len(t.shape) >= 2
    )
    text = facts.architecture + "|" + ";".join(items)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class QualityMeasurement:
    """What one file lost against a reference, measured on some text.

    ``base_type`` is None when the reference is the model's original weights; when
    the reference is the F16 expansion of a quantized file of that type (as in a
    convert job that requantized), the numbers are the loss added on top of that
    file's own.
    """

    file_type: str
    kld_mean: float
    kld_median: float
    kld_p99: float
    same_top_token: float
    perplexity: float
    reference_perplexity: float
    tokens: int
    text: str
    reference: str
    reference_type: str
    base_type: str | None = None
    base_fingerprint: str | None = None
    imatrix: bool | None = None
    model_key: str = ""
    architecture: str = ""
    parameters: int = 0
    file_fingerprint: str | None = None
    origin: str = "report card"
    path: str | None = None
    created: str = ""

    @property
    def delta_perplexity(self) -> float:
        return self.perplexity - self.reference_perplexity

    @property
    def against(self) -> str:
        """What the numbers are measured against, in words."""
        if self.base_type:
            return f"the F16 expansion of {article(self.base_type)} file ({self.reference})"
        return f"{self.reference} ({self.reference_type})"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["schema"] = MEASUREMENT_SCHEMA
        d["delta_perplexity"] = self.delta_perplexity
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityMeasurement:
        """A measurement from :meth:`to_dict`; ``ValueError`` for one this version cannot read."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        try:
            m = cls(**kw)
            for name in ("kld_mean", "kld_median", "kld_p99", "same_top_token", "perplexity"):
                value = float(getattr(m, name))
                if not math.isfinite(value):
                    raise ValueError(f"{name} is {value}")
            return replace(m, tokens=int(m.tokens), parameters=int(m.parameters))
        except TypeError as exc:
            raise ValueError(f"not a quality measurement ({exc})") from None


@dataclass(frozen=True)
class QualityEvidence:
    """The measurements the advisor may use for one model.

    ``measurements`` may hold other models' too: :func:`calibration` keeps this
    model's (same :func:`model_key`) and, when it has none, its family's.
    ``this_file`` is the inspected file's own report card.
    """

    measurements: tuple[QualityMeasurement, ...] = ()
    this_file: QualityMeasurement | None = None


@dataclass(frozen=True)
class Calibration:
    """A factor on the size-scaled prior, fitted to measurements."""

    factor: float
    n: int
    scope: str  # "this model" or "its family and size"

    @property
    def basis(self) -> str:
        return (
            f"prior × {self.factor:.2g} fitted to {self.n} measurement"
            f"{'s' if self.n != 1 else ''} of {self.scope}"
        )


# The reference model of the scoreboard (Llama-3-8B), as a config: its per-tensor plans give
# each type's rounding load on the model the scoreboard measured.
_REFERENCE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


@lru_cache(maxsize=64)
def reference_load(type_name: str, imatrix: bool = True) -> BlockLoad | None:
    """The rounding load of ``type_name`` (a table type) on the scoreboard's reference model."""
    from quant.facts.config_params import facts_from_config
    from quant.facts.model import SourceKind

    try:
        target = QuantType(type_name)
    except ValueError:
        return None
    ref = facts_from_config(
        _REFERENCE_CONFIG, source="reference", kind=SourceKind.CONFIG, name="Llama-3-8B"
    )
    try:
        return block_load(plan_tensors(ref, target, imatrix=imatrix))
    except QuantError:
        return None


def requant_load(
    facts: ModelFacts, spec: FormatSpec, source_type: str | None, *, imatrix: bool = True
) -> BlockLoad | None:
    """The rounding load of making ``spec`` from this file (a GGUF of ``source_type``).

    From the memory model's per-tensor plan of llama.cpp's mix for ``spec``
    against the file's own tensors. None without a per-tensor view (no GGUF
    tensors, a format llama.cpp does not make, a type the rounding table lacks).
    """
    try:
        target = QuantType(spec.label)
    except ValueError:
        return None
    if source_type is None or not facts.tensors or facts.file_type != source_type:
        return None
    try:
        own = {t.name: t.type for t in plan_tensors(facts)}
        planned = plan_tensors(facts, target, imatrix=imatrix)
        return block_load(planned, own)
    except QuantError:
        return None


def added_prior(
    spec: FormatSpec,
    source_type: str | None,
    *,
    imatrix: bool = True,
    load: BlockLoad | None = None,
) -> float | None:
    """The reference model's loss for making ``spec`` from a file of ``source_type`` (unscaled).

    ``source_type`` None: from the original weights (the scoreboard value).
    ``load``: the file's rounding load for ``spec`` (:func:`requant_load`): the
    scoreboard's loss for ``spec`` per unit of its load on the reference model,
    times this file's load, plus activation rounding on the weights that keep
    their type. Without one: ``spec``'s own rounding, or only activation rounding
    when ``spec`` is the file's own type.
    """
    if spec.precision_bits >= 16:
        return 0.0
    if source_type is None:
        return scoreboard_kld(spec, imatrix=imatrix)
    own = scoreboard_kld(_OWN_GRID.spec) or 0.0
    if load is None:
        if spec.label.upper() == source_type.upper():
            return own
        return scoreboard_kld(spec, imatrix=imatrix)
    rounded = scoreboard_kld(spec, imatrix=imatrix)
    ref = reference_load(spec.label, imatrix)
    if rounded is None:
        return None
    if ref is None or ref.error <= 0:
        return load.changed * rounded + load.unchanged * own
    return rounded * load.error / ref.error + load.unchanged * own


def _spec(name: str) -> FormatSpec | None:
    try:
        return spec_for_key(name)
    except ValueError:
        return None


def _same_family(m: QualityMeasurement, architecture: str, parameters: int) -> bool:
    if not m.architecture or m.architecture != architecture or not m.parameters or not parameters:
        return False
    return abs(math.log(m.parameters / parameters)) < math.log(FAMILY_SIZE_RATIO)


def calibration(
    facts: ModelFacts, measurements: Iterable[QualityMeasurement], *, key: str | None = None
) -> Calibration | None:
    """The factor that maps the size-scaled prior onto this model's measurements.

    Fitted as the median of measured ÷ predicted over every measurement of a
    quantized type (16-bit ones measure only rounding noise), in log space so one
    outlier cannot drag it. This model's measurements first; its family's when it
    has none.
    """
    key = key or model_key(facts)
    ms = list(measurements)
    own = [m for m in ms if m.model_key == key]
    scope = "this model"
    if not _fit_points(own, facts):
        own = [m for m in ms if m.model_key != key and _same_family(m, facts.architecture,
                                                                   facts.parameters)]  # fmt: skip
        scope = "its family and size"
    points = _fit_points(own, facts)
    if not points:
        return None
    factor = math.exp(statistics.median(math.log(r) for r in points))
    return Calibration(factor, len(points), scope)


def _fit_points(ms: Sequence[QualityMeasurement], facts: ModelFacts) -> list[float]:
    s = size_factor(facts.parameters or 1, facts.active_parameters)
    out = []
    for m in ms:
        spec = _spec(m.file_type)
        if spec is None or spec.precision_bits >= 16 or m.kld_mean <= 0:
            continue
        im = m.imatrix is not False
        load = requant_load(facts, spec, m.base_type, imatrix=im) if m.base_type else None
        p = added_prior(spec, m.base_type, imatrix=im, load=load)
        if p:
            out.append(m.kld_mean / (p * s))
    return out


def _measured(m: QualityMeasurement, what: str) -> QualityEstimate:
    return QualityEstimate(
        kld=m.kld_mean,
        delta_ppl=m.delta_perplexity,
        same_top_token=m.same_top_token,
        imatrix=bool(m.imatrix),
        size_factor=1.0,
        density_factor=1.0,
        basis=f"{what}: {m.origin} against {m.against}, {m.tokens:,} tokens of {m.text}",
        provenance=Provenance.MEASURED,
    )


def _calibrated(prior: QualityEstimate, cal: Calibration, unscaled: float) -> QualityEstimate:
    kld = cal.factor * prior.size_factor * prior.density_factor * unscaled
    ratio = kld / prior.kld if prior.kld else 1.0
    return replace(
        prior,
        kld=kld,
        delta_ppl=prior.delta_ppl * ratio if prior.delta_ppl is not None else None,
        same_top_token=same_top_token_from_kld(kld),
        basis=cal.basis,
        provenance=Provenance.CALIBRATED,
        kld_low=None,
        kld_high=None,
    )


def from_original(
    spec: FormatSpec,
    facts: ModelFacts,
    *,
    imatrix: bool,
    training_tokens: float | None,
    cal: Calibration | None,
    measured: QualityMeasurement | None = None,
) -> QualityEstimate:
    """The loss of ``spec`` made from (or run as) this model's original weights."""
    prior = predict_quality(
        spec,
        parameters=facts.parameters or 1,
        active_parameters=facts.active_parameters,
        imatrix=imatrix,
        training_tokens=training_tokens,
    )
    if prior.kld is None:
        return prior
    if measured is not None:
        return _measured(measured, "measured on this model")
    if cal is not None and spec.precision_bits < 16:
        unscaled = scoreboard_kld(spec, imatrix=imatrix)
        if unscaled:
            return _calibrated(prior, cal, unscaled)
    return prior


@dataclass(frozen=True)
class AddedLoss:
    """What making a type from an already-quantized file adds to that file's loss."""

    kld: float
    low: float
    high: float
    provenance: Provenance
    basis: str


def added_loss(
    spec: FormatSpec,
    source_type: str,
    facts: ModelFacts,
    *,
    training_tokens: float | None,
    cal: Calibration | None,
    measured: QualityMeasurement | None = None,
) -> AddedLoss:
    """What making ``spec`` from a ``source_type`` file of this model adds to that file's loss."""
    if spec.precision_bits >= 16:
        return AddedLoss(0.0, 0.0, 0.0, Provenance.MEASURED, "16-bit weights add nothing")
    if measured is not None:
        m = measured.kld_mean
        return AddedLoss(
            m,
            m,
            m,
            Provenance.MEASURED,
            f"measured on this model: {measured.origin}, {measured.tokens:,} tokens",
        )
    load = requant_load(facts, spec, source_type)
    unscaled = added_prior(spec, source_type, load=load) or 0.0
    prior = predict_quality(
        spec,
        parameters=facts.parameters or 1,
        active_parameters=facts.active_parameters,
        training_tokens=training_tokens,
    )
    point = unscaled * prior.size_factor * prior.density_factor
    if cal is not None:
        v = cal.factor * point
        return AddedLoss(v, v, v, Provenance.CALIBRATED, cal.basis)
    # The prior's range for the type, relative to its point, applies to the added part too.
    lo = point * (prior.low or 0.0) / prior.kld if prior.kld else point
    hi = point * (prior.high or 0.0) / prior.kld if prior.kld else point
    same = spec.label.upper() == source_type.upper()
    if (load is not None and load.changed <= 0.0) or (load is None and same):
        what = "its own grid: only activation rounding, about Q8_0's loss"
    elif load is None:
        what = f"{spec.label}'s own rounding"
    else:
        what = (
            f"{spec.label}, scaled to the rounding it adds to this file's layer weights "
            f"({load.changed:.0%} of them change type)"
        )
    return AddedLoss(
        point,
        lo,
        hi,
        Provenance.PRIOR,
        f"prior: Llama-3-8B measurement of {what}, × {prior.size_factor:.2f} for size",
    )


def weakest(*provenances: Provenance) -> Provenance:
    """The least trustworthy of ``provenances``: a sum is only as good as its weakest part."""
    return max(provenances, key=lambda p: _ORDER[p])


def inherit(source: QualityEstimate, source_label: str, added: AddedLoss) -> QualityEstimate:
    """``source``'s loss plus ``added``: a type made from an already-quantized file."""
    point, lo, hi, prov, why = added.kld, added.low, added.high, added.provenance, added.basis
    base = source.kld or 0.0
    total = base + point
    provenance = weakest(source.provenance, prov)
    low = (source.low or 0.0) + lo
    high = (source.high or 0.0) + hi
    return QualityEstimate(
        kld=total,
        delta_ppl=(source.delta_ppl or 0.0) * (total / base) if base else source.delta_ppl,
        same_top_token=same_top_token_from_kld(total),
        imatrix=source.imatrix,
        size_factor=source.size_factor,
        density_factor=source.density_factor,
        basis=(
            f"made from this {source_label} file, it keeps that file's loss "
            f"({source.provenance.label}) and adds about {point:.2g} ({why})"
            if point
            else f"made from this {source_label} file, it keeps that file's loss "
            f"({source.provenance.label})"
        ),
        provenance=provenance,
        kld_low=low if provenance is Provenance.PRIOR else None,
        kld_high=high if provenance is Provenance.PRIOR else None,
        inherited_kld=base,
        added_kld=point,
        added_provenance=prov,
    )


def kld_text(q: QualityEstimate, digits: int = 2) -> str:
    """The mean KLD as a table shows it (``digits`` significant): a point, or a prior's range."""
    if q.kld is None:
        return "—"
    if q.is_range and q.low is not None and q.high is not None:
        return f"{q.low:.{digits}g}–{q.high:.{digits}g}"
    return f"{q.kld:.{digits}g}" if q.kld >= 0.01 else f"{q.kld:.{digits + 1}g}"


def quality_cell(q: QualityEstimate) -> str:
    """One short cell: the KLD, where it comes from, and what a made-from file adds."""
    if q.kld is None:
        return "—"
    if q.kld < 5e-4 and not q.inherited_kld:
        return "none"
    text = f"{kld_text(q)} {q.provenance.label}"
    if q.inherited_kld is not None and q.added_kld:
        text += f" (this file's + {q.added_kld:.2g})"
    return text


def quality_sentence(q: QualityEstimate) -> str | None:
    """The reason line about an option's quality, saying where its number comes from."""
    if q.kld is None:
        return None
    if q.kld == 0 and q.inherited_kld is None:
        return "16-bit weights: the quality ceiling."
    top1 = f", same top token {100 * q.same_top_token:.0f}%" if q.same_top_token else ""
    if q.inherited_kld is not None:
        first = q.basis[:1].upper() + q.basis[1:]
        return f"{first}: mean KLD {kld_text(q, 3)} against the original weights in all{top1}."
    if q.provenance is Provenance.MEASURED:
        return f"Measured loss vs 16-bit: mean KLD {kld_text(q, 3)}{top1} ({q.basis})."
    if q.provenance is Provenance.CALIBRATED:
        return (
            f"Predicted loss vs 16-bit: mean KLD ≈ {kld_text(q, 3)}{top1} (calibrated: {q.basis})."
        )
    return (
        f"Predicted loss vs 16-bit: mean KLD {kld_text(q)} (prior: {q.basis}; "
        "no measurement of this model yet)."
    )


def find_measurement(
    measurements: Iterable[QualityMeasurement],
    key: str,
    file_type: str,
    base_type: str | None,
    *,
    imatrix: bool = False,
) -> QualityMeasurement | None:
    """A measurement of ``file_type`` made from this model (from a ``base_type`` file, or
    from the original weights when None); with ``imatrix``, not one made without one."""
    for m in measurements:
        if (
            m.model_key == key
            and m.file_type.upper() == file_type.upper()
            and (m.base_type or "").upper() == (base_type or "").upper()
            and (not imatrix or m.imatrix is not False)
        ):
            return m
    return None


def predict_made(
    spec: FormatSpec,
    facts: ModelFacts,
    *,
    imatrix: bool = True,
    training_tokens: float | None = None,
    evidence: QualityEvidence | None = None,
) -> QualityEstimate:
    """The loss of ``spec`` made from the model ``facts`` describes, as the advisor predicts
    it: measured, calibrated or the prior, and inheriting the source's loss when ``facts``
    is an already-quantized GGUF (below 8 bits)."""
    from quant.facts.model import SourceKind

    ev = evidence or QualityEvidence()
    key = model_key(facts)
    cal = calibration(facts, ev.measurements, key=key) if ev.measurements else None
    source = _spec(facts.file_type) if facts.kind is SourceKind.GGUF and facts.file_type else None
    need_im = imatrix and spec.imatrix is not ImatrixNeed.NOT_USED
    if source is not None and source.precision_bits < 8:
        src_type = source.label
        mine = ev.this_file
        if mine is not None and mine.base_type is None:
            base = _measured(mine, "measured on this file")
        else:
            base = from_original(
                source, facts, imatrix=False, training_tokens=training_tokens, cal=cal
            )
        measured = find_measurement(ev.measurements, key, spec.label, src_type)
        added = added_loss(
            spec, src_type, facts, training_tokens=training_tokens, cal=cal, measured=measured
        )
        return inherit(base, src_type, added)
    measured = find_measurement(ev.measurements, key, spec.label, None, imatrix=need_im)
    return from_original(
        spec,
        facts,
        imatrix=imatrix,
        training_tokens=training_tokens,
        cal=cal,
        measured=measured if spec.precision_bits < 16 else None,
    )
