"""A bounded reader of GGUF headers: metadata and tensor infos, never tensor data.

The GGUF layout (``ggml/src/gguf.cpp`` upstream): magic ``b"GGUF"``, version
(uint32), tensor count and metadata count (uint64 from version 2 on), the
metadata key/value pairs, one info record per tensor (name, dims, ggml type,
offset), then padding to ``general.alignment`` and the tensor data. Versions 2
and 3 share that layout; version 3 may also be big-endian.

Every count and length read from the file is checked against hard caps and
against the bytes left in the file before it is trusted, so a damaged or hostile
file fails with :class:`~quant.errors.ModelFormatError` (one sentence naming the
file) instead of allocating gigabytes or looping for long. Only the header
bytes are read, in windows of at most :data:`_WINDOW` bytes, so a 100 GB file
opens as fast as a small one. Long string arrays (the vocabulary,
``tokenizer.ggml.tokens``, and BPE merges) are walked, not decoded: only their
length is kept.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Protocol, TypeAlias

from quant.errors import ModelFileMissingError, ModelFormatError, NotGGUFError
from quant.gguf.types import GGMLType

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT in ggml/include/gguf.h

# Hard caps on what a header may declare; real files are far below them.
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_STRING_BYTES = 64 * 1024 * 1024
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8
MAX_ALIGNMENT = 1 << 30
MAX_LAYERS = 1 << 16
# Arrays longer than this are not materialised; only their type and length are kept.
MAX_KEPT_ARRAY = 4096
_INT64_MAX = (1 << 63) - 1

# Bytes read per refill of the window over a local file.
_WINDOW = 1 << 20


class GGUFValueType(IntEnum):
    """Metadata value types (``enum gguf_type`` in ``ggml/include/gguf.h``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct format letter and size of the fixed-size value types.
_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_SCALAR_SIZES = {t: struct.calcsize("<" + f) for t, f in _SCALAR_FORMATS.items()}


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array too long to keep: its element type and length only."""

    item_type: GGUFValueType
    length: int


MetaValue: TypeAlias = "int | float | bool | str | list[MetaValue] | SkippedArray"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor info record. ``shape`` is in ggml order (fastest-varying first)."""

    name: str
    shape: tuple[int, ...]
    type: GGMLType
    # Offset of the tensor's data from the start of the data section.
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before a GGUF file's tensor data."""

    path: Path
    version: int
    byte_order: str  # "little" or "big"
    file_size: int
    alignment: int
    # File offset where the tensor data section starts.
    data_offset: int
    metadata: dict[str, MetaValue] = field(default_factory=dict)
    metadata_types: dict[str, GGUFValueType] = field(default_factory=dict)
    tensors: tuple[GGUFTensor, ...] = ()

    def get(self, key: str, default: MetaValue | None = None) -> MetaValue | None:
        return self.metadata.get(key, default)

    def array_length(self, key: str) -> int | None:
        """Length of the array stored under ``key`` (kept or skipped); None if not an array."""
        value = self.metadata.get(key)
        if isinstance(value, SkippedArray):
            return value.length
        if isinstance(value, list):
            return len(value)
        return None


def _show(text: str) -> str:
    """A name from the file, quoted and cut short: damaged files hold arbitrary bytes."""
    return repr(text) if len(text) <= 64 else repr(text[:60]) + "…"


class SeekableReader(Protocol):
    """What the reader needs of a file: a local file or a view over HTTP range requests."""

    def seek(self, pos: int, whence: int = 0, /) -> int: ...

    def read(self, n: int = -1, /) -> bytes: ...


class _TruncatedError(Exception):
    """Internal: the file ended before the header did."""


class _Reader:
    """Sequential reads over a window of the file, with every length checked."""

    def __init__(self, fh: SeekableReader, file_size: int, path: Path, window: int) -> None:
        self._fh = fh
        self._window_bytes = window
        self.size = file_size
        self.path = path
        self.name = path.name
        self.pos = 0
        self._buf = b""
        self._start = 0  # file offset of _buf[0]
        self.prefix = "<"

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.name}: {what}")

    def _window(self, n: int) -> int:
        """Make bytes [pos, pos + n) available; return pos's index into the buffer."""
        i = self.pos - self._start
        if i >= 0 and i + n <= len(self._buf):
            return i
        if self.pos + n > self.size:
            raise _TruncatedError
        self._fh.seek(self.pos)
        self._buf = self._fh.read(max(n, self._window_bytes))
        self._start = self.pos
        if len(self._buf) < n:  # the file shrank while we read it
            raise _TruncatedError
        return 0

    def remaining(self) -> int:
        return self.size - self.pos

    def unpack(self, fmt: str, size: int) -> tuple[object, ...]:
        i = self._window(size)
        self.pos += size
        return struct.unpack_from(self.prefix + fmt, self._buf, i)

    def u32(self) -> int:
        (v,) = self.unpack("I", 4)
        assert isinstance(v, int)
        return v

    def u64(self) -> int:
        (v,) = self.unpack("Q", 8)
        assert isinstance(v, int)
        return v

    def i64(self) -> int:
        (v,) = self.unpack("q", 8)
        assert isinstance(v, int)
        return v

    def raw(self, n: int) -> bytes:
        i = self._window(n)
        self.pos += n
        return self._buf[i : i + n]

    def string(self, what: str) -> str:
        n = self.u64()
        if n > MAX_STRING_BYTES:
            raise self.fail(
                f"{what} declares a {n:,}-byte string (the limit is {MAX_STRING_BYTES:,})"
            )
        if n > self.remaining():
            raise _TruncatedError
        return self.raw(n).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if n > self.remaining():
            raise _TruncatedError
        self.pos += n

    def skip_strings(self, count: int, what: str) -> None:
        """Walk ``count`` strings without decoding them (the vocabulary is ~262k of them).

        The hot loop only checks that each length prefix lies inside the window;
        a string that jumps out of it is checked against the caps on refill.
        """
        unpack_from = struct.Struct(self.prefix + "Q").unpack_from
        left = count
        while left:
            i = self._window(8)
            buf = self._buf
            limit = len(buf) - 8
            n = 0
            walked = left
            for k in range(left):
                if i > limit:
                    walked = k
                    break
                n = unpack_from(buf, i)[0]
                i += 8 + n
            left -= walked
            self.pos = self._start + i
            if n > MAX_STRING_BYTES:
                raise self.fail(
                    f"{what} declares a {n:,}-byte string (the limit is {MAX_STRING_BYTES:,})"
                )
            if self.pos > self.size:
                raise _TruncatedError


