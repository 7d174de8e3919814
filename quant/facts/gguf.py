"""Model facts from a GGUF header: what the reader in :mod:`quant.gguf.header` found,
turned into :class:`~quant.facts.model.ModelFacts` (parameters, layers, heads, context,
sliding-window layout, file type, tokenizer and chat template presence).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import compress
from pathlib import Path
from typing import Any

from quant.errors import ModelFormatError
from quant.facts.model import ModelFacts, SourceKind, TensorInfo, TensorTypeSummary
from quant.gguf.header import (
    MAX_LAYERS,
    GGUFHeader,
    TensorTable,
    _show,
    read_gguf_header,
)
from quant.gguf.split import parse_split_name
from quant.gguf.types import (
    FTYPE_GUESSED_BIT,
    GGMLType,
    LlamaFileType,
    file_type_from_dominant,
)
from quant.gguf.validate import validate_for_llama

logger = logging.getLogger(__name__)


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


def _file_type(
    header: GGUFHeader, counts: Counter[GGMLType], notes: list[str]
) -> tuple[str | None, bool]:
    """The llama.cpp file type name, and whether it was guessed."""
    raw = _int(header.metadata.get("general.file_type"))
    if raw is not None:
        guessed = bool(raw & FTYPE_GUESSED_BIT)
        try:
            return LlamaFileType(raw & ~FTYPE_GUESSED_BIT).name, guessed
        except ValueError:
            notes.append(f"general.file_type {raw} is not a llama.cpp file type this version knows")
            return None, False
    if not counts:
        return None, False
    dominant = counts.most_common(1)[0][0]
    ftype = file_type_from_dominant(dominant)
    notes.append(
        f"The file has no general.file_type; {ftype.name} is llama.cpp's guess from the "
        f"most common tensor type ({dominant.name})"
    )
    return ftype.name, True


def split_siblings(path: Path, header: GGUFHeader) -> list[Path]:
    """The other files of a split GGUF (``name-00001-of-00003.gguf``), present or not.

    The count is the header's ``split.count``; the names follow the file's own.
    """
    count = _int(header.metadata.get("split.count"))
    name = parse_split_name(path.name)
    if not count or count <= 1 or name is None or count > 10_000:
        return []
    return [
        path.with_name(part)
        for i, part in enumerate(replace(name, count=count).parts(), start=1)
        if i != name.index
    ]


# More tensors than any real model has (the largest have tens of thousands); beyond this
# the facts keep counts and sizes but not one TensorInfo per tensor.
MAX_LISTED_TENSORS = 65_536


@dataclass(frozen=True)
class _TensorSummary:
    """Counts and sizes over the tensor columns of a header and its split parts."""

    tables: tuple[TensorTable, ...]
    n_tensors: int
    n_elements: int
    n_bytes: int
    counts: Counter[GGMLType]

    @classmethod
    def of(cls, tables: tuple[TensorTable, ...]) -> _TensorSummary:
        counts: Counter[GGMLType] = Counter()
        for table in tables:
            counts.update(table.types)
        return cls(
            tables,
            sum(len(table) for table in tables),
            sum(sum(table.n_elements) for table in tables),
            sum(sum(table.n_bytes) for table in tables),
            counts,
        )

    def shape_of(self, name: bytes) -> tuple[int, ...] | None:
        for table in self.tables:
            try:
                return table.shapes[table.raw_names.index(name)]
            except ValueError:
                continue
        return None

    def elements_named(self, part: bytes) -> int:
        """Elements of the tensors whose name contains ``part``."""
        return sum(
            n
            for table in self.tables
            for raw, n in zip(table.raw_names, table.n_elements, strict=True)
            if part in raw
        )

    def by_type(self) -> tuple[TensorTypeSummary, ...]:
        """Tensors grouped by type, largest share of bytes first."""
        rows = []
        for ttype, n in self.counts.items():
            if len(self.counts) == 1:
                elements, size = self.n_elements, self.n_bytes
            else:
                elements = size = 0
                for table in self.tables:
                    mask = list(map(ttype.__eq__, table.types))
                    elements += sum(compress(table.n_elements, mask))
                    size += sum(compress(table.n_bytes, mask))
            rows.append(TensorTypeSummary(ttype.name, n, elements, size))
        return tuple(sorted(rows, key=lambda row: -row.n_bytes))


def facts_from_gguf(
    header: GGUFHeader,
    *,
    source: str,
    kind: SourceKind = SourceKind.GGUF,
    more: Sequence[TensorTable] = (),
    notes: tuple[str, ...] = (),
    file_size: int | None = None,
) -> ModelFacts:
    """Model facts from a GGUF header (plus ``more``: the tensors of its other split files).

    A model file llama.cpp could not safely load (:func:`validate_for_llama`)
    raises :class:`ModelFormatError`: the file is broken.

    Counts and sizes are summed over the tensor columns; the per-tensor list
    (:attr:`ModelFacts.tensors`) is made only for up to :data:`MAX_LISTED_TENSORS`
    tensors, more than any real model has.
    """
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
    split_count = _int(md.get("split.count")) or 1
    validate_for_llama(header, parts=more, complete=1 + len(more) >= split_count)
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

    tables = (header.table, *more)
    summary = _TensorSummary.of(tables)
    vocab = header.array_length("tokenizer.ggml.tokens") or _int(key("vocab_size")) or 0
    embd_shape = summary.shape_of(b"token_embd.weight")
    if not vocab and embd_shape is not None and len(embd_shape) > 1:
        vocab = embd_shape[1]

    n_experts = _int(key("expert_count")) or 0
    n_used = _int(key("expert_used_count")) or 0
    parameters = summary.n_elements
    n_bytes = summary.n_bytes
    active: int | None = None
    if n_experts > 1:
        expert = summary.elements_named(b"_exps.")
        active = parameters - expert + expert * min(n_used, n_experts) // n_experts

    window, swa_layers = _sliding_window(header, arch, n_layers, out_notes)
    file_type, guessed = _file_type(header, summary.counts, out_notes)

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

    listed: tuple[TensorInfo, ...] = ()
    if summary.n_tensors <= MAX_LISTED_TENSORS:
        listed = tuple(
            TensorInfo(name, shape, ttype.name, size)
            for table in tables
            for name, shape, ttype, size in zip(
                table.names, table.shapes, table.types, table.n_bytes, strict=True
            )
        )
    else:
        out_notes.append(
            f"The header lists {summary.n_tensors:,} tensors, more than the "
            f"{MAX_LISTED_TENSORS:,} listed one by one; counts and sizes cover them all"
        )
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
        tied_embeddings=embd_shape is not None and summary.shape_of(b"output.weight") is None,
        file_type=file_type,
        file_size_bytes=header.file_size if file_size is None else file_size,
        bits_per_weight=(8.0 * n_bytes / parameters) if parameters else None,
        tensors=listed,
        has_tokenizer=tokenizer_model is not None and vocab > 0,
        tokenizer_model=tokenizer_model,
        has_chat_template=bool(template) or bool(named_templates),
        chat_template=template,
        license=_str(md.get("general.license")),
        notes=tuple(out_notes),
        extra=extra,
        tensor_types=summary.by_type(),
    )


def inspect_gguf(path: Path) -> ModelFacts:
    """Facts from a local GGUF file; the other files of a split GGUF are read too."""
    header = read_gguf_header(path)
    notes: list[str] = []
    more: list[TensorTable] = []
    size = header.file_size
    siblings = split_siblings(path, header)
    if siblings:
        present = [p for p in siblings if p.is_file()]
        for sibling in present:
            other = read_gguf_header(sibling)
            more.append(other.table)
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
        header, source=str(path), more=tuple(more), notes=tuple(notes), file_size=size
    )
