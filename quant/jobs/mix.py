"""The mix search: measure what each tensor's type would cost, choose for a budget, build.

A Quantdesk mix gives every tensor its own llama.cpp type (see
:mod:`quant.plan.mix` for budgets, candidates, the allocation and the recipe).
What a choice costs is measured here, on the user's own model:

1. **Error proxy** (:func:`tensor_errors`), streamed tensor by tensor from the
   base GGUF: for every candidate type, ggml's own quantizer (with the
   importance matrix, as ``llama_model_quantize`` runs it) quantizes a sample
   of the tensor's rows, ggml expands them back, and the squared error of each
   input column is weighted by the importance matrix — the expected squared
   error of the tensor's output on the calibration text — then divided by the
   same weighting of the weights themselves, so the proxy is the error's share
   of the tensor's output (of the proxies ``benchmarks/budget_mix.py`` scores,
   this relative error predicts measured KL divergence best). At most ``rows`` rows
   are sampled per tensor (evenly spaced), so the cost does not grow with the
   width of the model's vocabulary or feed-forward layers.
2. **Measured KL divergence per group** (:func:`group_sensitivity`): the error
   proxy says how large a tensor's error is, not how much the model's output
   cares. For each group of tensors (one tensor kind across all blocks, such as
   every ``attn_v``, and each tensor outside the blocks on its own) the base
   model runs on a short text with that group's tensors replaced by their
   quantized values at a probe type, and its next-token distributions are
   compared with the full-precision model's. The replacement is made in the
   activations: the eval callback adds ``x·(Q(W) − W)ᵀ`` to each product the
   group's weights take part in (and swaps the looked-up rows of a token
   embedding), which is what the quantized weights would have computed. No
   file is written and the model is loaded once. The group's scale ``α`` turns
   error into KL divergence; a tensor's predicted cost at a type is ``α ×
   error``.
3. **Allocation** (:func:`search_mix`): the knapsack of
   :func:`quant.plan.mix.allocate` over those costs, with the exact padded
   size of every tensor and of llama.cpp's output header (recipe included), so
   the file's size is known to the byte before it is written.
4. **Build** (:func:`build_mix`): ``llama_model_quantize`` with one
   ``tt_overrides`` pattern per recipe entry, checked by a dry run first.

Both measurements are cached by model fingerprint, importance matrix and
settings, and saved after every tensor and every group, so a cancelled search
resumes where it stopped.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quant.atomic import atomic_output
from quant.errors import QuantError
from quant.gguf.header import GGUFHeader, GGUFTensor, read_gguf_header
from quant.gguf.types import GGMLType
from quant.plan.mix import (
    KEY_BUDGET,
    KEY_PREDICTED,
    SEARCH_TYPES,
    Allocation,
    BudgetError,
    Recipe,
    TensorOptions,
    allocate,
    candidate_types,
    padded,
    tensor_choice,
)
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel

if TYPE_CHECKING:
    from quant.jobs.evaluate import ReferenceLogits
    from quant.jobs.imatrix import ImatrixData
    from quant.jobs.quantize import QuantizeResult
    from quant.native.llama_session import NativeModel

logger = logging.getLogger(__name__)

SENSITIVITY_VERSION = 2
DEFAULT_ROWS = 256
DEFAULT_SEARCH_CHUNKS = 2
# A group is measured with its tensors at the least precise candidate of about four
# bits: error large enough to measure, small enough that KL divergence still grows
# in proportion to it.
PROBE_BITS = (3.4, 4.6)
# Rows of a weight expanded at once while adding its error to a product.
_ROW_BLOCK = 8192


@dataclass(frozen=True)
class SearchSettings:
    """How the search measures; part of its cache key."""

    types: tuple[GGMLType, ...] = SEARCH_TYPES
    rows: int = DEFAULT_ROWS
    chunk_size: int = 512
    chunks: int = DEFAULT_SEARCH_CHUNKS
    threads: int | None = None
    # Measure each group's KL divergence (False: the importance-weighted error alone).
    calibrate: bool = True

    def errors_key(self) -> str:
        return f"v{SENSITIVITY_VERSION}|{','.join(t.name for t in self.types)}|rows={self.rows}"

    def groups_key(self) -> str:
        return f"{self.errors_key()}|chunks={self.chunks}x{self.chunk_size}|probe={PROBE_BITS}"


@dataclass(frozen=True)
class GroupMeasure:
    """One group's measurement: its probe error, the KL divergence it caused and the scale."""

    name: str
    tensors: tuple[str, ...]
    probe: dict[str, str]  # tensor → probe type
    error: float
    kld: float | None  # None: not measurable (products the callback cannot rewrite)
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "tensors": len(self.tensors),
            "probe": sorted(set(self.probe.values())),
            "error": self.error,
            "kld": self.kld,
            "alpha": self.alpha,
        }


