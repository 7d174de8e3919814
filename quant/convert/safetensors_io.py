"""Read a safetensors checkpoint folder without torch, a few rows at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the raw data. The
converter only needs the header up front (read and checked by
:mod:`quant.safetensors.header`); tensor data is read on demand in
row blocks with plain positioned reads, so the process's resident memory stays
near the block being converted (mapped pages of a memory map would count
towards it as they are touched). BF16 is widened to float32 with integer
shifts, so no ML framework is needed.

Pickle checkpoints (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are refused,
never opened: unpickling can run arbitrary code.
"""

from __future__ import annotations

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
from quant.errors import ModelFormatError, QuantError
from quant.safetensors.header import DTYPE_BITS, PICKLE_SUFFIXES
from quant.safetensors.header import read_header as read_safetensors_header
from quant.untrusted import UntrustedValueError, folder_file, read_json_file, terminal_text

logger = logging.getLogger(__name__)

# Bytes per element of the dtypes that take whole bytes.
ITEM_SIZES: dict[str, int] = {d: bits // 8 for d, bits in DTYPE_BITS.items() if bits % 8 == 0}

# The floating-point dtypes the converter reads; integer and FP8 tensors belong
# to pre-quantized checkpoints, which need their own scales to mean anything.
READABLE_DTYPES = ("F64", "F32", "F16", "BF16")

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

    Raises :class:`CheckpointError` for a file that is not safetensors, is
    damaged, or is shorter than its header says (an interrupted download).
    """
    try:
        header = read_safetensors_header(path)
    except CheckpointError:
        raise
    except ModelFormatError as exc:
        raise CheckpointError(str(exc)) from exc
    return {
        t.name: TensorEntry(t.name, t.dtype, t.shape, path, header.data_start + t.offset, t.n_bytes)
        for t in header.tensors
    }


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
    """The pickle weight files of ``folder`` (never opened)."""
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
                f"{index_path.name} lists tensor {terminal_text(name, 100)} in "
                f"{terminal_text(shard_name, 100)}, but that shard does "
                "not contain it; download the shard again"
            )
    logger.debug("checkpoint %s: %d shards, %d tensors", folder, len(shards), len(tensors))
    return Checkpoint(folder, tuple(shards), tensors)


def _shards_from_index(index_path: Path) -> tuple[list[Path], dict[str, str]]:
    try:
        index = read_json_file(index_path)
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not a map")
    except (OSError, QuantError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{index_path.name} cannot be read ({exc}); download it again"
        ) from exc
    folder = index_path.parent
    names = sorted({str(v) for v in weight_map.values()})
    try:
        paths = [folder_file(folder, n, what=index_path.name) for n in names]
    except UntrustedValueError as exc:
        raise CheckpointError(str(exc)) from None
    missing = [terminal_text(p.relative_to(folder), 100) for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"shard {missing[0]} listed in {index_path.name} is missing from {folder}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; download the missing files"
        )
    return paths, {str(k): str(v) for k, v in weight_map.items()}


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
