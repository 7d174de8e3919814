"""Quantize a GGUF with llama.cpp's own type mixes (``llama_model_quantize``).

Calling ``llama_model_quantize`` reuses everything llama.cpp knows about which
tensor gets which type (Q4_K_M's Q6_K ``attn_v``/``ffn_down`` layers, the
output tensor, fallbacks for rows that do not divide into blocks), so files
made here are the files the ``llama-quantize`` tool makes.

* :func:`plan_quantization` runs llama.cpp's dry run and returns the exact
  size of the output and the type of every tensor, before anything is written.
* :func:`quantize` writes the file under a temporary name and renames it only
  when llama.cpp reports success; an importance matrix, when given, goes to
  llama.cpp through ``params.imatrix`` and is recorded in the output's
  ``quantize.imatrix.*`` metadata (through ``params.kv_overrides``, which is
  how llama.cpp's own tool records it).

Progress comes from llama.cpp's log line per tensor (``[ 12/ 236] name …``).
``llama_model_quantize`` is one blocking native call: the cancel token is
checked before it starts, and a job that must stop mid-file runs in a child
process that is killed (see :mod:`quant.jobs.pipeline`).
"""

from __future__ import annotations

import ctypes
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant.atomic import atomic_output
from quant.errors import QuantError
from quant.gguf.header import GGUFHeader, read_gguf_header
from quant.gguf.types import GGMLType, GGUFValueType, LlamaFileType
from quant.native.llama_log import LineCollector, observe
from quant.native.llama_session import physical_cores
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel

if TYPE_CHECKING:
    from quant.jobs.imatrix import ImatrixData

logger = logging.getLogger(__name__)

GGUF_ALIGNMENT = 32


class ImatrixRequiredError(QuantError):
    """The type needs an importance matrix and none was given."""


# File types whose main tensors llama.cpp refuses to write without an imatrix
# (tensor_requires_imatrix in src/llama-quant.cpp: IQ1_S/M, IQ2_XXS/XS/S, IQ3_XXS,
# and Q2_K inside a Q2_K_S file; IQ2_S and IQ2_M files use IQ2_XS / IQ2_S tensors).
NEEDS_IMATRIX: frozenset[LlamaFileType] = frozenset(
    {
        LlamaFileType.IQ1_S,
        LlamaFileType.IQ1_M,
        LlamaFileType.IQ2_XXS,
        LlamaFileType.IQ2_XS,
        LlamaFileType.IQ2_S,
        LlamaFileType.IQ2_M,
        LlamaFileType.IQ3_XXS,
        LlamaFileType.Q2_K_S,
    }
)

# Source tensor types a requantization is accepted from without asking: Q8_0 is
# close enough to the original that llama.cpp's mixes still come out right.
_NEAR_LOSSLESS = {GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0}

# Aliases llama.cpp's quantize tool accepts (QUANT_OPTIONS in tools/quantize/quantize.cpp).
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def parse_file_type(text: str) -> LlamaFileType:
    """``"q4_k_m"`` → ``LlamaFileType.Q4_K_M``; raises QuantError naming the choices."""
    key = text.strip().upper().replace("-", "_")
    key = _ALIASES.get(key, key)
    try:
        return LlamaFileType.from_name(key)
    except ValueError:
        choices = ", ".join(m.name for m in LlamaFileType)
        raise QuantError(f"unknown quantization type {text!r}; choose one of {choices}.") from None


def parse_file_types(text: str) -> tuple[LlamaFileType, ...]:
    """``"Q4_K_M,IQ4_XS"`` → the file types, in order, without repeats."""
    out: list[LlamaFileType] = []
    for part in text.split(","):
        if part.strip():
            ft = parse_file_type(part)
            if ft not in out:
                out.append(ft)
    if not out:
        raise QuantError("no quantization type given; pass e.g. --to Q4_K_M.")
    return tuple(out)


def requires_imatrix(file_type: LlamaFileType) -> bool:
    return file_type in NEEDS_IMATRIX


def imatrix_refusal(file_type: LlamaFileType) -> str:
    return (
        f"{file_type.name} stores most weights in under 3.1 bits, and llama.cpp only makes it "
        "with an importance matrix (without one the result is garbage); run with "
        "--imatrix auto, or choose Q3_K_M or IQ4_XS."
    )


@dataclass(frozen=True)
class QuantizeOptions:
    """What to make. ``None`` types mean llama.cpp's choice for the file type."""

    file_type: LlamaFileType
    output_tensor_type: GGMLType | None = None
    token_embedding_type: GGMLType | None = None
    threads: int | None = None
    pure: bool = False
    allow_requantize: bool = False
    # (regex on tensor name, type) pairs, applied by llama.cpp before its mix.
    tensor_types: tuple[tuple[str, GGMLType], ...] = ()
    # Extra metadata written into the output (string, int, float or bool values).
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    source_type: str
    target_type: str
    n_bytes: int


