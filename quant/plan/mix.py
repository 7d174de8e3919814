"""Quantdesk mixes: one llama.cpp type per tensor, chosen for a byte budget.

llama.cpp's stock types (Q4_K_M, IQ4_XS, …) give every tensor of a category the
same type by a fixed rule. A *mix* chooses each tensor's type separately, to
make the predicted quality loss as small as possible within a size budget. This
module is the planning half, with nothing native in it:

* :func:`parse_budget` reads ``3.2GB``, ``450MiB``, ``123456789`` (bytes) or
  ``4.25bpw``; :func:`fit_budget` is the largest file the memory model lets run
  on a machine at a context with its KV cache (``--budget fit``).
* :func:`candidate_types` lists the types a tensor may take: a row must be a
  whole number of the type's blocks (llama.cpp would otherwise fall back to
  another type behind the plan's back), and the types llama.cpp only makes with
  an importance matrix need one for that tensor.
* :func:`allocate` picks one option per tensor — an exact multiple-choice
  knapsack by dynamic programming over the budget in small byte cells, then a
  greedy fill of the bytes the cells rounded away — so the chosen types'
  padded sizes plus the fixed bytes never exceed the budget.
* :class:`Recipe` is the result: tensor → type. It becomes llama.cpp's
  ``tt_overrides`` patterns, and a compact text kept in the output's metadata
  (``quantdesk.mix.recipe.*``), from which the same file can be made again.

Measuring what each choice costs (the sensitivity) needs the model and runs in
:mod:`quant.jobs.mix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.gguf.types import GGMLType, LlamaFileType, file_type_from_dominant
from quant.hardware.profile import HardwareProfile
from quant.plan.memory import (
    KvType,
    PlannedTensor,
    RuntimeOptions,
    allows_quantization,
    gpu_budgets,
    plan_fits,
    plan_tensors,
    tensor_bytes,
)
from quant.units import human_bytes

GGUF_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT in ggml/include/gguf.h

# The types a search chooses from, low to high precision. IQ1/IQ2 and IQ3_XXS are
# left out by default: ggml's quantizers for them search large grids and take
# 10–30x longer per value than the k-quants, and at the budgets where they would
# win, a mix spends its bytes better elsewhere (see docs/budget-mix.md).
SEARCH_TYPES: tuple[GGMLType, ...] = (
    GGMLType.Q2_K,
    GGMLType.Q3_K,
    GGMLType.IQ3_S,
    GGMLType.IQ4_XS,
    GGMLType.Q4_0,
    GGMLType.IQ4_NL,
    GGMLType.Q4_K,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
    GGMLType.Q8_0,
    GGMLType.F16,
)

# Tensor types ggml refuses to quantize without an importance matrix
# (ggml_quantize_requires_imatrix in ggml/src/ggml.c).
NEEDS_IMATRIX: frozenset[GGMLType] = frozenset(
    {
        GGMLType.IQ1_S,
        GGMLType.IQ1_M,
        GGMLType.IQ2_XXS,
        GGMLType.IQ2_XS,
        GGMLType.IQ2_S,
    }
)
# And those llama.cpp's quantize refuses without one for a model tensor
# (tensor_requires_imatrix in src/llama-quant.cpp): the search never gives them to
# a tensor the importance matrix has no entry for.
_QUANTIZE_NEEDS_IMATRIX = NEEDS_IMATRIX | {GGMLType.IQ3_XXS}

# Keys of a mix's recipe in the GGUF metadata.
KEY_RECIPE_COUNT = "quantdesk.mix.recipe.count"
KEY_RECIPE = "quantdesk.mix.recipe.{}"
KEY_BUDGET = "quantdesk.mix.budget_bytes"
KEY_PREDICTED = "quantdesk.mix.predicted_kld"
# llama.cpp keeps a string override in 128 bytes, the terminator included.
_VALUE_LIMIT = 127


class BudgetError(QuantError):
    """A size budget that cannot be read or met."""


# -- budgets -------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A size budget: whole-file bytes, or bits per weight (8 × file bytes ÷ parameters)."""

    n_bytes: int | None = None
    bpw: float | None = None

    def resolve(self, n_parameters: int) -> int:
        """The budget in bytes for a model of ``n_parameters``."""
        if self.n_bytes is not None:
            return self.n_bytes
        assert self.bpw is not None
        return int(self.bpw * n_parameters / 8)

    @property
    def text(self) -> str:
        """The budget as ``parse_budget`` reads it back."""
        return f"{self.bpw:g}bpw" if self.bpw is not None else str(self.n_bytes)

    def describe(self) -> str:
        if self.bpw is not None:
            return f"{self.bpw:g} bits per weight"
        return human_bytes(self.n_bytes)