@dataclass(frozen=True)
class Sensitivity:
    """Every quantizable tensor's error per candidate type and its group's scale."""

    errors: Mapping[str, Mapping[str, float]]  # tensor → type name → error
    groups: Mapping[str, GroupMeasure]
    group_of: Mapping[str, str]
    baseline_kld: float = 0.0
    seconds: float = 0.0
    # Measurements taken from the cache of an earlier, stopped search.
    resumed: int = 0

    def cost(self, name: str, type_name: str) -> float:
        """Predicted KL divergence that ``name`` at ``type_name`` adds."""
        g = self.groups.get(self.group_of[name])
        alpha = g.alpha if g is not None else 1.0
        return alpha * self.errors[name][type_name]


@dataclass(frozen=True)
class MixPlan:
    """A searched mix, before it is built: the recipe, its exact size and what it predicts."""

    recipe: Recipe
    budget_bytes: int
    size_bytes: int
    predicted_kld: float
    file_type: str
    metadata: dict[str, str | int | float | bool]
    n_parameters: int
    search: dict[str, Any] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.size_bytes / max(1, self.n_parameters)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "size_bytes": self.size_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "predicted_kld": round(self.predicted_kld, 6),
            "file_type": self.file_type,
            "recipe": self.recipe.entries(),
            "types": self.recipe.type_counts(),
            "search": self.search,
        }


# -- reading a tensor's rows -------------------------------------------------------------


