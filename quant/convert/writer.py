"""Streaming GGUF writer: metadata first, then tensors one row block at a time.

gguf-py's ``GGUFWriter`` lays out the header, the key/values and the tensor
table (every tensor's name, shape, type and offset, known before any data is
read). The tensor data is then written here block by block, so a tensor is
never held whole in memory: peak memory is a block of rows plus its converted
copy, whatever the model size. The file is written to a temporary name beside
the target and renamed only when complete (:func:`quant.atomic.atomic_output`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from quant.atomic import atomic_output
from quant.convert.architectures import TensorKind, TensorPlan, permute_rows
from quant.convert.errors import CheckpointError
from quant.convert.safetensors_io import ITEM_SIZES, TensorReader
from quant.errors import InsufficientResourcesError
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel
from quant.units import human_bytes

logger = logging.getLogger(__name__)

# Rows are read and converted in blocks of about this many float32 bytes.
BLOCK_BYTES = 32 * 1024 * 1024
# Room kept free beyond the file itself (file-system metadata, other writers).
DISK_MARGIN_BYTES = 64 * 1024 * 1024
_PROGRESS_INTERVAL_S = 0.2
_F16_MAX = 65504.0


class OutType(StrEnum):
    """Output precision of the converted GGUF."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"

    @classmethod
    def parse(cls, value: str | OutType) -> OutType:
        if isinstance(value, OutType):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(t.value for t in cls)
            raise ValueError(f"output type {value!r} is not one of {choices}") from None

    @property
    def file_type(self) -> int:
        """llama.cpp ``general.file_type`` (LLAMA_FTYPE_*)."""
        return {OutType.F32: 0, OutType.F16: 1, OutType.Q8_0: 7, OutType.BF16: 32}[self]


@dataclass(frozen=True)
class TensorLayout:
    plan: TensorPlan
    ggml_type: Any  # gguf.GGMLQuantizationType
    nbytes: int


def layout(plans: Sequence[TensorPlan], outtype: OutType) -> list[TensorLayout]:
    """Choose each tensor's GGUF type and size.

    Vectors (norms, biases, RoPE factors) and the MoE router stay F32; matrices
    take ``outtype``. For Q8_0 a matrix whose rows are not a whole number of
    32-value blocks falls back to F16, as llama.cpp's own converter does.
    """
    import gguf

    q = gguf.GGMLQuantizationType
    wanted = {OutType.F32: q.F32, OutType.F16: q.F16, OutType.BF16: q.BF16, OutType.Q8_0: q.Q8_0}[
        outtype
    ]
    out: list[TensorLayout] = []
    for p in plans:
        t = wanted if p.kind is TensorKind.MATRIX else q.F32
        block, _size = gguf.GGML_QUANT_SIZES[t]
        if p.shape[-1] % block:
            t = q.F16
        nbytes = _nbytes(p.shape, t)
        out.append(TensorLayout(p, t, nbytes))
    return out