@dataclass(frozen=True)
class QuantizePlan:
    """llama.cpp's dry run: every tensor's type and the exact file size."""

    file_type: LlamaFileType
    tensors: tuple[TensorPlan, ...]
    size_bytes: int
    n_parameters: int
    needs_imatrix: bool

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.size_bytes / max(1, self.n_parameters)

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.target_type] = counts.get(t.target_type, 0) + 1
        return counts


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    file_type: LlamaFileType
    size_bytes: int
    n_parameters: int
    seconds: float
    imatrix_entries: int = 0

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.size_bytes / max(1, self.n_parameters)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "type": self.file_type.name,
            "size_bytes": self.size_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "seconds": round(self.seconds, 2),
            "imatrix_entries": self.imatrix_entries,
        }


# "[  12/ 236]                  blk.0.attn_q.weight - [  640,  1024,     1,     1], type =    f16, "
_TENSOR_LINE = re.compile(
    r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)\s+-\s+\[([\d,\s]+)\],\s*type\s*=\s*(\w+),(.*)$"
)
_DRY_TARGET = re.compile(r"->\s*[\d.]+\s*MiB\s*\((\w+)\)")


def _ggml_type(name: str) -> GGMLType:
    return GGMLType.from_name(name)


class _TensorLines:
    """Observer turning llama.cpp's per-tensor lines into progress and a plan.

    Progress counts tensors, and bytes of the source tensors done so far: tensors
    differ in size by orders of magnitude (the embedding table of a small model is
    most of it), so the ETA is computed from bytes.
    """

    def __init__(
        self, stage: str, on_progress: ProgressCallback | None, label: str, info: GGUFHeader
    ) -> None:
        self.stage = stage
        self.on_progress = on_progress
        self.label = label
        self.sizes = {t.name: t.n_bytes for t in info.tensors}
        self.bytes_total = sum(self.sizes.values())
        self.bytes_done = 0
        self.rows: list[tuple[str, tuple[int, ...], str, str | None]] = []
        self.total = 0
        self.eta = EtaEstimator()
        self.problems = LineCollector()
        self.needs_imatrix_warning = False

    def __call__(self, level: int, line: str) -> None:
        self.problems(level, line)
        if "will require an imatrix" in line:
            self.needs_imatrix_warning = True
        m = _TENSOR_LINE.match(line.strip())
        if not m:
            return
        idx, total, name, shape_s, cur_type, rest = m.groups()
        shape = tuple(int(s) for s in shape_s.replace(" ", "").split(",") if s)
        target = _DRY_TARGET.search(rest)
        self.rows.append((name, shape, cur_type, target.group(1) if target else None))
        self.total = int(total)
        self.bytes_done += self.sizes.get(name, 0)
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    self.stage,
                    int(idx),
                    self.total,
                    f"{self.label}: {name}",
                    bytes_done=self.bytes_done,
                    bytes_total=self.bytes_total,
                    eta_s=self.eta.eta(self.bytes_done, self.bytes_total),
                )
            )


def _check_source(src: Path, info: GGUFHeader, options: QuantizeOptions) -> bool:
    """Validate the input; return whether llama.cpp must be allowed to requantize."""
    quantized = {
        t.type.name for t in info.tensors if t.type not in _NEAR_LOSSLESS and len(t.shape) > 1
    }
    has_q8 = any(t.type == GGMLType.Q8_0 for t in info.tensors)
    if quantized and not options.allow_requantize:
        ft = info.file_type.name if info.file_type is not None else "/".join(sorted(quantized))
        raise QuantError(
            f"{src.name} is already quantized ({ft}); quantizing it again compounds the loss. "
            "Start from the F16, BF16 or Q8_0 model, or allow requantizing explicitly."
        )
    return bool(quantized) or has_q8 or options.allow_requantize


def _tensor_bytes(shape: tuple[int, ...], type_name: str) -> int:
    return _ggml_type(type_name).n_bytes(math.prod(shape))


