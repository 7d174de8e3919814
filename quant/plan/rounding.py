"""What rounding a tensor onto a ggml type's grid costs, and how much of it a model carries.

**The table.** For every ggml storage type Quantdesk may meet, the relative
squared error of rounding weights onto its grid: ``Σ (w − q(w))² / Σ w²`` for
Gaussian weights (64 rows of 4,096, seed 0) quantized by ggml itself with equal
importance for every column. Two cases are kept:

* ``fresh``: rounding the original weights onto the type;
* ``again``: rounding weights that already lie on another type's grid (a file
  made from an already-quantized file), relative to those weights. It is often
  far below ``fresh``: Q4_K's levels nest inside Q5_K's (0.21 of a fresh
  rounding), Q5_0's mostly inside Q5_1's (0.68); rounding onto an unrelated grid
  of the same width costs about a fresh rounding.

The numbers live in ``resources/quality/rounding.json``, written by
``python -m quant.plan.rounding`` (about 40 s on two cores; it needs
llama-cpp-python's ggml library). The test suite re-measures a few entries.

**The load.** A model's mean rounding error over the matrices of its transformer
blocks (``blk.*``), weighted by their number of elements, for the types a plan
gives them (:func:`block_load`). Only the blocks count: a small model's
vocabulary table can hold most of its weights (Gemma 3 270M: 63%), yet the loss
a file shows follows the error in the layers every token passes through; the
output head keeps a high-precision type in every llama.cpp mix. The scoreboard's
KLD ÷ this load is 5.3–11.9 for the types from Q5_K_S down; the starter's
measured KLD ÷ (size factor × load) is 6.4–13.6 over the same types, where the
all-weights mean would make it 17–36 (docs/advice-rules.md, "Files made from an
already-quantized file").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from quant.errors import QuantError
from quant.gguf.types import GGMLType
from quant.resources import resources_dir

TABLE_SCHEMA = 1
ROWS, COLUMNS, SEED = 64, 4096, 0
# Types that store weights without rounding them onto a grid of their own.
_EXACT = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.F64})
# Not storage types for weights (activations, integers): never in the table.
_NOT_WEIGHTS = frozenset(
    {GGMLType.Q8_1, GGMLType.Q8_K, GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64}
)


def table_path() -> Path:
    return resources_dir() / "quality" / "rounding.json"


@dataclass(frozen=True)
class RoundingTable:
    """Relative squared rounding error per ggml type (see the module)."""

    fresh: Mapping[str, float]
    again: Mapping[str, Mapping[str, float]]

    def error(self, dst: GGMLType, src: GGMLType | None = None) -> float | None:
        """The cost of storing weights as ``dst``: from original weights (``src`` None or
        16/32-bit), or from weights already on ``src``'s grid. None for a type the table
        lacks; 0 for a 16/32-bit ``dst`` or ``dst`` equal to ``src``."""
        if dst in _EXACT or dst == src:
            return 0.0
        if src is None or src in _EXACT:
            return self.fresh.get(dst.name)
        return self.again.get(src.name, {}).get(dst.name)

    @classmethod
    def from_dict(cls, data: Any) -> RoundingTable:
        """The table from its JSON form; ``ValueError`` for anything else."""
        if not isinstance(data, dict) or data.get("schema") != TABLE_SCHEMA:
            raise ValueError("not a rounding table of schema 1")
        fresh = _errors(data.get("fresh"))
        again_raw = data.get("again")
        if not isinstance(again_raw, dict):
            raise ValueError("'again' is not an object")
        again = {str(k): _errors(v) for k, v in again_raw.items() if k in fresh}
        return cls(fresh, again)


def _errors(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ValueError("an error list is not an object")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if name not in GGMLType.__members__:
            continue  # a type this version does not know
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: {value!r} is not a number")
        v = float(value)
        if not math.isfinite(v) or not 0.0 <= v <= 10.0:
            raise ValueError(f"{name}: {v} is not a relative error")
        out[name] = v
    return out


@lru_cache(maxsize=1)
def rounding_table() -> RoundingTable:
    """The installed table; ``QuantError`` when it is missing or damaged."""
    path = table_path()
    try:
        return RoundingTable.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise QuantError(
            f"The rounding table {path} cannot be read ({exc}); reinstall Quantdesk or "
            "write it again with 'python -m quant.plan.rounding'."
        ) from None


@dataclass(frozen=True)
class BlockLoad:
    """How much rounding the blocks' matrices of one plan carry.

    ``error``: the element-weighted mean relative rounding error over the matrices
    whose type the plan sets (0 for those it keeps); ``unchanged``: the share of
    the blocks' matrix weights that keep their type (only activation rounding is
    new for them).
    """

    error: float
    unchanged: float

    @property
    def changed(self) -> float:
        return 1.0 - self.unchanged


class _Tensor(Protocol):  # what the load reads of memory.PlannedTensor
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def type(self) -> GGMLType: ...
    @property
    def n_elements(self) -> int: ...


def block_load(
    planned: Iterable[_Tensor],
    source: Mapping[str, GGMLType] | None = None,
    *,
    table: RoundingTable | None = None,
) -> BlockLoad | None:
    """The :class:`BlockLoad` of ``planned`` (tensors with ``name``, ``shape``, ``type``,
    ``n_elements``), made from original weights or, with ``source`` (name → the type
    each tensor has now), from a file whose weights are already rounded.

    None when the plan has no block matrices or a type the table does not know.
    """
    table = table or rounding_table()
    total = changed = 0
    weighted = 0.0
    for t in planned:
        if len(t.shape) < 2 or not t.name.startswith("blk.") or t.type in _NOT_WEIGHTS:
            continue
        before = source.get(t.name) if source is not None else None
        if source is not None and before is None:
            continue  # a tensor the file does not have
        n = t.n_elements
        total += n
        if before is not None and t.type == before:
            continue
        e = table.error(t.type, before)
        if e is None:
            return None
        changed += n
        weighted += n * e
    if not total:
        return None
    return BlockLoad(weighted / total, 1.0 - changed / total)


# -- writing the table -------------------------------------------------------------------


def measurable_types() -> list[GGMLType]:
    """The ggml types the table covers: every rounding storage type ggml quantizes."""
    return [t for t in GGMLType if t not in _EXACT and t not in _NOT_WEIGHTS]


def measure_table(types: Iterable[GGMLType] | None = None) -> dict[str, Any]:
    """Measure the table with ggml (see the module); the JSON form."""
    import numpy as np

    from quant.native.ggml_ctypes import GgmlLayoutError, ggml

    g = ggml()
    rng = np.random.default_rng(SEED)
    weights = rng.standard_normal((ROWS, COLUMNS)).astype(np.float32)
    ones = np.ones(COLUMNS, dtype=np.float32)

    def rounded(t: GGMLType, x: np.ndarray) -> np.ndarray:
        q = g.quantize_rows(int(t), x, ones)
        return g.dequantize(int(t), q, x.size).reshape(x.shape)

    def rel(x: np.ndarray, y: np.ndarray) -> float:
        err = float(np.square(x - y, dtype=np.float64).sum())
        return float(f"{err / float(np.square(x, dtype=np.float64).sum()):.4g}")

    on_grid: dict[GGMLType, np.ndarray] = {}
    fresh: dict[str, float] = {}
    for t in types if types is not None else measurable_types():
        try:
            on_grid[t] = rounded(t, weights)
        except GgmlLayoutError:
            continue  # this ggml cannot quantize the type
        fresh[t.name] = rel(weights, on_grid[t])
    again = {
        s.name: {d.name: rel(xs, rounded(d, xs)) for d in on_grid if d != s}
        for s, xs in on_grid.items()
    }
    import llama_cpp

    return {
        "schema": TABLE_SCHEMA,
        "what": (
            "relative squared error of rounding Gaussian weights onto each ggml type "
            "(fresh) and of rounding weights already on one type's grid onto another "
            "(again[source][type]); see quant/plan/rounding.py"
        ),
        "rows": ROWS,
        "columns": COLUMNS,
        "seed": SEED,
        "measured_with": f"llama-cpp-python {llama_cpp.__version__}",
        "fresh": fresh,
        "again": again,
    }


def main() -> int:
    from quant.atomic import atomic_write_text

    data = measure_table()
    path = table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    again = data.pop("again")
    text = json.dumps(data, indent=1)[:-2]  # one source type's row per line below
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in again.items())
    atomic_write_text(path, f'{text},\n "again": {{\n{rows}\n }}\n}}\n')
    print(f"wrote {path}: {len(data['fresh'])} types")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
