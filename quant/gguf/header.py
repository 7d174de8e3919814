"""The one reader of GGUF files: the header checked and bounded, tensor data on request.

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
opens as fast as a small one.

Two things keep a big header fast. Long arrays (the vocabulary,
``tokenizer.ggml.tokens``, and BPE merges) are walked, not decoded: the header
keeps their type, length and place in the file (:class:`SkippedArray`), and
:meth:`GGUFHeader.get` reads one from there when a caller asks for its values.
Tensor infos are kept column by column (:class:`TensorTable`); the per-tensor
:class:`GGUFTensor` objects are made only when :attr:`GGUFHeader.tensors` is
first used, so a summary of a million-tensor header never builds a million
objects. :meth:`GGUFHeader.tensor_data` maps one tensor's bytes read-only.
"""

from __future__ import annotations

import logging
import math
import operator
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

from quant.errors import ModelFileMissingError, ModelFormatError, NotGGUFError
from quant.gguf.types import FTYPE_GUESSED_BIT, GGMLType, GGUFValueType, LlamaFileType

if TYPE_CHECKING:
    import numpy as np

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
# Longest tail of a tensor info record after its name: n_dims, four dims, type, offset.
_INFO_TAIL = 4 + 8 * MAX_DIMS + 4 + 8


def check_magic(head: bytes, name: str, *, hint: str = "") -> None:
    """Raise :class:`NotGGUFError` unless ``head`` (a file's first bytes) is the GGUF magic.

    ``name`` names the file in the sentence; ``hint`` (``"; what to do"``) is
    added after it. A ``head`` shorter than the magic is a file that short.
    """
    if head[:4] != GGUF_MAGIC:
        short = f"; only {len(head)} bytes" if len(head) < len(GGUF_MAGIC) else ""
        raise NotGGUFError(
            f"{name}: not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r}{short}){hint}"
        )


