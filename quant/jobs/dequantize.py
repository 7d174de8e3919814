"""Read GGUF headers fast, and turn a quantized GGUF back into an F16 one.

:func:`read_gguf` parses a GGUF header (metadata and tensor directory) with
``struct`` over a memory map; it reads a 262k-token vocabulary in a fraction of
a second, where ``gguf.GGUFReader`` takes several seconds, which matters for a
progress bar that should move at once.

:func:`dequantize_gguf` rebuilds a full-precision model from any GGUF:
every tensor is expanded with ``gguf.quants.dequantize`` and written with
``gguf.GGUFWriter`` as F16 (one-dimensional tensors and norms stay F32, as
llama.cpp's converter writes them), with all metadata copied and
``general.file_type`` set to F16. Quality is capped by the quantized source,
of course; the result is a real model of the original architecture that the
imatrix, quantize and evaluate stages can start from (the test suite builds its
F16 reference from the bundled Q4_K_M starter model this way).
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quant.atomic import atomic_output
from quant.errors import ModelFormatError, QuantError
from quant.gguf.types import GGMLType, LlamaFileType
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT = 32

# enum gguf_type in ggml/include/gguf.h: value type ids and their struct formats.
_SCALAR_FORMATS: dict[int, str] = {
    0: "<B",  # UINT8
    1: "<b",  # INT8
    2: "<H",  # UINT16
    3: "<h",  # INT16
    4: "<I",  # UINT32
    5: "<i",  # INT32
    6: "<f",  # FLOAT32
    7: "<?",  # BOOL
    10: "<Q",  # UINT64
    11: "<q",  # INT64
    12: "<d",  # FLOAT64
}
_NUMPY_DTYPES: dict[int, str] = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<u1",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
GGUF_TYPE_STRING = 8
GGUF_TYPE_ARRAY = 9


@dataclass(frozen=True)
class GgufValue:
    """One metadata value: ``type`` is the GGUF value type; arrays carry ``sub_type``."""

    type: int
    value: Any
    sub_type: int | None = None


@dataclass(frozen=True)
class GgufTensor:
    name: str
    # ggml order: shape[0] is the row length (ne[0]).
    shape: tuple[int, ...]
    type: int
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        return GGMLType(self.type).n_bytes(self.n_elements)

    @property
    def type_name(self) -> str:
        try:
            return GGMLType(self.type).name
        except ValueError:
            return f"type{self.type}"


@dataclass(frozen=True)
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, GgufValue]
    tensors: tuple[GgufTensor, ...]
    alignment: int
    data_offset: int
    file_size: int

    def get(self, key: str, default: Any = None) -> Any:
        v = self.metadata.get(key)
        return default if v is None else v.value

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", ""))

    @property
    def n_parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> LlamaFileType | None:
        raw = self.get("general.file_type")
        if raw is None:
            return None
        try:
            return LlamaFileType(int(raw) & ~1024)
        except ValueError:
            return None

    def tensor_data(self, tensor: GgufTensor) -> np.ndarray:
        """The raw bytes of ``tensor`` as a read-only uint8 memory map."""
        return np.memmap(
            self.path,
            dtype=np.uint8,
            mode="r",
            offset=self.data_offset + tensor.offset,
            shape=(tensor.n_bytes,),
        )


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error:
            raise ModelFormatError(
                f"{self.path.name}: truncated GGUF header at byte {self.pos}; "
                "the file is incomplete, download or convert it again."
            ) from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str | bytes:
        n = self.unpack("<Q")
        if n > len(self.buf) - self.pos:
            raise ModelFormatError(
                f"{self.path.name}: string of {n} bytes at byte {self.pos} runs past the end "
                "of the file; the file is corrupt or incomplete."
            )
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    def value(self, vtype: int) -> Any:
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == GGUF_TYPE_STRING:
            return self.string()
        raise ModelFormatError(
            f"{self.path.name}: unknown GGUF value type {vtype} at byte {self.pos}."
        )

    def array(self) -> tuple[int, list[Any]]:
        sub = self.unpack("<I")
        n = self.unpack("<Q")
        if sub in _NUMPY_DTYPES:
            dt = np.dtype(_NUMPY_DTYPES[sub])
            end = self.pos + n * dt.itemsize
            if end > len(self.buf):
                raise ModelFormatError(
                    f"{self.path.name}: array at byte {self.pos} runs past the end."
                )
            arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos)
            self.pos = end
            values: list[Any] = arr.astype(bool).tolist() if sub == 7 else arr.tolist()
            return sub, values
        if sub == GGUF_TYPE_STRING:
            return sub, [self.string() for _ in range(n)]
        if sub == GGUF_TYPE_ARRAY:
            return sub, [self.array() for _ in range(n)]
        raise ModelFormatError(
            f"{self.path.name}: unknown GGUF array type {sub} at byte {self.pos}."
        )


def read_gguf(path: Path | str) -> GgufFile:
    """Parse the header of the GGUF file at ``path`` (metadata and tensor directory)."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot open ({exc.strerror}); check the path.") from exc
    with fh:
        size = path.stat().st_size
        if size < 24:
            raise ModelFormatError(f"{path.name}: {size} bytes is too short for a GGUF file.")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            magic = bytes(buf[:4])
            if magic != GGUF_MAGIC:
                raise ModelFormatError(
                    f"{path.name}: not a GGUF file (magic {magic!r}, expected b'GGUF')."
                )
            cur = _Cursor(buf, path)
            cur.pos = 4
            version = cur.unpack("<I")
            if version < 2:
                raise ModelFormatError(
                    f"{path.name}: GGUF version {version} is too old; convert the model again."
                )
            n_tensors = cur.unpack("<Q")
            n_kv = cur.unpack("<Q")
            if n_tensors > 1_000_000 or n_kv > 1_000_000:
                raise ModelFormatError(
                    f"{path.name}: absurd header ({n_tensors} tensors, {n_kv} keys); "
                    "the file is corrupt."
                )
            metadata: dict[str, GgufValue] = {}
            for _ in range(n_kv):
                key = cur.string()
                key_s = key if isinstance(key, str) else key.decode("utf-8", "replace")
                vtype = cur.unpack("<I")
                if vtype == GGUF_TYPE_ARRAY:
                    sub, values = cur.array()
                    metadata[key_s] = GgufValue(vtype, values, sub)
                else:
                    metadata[key_s] = GgufValue(vtype, cur.value(vtype))
            tensors = []
            for _ in range(n_tensors):
                name = cur.string()
                n_dims = cur.unpack("<I")
                shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
                ttype = cur.unpack("<I")
                offset = cur.unpack("<Q")
                tensors.append(
                    GgufTensor(
                        name if isinstance(name, str) else name.decode("utf-8", "replace"),
                        shape,
                        ttype,
                        offset,
                    )
                )
            align_v = metadata.get("general.alignment")
            alignment = int(align_v.value) if align_v is not None else GGUF_DEFAULT_ALIGNMENT
            data_offset = -(-cur.pos // alignment) * alignment
    _check_tensor_data(path, tensors, data_offset, size)
    return GgufFile(path, version, metadata, tuple(tensors), alignment, data_offset, size)


def _check_tensor_data(path: Path, tensors: list[GgufTensor], data_offset: int, size: int) -> None:
    """Every tensor's bytes must lie inside the file (a cut download would map past its end)."""
    for t in tensors:
        try:
            n_bytes = t.n_bytes
        except ValueError as exc:  # a ggml type number this version does not know
            raise ModelFormatError(f"{path.name}: tensor {t.name}: {exc}") from exc
        end = data_offset + t.offset + n_bytes
        if end > size:
            raise ModelFormatError(
                f"{path.name}: truncated — tensor {t.name} ends at byte {end:,} but the file "
                f"has {size:,} bytes; download or convert it again."
            )


def _writer_value(v: GgufValue) -> tuple[Any, Any, Any] | None:
    """(value, GGUFValueType, sub type) for GGUFWriter.add_key_value; None to skip."""
    import gguf

    vtype = gguf.GGUFValueType(v.type)
    if v.type != GGUF_TYPE_ARRAY:
        return v.value, vtype, None
    if not v.value or v.sub_type is None or v.sub_type == GGUF_TYPE_ARRAY:
        return None  # GGUFWriter writes neither empty nor nested arrays
    return list(v.value), vtype, gguf.GGUFValueType(v.sub_type)


def _target_dtype(t: GgufTensor) -> type[np.floating[Any]]:
    # One-dimensional tensors (norms, biases) stay F32, like llama.cpp's converter writes them.
    if len(t.shape) <= 1 or t.type == GGMLType.F32:
        return np.float32
    return np.float16


def dequantize_gguf(
    src: Path | str,
    dst: Path | str,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write ``dst``: the model in ``src`` with every tensor expanded to F16 (norms F32).

    The output appears whole or not at all. Raises :class:`ModelFormatError` for
    a file that is not a GGUF, and :class:`QuantError` for a tensor type gguf-py
    cannot expand.
    """
    import gguf
    from gguf.quants import dequantize

    src, dst = Path(src), Path(dst)
    info = read_gguf(src)
    arch = info.architecture
    if not arch:
        raise ModelFormatError(f"{src.name}: no general.architecture key; is this a model GGUF?")
    stage = "dequantize"
    plans: list[tuple[GgufTensor, type[np.floating[Any]]]] = [
        (t, _target_dtype(t)) for t in info.tensors
    ]
    total_bytes = sum(t.n_elements * np.dtype(dt).itemsize for t, dt in plans)
    eta = EtaEstimator()
    with atomic_output(dst) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.data_alignment = info.alignment
        try:
            for key, value in info.metadata.items():
                if key == "general.architecture":
                    continue
                if key == "general.file_type":
                    writer.add_uint32(key, int(LlamaFileType.F16))
                    continue
                packed = _writer_value(value)
                if packed is None:
                    logger.debug("%s: key %s not copied (empty or nested array)", src.name, key)
                    continue
                writer.add_key_value(key, *packed)
            if "general.file_type" not in info.metadata:
                writer.add_uint32("general.file_type", int(LlamaFileType.F16))
            for t, dt in plans:
                np_shape = tuple(reversed(t.shape))
                writer.add_tensor_info(
                    t.name, np_shape, np.dtype(dt), t.n_elements * np.dtype(dt).itemsize
                )
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            done_bytes = 0
            for i, (t, dt) in enumerate(plans):
                check_cancel(cancel)
                raw = info.tensor_data(t)
                try:
                    qtype = gguf.GGMLQuantizationType(t.type)
                    values = dequantize(np.asarray(raw), qtype)
                except (NotImplementedError, ValueError) as exc:
                    raise QuantError(
                        f"{src.name}: tensor {t.name} is stored as {t.type_name}, which gguf-py "
                        "cannot expand; start from an F16, BF16 or Q8_0 file instead."
                    ) from exc
                out = np.ascontiguousarray(values.reshape(tuple(reversed(t.shape))).astype(dt))
                if dt is np.float16 and not np.isfinite(out).all():
                    raise QuantError(
                        f"{src.name}: tensor {t.name} has values outside the F16 range; "
                        "this model needs BF16 or F32 as its full-precision form."
                    )
                writer.write_tensor_data(out)
                done_bytes += out.nbytes
                if on_progress is not None:
                    on_progress(
                        Progress(
                            stage,
                            i + 1,
                            len(plans),
                            t.name,
                            bytes_done=done_bytes,
                            bytes_total=total_bytes,
                            eta_s=eta.eta(done_bytes, total_bytes),
                        )
                    )
        finally:
            writer.close()
    logger.info("dequantized %s to %s (%d tensors)", src.name, dst, len(plans))
    return dst