class TensorRows:
    """One tensor of a GGUF read as float32 rows, straight from the file's pages.

    A tensor of ggml shape ``(ne0, ne1, ne2)`` has ``ne1 × ne2`` rows of ``ne0``
    values; for expert tensors, row ``r`` belongs to expert ``r // ne1``.
    """

    def __init__(self, header: GGUFHeader, tensor: GGUFTensor) -> None:
        from quant.native.ggml_ctypes import ggml

        self.tensor = tensor
        self.name = tensor.name
        self.n_cols = tensor.shape[0]
        self.rows_per_mat = tensor.shape[1] if len(tensor.shape) > 1 else 1
        self.n_rows = tensor.n_elements // self.n_cols
        self.row_bytes = tensor.type.n_bytes(self.n_cols)
        self._data = header.tensor_data(tensor)
        self._g = ggml()

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (sorted) as float32, shape (len(index), n_cols)."""
        out = np.empty((len(index), self.n_cols), dtype=np.float32)
        for k, r in enumerate(index.tolist()):
            raw = self._data[r * self.row_bytes : (r + 1) * self.row_bytes]
            out[k] = self._g.dequantize(int(self.tensor.type), raw, self.n_cols)
        return out

    def row_range(self, r0: int, r1: int) -> np.ndarray:
        raw = self._data[r0 * self.row_bytes : r1 * self.row_bytes]
        vals = self._g.dequantize(int(self.tensor.type), raw, (r1 - r0) * self.n_cols)
        return vals.reshape(r1 - r0, self.n_cols)


def _importance(imatrix: Mapping[str, np.ndarray] | None, src: TensorRows) -> np.ndarray | None:
    """Per-matrix importance values, shape (n_mat, n_cols), or None."""
    if imatrix is None or src.name not in imatrix:
        return None
    values = imatrix[src.name]
    n_mat = src.n_rows // src.rows_per_mat
    if values.size == src.n_cols:
        return np.broadcast_to(values.reshape(1, -1), (n_mat, src.n_cols))
    if values.size != n_mat * src.n_cols:
        raise QuantError(
            f"importance matrix entry {src.name} has {values.size} values for a tensor of "
            f"{n_mat} × {src.n_cols}; collect the matrix again for this model."
        )
    return values.reshape(n_mat, src.n_cols)


def _sample_rows(n_rows: int, k: int) -> np.ndarray:
    if n_rows <= k:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, k).round().astype(np.int64))


def quantized_error(
    t: GGMLType, rows: np.ndarray, weights: np.ndarray | None, imatrix_rows: np.ndarray | None
) -> float:
    """Σ over rows and columns of (importance × squared error) of ``rows`` stored as ``t``.

    ``imatrix_rows`` (one importance row per row of ``rows``, or None for equal
    weights) goes to ggml's quantizer too, as llama.cpp's quantize passes it.
    """
    from quant.native.ggml_ctypes import ggml

    g = ggml()
    if imatrix_rows is None:
        q = g.quantize_rows(int(t), rows, None)
        back = g.dequantize(int(t), q, rows.size).reshape(rows.shape)
        w = np.ones(rows.shape[1], dtype=np.float64) if weights is None else weights
        return float(np.square(rows - back, dtype=np.float64).sum(axis=0) @ w)
    # Rows of different experts carry their own importance values.
    total = 0.0
    keys = np.unique(imatrix_rows, axis=0, return_inverse=True)
    uniq, inverse = keys[0], keys[1].reshape(-1)
    for k, imp in enumerate(uniq):
        sel = rows[inverse == k]
        q = g.quantize_rows(int(t), sel, imp.astype(np.float32))
        back = g.dequantize(int(t), q, sel.size).reshape(sel.shape)
        total += float(np.square(sel - back, dtype=np.float64).sum(axis=0) @ imp.astype(np.float64))
    return total


def weighted_energy(rows: np.ndarray, imatrix_rows: np.ndarray | None) -> float:
    """Σ over rows and columns of importance × W²: what :func:`quantized_error` is relative to."""
    squares = np.square(rows, dtype=np.float64)
    if imatrix_rows is None:
        total = float(squares.sum())
    else:
        total = float(np.einsum("ij,ij->", squares, imatrix_rows.astype(np.float64)))
    return max(total, 1e-30)


# -- the error proxy -------------------------------------------------------------------


@dataclass
class _Cache:
    """A JSON file of finished measurements, rewritten whole after each one."""

    path: Path | None
    key: str
    data: dict[str, Any] = field(default_factory=dict)
    on_write: Callable[[Path], Any] | None = None
    loaded: int = 0

    def load(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("ignoring unreadable search cache %s", self.path)
            return {}
        if not isinstance(raw, dict) or raw.get("key") != self.key:
            return {}
        items = raw.get("items")
        self.data = dict(items) if isinstance(items, dict) else {}
        self.loaded = len(self.data)
        return dict(self.data)

    def put(self, name: str, value: Any) -> None:
        self.data[name] = value
        if self.path is None:
            return
        text = json.dumps({"key": self.key, "items": self.data})
        # Written under atomic_output's fixed temporary name, which a job told to stop
        # removes (quant.atomic.remove_in_flight); ``on_write`` also announces it to a
        # parent process, which removes it if the job is killed outright.
        if self.on_write is not None:
            with self.on_write(self.path), atomic_output(self.path) as tmp:
                tmp.write_text(text, encoding="utf-8")
        else:
            with atomic_output(self.path) as tmp:
                tmp.write_text(text, encoding="utf-8")


def quantizable(header: GGUFHeader) -> list[GGUFTensor]:
    return [t for t in header.tensors if candidate_types(t.name, t.shape, has_imatrix=True)]


def tensor_errors(
    header: GGUFHeader,
    imatrix: ImatrixData | None,
    settings: SearchSettings,
    *,
    cache: _Cache,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, dict[str, float]]:
    """The error proxy of every quantizable tensor at every candidate type (see the module)."""
    values = imatrix.for_quantize() if imatrix is not None else None
    done = {k: dict(v) for k, v in cache.load().items()}
    todo = quantizable(header)
    total_work = sum(_work(t, settings) for t in todo)
    work = sum(_work(t, settings) for t in todo if t.name in done)
    eta = EtaEstimator()
    threads = max(1, settings.threads or _cores())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for t in todo:
            if t.name in done:
                continue
            check_cancel(cancel)
            src = TensorRows(header, t)
            imp = _importance(values, src)
            types = candidate_types(
                t.name, t.shape, has_imatrix=imp is not None, types=settings.types
            )
            idx = _sample_rows(src.n_rows, settings.rows)
            rows = src.rows(idx)
            imp_rows = imp[idx // src.rows_per_mat] if imp is not None else None
            futures = {ty: pool.submit(quantized_error, ty, rows, None, imp_rows) for ty in types}
            # Relative to the sampled rows' own weighted energy: a block whose output a
            # norm rescales (Gemma's post-norms) cares about its error's share, not its size.
            energy = weighted_energy(rows, imp_rows)
            errs = {ty.name: f.result() / energy for ty, f in futures.items()}
            done[t.name] = errs
            cache.put(t.name, errs)
            work += _work(t, settings)
            if on_progress is not None:
                on_progress(
                    Progress(
                        "search",
                        work,
                        total_work,
                        f"error of {t.name} at {len(types)} types",
                        eta_s=eta.eta(work, total_work),
                    )
                )
    return done


def _work(t: GGUFTensor, settings: SearchSettings) -> int:
    return min(t.n_elements // t.shape[0], settings.rows) * t.shape[0]


def _cores() -> int:
    from quant.native.llama_session import physical_cores

    return physical_cores()


# -- measured KL divergence per group --------------------------------------------------


def group_name(tensor: str) -> str:
    """``blk.7.attn_v.weight`` → ``attn_v.weight``; names outside the blocks are their own."""
    parts = tensor.split(".")
    if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
        return ".".join(parts[2:])
    return tensor


def probe_type(errors: Mapping[str, float]) -> str:
    """The type a group is measured at: the worst of the candidates near four bits."""
    near = {
        k: v
        for k, v in errors.items()
        if PROBE_BITS[0] <= GGMLType[k].bits_per_weight <= PROBE_BITS[1]
    }
    pool = near or errors
    return max(pool, key=lambda k: (pool[k], -GGMLType[k].bits_per_weight))


class _Replacement:
    """A weight's quantized values at one type, and its error rows on demand."""

    def __init__(self, src: TensorRows, t: GGMLType, imp: np.ndarray | None, threads: int) -> None:
        from quant.native.ggml_ctypes import ggml

        self.src = src
        self.type = t
        self._g = ggml()
        self.q_row_bytes = self._g.row_size(int(t), src.n_cols)
        parts: list[np.ndarray] = []
        step = max(1, min(src.rows_per_mat, 4096))
        starts = list(range(0, src.n_rows, step))

        def one(r0: int) -> np.ndarray:
            r1 = min(src.n_rows, r0 + step, (r0 // src.rows_per_mat + 1) * src.rows_per_mat)
            imp_row = imp[r0 // src.rows_per_mat] if imp is not None else None
            return self._g.quantize_rows(int(t), src.row_range(r0, r1), imp_row)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(one, starts))
        self.q = np.concatenate(parts)
        self.hits = 0

    def error_range(self, r0: int, r1: int) -> np.ndarray:
        """``Q(W) − W`` of rows r0..r1."""
        raw = self.q[r0 * self.q_row_bytes : r1 * self.q_row_bytes]
        back = self._g.dequantize(int(self.type), raw, (r1 - r0) * self.src.n_cols)
        err: np.ndarray = back.reshape(r1 - r0, -1) - self.src.row_range(r0, r1)
        return err

    def error_at(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.src.n_cols), dtype=np.float32)
        for k, r in enumerate(ids.tolist()):
            out[k] = self.error_range(r, r + 1)[0]
        return out


class Injector:
    """The eval callback that makes the model compute as if some weights were quantized.

    ``targets`` maps weight names to their :class:`_Replacement`; an empty map
    leaves the model as it is. A ``MUL_MAT`` whose weight is a target gets
    ``x·Eᵀ`` added to its result, a ``GET_ROWS`` from a target (a token
    embedding) gets the error of the rows it looked up. Nothing else is touched,
    and an exception is stored for :meth:`check`, never raised into llama.cpp.
    """

    def __init__(self) -> None:
        self.targets: dict[str, _Replacement] = {}
        self.error: BaseException | None = None
        self._g: Any = None
        self._get_rows = -1

    def bind(self) -> Callable[[int, bool, int], bool]:
        from quant.jobs.imatrix import weight_name
        from quant.native.ggml_ctypes import GgmlTensor, ggml

        g = ggml()
        self._g = g
        self._get_rows = g.op_by_name("GET_ROWS")
        ptr_t = ctypes.POINTER(GgmlTensor)
        op_mm, op_rows = g.op_mul_mat, self._get_rows

        def callback(t: int, ask: bool, _ud: int) -> bool:
            try:
                if not self.targets or self.error is not None:
                    return not ask
                p = ctypes.cast(t, ptr_t)
                node = p.contents
                if node.op not in (op_mm, op_rows) or not node.src[0]:
                    return not ask
                name = weight_name(node.src[0].contents.name.decode("utf-8", "replace"))
                target = self.targets.get(name)
                if ask:
                    return target is not None
                if target is not None:
                    self._apply(p, node, target, node.op == op_rows)
            except BaseException as exc:  # never let an exception reach the scheduler
                if self.error is None:
                    self.error = exc
            return True

        return callback

    def _apply(self, p: Any, node: Any, target: _Replacement, lookup: bool) -> None:
        g = self._g
        result = g.read_f32(p)
        if result.shape[0] != 1 or result.shape[1] != 1:
            raise QuantError(f"{target.src.name}: a batched product cannot be rewritten.")
        out = result[0, 0]  # (tokens, n_out), written back whole below
        if lookup:
            ids = np.asarray(g.read(node.src[1], np.int32)).reshape(-1)
            out += target.error_at(ids)
        else:
            x = np.asarray(g.read(node.src[1], np.float32))
            if x.shape[0] != 1 or x.shape[1] != 1:
                raise QuantError(f"{target.src.name}: a batched product cannot be rewritten.")
            x2 = x[0, 0]
            n_out = target.src.n_rows
            for r0 in range(0, n_out, _ROW_BLOCK):
                r1 = min(n_out, r0 + _ROW_BLOCK)
                out[:, r0:r1] += x2 @ target.error_range(r0, r1).T
        g.write(p, result)
        target.hits += 1

    def check(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, QuantError):
                raise err
            raise QuantError(f"the measurement pass failed: {err}") from err


def pass_kld(
    m: NativeModel, reference: ReferenceLogits, injector: Injector, cancel: CancelToken | None
) -> float:
    """Mean KL(reference ‖ model) over the reference's scored tokens, one pass."""
    from quant.jobs.evaluate import kl_divergence, log_softmax

    first = reference.first
    row = 0
    kld: list[np.ndarray] = []
    for chunk in reference.tokens:
        check_cancel(cancel)
        m.clear()
        n_rows = m.decode(chunk, output_from=first)
        injector.check()
        view = m.logits_view(n_rows)
        for r0 in range(0, n_rows - 1, 32):
            r1 = min(n_rows - 1, r0 + 32)
            kld.append(
                kl_divergence(reference.row_logp(row + r0, row + r1), log_softmax(view[r0:r1]))
            )
        row += n_rows - 1
    return float(np.concatenate(kld).mean())


def group_sensitivity(
    base: Path,
    header: GGUFHeader,
    *,
    imatrix: ImatrixData | None,
    errors: Mapping[str, Mapping[str, float]],
    reference: ReferenceLogits,
    settings: SearchSettings,
    cache: _Cache,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[dict[str, GroupMeasure], float]:
    """Each group's measured KL divergence at its probe types, and the scale α it gives.

    Returns the measures and the base model's own KL divergence to the reference
    (zero up to the arithmetic of a split graph), which every group's is taken
    relative to.
    """
    from quant.native.llama_session import NativeModel

    values = imatrix.for_quantize() if imatrix is not None else None
    members: dict[str, list[str]] = {}
    for name in errors:
        members.setdefault(group_name(name), []).append(name)
    done = cache.load()
    by_name = {t.name: t for t in header.tensors}
    threads = max(1, settings.threads or _cores())
    order = sorted(members)
    total = len(order) + 1
    eta = EtaEstimator()
    injector = Injector()
    measured: dict[str, dict[str, Any]] = {k: v for k, v in done.items() if k in members}
    if len(measured) == len(order) and "__baseline__" in done:
        return _measures(members, errors, measured), float(done["__baseline__"])
    with NativeModel(
        base, n_ctx=reference.chunk_size, threads=settings.threads, cb_eval=injector.bind()
    ) as m:
        if "__baseline__" in done:
            baseline = float(done["__baseline__"])
        else:
            baseline = pass_kld(m, reference, injector, cancel)
            cache.put("__baseline__", baseline)
        for i, gname in enumerate(order):
            if gname in measured:
                continue
            check_cancel(cancel)
            probe = {n: probe_type(errors[n]) for n in members[gname]}
            targets: dict[str, _Replacement] = {}
            for n in members[gname]:
                src = TensorRows(header, by_name[n])
                targets[n] = _Replacement(
                    src, GGMLType[probe[n]], _importance(values, src), threads
                )
            injector.targets = targets
            try:
                kld = pass_kld(m, reference, injector, cancel)
            finally:
                injector.targets = {}
            hit = all(r.hits > 0 for r in targets.values())
            entry = {"probe": probe, "kld": (kld - baseline) if hit else None}
            measured[gname] = entry
            cache.put(gname, entry)
            if on_progress is not None:
                on_progress(
                    Progress(
                        "search",
                        i + 2,
                        total,
                        f"measured {gname}: KLD {kld - baseline:.4f}"
                        if hit
                        else f"{gname}: not measurable",
                        eta_s=eta.eta(i + 2, total),
                    )
                )
    return _measures(members, errors, measured), baseline


def _measures(
    members: Mapping[str, list[str]],
    errors: Mapping[str, Mapping[str, float]],
    measured: Mapping[str, Mapping[str, Any]],
) -> dict[str, GroupMeasure]:
    out: dict[str, GroupMeasure] = {}
    for gname, names in members.items():
        m = measured[gname]
        probe = {str(k): str(v) for k, v in dict(m["probe"]).items()}
        err = sum(errors[n][probe[n]] for n in names)
        kld = m.get("kld")
        alpha = max(0.0, float(kld)) / err if kld is not None and err > 0 else math.nan
        out[gname] = GroupMeasure(gname, tuple(names), probe, err, kld, alpha)
    known = [g.alpha for g in out.values() if math.isfinite(g.alpha) and g.alpha > 0]
    fallback = float(np.median(known)) if known else 1.0
    for gname, g in out.items():
        if not math.isfinite(g.alpha):
            logger.info("group %s could not be measured; using the median scale", gname)
            out[gname] = GroupMeasure(g.name, g.tensors, g.probe, g.error, g.kld, fallback)
    return out


# -- the search -------------------------------------------------------------------------


def measure(
    base: Path,
    imatrix: ImatrixData | None,
    settings: SearchSettings,
    *,
    reference: ReferenceLogits | None,
    cache_dir: Path | None,
    cache_key: str,
    on_write: Callable[[Path], Any] | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Sensitivity:
    """Both measurements, from the cache where they were finished (see the module)."""
    started = time.monotonic()
    header = read_gguf_header(base)
    folder = None
    if cache_dir is not None:
        folder = cache_dir / "mix" / hashlib.sha256(cache_key.encode()).hexdigest()[:20]
    err_cache = _Cache(
        folder / "errors.json" if folder else None,
        f"{cache_key}|{settings.errors_key()}",
        on_write=on_write,
    )
    calibrate = settings.calibrate and reference is not None
    eta = EtaEstimator()
    errors = tensor_errors(
        header,
        imatrix,
        settings,
        cache=err_cache,
        on_progress=_share(on_progress, 0.0, 0.5 if calibrate else 1.0, eta),
        cancel=cancel,
    )
    resumed = err_cache.loaded
    group_of = {n: group_name(n) for n in errors}
    groups: dict[str, GroupMeasure] = {}
    baseline = 0.0
    if calibrate:
        assert reference is not None
        grp_cache = _Cache(
            folder / f"groups-{reference.text_sha256[:12]}.json" if folder else None,
            f"{cache_key}|{settings.groups_key()}|{reference.model_fingerprint}|{reference.n_scored}",
            on_write=on_write,
        )
        resumed += len(grp_cache.load())
        groups, baseline = group_sensitivity(
            base,
            header,
            imatrix=imatrix,
            errors=errors,
            reference=reference,
            settings=settings,
            cache=grp_cache,
            on_progress=_share(on_progress, 0.5, 1.0, eta),
            cancel=cancel,
        )
    return Sensitivity(errors, groups, group_of, baseline, time.monotonic() - started, resumed)


_SCALE = 1000


def _share(
    on_progress: ProgressCallback | None, lo: float, hi: float, eta: EtaEstimator
) -> ProgressCallback | None:
    """Report a part of the search as its share ``lo``..``hi`` of one bar, with one ETA."""
    if on_progress is None:
        return None
    report = on_progress

    def forward(p: Progress) -> None:
        frac = p.done / p.total if p.total else 0.0
        done = max(1, round(_SCALE * (lo + (hi - lo) * min(1.0, frac))))
        report(
            Progress(p.stage, done, _SCALE, p.message, eta_s=eta.eta(done, _SCALE)),
        )

    return forward


def search_mix(
    base: Path,
    sensitivity: Sensitivity,
    budget_bytes: int,
    *,
    metadata: Mapping[str, str | int | float | bool] | None = None,
    imatrix: ImatrixData | None = None,
    repacked: frozenset[GGMLType] = frozenset(),
) -> MixPlan:
    """The mix with the least predicted KL divergence whose file is at most ``budget_bytes``.

    ``metadata`` is what the caller will also write into the file (its header
    counts); ``repacked`` lists types whose bytes count twice against the budget
    (a memory budget on a CPU that keeps repacked copies). Raises
    :class:`~quant.plan.mix.BudgetError` when the budget is below the smallest
    mix.
    """
    from quant.jobs.quantize import file_size, imatrix_metadata, output_header_bytes

    header = read_gguf_header(base)
    shapes = {t.name: t.shape for t in header.tensors}
    options: list[TensorOptions] = []
    for name, errs in sensitivity.errors.items():
        shape = shapes[name]
        choices = tuple(
            tensor_choice(shape, GGMLType[k], sensitivity.cost(name, k), repacked=repacked)
            for k in errs
        )
        options.append(TensorOptions(name, shape, choices))
    fixed = sum(
        padded(t.n_bytes, header.alignment)
        for t in header.tensors
        if t.name not in sensitivity.errors
    )
    meta: dict[str, str | int | float | bool] = dict(metadata or {})
    if imatrix is not None:
        meta.update(imatrix_metadata(imatrix, imatrix.source_name))
    recipe = Recipe({o.name: o.cheapest().type for o in options})
    capacity = budget_bytes - fixed
    alloc: Allocation | None = None
    for _ in range(8):
        full = {**meta, **_mix_metadata(recipe, budget_bytes, 0.0)}
        header_bytes = output_header_bytes(header, full)
        alloc = allocate(options, capacity - header_bytes)
        recipe = alloc.recipe
        full = {**meta, **_mix_metadata(recipe, budget_bytes, alloc.predicted)}
        size = file_size(header, full, recipe.types)
        charged = size - alloc.bytes + alloc.charged
        if charged <= budget_bytes:
            break
        capacity -= charged - budget_bytes
    else:
        raise BudgetError("the mix's size did not settle within the budget; this is a bug.")
    assert alloc is not None
    file_type = recipe.file_type(shapes)
    mix_meta = _mix_metadata(recipe, budget_bytes, alloc.predicted)
    return MixPlan(
        recipe=recipe,
        budget_bytes=budget_bytes,
        size_bytes=size,
        predicted_kld=alloc.predicted + sensitivity.baseline_kld,
        file_type=file_type.name,
        metadata={**dict(metadata or {}), **mix_meta},
        n_parameters=header.n_parameters,
        search={
            "groups": {k: g.as_dict() for k, g in sorted(sensitivity.groups.items())},
            "baseline_kld": sensitivity.baseline_kld,
            "seconds": round(sensitivity.seconds, 2),
        },
    )


def _mix_metadata(
    recipe: Recipe, budget_bytes: int, predicted: float
) -> dict[str, str | int | float | bool]:
    meta: dict[str, str | int | float | bool] = dict(recipe.to_metadata())
    # Integers are written as UINT32 by llama.cpp's overrides: a byte count goes as text.
    meta[KEY_BUDGET] = str(budget_bytes)
    meta[KEY_PREDICTED] = float(round(predicted, 6))
    return meta


# -- building --------------------------------------------------------------------------


def build_mix(
    base: Path,
    dst: Path,
    plan: MixPlan,
    *,
    imatrix: ImatrixData | None = None,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantizeResult:
    """Write the mix with ``llama_model_quantize`` and per-tensor overrides.

    A dry run first checks that llama.cpp will give every tensor the recipe's
    type and that the file comes out at the planned size; a difference raises
    :class:`~quant.errors.QuantError` before anything is written.
    """
    from quant.jobs.quantize import plan_quantization, quantize

    options = mix_options(plan, threads=threads)
    dry = plan_quantization(base, options, imatrix=imatrix, cancel=cancel)
    wrong = [
        t.name
        for t in dry.tensors
        if t.name in plan.recipe.types and t.target_type != plan.recipe.types[t.name].name
    ]
    if wrong or dry.size_bytes != plan.size_bytes:
        raise QuantError(
            f"{base.name}: llama.cpp would not write the mix as planned "
            f"({len(wrong)} tensor(s) of another type, {dry.size_bytes} bytes for "
            f"{plan.size_bytes} planned); nothing was written."
        )
    return quantize(base, dst, options, imatrix=imatrix, on_progress=on_progress, cancel=cancel)


def mix_options(plan: MixPlan, *, threads: int | None = None) -> Any:
    from quant.gguf.types import LlamaFileType
    from quant.jobs.quantize import QuantizeOptions

    return QuantizeOptions(
        LlamaFileType[plan.file_type],
        threads=threads,
        tensor_types=plan.recipe.overrides(),
        metadata=plan.metadata,
    )


def recipe_of(path: Path | str) -> Recipe | None:
    """The recipe a mix file keeps in its metadata; None for any other GGUF."""
    return Recipe.from_metadata(read_gguf_header(path).get)


def plan_of(path: Path | str) -> MixPlan:
    """The plan a mix file was made from, read back from its metadata.

    Quantizing the same base model with the same importance matrix by this plan
    (:func:`build_mix`) makes the same file again, byte for byte. Raises
    :class:`~quant.plan.mix.BudgetError` for a GGUF that is not a Quantdesk mix.
    """
    header = read_gguf_header(path)
    recipe = Recipe.from_metadata(header.get)
    if recipe is None:
        raise BudgetError(f"{Path(path).name} is not a Quantdesk mix: it keeps no recipe.")
    # The keys Quantdesk wrote, in the order they were written.
    meta: dict[str, str | int | float | bool] = {}
    for key, value in header.metadata.items():
        if key.startswith("quantdesk.") and isinstance(value, str | int | float | bool):
            meta[key] = value
    ft = header.file_type
    budget = meta.get(KEY_BUDGET)
    predicted = meta.get(KEY_PREDICTED)
    return MixPlan(
        recipe=recipe,
        budget_bytes=int(budget) if isinstance(budget, str) and budget.isdigit() else 0,
        size_bytes=header.file_size,
        predicted_kld=float(predicted) if isinstance(predicted, float) else math.nan,
        file_type=ft.name if ft is not None else "Q8_0",
        metadata=meta,
        n_parameters=header.n_parameters,
    )


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


__all__ = [
    "DEFAULT_ROWS",
    "GroupMeasure",
    "Injector",
    "MixPlan",
    "SearchSettings",
    "Sensitivity",
    "build_mix",
    "group_name",
    "measure",
    "recipe_of",
    "search_mix",
    "tensor_errors",
]