def has_gguf_magic(path: Path) -> bool:
    """Whether the file at ``path`` starts with the GGUF magic; ``OSError`` if unreadable."""
    with path.open("rb") as fh:
        return fh.read(4) == GGUF_MAGIC


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array too long to keep: its element type, length and place in the file.

    ``offset`` is the file offset of its first element and ``n_bytes`` the bytes
    its elements take; :meth:`GGUFHeader.get` reads the values from there.
    """

    item_type: GGUFValueType
    length: int
    offset: int = 0
    n_bytes: int = 0


# Strings that are not UTF-8 are kept as the bytes the file holds.
MetaValue: TypeAlias = "int | float | bool | str | bytes | list[MetaValue] | SkippedArray"


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
class TensorTable:
    """The tensor infos of a header, one tuple per field, in file order.

    Names are kept as the bytes the file holds and decoded on first use of
    :attr:`names`: a summary needs only a few of them.
    """

    raw_names: tuple[bytes, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = ()
    types: tuple[GGMLType, ...] = ()
    offsets: tuple[int, ...] = ()
    n_elements: tuple[int, ...] = ()
    n_bytes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.raw_names)

    def __iter__(self) -> Iterator[GGUFTensor]:
        return map(GGUFTensor, self.names, self.shapes, self.types, self.offsets, self.n_bytes)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(map(_name, self.raw_names))


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before a GGUF file's tensor data, and the way to that data.

    ``metadata`` holds each value as read, long arrays as :class:`SkippedArray`;
    :meth:`get` gives every value whole. ``array_types`` has the element type of
    each array value, ``kv_bytes`` the bytes each key/value record takes in the file.
    """

    path: Path
    version: int
    byte_order: str  # "little" or "big"
    file_size: int
    alignment: int
    # File offset where the tensor data section starts.
    data_offset: int
    metadata: dict[str, MetaValue] = field(default_factory=dict)
    metadata_types: dict[str, GGUFValueType] = field(default_factory=dict)
    array_types: dict[str, GGUFValueType] = field(default_factory=dict)
    kv_bytes: dict[str, int] = field(default_factory=dict)
    table: TensorTable = field(default_factory=TensorTable)
    # Whether ``path`` is the local file the header was read from (not a hub name).
    local: bool = True

    @cached_property
    def tensors(self) -> tuple[GGUFTensor, ...]:
        """Every tensor info as one object, made on first use."""
        return tuple(self.table)

    @property
    def n_tensors(self) -> int:
        return len(self.table)

    @property
    def n_parameters(self) -> int:
        return sum(self.table.n_elements)

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else ""

    @property
    def file_type(self) -> LlamaFileType | None:
        """``general.file_type`` as a llama.cpp file type (the "guessed" bit ignored)."""
        raw = self.metadata.get("general.file_type")
        if isinstance(raw, bool) or not isinstance(raw, int):
            return None
        try:
            return LlamaFileType(raw & ~FTYPE_GUESSED_BIT)
        except ValueError:
            return None

    def get(self, key: str, default: MetaValue | None = None) -> MetaValue | None:
        """The value stored under ``key``, whole: a long array is read from the file now."""
        value = self.metadata.get(key, default)
        if isinstance(value, SkippedArray):
            return self._read_array(key, value)
        return value

    def array_length(self, key: str) -> int | None:
        """Length of the array stored under ``key`` (kept or skipped); None if not an array."""
        value = self.metadata.get(key)
        if isinstance(value, SkippedArray):
            return value.length
        if isinstance(value, list):
            return len(value)
        return None

    def tensor_data(self, tensor: GGUFTensor) -> np.ndarray:
        """The raw bytes of ``tensor`` as a read-only uint8 memory map."""
        import numpy as np

        self._require_local("tensor data")
        return np.memmap(
            self.path,
            dtype=np.uint8,
            mode="r",
            offset=self.data_offset + tensor.offset,
            shape=(tensor.n_bytes,),
        )

    def _require_local(self, what: str) -> None:
        if not self.local:
            raise ModelFormatError(f"{self.path.name}: {what} of a remote header cannot be read")

    def _read_array(self, key: str, skipped: SkippedArray) -> list[MetaValue]:
        self._require_local(f"metadata key {_show(key)}")
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, 2)
                if size != self.file_size:
                    raise ModelFormatError(
                        f"{self.path.name}: the file changed since its header was read; "
                        "read it again"
                    )
                r = _Reader(fh, size, self.path, _WINDOW)
                r.prefix = ">" if self.byte_order == "big" else "<"
                r.pos = skipped.offset
                try:
                    return _read_items(r, key, skipped.item_type, skipped.length, 1, keep=True)
                except _TruncatedError:
                    raise ModelFormatError(
                        f"{self.path.name}: the file changed since its header was read; "
                        "read it again"
                    ) from None
        except OSError as exc:
            raise ModelFormatError(f"{self.path}: cannot be read ({exc.strerror or exc})") from exc


def _show(text: str) -> str:
    """A name from the file, quoted and cut short: damaged files hold arbitrary bytes."""
    return repr(text) if len(text) <= 64 else repr(text[:60]) + "…"


def _name(raw: bytes) -> str:
    """A key or tensor name as text (bytes that are not UTF-8 shown as U+FFFD)."""
    return raw.decode("utf-8", errors="replace")