def _value_type(r: _Reader, key: str) -> GGUFValueType:
    raw = r.u32()
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise r.fail(f"metadata key {_show(key)} has unknown value type {raw}") from None


def _read_array(r: _Reader, key: str, depth: int) -> list[MetaValue] | SkippedArray:
    if depth > MAX_ARRAY_DEPTH:
        raise r.fail(f"metadata key {_show(key)} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
    item_type = _value_type(r, key)
    length = r.u64()
    # Every element takes at least this many bytes, which bounds a believable length.
    min_item = _SCALAR_SIZES.get(item_type, 8 if item_type == GGUFValueType.STRING else 12)
    if length > r.remaining() // min_item:
        raise r.fail(
            f"metadata key {_show(key)} declares {length:,} array elements, more than the "
            f"{r.remaining():,} bytes left in the file can hold"
        )
    keep = length <= MAX_KEPT_ARRAY
    if item_type in _SCALAR_FORMATS:
        size = _SCALAR_SIZES[item_type] * length
        if not keep:
            r.skip(size)
            return SkippedArray(item_type, length)
        values = r.unpack(f"{length}{_SCALAR_FORMATS[item_type]}", size)
        return list(values)  # type: ignore[arg-type]
    if item_type == GGUFValueType.STRING:
        if not keep:
            r.skip_strings(length, f"metadata key {_show(key)}")
            return SkippedArray(item_type, length)
        return [r.string(f"metadata key {_show(key)}") for _ in range(length)]
    # Arrays of arrays.
    items: list[MetaValue] = []
    for _ in range(length):
        items.append(_read_array(r, key, depth + 1))
    if not keep:
        return SkippedArray(item_type, length)
    return items


def _read_value(r: _Reader, key: str, vtype: GGUFValueType) -> MetaValue:
    if vtype == GGUFValueType.STRING:
        return r.string(f"metadata key {_show(key)}")
    if vtype == GGUFValueType.ARRAY:
        return _read_array(r, key, 1)
    (v,) = r.unpack(_SCALAR_FORMATS[vtype], _SCALAR_SIZES[vtype])
    assert isinstance(v, int | float | bool)
    return v


def _parse(r: _Reader) -> GGUFHeader:
    if r.size < 4:
        raise NotGGUFError(f"{r.name}: not a GGUF file (only {r.size} bytes)")
    magic = r.raw(4)
    if magic != GGUF_MAGIC:
        raise NotGGUFError(f"{r.name}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    version = r.u32()
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            r.prefix = ">"
            version = swapped
        elif version == 1:
            raise r.fail(
                "GGUF version 1 is no longer supported by llama.cpp; convert the model again"
            )
        else:
            raise r.fail(
                f"unsupported GGUF version {version} (expected 2 or 3); "
                "a newer Quantdesk may read it"
            )
    n_tensors = r.u64()
    n_kv = r.u64()
    if n_tensors > MAX_TENSORS:
        raise r.fail(f"header declares {n_tensors:,} tensors (the limit is {MAX_TENSORS:,})")
    if n_kv > MAX_KV:
        raise r.fail(f"header declares {n_kv:,} metadata keys (the limit is {MAX_KV:,})")
    # A key/value takes at least 8 + 1 + 4 + 1 bytes and a tensor info 8 + 1 + 4 + 4 + 8.
    if n_kv * 14 + n_tensors * 25 > r.remaining():
        raise r.fail(
            f"header declares {n_tensors:,} tensors and {n_kv:,} metadata keys, more than the "
            f"{r.size:,}-byte file can hold"
        )

    metadata: dict[str, MetaValue] = {}
    types: dict[str, GGUFValueType] = {}
    for index in range(n_kv):
        key = r.string(f"metadata key #{index}")
        if not key:
            raise r.fail(f"metadata key #{index} is empty")
        if key in metadata:
            raise r.fail(f"metadata key {_show(key)} appears twice")
        vtype = _value_type(r, key)
        metadata[key] = _read_value(r, key, vtype)
        types[key] = vtype

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        value = metadata["general.alignment"]
        if (
            types["general.alignment"] != GGUFValueType.UINT32
            or not isinstance(value, int)
            or value <= 0
            or value & (value - 1)
            or value > MAX_ALIGNMENT
        ):
            found = _show(str(value))
            raise r.fail(f"general.alignment is {found}, expected a power of two stored as uint32")
        alignment = value

    infos: list[tuple[str, tuple[int, ...], GGMLType, int, int]] = []
    seen: set[str] = set()
    for index in range(n_tensors):
        name = r.string(f"tensor #{index}'s name")
        if name in seen:
            raise r.fail(f"tensor {_show(name)} appears twice")
        seen.add(name)
        n_dims = r.u32()
        if n_dims == 0 or n_dims > MAX_DIMS:
            raise r.fail(f"tensor {_show(name)} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
        shape = tuple(r.i64() for _ in range(n_dims))
        n_elements = 1
        for d in shape:
            if d <= 0:
                raise r.fail(f"tensor {_show(name)} has a dimension of {d} in shape {list(shape)}")
            n_elements *= d
        if n_elements > _INT64_MAX:
            raise r.fail(f"tensor {_show(name)} has an impossible shape {list(shape)}")
        raw_type = r.u32()
        try:
            ttype = GGMLType(raw_type)
        except ValueError:
            raise r.fail(
                f"tensor {_show(name)} has unknown ggml type {raw_type}; "
                "it may need a newer llama.cpp"
            ) from None
        if shape[0] % ttype.block_size:
            raise r.fail(
                f"tensor {_show(name)} rows of {shape[0]} elements are not a multiple of "
                f"{ttype.name}'s block size {ttype.block_size}"
            )
        offset = r.u64()
        if offset % alignment:
            raise r.fail(
                f"tensor {_show(name)} data offset {offset} is not a multiple of the alignment "
                f"{alignment}"
            )
        infos.append((name, shape, ttype, offset, ttype.n_bytes(n_elements)))

    data_offset = r.pos
    if infos:
        data_offset += -data_offset % alignment
    if data_offset > r.size:
        raise _TruncatedError

    tensors = []
    for name, shape, ttype, offset, n_bytes in infos:
        end = data_offset + offset + n_bytes
        if end > r.size:
            raise r.fail(
                f"tensor {_show(name)} ends at byte {end:,} but the file has only "
                f"{r.size:,} bytes; the file is truncated, download or convert it again"
            )
        tensors.append(GGUFTensor(name, shape, ttype, offset, n_bytes))

    return GGUFHeader(
        path=r.path,
        version=version,
        byte_order="big" if r.prefix == ">" else "little",
        file_size=r.size,
        alignment=alignment,
        data_offset=data_offset,
        metadata=metadata,
        metadata_types=types,
        tensors=tuple(tensors),
    )


def read_gguf_header_from(
    fh: SeekableReader, size: int, path: Path, *, window: int = _WINDOW
) -> GGUFHeader:
    """Read a GGUF header from an open binary file of ``size`` bytes.

    ``fh`` needs only ``seek`` and ``read``; reads go forward in windows of
    ``window`` bytes, so a file-like object over HTTP range requests works too.
    """
    reader = _Reader(fh, size, path, window)
    try:
        header = _parse(reader)
    except _TruncatedError:
        raise ModelFormatError(
            f"{path.name}: the GGUF header is cut short at byte {reader.pos:,} of {size:,}; "
            "the file is truncated or damaged, download or convert it again"
        ) from None
    logger.debug(
        "read GGUF header of %s: v%d, %d keys, %d tensors, data at %d",
        path.name,
        header.version,
        len(header.metadata),
        len(header.tensors),
        header.data_offset,
    )
    return header


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Read ``path``'s GGUF header (metadata and tensor infos) without its tensor data.

    Raises :class:`ModelFormatError` for anything that is not a well-formed GGUF
    header: wrong magic, unsupported version, a header cut short, counts or
    lengths beyond the caps or the file's size, bad shapes, unknown tensor types,
    and tensors whose data would lie past the end of the file.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            return read_gguf_header_from(fh, size, p)
    except IsADirectoryError:
        raise ModelFormatError(f"{p}: is a folder, not a GGUF file") from None
    except FileNotFoundError:
        raise ModelFileMissingError(f"{p}: no such file") from None
    except OSError as exc:
        raise ModelFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
