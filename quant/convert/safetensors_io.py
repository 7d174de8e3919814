"""Read a safetensors checkpoint folder without torch, a few rows at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the raw data. The
converter only needs the header up front; tensor data is read on demand in
row blocks with plain positioned reads, so the process's resident memory stays
near the block being converted (mapped pages of a memory map would count
towards it as they are touched). BF16 is widened to float32 with integer
shifts, so no ML framework is needed.

Pickle checkpoints (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are refused,
never opened: unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from quant.convert.errors import CheckpointError, UnsupportedDtypeError
from quant.units import human_bytes

logger = logging.getLogger(__name__)

# Bytes per element of every dtype the safetensors format defines.
ITEM_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F4": 1,
}

# The floating-point dtypes the converter reads; integer and FP8 tensors belong
# to pre-quantized checkpoints, which need their own scales to mean anything.
READABLE_DTYPES = ("F64", "F32", "F16", "BF16")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

# A header larger than this is not a real checkpoint header.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

_NUMPY_DTYPES: dict[str, str] = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live and how to read them."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute offset of the first byte in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_rows(self) -> int:
        """Rows along the first axis; a 0-D or 1-D tensor is one row."""
        return self.shape[0] if len(self.shape) >= 2 else 1

    @property
    def row_elements(self) -> int:
        return self.n_elements // self.n_rows if self.n_rows else 0

    def require_readable(self) -> None:
        if self.dtype not in READABLE_DTYPES:
            raise UnsupportedDtypeError(
                f"{self.path.name}: tensor {self.name} is stored as {self.dtype}, which the "
                f"converter does not read (it reads {', '.join(READABLE_DTYPES)}); this looks "
                "like a pre-quantized checkpoint, so convert the original full-precision "
                "model instead"
            )


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and check one safetensors file's header; tensor data is not read.

    Raises :class:`CheckpointError` for a file that is not safetensors or is
    shorter than its header says (an interrupted download).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"{path.name} is truncated ({size} bytes, shorter than a safetensors "
                    "header); download it again"
                )
            header_len = int.from_bytes(head, "little")
            if header_len > _MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path.name} is not a safetensors file (header length {header_len} "
                    "bytes is implausible); check that the download is complete and not "
                    "an HTML error page"
                )
            if 8 + header_len > size:
                raise CheckpointError(
                    f"{path.name} is truncated: its header needs {8 + header_len} bytes but "
                    f"the file has {size}; download it again"
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        header: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path.name} is not a safetensors file (its header is not JSON: {exc}); "
            "download it again"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name} is not a safetensors file (header is not a map)")

    data_start = 8 + header_len
    entries: dict[str, TensorEntry] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        entry = _entry_from_meta(path, name, meta, data_start)
        end = entry.offset + entry.nbytes
        if end > size:
            raise CheckpointError(
                f"{path.name} is truncated: tensor {name} needs bytes up to {end} but the "
                f"file has {size} ({human_bytes(end - size)} missing); download it again"
            )
        entries[name] = entry
    return entries


def _entry_from_meta(path: Path, name: str, meta: Any, data_start: int) -> TensorEntry:
    try:
        dtype = str(meta["dtype"])
        shape = tuple(int(d) for d in meta["shape"])
        begin, end = (int(x) for x in meta["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path.name}: the header entry of tensor {name} is malformed ({exc!r}); "
            "download the file again"
        ) from exc
    if dtype not in ITEM_SIZES:
        raise UnsupportedDtypeError(
            f"{path.name}: tensor {name} has unknown dtype {dtype!r}; the converter reads "
            f"{', '.join(READABLE_DTYPES)}"
        )
    n = 1
    for d in shape:
        if d < 0:
            raise CheckpointError(f"{path.name}: tensor {name} has a negative dimension {shape}")
        n *= d
    expected = n * ITEM_SIZES[dtype]
    if end - begin != expected or begin < 0:
        raise CheckpointError(
            f"{path.name}: tensor {name} claims {end - begin} bytes but {dtype} {list(shape)} "
            f"needs {expected}; the file is damaged, download it again"
        )
    return TensorEntry(name, dtype, shape, path, data_start + begin, expected)


@dataclass(frozen=True)
class Checkpoint:
    """A model folder's weights: every tensor name mapped to where it is stored."""

    folder: Path
    shards: tuple[Path, ...]
    tensors: Mapping[str, TensorEntry]

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.tensors.values())


def find_pickles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())