def parse_budget(text: str) -> Budget:
    """``"3.2GB"`` (10⁹), ``"450MiB"`` (2²⁰), ``"123456789"`` (bytes) or ``"4.25bpw"``.

    ``"fit"`` is not a size: callers that offer it resolve it with
    :func:`fit_budget` first.
    """
    m = _BUDGET_RE.match(text or "")
    if m is None:
        raise BudgetError(
            f"size budget {text!r} is not a size; write bytes (3200000000), a size with a "
            "unit (3.2GB, 450MiB), bits per weight (4.25bpw) or 'fit'."
        )
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit == "bpw":
        if not 1.0 <= number <= 32.0:
            raise BudgetError(f"{text}: bits per weight must be between 1 and 32.")
        return Budget(bpw=number)
    if unit not in _UNITS:
        raise BudgetError(
            f"size budget {text!r}: unknown unit {m.group(2)!r}; use B, KB, MB, GB, KiB, MiB, "
            "GiB or bpw."
        )
    n = int(number * _UNITS[unit])
    if n <= 0:
        raise BudgetError(f"size budget {text!r} is zero; give the size the file may take.")
    return Budget(n_bytes=n)


def _quantizable_plan(facts: ModelFacts) -> tuple[PlannedTensor, ...]:
    return plan_tensors(facts, None)


def fit_budget(
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    ctx: int,
    kv_type: KvType = KvType.F16,
    options: RuntimeOptions | None = None,
    margin_bytes: int | None = None,
) -> int:
    """The largest weights size (bytes) of ``facts`` that runs on ``profile`` at ``ctx``.

    The memory model places a model as the advisor does (as many layers on the
    GPUs as fit, the rest on the CPU) with its KV cache, compute buffers and
    runtime at ``ctx`` tokens. Quantizable tensors are scaled together from the
    source's own sizes and the largest scale that fits is found by bisection, so
    the answer respects which tensors stay on the CPU (token embeddings) and the
    per-layer split across devices. The weights are stored as they are: a mix's
    repacked copies on the CPU (:func:`quant.plan.memory.repacked_types`) are
    counted by the search itself. The result is a file size: for a GGUF source
    its header (metadata, vocabulary) is added, which the memory model counts
    with the runtime rather than the weights. Raises :class:`BudgetError` when
    even a one-bit model would not fit.
    """
    source = _quantizable_plan(facts)
    if not source:
        raise BudgetError(f"{facts.name}: no tensor list to plan a budget from.")
    quant = [allows_quantization(t.name, len(t.shape)) for t in source]
    ram = profile.memory.available_bytes or profile.memory.total_bytes
    budgets = gpu_budgets(profile, margin_bytes)
    has_gpu = profile.apple is not None or any(g.memory_total_bytes > 0 for g in profile.gpus)

    def plan_at(bits: float) -> tuple[PlannedTensor, ...]:
        return tuple(
            replace(
                t,
                type=GGMLType.F16,
                n_bytes=math.ceil(t.n_elements * bits / 8),
            )
            if q
            else t
            for t, q in zip(source, quant, strict=True)
        )

    def fits(bits: float) -> bool:
        return plan_fits(
            facts,
            plan_at(bits),
            ctx=ctx,
            ram_budget=ram,
            gpu_budgets=budgets,
            kv_type=kv_type,
            n_gpu_layers=None if has_gpu else 0,
            profile=profile,
            options=options,
            margin_bytes=margin_bytes,
        )

    lo, hi = 1.0, 16.0
    if not fits(lo):
        raise BudgetError(
            f"{facts.name} does not fit this machine at {ctx} tokens of context even at one "
            "bit per weight; choose a shorter context or a smaller model."
        )
    if fits(hi):
        lo = hi
    else:
        for _ in range(40):
            mid = (lo + hi) / 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-3:
                break
    tensor_bytes = sum(t.n_bytes for t in facts.tensors)
    header = max(0, facts.file_size_bytes - tensor_bytes) if tensor_bytes else 0
    return header + sum(t.n_bytes for t in plan_at(lo))