def _text(raw: bytes) -> str | bytes:
    """A string value: text when it is UTF-8, else the bytes as the file holds them."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


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

    def window(self, n: int) -> int:
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

    @property
    def buf(self) -> bytes:
        return self._buf

    @property
    def start(self) -> int:
        return self._start

    def remaining(self) -> int:
        return self.size - self.pos

    def unpack(self, fmt: str, size: int) -> tuple[object, ...]:
        i = self.window(size)
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
        i = self.window(n)
        self.pos += n
        return self._buf[i : i + n]

    def string_bytes(self, what: str) -> bytes:
        n = self.u64()
        if n > MAX_STRING_BYTES:
            raise self.fail(
                f"{what} declares a {n:,}-byte string (the limit is {MAX_STRING_BYTES:,})"
            )
        if n > self.remaining():
            raise _TruncatedError
        return self.raw(n)

    def string(self, what: str) -> str:
        return _name(self.string_bytes(what))

    def skip(self, n: int) -> None:
        if n > self.remaining():
            raise _TruncatedError
        self.pos += n

    def walk_strings(self, count: int, what: str, out: list[MetaValue] | None) -> None:
        """Walk ``count`` strings (the vocabulary is ~262k of them), kept in ``out`` if given.

        The hot loop only checks that each length prefix lies inside the window;
        a string that jumps out of it is checked against the caps on refill.
        """
        unpack_from = struct.Struct(self.prefix + "Q").unpack_from
        left = count
        while left:
            i = self.window(8)
            buf = self._buf
            limit = len(buf) - 8
            n = 0
            walked = left
            if out is None:
                for k in range(left):
                    if i > limit:
                        walked = k
                        break
                    n = unpack_from(buf, i)[0]
                    i += 8 + n
            else:
                add = out.append
                for k in range(left):
                    if i > limit:
                        walked = k
                        break
                    n = unpack_from(buf, i)[0]
                    if i + 8 + n > limit + 8:  # leaves the window: read on its own below
                        walked = k
                        break
                    add(_text(buf[i + 8 : i + 8 + n]))
                    i += 8 + n
            left -= walked
            self.pos = self._start + i
            if n > MAX_STRING_BYTES:
                raise self.fail(
                    f"{what} declares a {n:,}-byte string (the limit is {MAX_STRING_BYTES:,})"
                )
            if self.pos > self.size:
                raise _TruncatedError
            if out is not None and left and not walked:
                out.append(_text(self.string_bytes(what)))
                left -= 1


def _value_type(r: _Reader, key: str) -> GGUFValueType:
    raw = r.u32()
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise r.fail(f"metadata key {_show(key)} has unknown value type {raw}") from None


def _read_items(
    r: _Reader, key: str, item_type: GGUFValueType, length: int, depth: int, *, keep: bool
) -> list[MetaValue]:
    """``length`` array elements of ``item_type`` at the reader's position (walked if not kept)."""
    fmt, size = item_type.struct_format, item_type.size
    if fmt is not None and size is not None:
        if not keep:
            r.skip(size * length)
            return []
        values = r.unpack(f"{length}{fmt}", size * length)
        return list(values)  # type: ignore[arg-type]
    if item_type == GGUFValueType.STRING:
        out: list[MetaValue] | None = [] if keep else None
        r.walk_strings(length, f"metadata key {_show(key)}", out)
        return out or []
    # Arrays of arrays.
    return [_read_array(r, key, depth + 1, keep_all=keep)[0] for _ in range(length)]


