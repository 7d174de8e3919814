"""The one reader of safetensors headers, local or over HTTP range requests.

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range (``data_offsets``, relative to
the end of the header), an optional ``__metadata__`` map of strings, then the
raw data. Only the header is read here; the converter reads tensor data itself.

The header comes from the file or the network and is not trusted: its length is
capped at the safetensors library's own limit, the JSON is parsed with
:func:`quant.untrusted.load_json` (bounded size and depth, no ``NaN``, no
oversized numbers), and every entry is checked (a known dtype, a shape of
non-negative integers, two ordered offsets whose span is exactly what the dtype
and shape need, no two tensors overlapping, every tensor inside the file), so a
damaged or hostile header is one :class:`~quant.errors.ModelFormatError`
sentence naming the file. Local files are opened with
:func:`quant.untrusted.open_regular`, so a FIFO named ``model.safetensors``
cannot block the reader.

Pickle checkpoints (:data:`PICKLE_SUFFIXES`) are never opened anywhere in
Quantdesk: unpickling can run arbitrary code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

from quant.errors import ModelFormatError
from quant.untrusted import UntrustedValueError, load_json, open_regular, short_text

# Weight files that are Python pickles: refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

# The safetensors library refuses headers above 100 MB; so does Quantdesk.
MAX_HEADER_BYTES = 100_000_000
# A first read of this much from the start of a remote file holds most headers whole.
_FIRST_READ = 256 * 1024

# Bits per element of every dtype the safetensors format defines (its Dtype enum).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


@dataclass(frozen=True)
class SafetensorsTensor:
    """One header entry: ``offset`` is where its bytes start in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors file's header; ``data_start`` is the file offset of its data section."""

    path: Path
    file_size: int
    data_start: int
    tensors: tuple[SafetensorsTensor, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


class ByteSource(Protocol):
    """What the reader needs of a file: a local file or a view over HTTP range requests."""

    def seek(self, pos: int, whence: int = 0, /) -> int: ...

    def read(self, n: int = -1, /) -> bytes: ...


def _show(name: str) -> str:
    return repr(short_text(name, 80))


def tensor_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of ``dtype`` and ``shape`` takes (packed sub-byte types rounded up)."""
    return -(-math.prod(shape) * DTYPE_BITS[dtype] // 8)


def _entry(name: str, tname: str, info: object) -> SafetensorsTensor:
    """One tensor entry, every field checked."""

    def malformed(what: str) -> ModelFormatError:
        return ModelFormatError(
            f"{name}: tensor {_show(tname)} has a malformed entry in the safetensors header "
            f"({what}); download the file again"
        )

    if not isinstance(info, Mapping):
        raise malformed("not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise malformed("no dtype")
    if dtype not in DTYPE_BITS:
        raise ModelFormatError(
            f"{name}: tensor {_show(tname)} has unknown dtype {_show(dtype)}; "
            "a newer safetensors format may have added it"
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise malformed("shape is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise malformed("data_offsets is not two ordered byte positions")
    begin, end = offsets
    expected = tensor_bytes(dtype, tuple(shape))
    if end - begin != expected:
        raise ModelFormatError(
            f"{name}: tensor {_show(tname)} claims {end - begin:,} bytes but {dtype} "
            f"{list(shape)} needs {expected:,}; the file is damaged, download it again"
        )
    return SafetensorsTensor(tname, dtype, tuple(shape), begin, end - begin)


def parse_header(
    raw: bytes, name: str, data_size: int | None
) -> tuple[tuple[SafetensorsTensor, ...], dict[str, str]]:
    """The tensors and ``__metadata__`` of a header's JSON ``raw``, every entry checked.

    ``data_size`` (the bytes after the header, when known) bounds the offsets.
    """
    try:
        obj: Any = load_json(raw, what=f"{name}: the safetensors header", max_bytes=len(raw))
    except UntrustedValueError as exc:
        raise ModelFormatError(f"{exc}; the file is damaged or not safetensors") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{name}: the safetensors header is not a JSON object")
    found = obj.pop("__metadata__", None)
    metadata = (
        {str(k): v for k, v in found.items() if isinstance(v, str)}
        if isinstance(found, dict)
        else {}
    )
    tensors = tuple(_entry(name, str(tname), info) for tname, info in obj.items())
    ordered = sorted(tensors, key=lambda t: (t.offset, t.offset + t.n_bytes))
    for before, after in pairwise(ordered):
        if after.offset < before.offset + before.n_bytes:
            raise ModelFormatError(
                f"{name}: tensors {_show(before.name)} and {_show(after.name)} overlap in the "
                "data section; the file is damaged, download it again"
            )
    if data_size is not None and ordered:
        last = max(tensors, key=lambda t: t.offset + t.n_bytes)
        end = last.offset + last.n_bytes
        if end > data_size:
            raise ModelFormatError(
                f"{name} is truncated: tensor {_show(last.name)} ends at byte {end:,} of the "
                f"data section but the file holds {data_size:,}; download it again"
            )
    return tensors, metadata


def read_header_from(source: ByteSource, size: int, path: Path) -> SafetensorsHeader:
    """Read the header of a safetensors file of ``size`` bytes from ``source``.

    Reads start at the file's first byte: one read for most headers, a second one
    from the start again for a header longer than the first read held.
    """
    name = path.name
    source.seek(0)
    head = source.read(min(size, _FIRST_READ))
    if len(head) < 8:
        raise ModelFormatError(
            f"{name} is truncated ({size} bytes, shorter than a safetensors header); "
            "download it again"
        )
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise ModelFormatError(
            f"{name}: the safetensors header claims {n:,} bytes, more than the "
            f"{MAX_HEADER_BYTES:,} a header may have; the file is damaged or not safetensors"
        )
    if 8 + n > size:
        raise ModelFormatError(
            f"{name}: the safetensors header claims {n:,} bytes in a {size:,}-byte file; "
            "the file is truncated or not safetensors, download it again"
        )
    if 8 + n > len(head):
        source.seek(0)
        head = source.read(8 + n)
        if len(head) < 8 + n:
            raise ModelFormatError(f"{name} changed while its header was read; read it again")
    tensors, metadata = parse_header(head[8 : 8 + n], name, size - 8 - n)
    return SafetensorsHeader(path, size, 8 + n, tensors, metadata)


def read_header(path: Path) -> SafetensorsHeader:
    """The header of the local safetensors file ``path``; tensor data is not read."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            return read_header_from(fh, size, path)
    except UntrustedValueError as exc:
        raise ModelFormatError(f"{exc}; a safetensors file must be a regular file") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
