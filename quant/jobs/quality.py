"""A quality report card for any GGUF: what it lost against a more precise file of its model.

``quantdesk quality FILE`` and the Models page's "Measure quality" run
:func:`measure_quality`: the reference's next-token distributions on held-out
text (the built-in mix's held-out part, or the user's file) against the file's,
with the convert pipeline's own evaluator (:mod:`quant.jobs.evaluate`) and its
defaults, so the numbers equal a convert report's for the same text.

:func:`find_reference` picks the reference among files the user already has
(the caller lists them: the library, Quantdesk's F16 files): a file of the same
model (:func:`quant.plan.quality.model_key`: architecture, tensor names and
shapes) with at least ``PRECISION_MARGIN_BPW`` more bits per weight, originals
before expansions, the most precise first. A 16-bit file may be the F16
expansion of a quantized file (the convert pipeline makes one to requantize):
it holds that file's weights, not the original's. Such a file is recognised by
its values (:func:`holds_quantized_weights`: every small group of weights sits
on an evenly spaced grid of at most 64 steps, which real 16-bit weights never
do) and compared with the candidates' weights to find which file it expands
(:func:`same_weights`). The expansion of the measured file itself is refused
(it would measure nothing); the expansion of another file is a valid reference
whose numbers are the loss added on top of that file's, and the report card
says so (``base_type``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.gguf.header import GGUFHeader, GGUFTensor, read_gguf_header
from quant.gguf.types import GGMLType
from quant.progress import CancelToken, Progress, ProgressCallback, check_cancel

if TYPE_CHECKING:
    from quant.jobs.calibration import CalibrationSet
    from quant.plan.quality import QualityMeasurement

logger = logging.getLogger(__name__)

# A reference carries at least this many more bits per weight than the file it measures.
PRECISION_MARGIN_BPW = 1.0
# The grid test: groups of this many consecutive weights, at most this many groups per
# tensor and this many tensors; a group is on a grid when its values are whole multiples
# (within GRID_TOLERANCE) of their smallest gap, spanning at most GRID_MAX_STEPS gaps.
GRID_GROUP = 16
GRID_GROUPS = 4096
GRID_TENSORS = 6
GRID_TOLERANCE = 0.12
GRID_MAX_STEPS = 64
# Share of groups on a grid above which a 16-bit tensor holds quantized weights.
GRID_SHARE = 0.5
# Two files hold the same weights when this share of one matrix's weights agree to within
# 16-bit rounding (a relative difference of SAME_WEIGHTS_RTOL); requantizing to another type
# moves nearly every weight by more.
SAME_WEIGHTS_RTOL = 2e-3
SAME_WEIGHTS_SHARE = 0.99
_SIXTEEN_BIT = {"F16", "BF16", "F32"}


class NoReferenceError(QuantError):
    """No file the user has can serve as the reference for a quality measurement."""

    def __init__(self, message: str, *, model_name: str, file_type: str | None) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.file_type = file_type


@dataclass(frozen=True)
class ReferenceChoice:
    """The file a quality measurement compares with, and what its weights are."""

    path: Path
    file_type: str
    bits_per_weight: float
    # Set when the reference is the F16 expansion of a quantized file of this type: the
    # measurement is then the loss added on top of that file's own.
    base_type: str | None = None
    base_path: Path | None = None
    why: str = ""

    @property
    def is_original(self) -> bool:
        return self.base_type is None


def _bpw(facts: ModelFacts) -> float:
    if facts.bits_per_weight:
        return float(facts.bits_per_weight)
    params = facts.parameters or 1
    return 8.0 * facts.file_size_bytes / params


def _facts(path: Path) -> ModelFacts | None:
    from quant.facts.gguf import inspect_gguf

    try:
        return inspect_gguf(path)
    except (QuantError, OSError) as exc:
        logger.info("not a reference candidate: %s (%s)", path, exc)
        return None


def _matrices(path: Path) -> tuple[GGUFHeader, list[GGUFTensor]]:
    g = read_gguf_header(path)
    mats = [t for t in g.tensors if len(t.shape) >= 2 and t.name.startswith("blk.")]
    return g, mats


def _values(g: GGUFHeader, t: GGUFTensor, limit: int | None = None) -> np.ndarray:
    """The weights of tensor ``t`` of file ``g`` as float32 (the first ``limit``)."""
    import gguf

    raw = np.asarray(g.tensor_data(t))
    kind = GGMLType(t.type)
    if kind is GGMLType.F32:
        out = raw.view(np.float32)
    elif kind is GGMLType.F16:
        out = raw.view(np.float16).astype(np.float32)
    elif kind is GGMLType.BF16:
        out = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        qtype = gguf.GGMLQuantizationType(int(kind))
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = len(raw) // size
        if limit is not None:
            n_blocks = min(n_blocks, -(-limit // block))
        out = gguf.quants.dequantize(raw[: n_blocks * size], qtype).astype(np.float32).reshape(-1)
    out = out.reshape(-1)
    return out[:limit] if limit is not None else out


def holds_quantized_weights(path: Path) -> bool:
    """True when a 16-bit file's weights sit on a quantization grid (an expanded quantized file).

    Reads a few blocks of a few tensors. Quantized types store each small block
    of weights as whole multiples of one scale (plus an offset): expanded to
    16 bits, every group of ``GRID_GROUP`` weights is evenly spaced with at most
    a few dozen steps. Real weights are not; nor are the IQ types' lattices,
    which this test does not recognise.
    """
    g, mats = _matrices(path)
    shares: list[float] = []
    for t in mats:
        if t.type.name not in _SIXTEEN_BIT:
            continue
        a = _values(g, t, GRID_GROUP * GRID_GROUPS)
        n = len(a) // GRID_GROUP
        if n == 0:
            continue
        s = np.sort(a[: n * GRID_GROUP].reshape(n, GRID_GROUP), axis=1)
        gaps = np.diff(s, axis=1)
        gaps = np.where(gaps > 0, gaps, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            smallest = np.nanmin(np.where(np.isnan(gaps), np.inf, gaps), axis=1, keepdims=True)
            ratio = gaps / smallest
            off = np.abs(ratio - np.round(ratio))
            steps = (s[:, -1:] - s[:, :1]) / smallest
        on_grid = np.all((off < GRID_TOLERANCE) | np.isnan(off), axis=1) & (
            steps[:, 0] <= GRID_MAX_STEPS
        )
        shares.append(float(on_grid.mean()))
        if len(shares) >= GRID_TENSORS:
            break
    return bool(shares) and float(np.median(shares)) > GRID_SHARE


def same_weights(a: Path, b: Path) -> bool:
    """True when two files of one model hold the same weights (one expands the other).

    Compares one weight matrix both files have, dequantized: equal up to 16-bit rounding.
    """
    ga, ma = _matrices(a)
    gb, mb = _matrices(b)
    by_name = {t.name: t for t in mb}
    for t in ma:
        other = by_name.get(t.name)
        if other is None:
            continue
        n = min(t.n_elements, other.n_elements, 1 << 16)
        x = _values(ga, t, n)
        y = _values(gb, other, n)
        close = np.abs(x - y) <= SAME_WEIGHTS_RTOL * np.abs(x) + 1e-7
        return bool(close.mean() >= SAME_WEIGHTS_SHARE)
    return False


def find_reference(
    file: Path,
    candidates: Iterable[Path],
    *,
    named: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ReferenceChoice:
    """The best reference for ``file`` among ``candidates``; :class:`NoReferenceError` if none.

    ``named``: the candidates are what the user named (``--reference FILE``), and
    the error says why that one cannot serve.

    Candidates of another model, or not more precise by ``PRECISION_MARGIN_BPW``,
    are skipped, and so is the F16 expansion of ``file`` itself. Original weights
    rank before expansions of quantized files, then the most bits per weight.
    """
    from quant.plan.quality import article, model_key

    file = Path(file)
    facts = _facts(file)
    if facts is None:
        raise QuantError(f"{file.name}: not a readable GGUF file; check the path.")
    key = model_key(facts)
    own_bpw = _bpw(facts)
    seen = {file.resolve()}
    same_model: list[tuple[Path, ModelFacts]] = []
    paths = [Path(p) for p in candidates]
    for i, p in enumerate(paths):
        check_cancel(cancel)
        try:
            real = p.resolve()
        except OSError:
            continue
        if real in seen or not p.is_file():
            continue
        seen.add(real)
        if on_progress is not None:
            on_progress(Progress("reference", i + 1, len(paths), f"Looking at {p.name}"))
        f = _facts(p)
        if f is None or f.architecture != facts.architecture or model_key(f) != key:
            continue
        same_model.append((p, f))
    choices: list[ReferenceChoice] = []
    own_expansion: Path | None = None
    for p, f in same_model:
        check_cancel(cancel)
        bpw = _bpw(f)
        if bpw < own_bpw + PRECISION_MARGIN_BPW:
            continue
        ftype = f.file_type or "unknown"
        if ftype.upper() in _SIXTEEN_BIT and holds_quantized_weights(p):
            if same_weights(file, p):
                logger.info("%s holds the weights of %s itself; not a reference", p, file)
                own_expansion = p
                continue
            base = next(
                (
                    (q, g)
                    for q, g in same_model
                    if (g.file_type or "").upper() not in _SIXTEEN_BIT and same_weights(q, p)
                ),
                None,
            )
            base_type = (base[1].file_type or "quantized") if base else "quantized"
            choices.append(
                ReferenceChoice(
                    p,
                    ftype,
                    bpw,
                    base_type=base_type,
                    base_path=base[0] if base else None,
                    why=f"the F16 expansion of {article(base_type)} file of this model",
                )
            )
            continue
        choices.append(ReferenceChoice(p, ftype, bpw, why=f"{article(ftype)} file of this model"))
    if not choices and named:
        names = ", ".join(p.name for p in paths) or "nothing"
        raise NoReferenceError(
            f"{names} cannot be the reference for {file.name}: a reference is a file of the "
            f"same model ({facts.architecture}, same tensor names and shapes) with at least "
            f"{PRECISION_MARGIN_BPW:g} more bits per weight ({own_bpw:.2f} here), and not the "
            "F16 expansion of the file itself.",
            model_name=facts.name,
            file_type=facts.file_type,
        )
    if not choices:
        also = (
            f" ({own_expansion.name} holds this file's own weights expanded to 16 bits, so it "
            "cannot tell what this file lost)"
            if own_expansion is not None
            else ""
        )
        raise NoReferenceError(
            f"{file.name}: no more precise file of this model ({facts.architecture}, same "
            f"tensor names and shapes) is in the library{also}; add the original model's F16, "
            "BF16 or Q8_0 file (or name one with --reference FILE) and measure again.",
            model_name=facts.name,
            file_type=facts.file_type,
        )
    choices.sort(key=lambda r: (r.is_original, r.bits_per_weight), reverse=True)
    return choices[0]


def measure_quality(
    file: Path | str,
    reference: ReferenceChoice,
    text: CalibrationSet | None = None,
    *,
    chunk_size: int = 512,
    max_chunks: int | None = 16,
    cache_dir: Path | None = None,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QualityMeasurement:
    """Measure ``file`` against ``reference`` on ``text`` (the built-in held-out text by default).

    The defaults are the convert pipeline's (512-token chunks, 16 of them) and the
    reference's log-probabilities are cached in ``cache_dir/reference`` exactly as
    the pipeline caches them, so a file the pipeline made measures the same here.
    """
    from quant.jobs.calibration import Split, default_mix
    from quant.jobs.evaluate import compute_reference, evaluate, model_fingerprint
    from quant.plan.quality import QualityMeasurement, model_key

    file = Path(file)
    facts = _facts(file)
    if facts is None:
        raise QuantError(f"{file.name}: not a readable GGUF file; check the path.")
    text = text if text is not None else default_mix(Split.HELD_OUT)

    def stage(name: str) -> ProgressCallback | None:
        if on_progress is None:
            return None
        report = on_progress

        def forward(p: Progress) -> None:
            report(Progress(name, p.done, p.total, p.message, eta_s=p.eta_s))

        return forward

    ref = compute_reference(
        reference.path,
        text,
        chunk_size=chunk_size,
        max_chunks=max_chunks,
        cache_dir=cache_dir / "reference" if cache_dir is not None else None,
        threads=threads,
        on_progress=stage("reference"),
        cancel=cancel,
    )
    result = evaluate(file, ref, threads=threads, on_progress=stage("evaluate"), cancel=cancel)
    imatrix = any("imatrix" in str(k) for k in facts.extra) or None
    return QualityMeasurement(
        file_type=facts.file_type or "unknown",
        kld_mean=result.kld_mean,
        kld_median=result.kld_median,
        kld_p99=result.kld_p99,
        same_top_token=result.top1_agreement,
        perplexity=result.perplexity,
        reference_perplexity=result.reference_perplexity,
        tokens=result.n_tokens,
        text=text.name,
        reference=reference.path.name,
        reference_type=reference.file_type,
        base_type=reference.base_type,
        imatrix=imatrix,
        model_key=model_key(facts),
        architecture=facts.architecture,
        parameters=facts.parameters,
        file_fingerprint=model_fingerprint(file),
        origin="report card",
        path=str(file),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