# -- what a tensor may take -----------------------------------------------------------


def candidate_types(
    name: str,
    shape: Sequence[int],
    *,
    has_imatrix: bool,
    types: Iterable[GGMLType] = SEARCH_TYPES,
) -> tuple[GGMLType, ...]:
    """The types ``name`` may take in a mix; empty for a tensor llama.cpp keeps as it is.

    A type is offered only when a row (``shape[0]`` values) is a whole number of
    its blocks, so llama.cpp never falls back to another type; and a type that
    needs an importance matrix only when the matrix has an entry for the tensor.
    """
    if not allows_quantization(name, len(shape)):
        return ()
    out = []
    for t in types:
        if shape[0] % t.block_size:
            continue
        if t in _QUANTIZE_NEEDS_IMATRIX and not has_imatrix:
            continue
        out.append(t)
    return tuple(out)


def padded(n: int, align: int = GGUF_ALIGNMENT) -> int:
    return -(-n // align) * align


# -- the recipe ------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_UNSAFE = re.compile(r"[;=,{}\s]")


@dataclass(frozen=True)
class Recipe:
    """Every quantized tensor's type in a mix."""

    types: Mapping[str, GGMLType]

    def entries(self) -> list[str]:
        """The recipe as short ``pattern=TYPE`` texts, layers folded into ranges.

        ``blk.{0-5,9}.attn_v.weight=Q6_K`` means that tensor of blocks 0 to 5 and
        9; names outside the blocks are written whole.
        """
        grouped: dict[tuple[str, GGMLType], list[int]] = {}
        single: list[str] = []
        for name, t in sorted(self.types.items()):
            if _UNSAFE.search(name):
                raise BudgetError(f"tensor name {name!r} cannot be written into a recipe.")
            m = _LAYER_RE.match(name)
            if m:
                grouped.setdefault((m.group(2), t), []).append(int(m.group(1)))
            else:
                single.append(f"{name}={t.name}")
        out = list(single)
        for (rest, t), layers in sorted(grouped.items(), key=lambda kv: (kv[0][0], min(kv[1]))):
            out.extend(_layer_entries(rest, t, sorted(layers)))
        return out

    def to_metadata(self) -> dict[str, str | int]:
        """The recipe in GGUF keys whose string values fit llama.cpp's 127 bytes."""
        chunks: list[str] = []
        for entry in self.entries():
            if chunks and len(chunks[-1]) + 1 + len(entry) <= _VALUE_LIMIT:
                chunks[-1] += ";" + entry
            else:
                chunks.append(entry)
        meta: dict[str, str | int] = {KEY_RECIPE_COUNT: len(chunks)}
        for i, chunk in enumerate(chunks):
            meta[KEY_RECIPE.format(i)] = chunk
        return meta

    @classmethod
    def from_text(cls, text: str) -> Recipe:
        """Read the entries of :meth:`entries` (joined by ``;``) back."""
        types: dict[str, GGMLType] = {}
        for raw in text.split(";"):
            entry = raw.strip()
            if not entry:
                continue
            pattern, sep, tname = entry.partition("=")
            try:
                t = GGMLType.from_name(tname)
            except ValueError:
                sep = ""
            if not sep:
                raise BudgetError(f"recipe entry {entry!r} is not 'tensor=TYPE'.")
            for name in _expand(pattern):
                types[name] = t
        return cls(types)

    @classmethod
    def from_metadata(cls, get: Callable[[str], Any]) -> Recipe | None:
        """The recipe kept in a file's metadata (``get`` reads a key), or None when none is."""
        count = get(KEY_RECIPE_COUNT)
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return None
        parts = []
        for i in range(count):
            part = get(KEY_RECIPE.format(i))
            if not isinstance(part, str):
                raise BudgetError(f"the mix recipe in this file lacks part {i} of {count}.")
            parts.append(part)
        return cls.from_text(";".join(parts))

    def overrides(self) -> tuple[tuple[str, GGMLType], ...]:
        """llama.cpp ``tt_overrides``: one anchored regex per entry, with its type."""
        out = []
        for entry in self.entries():
            pattern, _, tname = entry.partition("=")
            names = _expand(pattern)
            if len(names) == 1:
                regex = "^" + re.escape(names[0]) + "$"
            else:
                m = _LAYER_RE.match(names[0])
                assert m is not None
                layers = "|".join(str(int(_LAYER_RE.match(n).group(1))) for n in names)  # type: ignore[union-attr]
                regex = r"^blk\.(?:" + layers + r")\." + re.escape(m.group(2)) + "$"
            out.append((regex, GGMLType.from_name(tname)))
        return tuple(out)

    def file_type(self, shapes: Mapping[str, Sequence[int]]) -> LlamaFileType:
        """The file type the mix is labelled with: that of its most common type by weights.

        llama.cpp applies per-tensor overrides only under a quantized file type,
        so a mix mostly in F16 is labelled Q8_0.
        """
        weight: dict[GGMLType, int] = {}
        for name, t in self.types.items():
            weight[t] = weight.get(t, 0) + math.prod(shapes.get(name, (1,)))
        dominant = max(weight, key=lambda k: weight[k]) if weight else GGMLType.Q8_0
        ft = file_type_from_dominant(dominant)
        if ft in (LlamaFileType.F32, LlamaFileType.F16, LlamaFileType.BF16):
            return LlamaFileType.Q8_0
        return ft

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.types.values():
            counts[t.name] = counts.get(t.name, 0) + 1
        return dict(sorted(counts.items()))


def _ranges(layers: Sequence[int]) -> str:
    parts = []
    start = prev = layers[0]
    for n in [*layers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def _layer_entries(rest: str, t: GGMLType, layers: list[int]) -> list[str]:
    entry = f"blk.{{{_ranges(layers)}}}.{rest}={t.name}"
    if len(entry) <= _VALUE_LIMIT or len(layers) == 1:
        return [entry]
    half = len(layers) // 2
    return _layer_entries(rest, t, layers[:half]) + _layer_entries(rest, t, layers[half:])


def _expand(pattern: str) -> list[str]:
    m = re.match(r"^blk\.\{([\d,\-]+)\}\.(.+)$", pattern)
    if not m:
        if "{" in pattern or not pattern:
            raise BudgetError(f"recipe pattern {pattern!r} cannot be read.")
        return [pattern]
    names: list[str] = []
    for part in m.group(1).split(","):
        a, _, b = part.partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            raise BudgetError(f"recipe pattern {pattern!r} has a bad layer range.")
        lo, hi = int(a), int(b or a)
        if hi < lo or hi - lo > 1 << 16:
            raise BudgetError(f"recipe pattern {pattern!r} has a bad layer range.")
        names.extend(f"blk.{i}.{m.group(2)}" for i in range(lo, hi + 1))
    return names


# -- allocation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One way to store a tensor: its type, the bytes it takes (padded) and its cost."""

    type: GGMLType
    n_bytes: int
    cost: float
    # Bytes counted against the budget; more than n_bytes where the CPU keeps a
    # repacked copy and the budget is memory rather than file size.
    budget_bytes: int = 0

    @property
    def charged(self) -> int:
        return self.budget_bytes or self.n_bytes


@dataclass(frozen=True)
class TensorOptions:
    name: str
    shape: tuple[int, ...]
    choices: tuple[Choice, ...]

    def cheapest(self) -> Choice:
        return min(self.choices, key=lambda c: (c.charged, c.cost))


@dataclass(frozen=True)
class Allocation:
    """The chosen type of every tensor, what it costs and what it is predicted to lose."""

    recipe: Recipe
    bytes: int  # the chosen tensors' padded bytes
    charged: int  # what counts against the budget (repacked copies included)
    predicted: float  # sum of the chosen costs
    chosen: Mapping[str, Choice] = field(default_factory=dict)


def allocate(
    tensors: Sequence[TensorOptions],
    capacity: int,
    *,
    cells: int = 1 << 16,
) -> Allocation:
    """The choice per tensor with the least total cost whose charged bytes fit ``capacity``.

    Exact multiple-choice knapsack by dynamic programming over ``capacity`` cut
    into at most ``cells`` cells (each choice's bytes rounded up to whole cells,
    so a solution of the cells always fits), then a greedy fill: while bytes are
    left, take the change of one tensor's type that saves the most cost per
    extra byte and still fits. Raises :class:`BudgetError` when even the
    cheapest choices do not fit.
    """
    if not tensors:
        return Allocation(Recipe({}), 0, 0, 0.0)
    floor = sum(t.cheapest().charged for t in tensors)
    if floor > capacity:
        raise BudgetError(
            f"the budget leaves {human_bytes(capacity)} for the quantized tensors but the "
            f"smallest types take {human_bytes(floor)}; give a larger budget."
        )
    unit = max(1, -(-capacity // cells))
    cap = capacity // unit
    inf = np.inf
    dp = np.zeros(cap + 1, dtype=np.float64)
    picks = np.zeros((len(tensors), cap + 1), dtype=np.int16)
    for i, t in enumerate(tensors):
        new = np.full(cap + 1, inf)
        pick = np.zeros(cap + 1, dtype=np.int16)
        for k, c in enumerate(t.choices):
            w = -(-c.charged // unit)
            if w > cap:
                continue
            cand = dp[: cap + 1 - w] + c.cost
            better = cand < new[w:]
            new[w:] = np.where(better, cand, new[w:])
            pick[w:] = np.where(better, k, pick[w:])
        dp = new
        picks[i] = pick
    chosen: list[int] = [0] * len(tensors)
    if not np.isfinite(dp[cap]):
        # The cells' rounding hid the only fits: start from the cheapest and fill.
        chosen = [t.choices.index(t.cheapest()) for t in tensors]
    else:
        cell = cap
        for i in range(len(tensors) - 1, -1, -1):
            k = int(picks[i, cell])
            chosen[i] = k
            cell -= -(-tensors[i].choices[k].charged // unit)
    _fill(tensors, chosen, capacity)
    choice = {t.name: t.choices[k] for t, k in zip(tensors, chosen, strict=True)}
    return Allocation(
        recipe=Recipe({n: c.type for n, c in choice.items()}),
        bytes=sum(c.n_bytes for c in choice.values()),
        charged=sum(c.charged for c in choice.values()),
        predicted=float(sum(c.cost for c in choice.values())),
        chosen=choice,
    )


def _fill(tensors: Sequence[TensorOptions], chosen: list[int], capacity: int) -> None:
    left = capacity - sum(t.choices[k].charged for t, k in zip(tensors, chosen, strict=True))
    while True:
        best: tuple[float, int, int] | None = None
        for i, t in enumerate(tensors):
            cur = t.choices[chosen[i]]
            for k, c in enumerate(t.choices):
                extra = c.charged - cur.charged
                gain = cur.cost - c.cost
                if gain <= 0 or extra > left:
                    continue
                rate = gain / max(1, extra)
                if best is None or rate > best[0]:
                    best = (rate, i, k)
        if best is None:
            return
        _, i, k = best
        left -= tensors[i].choices[k].charged - tensors[i].choices[chosen[i]].charged
        chosen[i] = k


def tensor_choice(
    shape: Sequence[int],
    t: GGMLType,
    cost: float,
    *,
    repacked: frozenset[GGMLType] = frozenset(),
) -> Choice:
    """A :class:`Choice` for ``t`` with the padded bytes llama.cpp will write."""
    n = padded(tensor_bytes(t, shape))
    return Choice(t, n, cost, 2 * n if t in repacked and len(shape) == 2 else n)


# llama.cpp file types a mix is compared with, most to least precise.
STOCK_TYPES: tuple[LlamaFileType, ...] = (
    LlamaFileType.Q8_0,
    LlamaFileType.Q6_K,
    LlamaFileType.Q5_K_M,
    LlamaFileType.Q5_K_S,
    LlamaFileType.Q4_K_M,
    LlamaFileType.Q4_K_S,
    LlamaFileType.IQ4_XS,
    LlamaFileType.Q3_K_L,
    LlamaFileType.Q3_K_M,
    LlamaFileType.IQ3_M,
    LlamaFileType.Q3_K_S,
    LlamaFileType.IQ3_XXS,
    LlamaFileType.Q2_K,
    LlamaFileType.IQ2_M,
    LlamaFileType.IQ2_XS,
)
