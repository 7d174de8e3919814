"""A GGUF editor for attacks: read a file into parts, change any of them, write it back.

Written independently of :mod:`quant.gguf.header` (an attack tool must not share the
reader's assumptions). :func:`parse` reads the header of a file, and its tensor data
when asked; :meth:`Doc.image` lays the parts out again as GGUF bytes and records where
every count, length, type id, dimension and offset landed (:class:`Field`), so an
attack can overwrite one of them with a value no writer would produce (a string
length past the end of the file, a tensor count of a million).

Strings are kept as bytes, so names with undecodable bytes survive a round trip.
A document read without its tensor data (the starter model's header) is written as
its header followed by a sparse hole of the original data size: the 250 MB model
is never copied.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# enum gguf_type (ggml/include/gguf.h)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = (
    range(13)
)
SCALAR_FORMATS = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "?",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}
# Array elements whose positions are recorded as fields (the first few and the last).
_FIELDS_PER_ARRAY = 4
# Tensors whose info fields are recorded (the first ones and the last).
_FIELDS_PER_TENSORS = 64


@dataclass(frozen=True)
class Arr:
    """A metadata array: element type and elements (nested :class:`Arr` for arrays)."""

    item_type: int
    items: tuple[Any, ...]


@dataclass(frozen=True)
class KV:
    key: bytes
    vtype: int
    value: Any  # int | float | bool | bytes | Arr


@dataclass(frozen=True)
class Tensor:
    name: bytes
    dims: tuple[int, ...]  # ggml order, fastest-varying first
    ttype: int
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class Field:
    """Where a number of the header lies: ``label``, byte offset, struct format."""

    label: str
    offset: int
    fmt: str  # "<I", "<Q", "<q", …

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


@dataclass(frozen=True)
class Image:
    """The bytes of a GGUF file: ``head`` (header and padding) then ``data`` or a hole."""

    head: bytes
    data: bytes | None
    data_len: int
    fields: tuple[Field, ...]
    # Zero bytes between the header and the data that are not kept in memory (the padding
    # an absurd general.alignment asks for); written as a sparse hole.
    gap: int = 0

    @property
    def size(self) -> int:
        return len(self.head) + self.gap + self.data_len

    def field(self, label: str) -> Field:
        for f in self.fields:
            if f.label == label:
                return f
        raise KeyError(label)

    def patched(self, offset: int, raw: bytes) -> Image:
        head = bytearray(self.head)
        head[offset : offset + len(raw)] = raw
        return replace(self, head=bytes(head))

    def set_field(self, label: str, value: int | float) -> Image:
        f = self.field(label)
        return self.patched(f.offset, pack_fitting(f.fmt, value))

    def truncated(self, size: int) -> Image:
        """The first ``size`` bytes of the file."""
        if size <= len(self.head):
            return Image(self.head[:size], b"", 0, self.fields)
        if size <= len(self.head) + self.gap:
            return Image(self.head, b"", 0, self.fields, size - len(self.head))
        keep = size - len(self.head) - self.gap
        data = self.data[:keep] if self.data is not None else None
        return Image(self.head, data, keep, self.fields, self.gap)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            fh.write(self.head)
            fh.seek(len(self.head) + self.gap)
            if self.data is not None:
                fh.write(self.data)
            fh.truncate(self.size)  # holes (gap, missing data) are sparse: zeros taking no disk
        return path


def pack_fitting(fmt: str, value: int | float) -> bytes:
    """``value`` packed in ``fmt``, wrapped into range for integers (2**64 → 0, -1 → max)."""
    code = fmt[-1]
    if code in "fd":
        return struct.pack(fmt, float(value))
    if code == "?":
        return struct.pack("<B", int(value) & 0xFF)
    bits = struct.calcsize(fmt) * 8
    v = int(value) & ((1 << bits) - 1)
    if code.islower() and v >= 1 << (bits - 1):
        v -= 1 << bits
    return struct.pack(fmt, v)


@dataclass(frozen=True)
class Doc:
    version: int
    kvs: tuple[KV, ...]
    tensors: tuple[Tensor, ...]
    data: bytes | None  # the tensor data section; None when read header-only
    data_len: int
    little: bool = True
    magic: bytes = b"GGUF"

    # -- reading values -------------------------------------------------------------
    def get(self, key: str) -> Any:
        for kv in self.kvs:
            if kv.key == key.encode():
                return kv.value
        return None

    @property
    def arch(self) -> str:
        value = self.get("general.architecture")
        return value.decode() if isinstance(value, bytes) else "llama"

    @property
    def alignment(self) -> int:
        value = self.get("general.alignment")
        return value if isinstance(value, int) and value > 0 else 32

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name.encode():
                return t
        raise KeyError(name)

    # -- changes --------------------------------------------------------------------
    def with_kv(self, key: str | bytes, vtype: int, value: Any) -> Doc:
        """Set ``key`` (replacing it in place, or appending it)."""
        k = key.encode() if isinstance(key, str) else key
        kvs = list(self.kvs)
        for i, kv in enumerate(kvs):
            if kv.key == k:
                kvs[i] = KV(k, vtype, value)
                break
        else:
            kvs.append(KV(k, vtype, value))
        return replace(self, kvs=tuple(kvs))

    def with_arch_kv(self, suffix: str, vtype: int, value: Any) -> Doc:
        return self.with_kv(f"{self.arch}.{suffix}", vtype, value)

    def without(self, key: str) -> Doc:
        return replace(self, kvs=tuple(kv for kv in self.kvs if kv.key != key.encode()))

    def with_tensor(self, name: str, **changes: Any) -> Doc:
        tensors = [replace(t, **changes) if t.name == name.encode() else t for t in self.tensors]
        return replace(self, tensors=tuple(tensors))

    def with_tensors(self, tensors: list[Tensor] | tuple[Tensor, ...]) -> Doc:
        return replace(self, tensors=tuple(tensors))

    # -- writing --------------------------------------------------------------------
    def image(self) -> Image:
        w = _Writer("<" if self.little else ">")
        w.raw(self.magic)
        w.num("I", self.version, "version")
        w.num("Q", len(self.tensors), "n_tensors")
        w.num("Q", len(self.kvs), "n_kv")
        for kv in self.kvs:
            label = f"kv[{kv.key.decode('utf-8', 'replace')}]"
            w.string(kv.key, f"{label}.key")
            w.num("I", kv.vtype, f"{label}.type")
            w.value(kv.vtype, kv.value, label)
        last = len(self.tensors) - 1
        for i, t in enumerate(self.tensors):
            # Fields of the first tensors and the last (a million tensors need no million).
            label: str | None = (
                f"tensor[{t.name.decode('utf-8', 'replace')}]"
                if i < _FIELDS_PER_TENSORS or i == last
                else None
            )
            w.string(t.name, f"{label}.name" if label else None)
            w.num("I", len(t.dims), f"{label}.n_dims" if label else None)
            for d, n in enumerate(t.dims):
                w.num("q", n, f"{label}.dim{d}" if label else None)
            w.num("I", t.ttype, f"{label}.type" if label else None)
            w.num("Q", t.offset, f"{label}.offset" if label else None)
        pad = -len(w.buf) % self.alignment if self.tensors else 0
        kept = pad if pad <= 1 << 16 else 0
        w.raw(b"\0" * kept)
        return Image(bytes(w.buf), self.data, self.data_len, tuple(w.fields), pad - kept)


class _Writer:
    def __init__(self, order: str) -> None:
        self.order = order
        self.buf = bytearray()
        self.fields: list[Field] = []

    def raw(self, b: bytes) -> None:
        self.buf += b

    def num(self, code: str, value: int | float, label: str | None) -> None:
        fmt = self.order + code
        if label is not None:
            self.fields.append(Field(label, len(self.buf), fmt))
        self.buf += pack_fitting(fmt, value)

    def string(self, s: bytes, label: str | None) -> None:
        self.num("Q", len(s), f"{label}.len" if label else None)
        self.buf += s

    def value(self, vtype: int, value: Any, label: str) -> None:
        if vtype == STRING:
            self.string(value, f"{label}.value")
        elif vtype == ARRAY:
            assert isinstance(value, Arr)
            self.num("I", value.item_type, f"{label}.item_type")
            self.num("Q", len(value.items), f"{label}.count")
            items = value.items
            n = len(items)
            head = min(n, _FIELDS_PER_ARRAY)
            for j in range(head):
                self.item(value.item_type, items[j], f"{label}[{j}]")
            if n > head + 1:
                self.bulk(value.item_type, items[head : n - 1])
            if n > head:
                self.item(value.item_type, items[n - 1], f"{label}[{n - 1}]")
        else:
            self.num(SCALAR_FORMATS[vtype], value, f"{label}.value")

    def bulk(self, vtype: int, items: tuple[Any, ...]) -> None:
        """Many array elements at once, without recording fields (vocabularies are big)."""
        if vtype == STRING:
            q = struct.Struct(self.order + "Q").pack
            self.buf += b"".join(q(len(s)) + s for s in items)
        elif vtype in SCALAR_FORMATS:
            self.buf += struct.pack(f"{self.order}{len(items)}{SCALAR_FORMATS[vtype]}", *items)
        else:
            for item in items:
                self.item(vtype, item, None)

    def item(self, vtype: int, value: Any, label: str | None) -> None:
        if vtype == STRING:
            self.string(value, label)
        elif vtype == ARRAY:
            self.num("I", value.item_type, f"{label}.item_type" if label else None)
            self.num("Q", len(value.items), f"{label}.count" if label else None)
            for item in value.items:
                self.item(value.item_type, item, None)
        else:
            self.num(SCALAR_FORMATS[vtype], value, label)


# -- reading ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.order = "<"

    def num(self, code: str) -> Any:
        fmt = self.order + code
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> bytes:
        n = self.num("Q")
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            item_type = self.num("I")
            count = self.num("Q")
            if item_type in SCALAR_FORMATS:
                code = SCALAR_FORMATS[item_type]
                size = struct.calcsize(code)
                items = struct.unpack_from(f"{self.order}{count}{code}", self.data, self.pos)
                self.pos += size * count
                return Arr(item_type, tuple(items))
            return Arr(item_type, tuple(self.value(item_type) for _ in range(count)))
        return self.num(SCALAR_FORMATS[vtype])


def parse(path: Path, *, with_data: bool = True, head_limit: int = 64 << 20) -> Doc:
    """Read ``path`` (a well-formed GGUF) into a :class:`Doc`.

    ``with_data=False`` keeps only the header and the data section's size; the file is
    read only up to where its header ends (at most ``head_limit`` bytes).
    """
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        blob = fh.read(min(size, head_limit))
    r = _Reader(blob)
    magic = blob[:4]
    r.pos = 4
    version = r.num("I")
    little = True
    if version > 0xFFFF:
        r.order, little = ">", False
        r.pos = 4
        version = r.num("I")
    n_tensors = r.num("Q")
    n_kv = r.num("Q")
    kvs = []
    for _ in range(n_kv):
        key = r.string()
        vtype = r.num("I")
        kvs.append(KV(key, vtype, r.value(vtype)))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.num("I")
        dims = tuple(r.num("q") for _ in range(n_dims))
        ttype = r.num("I")
        offset = r.num("Q")
        tensors.append(Tensor(name, dims, ttype, offset))
    doc = Doc(version, tuple(kvs), tuple(tensors), None, 0, little, magic)
    start = r.pos + (-r.pos % doc.alignment if tensors else 0)
    data_len = size - start
    data: bytes | None = None
    if with_data:
        data = path.read_bytes()[start:]
    return replace(doc, data=data, data_len=data_len)