def _read_array(
    r: _Reader, key: str, depth: int, *, keep_all: bool = False
) -> tuple[list[MetaValue] | SkippedArray, GGUFValueType]:
    if depth > MAX_ARRAY_DEPTH:
        raise r.fail(f"metadata key {_show(key)} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
    item_type = _value_type(r, key)
    length = r.u64()
    # Every element takes at least this many bytes, which bounds a believable length.
    min_item = item_type.size or (8 if item_type == GGUFValueType.STRING else 12)
    if length > r.remaining() // min_item:
        raise r.fail(
            f"metadata key {_show(key)} declares {length:,} array elements, more than the "
            f"{r.remaining():,} bytes left in the file can hold"
        )
    keep = keep_all or length <= MAX_KEPT_ARRAY
    start = r.pos
    items = _read_items(r, key, item_type, length, depth, keep=keep)
    if not keep:
        return SkippedArray(item_type, length, start, r.pos - start), item_type
    return items, item_type


def _read_value(r: _Reader, key: str, vtype: GGUFValueType) -> tuple[MetaValue, GGUFValueType]:
    if vtype == GGUFValueType.STRING:
        return _text(r.string_bytes(f"metadata key {_show(key)}")), vtype
    if vtype == GGUFValueType.ARRAY:
        return _read_array(r, key, 1)
    fmt, size = vtype.struct_format, vtype.size
    assert fmt is not None and size is not None
    (v,) = r.unpack(fmt, size)
    assert isinstance(v, int | float | bool)
    return v, vtype


def _read_infos(r: _Reader, n_tensors: int) -> tuple[list[bytes], list[tuple[int, ...]]]:
    """The tensor info records: raw names, and (n_dims, dims…, ggml type, offset) per tensor.

    Records that lie whole inside the window are read by a tight loop; the rest
    (a refill, a long or damaged name, a bad dimension count) one field at a time,
    with every check and the error a damaged record deserves.
    """
    names: list[bytes] = []
    records: list[tuple[int, ...]] = []
    u64 = struct.Struct(r.prefix + "Q").unpack_from
    by_dims = [struct.Struct(f"{r.prefix}I{k}qIQ").unpack_from for k in range(MAX_DIMS + 1)]
    # The byte of the little or big-endian n_dims that holds a value below 256.
    low = 3 if r.prefix == ">" else 0
    add_name, add_record = names.append, records.append
    while len(names) < n_tensors:
        i = r.window(8)
        buf = r.buf
        limit = len(buf) - 8
        for _ in range(n_tensors - len(names)):
            if i > limit:
                break
            j = i + 8 + u64(buf, i)[0]
            if j + _INFO_TAIL > len(buf):
                break
            n_dims = buf[j + low]
            if not 0 < n_dims <= MAX_DIMS:
                break
            record = by_dims[n_dims](buf, j)
            if record[0] != n_dims:  # a count above 255
                break
            add_name(buf[i + 8 : j])
            add_record(record)
            i = j + 16 + 8 * n_dims
        r.pos = r.start + i
        if len(names) < n_tensors:
            _read_info(r, len(names), names, records)
    return names, records


def _read_info(r: _Reader, index: int, names: list[bytes], records: list[tuple[int, ...]]) -> None:
    """One tensor info record, field by field."""
    raw = r.string_bytes(f"tensor #{index}'s name")
    name = _name(raw)
    n_dims = r.u32()
    if n_dims == 0 or n_dims > MAX_DIMS:
        raise r.fail(f"tensor {_show(name)} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
    dims = tuple(r.i64() for _ in range(n_dims))
    names.append(raw)
    records.append((n_dims, *dims, r.u32(), r.u64()))


def _tensor_table(
    r: _Reader, raw_names: list[bytes], records: list[tuple[int, ...]], alignment: int
) -> TensorTable:
    """Check the tensor infos column by column and keep them as a :class:`TensorTable`.

    Each check runs over the whole column at C speed; only when one fails is the
    first offending tensor looked for, to name it.
    """

    def name(k: int) -> str:
        return _show(_name(raw_names[k]))

    def fail_at(good: Iterable[bool], message: Callable[[int], str]) -> ModelFormatError:
        k = next(k for k, ok in enumerate(good) if not ok)
        return r.fail(message(k))

    if len(set(raw_names)) != len(raw_names):
        seen: set[bytes] = set()
        for k, b in enumerate(raw_names):
            if b in seen:
                raise r.fail(f"tensor {name(k)} appears twice")
            seen.add(b)
    shapes: tuple[tuple[int, ...], ...] = tuple(map(itemgetter(slice(1, -2)), records))
    raw_types = list(map(itemgetter(-2), records))
    offsets: tuple[int, ...] = tuple(map(itemgetter(-1), records))
    if shapes and min(map(min, shapes)) <= 0:
        raise fail_at(
            [min(s) > 0 for s in shapes],
            lambda k: (
                f"tensor {name(k)} has a dimension of {min(shapes[k])} in shape {list(shapes[k])}"
            ),
        )
    n_elements = tuple(map(math.prod, shapes))
    if n_elements and max(n_elements) > _INT64_MAX:
        raise fail_at(
            [n <= _INT64_MAX for n in n_elements],
            lambda k: f"tensor {name(k)} has an impossible shape {list(shapes[k])}",
        )
    known = {int(t): t for t in GGMLType}
    if not known.keys() >= set(raw_types):
        raise fail_at(
            [t in known for t in raw_types],
            lambda k: (
                f"tensor {name(k)} has unknown ggml type {raw_types[k]}; "
                "it may need a newer llama.cpp"
            ),
        )
    types = tuple(map(known.__getitem__, raw_types))
    block_of = list(map({int(t): t.block_size for t in GGMLType}.__getitem__, raw_types))
    rows = list(map(itemgetter(0), shapes))
    if any(map(operator.mod, rows, block_of)):
        raise fail_at(
            [row % b == 0 for row, b in zip(rows, block_of, strict=True)],
            lambda k: (
                f"tensor {name(k)} rows of {rows[k]} elements are not a "
                f"multiple of {types[k].name}'s block size {block_of[k]}"
            ),
        )
    if any(map(alignment.__rmod__, offsets)):
        raise fail_at(
            [o % alignment == 0 for o in offsets],
            lambda k: (
                f"tensor {name(k)} data offset {offsets[k]} is not a multiple of "
                f"the alignment {alignment}"
            ),
        )
    size_of = map({int(t): t.type_size for t in GGMLType}.__getitem__, raw_types)
    n_bytes = tuple(map(operator.mul, map(operator.floordiv, n_elements, block_of), size_of))
    return TensorTable(tuple(raw_names), shapes, types, offsets, n_elements, n_bytes)


def _parse(r: _Reader) -> GGUFHeader:
    check_magic(r.raw(min(4, r.size)), r.name)
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
    array_types: dict[str, GGUFValueType] = {}
    kv_bytes: dict[str, int] = {}
    for index in range(n_kv):
        start = r.pos
        key = r.string(f"metadata key #{index}")
        if not key:
            raise r.fail(f"metadata key #{index} is empty")
        if key in metadata:
            raise r.fail(f"metadata key {_show(key)} appears twice")
        vtype = _value_type(r, key)
        metadata[key], item_type = _read_value(r, key, vtype)
        types[key] = vtype
        if vtype == GGUFValueType.ARRAY:
            array_types[key] = item_type
        kv_bytes[key] = r.pos - start

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

    raw_names, records = _read_infos(r, n_tensors)
    table = _tensor_table(r, raw_names, records, alignment)

    data_offset = r.pos
    if len(table):
        data_offset += -data_offset % alignment
    if data_offset > r.size:
        raise _TruncatedError

    if len(table):
        ends = list(map(operator.add, table.offsets, table.n_bytes))
        if data_offset + max(ends) > r.size:
            k = next(k for k, end in enumerate(ends) if data_offset + end > r.size)
            raise r.fail(
                f"truncated — tensor {_show(_name(table.raw_names[k]))} ends at byte "
                f"{data_offset + ends[k]:,} but the file has only {r.size:,} bytes; "
                "download or convert it again"
            )

    return GGUFHeader(
        path=r.path,
        version=version,
        byte_order="big" if r.prefix == ">" else "little",
        file_size=r.size,
        alignment=alignment,
        data_offset=data_offset,
        metadata=metadata,
        metadata_types=types,
        array_types=array_types,
        kv_bytes=kv_bytes,
        table=table,
    )


def read_gguf_header_from(
    fh: SeekableReader, size: int, path: Path, *, window: int = _WINDOW, local: bool = False
) -> GGUFHeader:
    """Read a GGUF header from an open binary file of ``size`` bytes.

    ``fh`` needs only ``seek`` and ``read``; reads go forward in windows of
    ``window`` bytes, so a file-like object over HTTP range requests works too.
    ``local`` says that ``path`` is the file itself, so long arrays and tensor
    data can be read from it later.
    """
    reader = _Reader(fh, size, path, window)
    try:
        header = _parse(reader)
    except _TruncatedError:
        raise ModelFormatError(
            f"{path.name}: the GGUF header is cut short at byte {reader.pos:,} of {size:,}; "
            "the file is truncated or damaged, download or convert it again"
        ) from None
    if not local:
        header = replace(header, local=False)
    logger.debug(
        "read GGUF header of %s: v%d, %d keys, %d tensors, data at %d",
        path.name,
        header.version,
        len(header.metadata),
        header.n_tensors,
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
            return read_gguf_header_from(fh, size, p, local=True)
    except IsADirectoryError:
        raise ModelFormatError(f"{p}: is a folder, not a GGUF file") from None
    except FileNotFoundError:
        raise ModelFileMissingError(f"{p}: no such file") from None
    except OSError as exc:
        raise ModelFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