def open_checkpoint(folder: Path) -> Checkpoint:
    """Find the safetensors shards of ``folder`` and read all their headers.

    Uses ``model.safetensors.index.json`` when present (every shard it names must
    exist and hold the tensors it lists); otherwise every ``*.safetensors`` file,
    leaving out Mistral's ``consolidated*.safetensors`` duplicates when Hugging
    Face-named shards are present.
    """
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        shards, listed = _shards_from_index(index_path)
    else:
        listed = {}
        shards = sorted(folder.glob("*.safetensors"))
        hf_named = [p for p in shards if not p.name.startswith("consolidated")]
        if hf_named:
            shards = hf_named
    if not shards:
        pickles = find_pickles(folder)
        if pickles or (folder / "pytorch_model.bin.index.json").is_file():
            names = ", ".join(p.name for p in pickles[:3]) or "pytorch_model.bin.index.json"
            raise CheckpointError(
                f"{folder} holds only PyTorch pickle weights ({names}); Quantdesk never "
                "unpickles them because loading a pickle can run arbitrary code. Download the "
                "model's safetensors files instead (most Hugging Face repos have them)"
            )
        raise CheckpointError(
            f"{folder} has no *.safetensors weight files; download the model's safetensors "
            "files into this folder"
        )

    tensors: dict[str, TensorEntry] = {}
    for shard in shards:
        for name, entry in read_header(shard).items():
            if name in tensors:
                raise CheckpointError(
                    f"tensor {name} appears in both {tensors[name].path.name} and "
                    f"{shard.name}; remove the stray shard from {folder}"
                )
            tensors[name] = entry
    for name, shard_name in listed.items():
        if name not in tensors:
            raise CheckpointError(
                f"{index_path.name} lists tensor {name} in {shard_name}, but that shard does "
                "not contain it; download the shard again"
            )
    logger.debug("checkpoint %s: %d shards, %d tensors", folder, len(shards), len(tensors))
    return Checkpoint(folder, tuple(shards), tensors)


def _shards_from_index(index_path: Path) -> tuple[list[Path], dict[str, str]]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not a map")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{index_path.name} cannot be read ({exc}); download it again"
        ) from exc
    folder = index_path.parent
    names = sorted({str(v) for v in weight_map.values()})
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(
            f"shard {missing[0]} listed in {index_path.name} is missing from {folder}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; download the missing files"
        )
    return [folder / n for n in names], {str(k): str(v) for k, v in weight_map.items()}


class TensorReader:
    """Reads row blocks of tensors as float32; keeps one open handle per shard.

    Use as a context manager so the handles are closed.
    """

    def __init__(self) -> None:
        self._files: dict[Path, IO[bytes]] = {}

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def _file(self, path: Path) -> IO[bytes]:
        fh = self._files.get(path)
        if fh is None:
            try:
                fh = path.open("rb", buffering=0)
            except OSError as exc:
                raise CheckpointError(f"{path}: cannot be opened ({exc.strerror or exc})") from exc
            self._files[path] = fh
        return fh

    def read_rows(self, entry: TensorEntry, start: int, count: int) -> npt.NDArray[np.float32]:
        """Rows ``start:start+count`` of ``entry`` as float32, shaped like the tensor."""
        entry.require_readable()
        row_bytes = entry.row_elements * ITEM_SIZES[entry.dtype]
        raw = np.empty(count * entry.row_elements, dtype=_NUMPY_DTYPES[entry.dtype])
        fh = self._file(entry.path)
        fh.seek(entry.offset + start * row_bytes)
        got = _read_fully(fh, raw)
        if got != raw.nbytes:
            raise CheckpointError(
                f"{entry.path.name} ended early while reading tensor {entry.name}; the file "
                "changed or is truncated, download it again"
            )
        shape = (count, *entry.shape[1:]) if len(entry.shape) >= 2 else entry.shape
        return to_float32(raw, entry.dtype).reshape(shape)

    def read(self, entry: TensorEntry) -> npt.NDArray[np.float32]:
        return self.read_rows(entry, 0, entry.n_rows)

    def iter_row_blocks(
        self, entry: TensorEntry, max_bytes: int, unit: int = 1
    ) -> Iterator[npt.NDArray[np.float32]]:
        """Yield ``entry`` in blocks of whole ``unit``-row groups, about ``max_bytes`` each."""
        if len(entry.shape) < 2:
            yield self.read(entry)
            return
        row_f32 = max(1, entry.row_elements * 4)
        units_per_block = max(1, max_bytes // (row_f32 * unit))
        step = units_per_block * unit
        for start in range(0, entry.n_rows, step):
            yield self.read_rows(entry, start, min(step, entry.n_rows - start))


def _read_fully(fh: IO[bytes], out: npt.NDArray[Any]) -> int:
    view = memoryview(out.data).cast("B")
    total = 0
    while total < len(view):
        n = fh.readinto(view[total:])  # type: ignore[attr-defined]
        if not n:
            break
        total += n
    return total


def to_float32(raw: npt.NDArray[Any], dtype: str) -> npt.NDArray[np.float32]:
    """Widen raw safetensors data of ``dtype`` to float32 (BF16 by a 16-bit shift)."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if dtype == "F32":
        return raw.view(np.float32) if raw.dtype == np.dtype("<f4") else raw.astype(np.float32)
    return raw.astype(np.float32)