def _nbytes(shape: tuple[int, ...], ggml_type: Any) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[ggml_type]
    return int(math.prod(shape) // block * size)


def check_disk(folder: Path, needed: int) -> None:
    """Raise :class:`InsufficientResourcesError` when ``folder`` lacks ``needed`` bytes."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + DISK_MARGIN_BYTES:
        raise InsufficientResourcesError(
            f"not enough free disk space in {folder}: the GGUF needs {human_bytes(needed)} "
            f"({needed} bytes) plus {human_bytes(DISK_MARGIN_BYTES)} headroom but only "
            f"{human_bytes(free)} ({free} bytes) is available; free some space or choose "
            "another output folder"
        )


def iter_blocks(
    plan: TensorPlan, reader: TensorReader
) -> Iterator[tuple[npt.NDArray[np.float32], int]]:
    """Yield (converted float32 block, source bytes it came from) in output order."""
    if plan.values:
        yield np.asarray(plan.values, dtype=np.float32), 0
        return
    for src in plan.sources:
        unit = 1
        if plan.permute_heads and len(src.shape) >= 2:
            unit = src.shape[0] // plan.permute_heads
        for raw in reader.iter_row_blocks(src, BLOCK_BYTES, unit):
            src_bytes = raw.size * ITEM_SIZES[src.dtype]
            block = raw
            if plan.permute_heads:
                heads = plan.permute_heads if len(src.shape) < 2 else raw.shape[0] // unit
                block = permute_rows(block, heads)
            if plan.add:
                block = block + np.float32(plan.add)
            if plan.mul != 1.0:
                block = block * np.float32(plan.mul)
            yield block, src_bytes


def encode(block: npt.NDArray[np.float32], ggml_type: Any, name: str) -> npt.NDArray[Any]:
    """Convert a float32 block to the bytes of ``ggml_type`` (F32, F16, BF16 or Q8_0)."""
    import gguf

    q = gguf.GGMLQuantizationType
    # max and min are two allocation-free passes; NaN propagates into both.
    peak = max(float(block.max()), -float(block.min())) if block.size else 0.0
    if not np.isfinite(peak):
        raise CheckpointError(
            f"tensor {name} contains NaN or infinite values; the checkpoint is damaged, "
            "download it again"
        )
    if ggml_type == q.F32:
        return block.astype(np.float32, copy=False)
    if ggml_type == q.F16:
        if peak > _F16_MAX:
            raise CheckpointError(
                f"tensor {name} has values up to {peak:.4g}, beyond F16's range (65504); "
                "convert with --outtype bf16 or f32 instead"
            )
        return block.astype(np.float16)
    return np.asarray(gguf.quants.quantize(block, ggml_type))


def write_gguf(
    out_path: Path,
    *,
    arch: str,
    add_metadata: Callable[[Any], None],
    metadata_bytes: int,
    plans: Sequence[TensorPlan],
    outtype: OutType,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """Write a complete GGUF to ``out_path``; return its size in bytes.

    ``add_metadata(writer)`` adds every key/value; tensors are converted in
    ``plans`` order. Nothing is left at ``out_path`` unless the write completes.
    """
    import gguf

    tensors = layout(plans, outtype)
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    data_bytes = sum(-(-t.nbytes // align) * align for t in tensors)
    table_bytes = sum(len(t.plan.name) + 64 for t in tensors)
    check_disk(out_path.parent, data_bytes + table_bytes + metadata_bytes + 4096)

    total_src = sum(t.plan.source_bytes for t in tensors)
    eta = EtaEstimator()
    last_emit = 0.0
    done_bytes = 0

    def emit(done: int, message: str, force: bool = False) -> None:
        nonlocal last_emit
        if on_progress is None:
            return
        now = time.monotonic()
        if not force and now - last_emit < _PROGRESS_INTERVAL_S:
            return
        last_emit = now
        on_progress(
            Progress(
                stage="convert",
                done=done,
                total=len(tensors),
                message=message,
                bytes_done=done_bytes,
                bytes_total=total_src,
                eta_s=eta.eta(done_bytes, total_src),
            )
        )

    with atomic_output(out_path) as tmp, TensorReader() as reader:
        writer = gguf.GGUFWriter(None, arch)
        try:
            add_metadata(writer)
            for t in tensors:
                byte_shape = gguf.quant_shape_to_byte_shape(t.plan.shape, t.ggml_type)
                writer.add_tensor_info(
                    t.plan.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.ggml_type
                )
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            if not writer.fout:
                raise RuntimeError("gguf writer opened no output file")
            fout: IO[bytes] = writer.fout[0]
            _pad(fout, align)
            emit(0, "", force=True)
            for i, t in enumerate(tensors):
                written = 0
                for block, src_bytes in iter_blocks(t.plan, reader):
                    check_cancel(cancel)
                    data = encode(block, t.ggml_type, t.plan.name)
                    fout.write(np.ascontiguousarray(data).data.cast("B"))
                    written += data.nbytes
                    done_bytes += src_bytes
                    emit(i, t.plan.name)
                if written != t.nbytes:
                    raise CheckpointError(
                        f"tensor {t.plan.name}: wrote {written} bytes but planned {t.nbytes}; "
                        "the checkpoint changed while it was being converted"
                    )
                _pad(fout, align)
                emit(i + 1, t.plan.name, force=i + 1 == len(tensors))
            check_cancel(cancel)
            fout.flush()
        finally:
            writer.close()
    size = out_path.stat().st_size
    logger.info("wrote %s: %d tensors, %s", out_path, len(tensors), human_bytes(size))
    return size


def _pad(fout: IO[bytes], align: int) -> None:
    pos = fout.tell()
    pad = -pos % align
    if pad:
        fout.write(b"\0" * pad)
