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
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from quant.errors import ModelFormatError
from quant.facts.ggml_types import (
    FTYPE_GUESSED_BIT,
    GGMLType,
    LlamaFileType,
    file_type_from_dominant,
)
from quant.facts.model import ModelFacts, SourceKind, TensorInfo, TensorTypeSummary

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
        raise r.fail(f"not a GGUF file (only {r.size} bytes)")
    magic = r.raw(4)
    if magic != GGUF_MAGIC:
        raise r.fail(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
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
        raise ModelFormatError(f"{p}: no such file") from None
    except OSError as exc:
        raise ModelFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from exc


# --- From a header to model facts -------------------------------------------------


# How llama.cpp lays out sliding-window layers per architecture, as set up in each
# model's load_arch_hparams (src/models/<arch>.cpp) through load_swa_pattern and
# llama_hparams::set_swa_pattern (src/llama-hparams.cpp).
@dataclass(frozen=True)
class _SwaRule:
    period: int  # default of {arch}.attention.sliding_window_pattern
    dense_first: bool = False  # full-attention layer first in each period
    needs_window: bool = False  # SWA only when {arch}.attention.sliding_window > 0
    default_window: int | None = None  # used when the key is absent
    chunked: bool = False  # chunked attention (Llama 4) rather than a sliding window


_SWA_RULES: dict[str, _SwaRule] = {
    "gemma2": _SwaRule(2, default_window=4096),
    "gemma3": _SwaRule(6, needs_window=True),
    "gemma3n": _SwaRule(5),
    "gemma-embedding": _SwaRule(6),
    "cohere2": _SwaRule(4),
    "cohere2moe": _SwaRule(4, dense_first=True),
    "llama4": _SwaRule(4, default_window=8192, chunked=True),
    "gpt-oss": _SwaRule(2),
    "olmo2": _SwaRule(4, needs_window=True),
    "afmoe": _SwaRule(4, needs_window=True),
    "smallthinker": _SwaRule(4, dense_first=True, needs_window=True),
    "mellum": _SwaRule(4, needs_window=True),
    "plamo3": _SwaRule(8, needs_window=True),
    "exaone-moe": _SwaRule(4, default_window=128),
    "modern-bert": _SwaRule(3, dense_first=True, needs_window=True),
    "laguna": _SwaRule(4, dense_first=True, needs_window=True),
    "muse-glimmer": _SwaRule(4),
}
# Architectures whose per-layer SWA flags must be stored as an array in the file.
_SWA_ARRAY_ONLY = frozenset(
    {
        "gemma4",
        "gemma4-assistant",
        "granite_swa",
        "mimo2",
        "step35",
        "maple",
        "spark2_5",
        "dots3note",
    }
)
# Architectures where every layer slides.
_SWA_ALL = frozenset({"deepseek4", "dflash"})


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _ints(value: object) -> list[int] | None:
    """A per-layer array of non-negative integers, or None."""
    if not isinstance(value, list) or not value:
        return None
    out = [_int(v) for v in value]
    if any(v is None for v in out):
        return None
    return [v for v in out if v is not None]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _swa_flags(period: int, n_layers: int, dense_first: bool) -> tuple[bool, ...]:
    """``llama_hparams::set_swa_pattern``: period 0 = all layers slide, 1 = none do."""
    if period == 0:
        return (True,) * n_layers
    if dense_first:
        return tuple(i % period != 0 for i in range(n_layers))
    return tuple(i % period < period - 1 for i in range(n_layers))


def _sliding_window(
    header: GGUFHeader, arch: str, n_layers: int, notes: list[str]
) -> tuple[int | None, tuple[bool, ...]]:
    md = header.metadata
    window_raw = md.get(f"{arch}.attention.sliding_window")
    window = _int(window_raw)
    pattern_raw = md.get(f"{arch}.attention.sliding_window_pattern")
    array_flags: tuple[bool, ...] | None = None
    if isinstance(pattern_raw, list) and len(pattern_raw) == n_layers:
        array_flags = tuple(bool(v) for v in pattern_raw)
    pattern = _int(pattern_raw)

    rule = _SWA_RULES.get(arch)
    if arch == "exaone4" and n_layers == 64:  # only the 32B model slides
        rule = _SwaRule(4, default_window=4096)
    if arch in _SWA_ALL:
        return (window or None), (True,) * n_layers if window else ()
    if arch in _SWA_ARRAY_ONLY or (rule is None and array_flags is not None and window):
        if array_flags is None or not window:
            return None, ()
        return window, array_flags
    if rule is None:
        if window and arch == "phi3":
            notes.append(
                f"The header names a sliding window of {window} tokens, but llama.cpp runs "
                "phi3 models with full attention in every layer"
            )
        elif window and pattern is not None:
            return window, _swa_flags(pattern, n_layers, dense_first=False)
        elif window:
            notes.append(
                f"The header names a sliding window of {window} tokens without a layer "
                "pattern; all layers are treated as full attention"
            )
        return None, ()
    if rule.chunked and window_raw is not None and window == 0:
        return None, ()
    if rule.needs_window and not window:
        return None, ()
    if rule.chunked:
        window = rule.default_window
        notes.append(
            f"{arch} uses chunked attention ({window} tokens) in the layers marked as "
            "sliding-window layers"
        )
    elif not window:
        window = rule.default_window
    if not window:
        return None, ()
    if array_flags is not None:
        return window, array_flags
    return window, _swa_flags(
        pattern if pattern is not None else rule.period, n_layers, rule.dense_first
    )


def _file_type(header: GGUFHeader, notes: list[str]) -> tuple[str | None, bool]:
    """The llama.cpp file type name, and whether it was guessed."""
    raw = _int(header.metadata.get("general.file_type"))
    if raw is not None:
        guessed = bool(raw & FTYPE_GUESSED_BIT)
        try:
            return LlamaFileType(raw & ~FTYPE_GUESSED_BIT).name, guessed
        except ValueError:
            notes.append(f"general.file_type {raw} is not a llama.cpp file type this version knows")
            return None, False
    counts = Counter(t.type for t in header.tensors)
    if not counts:
        return None, False
    dominant = counts.most_common(1)[0][0]
    ftype = file_type_from_dominant(dominant)
    notes.append(
        f"The file has no general.file_type; {ftype.name} is llama.cpp's guess from the "
        f"most common tensor type ({dominant.name})"
    )
    return ftype.name, True


_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_siblings(path: Path, header: GGUFHeader) -> list[Path]:
    """The other files of a split GGUF (``name-00001-of-00003.gguf``), present or not."""
    count = _int(header.metadata.get("split.count"))
    m = _SPLIT_RE.match(path.name)
    if not count or count <= 1 or not m or count > 10_000:
        return []
    prefix = m.group("prefix")
    return [
        path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf")
        for i in range(1, count + 1)
        if f"{i:05d}" != m.group("no")
    ]


def facts_from_gguf(
    header: GGUFHeader,
    *,
    source: str,
    kind: SourceKind = SourceKind.GGUF,
    more_tensors: tuple[GGUFTensor, ...] = (),
    notes: tuple[str, ...] = (),
    file_size: int | None = None,
) -> ModelFacts:
    """Model facts from a GGUF header (plus the tensors of its other split files)."""
    md = header.metadata
    name = header.path.name
    arch = _str(md.get("general.architecture"))
    if not arch:
        kind_word = _str(md.get("general.type"))
        what = f" (general.type is {_show(kind_word)})" if kind_word else ""
        raise ModelFormatError(
            f"{name}: the GGUF header has no general.architecture{what}; "
            "it is not a model file llama.cpp can load"
        )
    out_notes = list(notes)

    def key(k: str) -> object:
        return md.get(f"{arch}.{k}")

    n_layers = _int(key("block_count")) or 0
    if n_layers > MAX_LAYERS:
        raise ModelFormatError(
            f"{name}: {arch}.block_count is {n_layers:,}, more than any model has "
            f"(the limit is {MAX_LAYERS:,})"
        )
    embedding = _int(key("embedding_length")) or 0
    extra: dict[str, Any] = {}

    heads_arr = _ints(key("attention.head_count"))
    n_heads = max(heads_arr) if heads_arr else (_int(key("attention.head_count")) or 0)
    if heads_arr and len(set(heads_arr)) > 1:
        extra["n_heads_per_layer"] = heads_arr
    kv_arr = _ints(key("attention.head_count_kv"))
    kv_per_layer: tuple[int, ...] = ()
    if kv_arr:
        n_kv = max(kv_arr)
        if len(set(kv_arr)) > 1:
            kv_per_layer = tuple(kv_arr)
    else:
        kv = _int(key("attention.head_count_kv"))
        n_kv = kv if kv is not None else n_heads
    ff_arr = _ints(key("feed_forward_length"))
    ff = max(ff_arr) if ff_arr else (_int(key("feed_forward_length")) or 0)
    if ff_arr and len(set(ff_arr)) > 1:
        extra["feed_forward_length_per_layer"] = ff_arr
    head_dim = _int(key("attention.key_length")) or (embedding // n_heads if n_heads else 0)
    head_dim_v = _int(key("attention.value_length")) or head_dim

    tensors = (*header.tensors, *more_tensors)
    by_name = {t.name: t for t in tensors}
    vocab = header.array_length("tokenizer.ggml.tokens") or _int(key("vocab_size")) or 0
    if not vocab and "token_embd.weight" in by_name and len(by_name["token_embd.weight"].shape) > 1:
        vocab = by_name["token_embd.weight"].shape[1]

    n_experts = _int(key("expert_count")) or 0
    n_used = _int(key("expert_used_count")) or 0
    parameters = sum(t.n_elements for t in tensors)
    n_bytes = sum(t.n_bytes for t in tensors)
    active: int | None = None
    if n_experts > 1:
        expert = sum(t.n_elements for t in tensors if "_exps." in t.name)
        active = parameters - expert + expert * min(n_used, n_experts) // n_experts

    window, swa_layers = _sliding_window(header, arch, n_layers, out_notes)
    file_type, guessed = _file_type(header, out_notes)

    template = _str(md.get("tokenizer.chat_template"))
    named_templates = sorted(
        k.removeprefix("tokenizer.chat_template.")
        for k in md
        if k.startswith("tokenizer.chat_template.")
    )
    tokenizer_model = _str(md.get("tokenizer.ggml.model"))
    general_type = _str(md.get("general.type"))
    if general_type and general_type != "model":
        out_notes.append(f"general.type is {_show(general_type)}: this GGUF is not a full model")

    type_summary: dict[str, list[int]] = {}
    for t in tensors:
        row = type_summary.setdefault(t.type.name, [0, 0, 0])
        row[0] += 1
        row[1] += t.n_elements
        row[2] += t.n_bytes
    extra.update(
        {
            "gguf_version": header.version,
            "alignment": header.alignment,
            "data_offset": header.data_offset,
            "metadata_count": len(md),
            "file_type_guessed": guessed,
        }
    )
    if header.byte_order != "little":
        extra["byte_order"] = header.byte_order
    optional = {
        "size_label": md.get("general.size_label"),
        "basename": md.get("general.basename"),
        "quantization_version": md.get("general.quantization_version"),
        "rope_freq_base": key("rope.freq_base"),
        "expert_feed_forward_length": key("expert_feed_forward_length"),
        "expert_shared_count": key("expert_shared_count"),
        "expert_shared_feed_forward_length": key("expert_shared_feed_forward_length"),
        "tokenizer_pre": md.get("tokenizer.ggml.pre"),
        "split_count": md.get("split.count"),
    }
    extra.update({k: v for k, v in optional.items() if isinstance(v, int | float | str)})
    if named_templates:
        extra["chat_template_names"] = named_templates

    return ModelFacts(
        source=source,
        kind=kind,
        name=_str(md.get("general.name")) or header.path.stem,
        architecture=arch,
        parameters=parameters,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        embedding_length=embedding,
        vocab_size=vocab,
        context_length=_int(key("context_length")) or 0,
        head_dim_v=head_dim_v,
        feed_forward_length=ff,
        active_parameters=active,
        n_kv_heads_per_layer=kv_per_layer,
        sliding_window=window,
        swa_layers=swa_layers,
        n_experts=n_experts,
        n_experts_used=n_used,
        tied_embeddings="token_embd.weight" in by_name and "output.weight" not in by_name,
        file_type=file_type,
        file_size_bytes=header.file_size if file_size is None else file_size,
        bits_per_weight=(8.0 * n_bytes / parameters) if parameters else None,
        tensors=tuple(TensorInfo(t.name, t.shape, t.type.name, t.n_bytes) for t in tensors),
        has_tokenizer=tokenizer_model is not None and vocab > 0,
        tokenizer_model=tokenizer_model,
        has_chat_template=bool(template) or bool(named_templates),
        chat_template=template,
        license=_str(md.get("general.license")),
        notes=tuple(out_notes),
        extra=extra,
        tensor_types=tuple(
            TensorTypeSummary(name, n, elems, size)
            for name, (n, elems, size) in sorted(type_summary.items(), key=lambda kv: -kv[1][2])
        ),
    )


def inspect_gguf(path: Path) -> ModelFacts:
    """Facts from a local GGUF file; the other files of a split GGUF are read too."""
    header = read_gguf_header(path)
    notes: list[str] = []
    more: list[GGUFTensor] = []
    size = header.file_size
    siblings = split_siblings(path, header)
    if siblings:
        present = [p for p in siblings if p.is_file()]
        for sibling in present:
            other = read_gguf_header(sibling)
            more.extend(other.tensors)
            size += other.file_size
        total = len(siblings) + 1
        if len(present) < len(siblings):
            notes.append(
                f"Only {len(present) + 1} of the {total} split files are present; parameter "
                "counts cover those"
            )
        else:
            notes.append(f"Read all {total} split files")
    return facts_from_gguf(
        header, source=str(path), more_tensors=tuple(more), notes=tuple(notes), file_size=size
    )