def _pad(n: int, align: int = GGUF_ALIGNMENT) -> int:
    return -(-n // align) * align


def _kv_size(key: str, value: str | int | float | bool) -> int:
    """Bytes of an override's key/value record: key (u64 length + bytes), type (u32), value."""
    base = 8 + len(key.encode()) + 4
    if isinstance(value, bool):
        vtype = GGUFValueType.BOOL
    elif isinstance(value, int):
        vtype = GGUFValueType.UINT32  # llama.cpp writes integer overrides as UINT32
    elif isinstance(value, float):
        vtype = GGUFValueType.FLOAT32
    else:
        return base + 8 + len(_clip(value).encode())
    size = vtype.size
    assert size is not None
    return base + size


def _clip(text: str, limit: int = 127) -> str:
    """``text`` cut to fit llama.cpp's 128-byte override value, on a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


class _NativeParams:
    """Keeps every buffer referenced by ``llama_model_quantize_params`` alive."""

    def __init__(
        self,
        options: QuantizeOptions,
        imatrix: ImatrixData | None,
        metadata: Mapping[str, str | int | float | bool],
        *,
        dry_run: bool,
        allow_requantize: bool,
    ) -> None:
        import llama_cpp

        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = int(options.file_type)
        p.nthread = options.threads or physical_cores()
        p.allow_requantize = allow_requantize
        p.pure = options.pure
        p.dry_run = dry_run
        if options.output_tensor_type is not None:
            p.output_tensor_type = int(options.output_tensor_type)
        if options.token_embedding_type is not None:
            p.token_embedding_type = int(options.token_embedding_type)
        self._keep: list[Any] = []

        if imatrix is not None:
            entries = imatrix.for_quantize()
            arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
            for i, (name, values) in enumerate(entries.items()):
                buf = (ctypes.c_float * len(values)).from_buffer_copy(values.tobytes())
                name_b = name.encode()
                self._keep += [buf, name_b]
                arr[i].name = name_b
                arr[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
                arr[i].size = len(values)
            arr[len(entries)].name = None
            self._keep.append(arr)
            p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))

        if metadata:
            kv = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()
            for i, (key, value) in enumerate(metadata.items()):
                if len(key.encode()) > 127:
                    raise QuantError(f"metadata key {key!r} is longer than llama.cpp's 127 bytes.")
                entry: Any = kv[i]
                entry.key = key.encode()
                if isinstance(value, bool):
                    entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL
                    entry.value.val_bool = value
                elif isinstance(value, int):
                    entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                    entry.value.val_i64 = value
                elif isinstance(value, float):
                    entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT
                    entry.value.val_f64 = value
                else:
                    entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                    entry.value.val_str = _clip(str(value)).encode()
            kv[len(metadata)].key = b""
            self._keep.append(kv)
            p.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))

        if options.tensor_types:
            tt = (llama_cpp.llama_model_tensor_override * (len(options.tensor_types) + 1))()
            for i, (pattern, gtype) in enumerate(options.tensor_types):
                pat = pattern.encode()
                self._keep.append(pat)
                tt[i].pattern = pat
                tt[i].type = int(gtype)
            tt[len(options.tensor_types)].pattern = None
            tt[len(options.tensor_types)].type = llama_cpp.GGML_TYPE_COUNT
            self._keep.append(tt)
            p.tt_overrides = ctypes.cast(tt, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
        self.params = p


def imatrix_metadata(imatrix: ImatrixData, file_name: str | None) -> dict[str, str | int]:
    """The ``quantize.imatrix.*`` keys llama.cpp's tool writes (tools/quantize/quantize.cpp)."""
    meta: dict[str, str | int] = {
        "quantize.imatrix.entries_count": len(imatrix.entries),
        "quantize.imatrix.chunks_count": imatrix.chunk_count,
    }
    if file_name:
        meta["quantize.imatrix.file"] = file_name
    if imatrix.datasets:
        meta["quantize.imatrix.dataset"] = ", ".join(imatrix.datasets)
    return meta


def _run(src: Path, dst: Path, params: _NativeParams, lines: _TensorLines) -> int:
    import llama_cpp

    with observe(lines):
        return int(
            llama_cpp.llama_model_quantize(
                str(src).encode(), str(dst).encode(), ctypes.byref(params.params)
            )
        )


def _prepare(
    src: Path, options: QuantizeOptions, imatrix: ImatrixData | None, *, dry_run: bool
) -> tuple[GGUFHeader, dict[str, str | int | float | bool], _NativeParams]:
    """The source's header (checked), the metadata to write and llama.cpp's parameters."""
    info = read_gguf_header(src)
    requant = _check_source(src, info, options)
    metadata: dict[str, str | int | float | bool] = dict(options.metadata)
    if imatrix is not None:
        metadata.update(imatrix_metadata(imatrix, imatrix.source_name))
    params = _NativeParams(options, imatrix, metadata, dry_run=dry_run, allow_requantize=requant)
    return info, metadata, params


def plan_quantization(
    src: Path | str,
    options: QuantizeOptions,
    *,
    imatrix: ImatrixData | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantizePlan:
    """llama.cpp's dry run for ``options``: the exact output size and per-tensor types."""
    src = Path(src)
    check_cancel(cancel)
    info, metadata, params = _prepare(src, options, imatrix, dry_run=True)
    lines = _TensorLines("plan", on_progress, options.file_type.name, info)
    rc = _run(src, src.with_name(src.name + ".dry-run"), params, lines)
    if rc != 0:
        raise QuantError(
            f"{src.name}: llama.cpp could not plan {options.file_type.name} "
            f"({lines.problems.reason() or f'error {rc}'})."
        )
    tensors: list[TensorPlan] = []
    for name, shape, cur, target in lines.rows:
        new_type = (target or cur).upper()
        tensors.append(
            TensorPlan(name, shape, cur.upper(), new_type, _tensor_bytes(shape, new_type))
        )
    size = file_size(info, metadata, {t.name: _ggml_type(t.target_type) for t in tensors})
    return QuantizePlan(
        file_type=options.file_type,
        tensors=tuple(tensors),
        size_bytes=size,
        n_parameters=info.n_parameters,
        needs_imatrix=lines.needs_imatrix_warning or requires_imatrix(options.file_type),
    )


_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def output_header_bytes(info: GGUFHeader, metadata: Mapping[str, str | int | float | bool]) -> int:
    """Bytes of llama.cpp's output header for ``info`` with ``metadata`` added, padded."""
    return _pad(_output_header_size(info, metadata), info.alignment)


def file_size(
    info: GGUFHeader,
    metadata: Mapping[str, str | int | float | bool],
    types: Mapping[str, GGMLType],
) -> int:
    """The exact size of the file llama.cpp writes from ``info``.

    The output's layout: the input's header with llama.cpp's changes to the keys
    (split keys dropped, file type and quantization version set, ``metadata``
    added), the same tensor directory, then every tensor padded to the
    alignment; ``types`` gives the tensors whose type changes.
    """
    size = output_header_bytes(info, metadata)
    for t in info.tensors:
        target = types.get(t.name)
        n = t.n_bytes if target is None else target.n_bytes(t.n_elements)
        size += _pad(n, info.alignment)
    return size


def _output_header_size(info: GGUFHeader, overrides: Mapping[str, str | int | float | bool]) -> int:
    """Bytes of llama.cpp's output header before alignment padding (src/llama-quant.cpp)."""
    kv = {key: n for key, n in info.kv_bytes.items() if key not in _SPLIT_KEYS}
    for key in ("general.quantization_version", "general.file_type"):
        kv[key] = _kv_size(key, 0)
    for key, value in overrides.items():
        kv[key] = _kv_size(key, value)
    size = 4 + 4 + 8 + 8 + sum(kv.values())
    for t in info.tensors:
        size += 8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8
    return size


def quantize(
    src: Path | str,
    dst: Path | str,
    options: QuantizeOptions,
    *,
    imatrix: ImatrixData | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantizeResult:
    """Write ``dst``: ``src`` quantized to ``options.file_type`` with llama.cpp's mix.

    Raises :class:`ImatrixRequiredError` for IQ1/IQ2/IQ3_XXS/Q2_K_S without an
    importance matrix, :class:`QuantError` when llama.cpp fails (its reason in
    the message). ``dst`` appears only when the whole file is written.
    """
    src, dst = Path(src), Path(dst)
    check_cancel(cancel)
    if imatrix is None and requires_imatrix(options.file_type):
        raise ImatrixRequiredError(imatrix_refusal(options.file_type))
    if src.resolve() == dst.resolve():
        raise QuantError(f"{src.name}: input and output are the same file; choose another output.")
    info, _, params = _prepare(src, options, imatrix, dry_run=False)
    lines = _TensorLines("quantize", on_progress, options.file_type.name, info)
    started = time.monotonic()
    with atomic_output(dst) as tmp:
        check_cancel(cancel)
        rc = _run(src, tmp, params, lines)
        if rc != 0:
            reason = lines.problems.reason() or f"error {rc}"
            if "imatrix" in reason.lower() and imatrix is None:
                raise ImatrixRequiredError(
                    f"{src.name}: {options.file_type.name} needs an importance matrix for this "
                    f"model ({reason}); run with --imatrix auto."
                )
            raise QuantError(
                f"{src.name}: llama.cpp failed to quantize to {options.file_type.name} ({reason}); "
                "check free disk space and that the input is a complete model."
            )
    seconds = time.monotonic() - started
    size = dst.stat().st_size
    logger.info(
        "quantized %s to %s as %s: %d bytes in %.1f s",
        src.name,
        dst.name,
        options.file_type.name,
        size,
        seconds,
    )
    return QuantizeResult(
        dst,
        options.file_type,
        size,
        info.n_parameters,
        seconds,
        len(imatrix.entries) if imatrix is not None else 0,
    )
