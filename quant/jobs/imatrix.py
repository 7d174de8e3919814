"""Importance matrices: collect them in-process, save and load llama.cpp's formats.

An importance matrix tells the quantizer which input columns of each weight
matrix matter most: for every ``MUL_MAT`` whose weight is a model tensor
(``blk.*``), the per-column sum of the squared activations that multiplied it,
and how many rows (tokens) contributed; for ``MUL_MAT_ID`` (mixture of experts)
the same per expert, with the routing read from the op's third source. This is
what llama.cpp's ``llama-imatrix`` tool gathers (tools/imatrix/imatrix.cpp);
collection here hooks the scheduler's eval callback (``cb_eval``) of a
llama-cpp-python context and reads tensors through ``ggml_backend_tensor_get``,
so it works when the model runs on a GPU.

Files are written in llama.cpp's GGUF imatrix format (``general.type =
imatrix``, ``imatrix.datasets``, ``imatrix.chunk_count``,
``imatrix.chunk_size``; tensors ``<weight>.in_sum2`` F32 ``[ne0, n_mat]`` and
``<weight>.counts`` F32 ``[1, n_mat]``), through gguf-py's ``GGUFWriter``, or in
its legacy ``.dat`` format; both are read back.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quant.atomic import atomic_output
from quant.errors import QuantError
from quant.gguf.header import has_gguf_magic, read_gguf_header
from quant.gguf.types import GGMLType
from quant.jobs.calibration import CalibrationSet
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 512
# llama.cpp ignores matrix products over fewer rows (tools/imatrix/imatrix.cpp).
MIN_ROWS = 16

# GGUF keys of llama.cpp's imatrix format (common/imatrix-loader.h).
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"


class ImatrixError(QuantError):
    """An importance matrix could not be collected, read or used."""


@dataclass(frozen=True)
class ImatrixEntry:
    """Raw statistics of one weight: ``sums`` has ``ne0 × n_counts`` values.

    ``counts`` has one entry per expert for MoE weights and a single entry for
    dense weights (even 3-D ones), exactly as llama.cpp stores them.
    """

    sums: np.ndarray  # float64, flat
    counts: np.ndarray  # int64

    @property
    def row_size(self) -> int:
        return len(self.sums) // max(1, len(self.counts))

    def means(self) -> np.ndarray:
        """Per-column mean of x² as float32; experts that saw no token get 1.0 (llama.cpp)."""
        n = len(self.counts)
        sums = self.sums.reshape(n, -1)
        out = np.ones_like(sums, dtype=np.float64)
        seen = self.counts > 0
        out[seen] = sums[seen] / self.counts[seen, None].astype(np.float64)
        return out.reshape(-1).astype(np.float32)


@dataclass(frozen=True)
class ImatrixData:
    """An importance matrix and where it came from."""

    entries: Mapping[str, ImatrixEntry]
    datasets: tuple[str, ...] = ()
    chunk_count: int = 0
    chunk_size: int = 0
    tokens: int = 0
    # File name it was loaded from or saved as (recorded in quantized files).
    source_name: str | None = None
    seconds: float = 0.0

    def for_quantize(self) -> dict[str, np.ndarray]:
        """What ``llama_model_quantize`` takes: name → per-column means (float32)."""
        out = {}
        for name, e in sorted(self.entries.items()):
            values = e.means()
            if not np.isfinite(values).all():
                raise ImatrixError(
                    f"importance matrix entry {name} has non-finite values; collect it again."
                )
            out[name] = values
        return out

    def with_source(self, name: str | None) -> ImatrixData:
        return ImatrixData(
            dict(self.entries),
            self.datasets,
            self.chunk_count,
            self.chunk_size,
            self.tokens,
            name,
            self.seconds,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "entries": len(self.entries),
            "datasets": list(self.datasets),
            "chunks": self.chunk_count,
            "chunk_size": self.chunk_size,
            "tokens": self.tokens,
            "file": self.source_name,
            "seconds": round(self.seconds, 2),
        }

    # -- GGUF format ------------------------------------------------------------

    def save(self, path: Path | str, *, legacy: bool | None = None) -> Path:
        """Write the matrix (GGUF unless ``path`` ends in ``.dat`` or ``legacy``)."""
        path = Path(path)
        if legacy is None:
            legacy = path.suffix.lower() == ".dat"
        with atomic_output(path) as tmp:
            if legacy:
                tmp.write_bytes(self._legacy_bytes())
            else:
                self._write_gguf(tmp)
        logger.info(
            "saved importance matrix %s (%d entries, %d chunks)",
            path,
            len(self.entries),
            self.chunk_count,
        )
        return path

    def _write_gguf(self, path: Path) -> None:
        """llama.cpp's GGUF imatrix layout, written with gguf-py's GGUFWriter.

        GGUFWriter cannot write an empty array, so ``imatrix.datasets`` is left
        out when no dataset is known; llama.cpp's loader and :func:`load_imatrix`
        both take the file without it.
        """
        import gguf

        class ImatrixWriter(gguf.GGUFWriter):
            def add_architecture(self) -> None:
                """An importance matrix belongs to no architecture: no general.architecture."""

        writer = ImatrixWriter(path, "")
        try:
            writer.add_type(gguf.GGUFType.IMATRIX)
            writer.add_array(KEY_DATASETS, list(self.datasets))
            writer.add_uint32(KEY_CHUNK_COUNT, self.chunk_count)
            writer.add_uint32(KEY_CHUNK_SIZE, self.chunk_size)
            for name in sorted(self.entries):
                e = self.entries[name]
                n_mat = len(e.counts)
                if n_mat == 0 or len(e.sums) == 0:
                    continue
                # numpy order: ggml's [ne0, n_mat] is (n_mat, ne0).
                sums = e.sums.astype(np.float32).reshape(n_mat, e.row_size)
                writer.add_tensor(f"{name}.in_sum2", sums)
                writer.add_tensor(f"{name}.counts", e.counts.astype(np.float32).reshape(n_mat, 1))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    def _legacy_bytes(self) -> bytes:
        chunk = self.chunk_size or DEFAULT_CHUNK_SIZE
        names = [n for n in sorted(self.entries) if (self.entries[n].counts > 0).any()]
        out = bytearray(struct.pack("<i", len(names)))
        for name in names:
            e = self.entries[name]
            raw = name.encode()
            ncall = int((int(e.counts.max()) + chunk - 1) // chunk)
            n_mat = len(e.counts)
            sums = e.sums.reshape(n_mat, -1).astype(np.float64)
            counts = e.counts.astype(np.float64)[:, None]
            values = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), 1.0) * ncall
            out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size)
            out += values.astype("<f4").tobytes()
        out += struct.pack("<i", self.chunk_count)
        dataset = ", ".join(self.datasets).encode()
        out += struct.pack("<i", len(dataset)) + dataset
        return bytes(out)


def load_imatrix(path: Path | str) -> ImatrixData:
    """Read an importance matrix in llama.cpp's GGUF or legacy ``.dat`` format."""
    path = Path(path)
    try:
        is_gguf = has_gguf_magic(path)
    except OSError as exc:
        raise ImatrixError(f"{path}: cannot read the importance matrix ({exc.strerror}).") from exc
    data = _load_gguf(path) if is_gguf else _load_legacy(path)
    logger.info(
        "loaded importance matrix %s: %d entries, %d chunks",
        path.name,
        len(data.entries),
        data.chunk_count,
    )
    return data


def _load_gguf(path: Path) -> ImatrixData:
    info = read_gguf_header(path)
    if not all(k in info.metadata for k in (KEY_CHUNK_COUNT, KEY_CHUNK_SIZE)):
        raise ImatrixError(
            f"{path.name}: a GGUF without imatrix metadata ({KEY_CHUNK_COUNT}, {KEY_CHUNK_SIZE}); "
            "is this an importance matrix file?"
        )
    by_name = {t.name: t for t in info.tensors}
    entries: dict[str, ImatrixEntry] = {}
    for tname, t in by_name.items():
        if not tname.endswith(".in_sum2"):
            continue
        base = tname[: -len(".in_sum2")]
        c = by_name.get(f"{base}.counts")
        if c is None:
            raise ImatrixError(f"{path.name}: {base} has sums but no counts; the file is damaged.")
        if t.type != GGMLType.F32 or c.type != GGMLType.F32:
            raise ImatrixError(f"{path.name}: sums and counts of {base} must be F32.")
        sums = np.asarray(info.tensor_data(t)).view("<f4").astype(np.float64)
        counts = np.rint(np.asarray(info.tensor_data(c)).view("<f4")).astype(np.int64)
        entries[base] = ImatrixEntry(sums, counts)
    if not entries:
        raise ImatrixError(f"{path.name}: the importance matrix has no entries.")
    found = info.get(KEY_DATASETS)
    datasets = tuple(str(d) for d in found) if isinstance(found, list) else ()
    return ImatrixData(
        entries,
        datasets,
        _count(info.get(KEY_CHUNK_COUNT)),
        _count(info.get(KEY_CHUNK_SIZE)),
        source_name=path.name,
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _load_legacy(path: Path) -> ImatrixData:
    raw = path.read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        try:
            (v,) = struct.unpack_from(fmt, raw, pos)
        except struct.error:
            raise ImatrixError(
                f"{path.name}: truncated at byte {pos}; not a complete imatrix (.gguf or .dat)."
            ) from None
        pos += struct.calcsize(fmt)
        return v

    n_entries = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise ImatrixError(f"{path.name}: not an importance matrix (GGUF or legacy .dat).")
    entries: dict[str, ImatrixEntry] = {}
    for _ in range(n_entries):
        n = take("<i")
        if n < 0 or pos + n > len(raw):
            raise ImatrixError(f"{path.name}: bad entry name at byte {pos}; the file is damaged.")
        name = raw[pos : pos + n].decode("utf-8", "replace")
        pos += n
        ncall = take("<i")
        nval = take("<i")
        if nval < 1 or pos + 4 * nval > len(raw):
            raise ImatrixError(f"{path.name}: bad value count for {name}; the file is damaged.")
        values = np.frombuffer(raw, dtype="<f4", count=nval, offset=pos).astype(np.float64)
        pos += 4 * nval
        # Legacy values are mean × ncall with a single count: keep them as sums over
        # ``ncall`` so the means come out as llama.cpp's quantize computes them.
        entries[name] = ImatrixEntry(values, np.array([max(ncall, 0)], dtype=np.int64))
    chunk_count = 0
    datasets: tuple[str, ...] = ()
    if pos + 4 <= len(raw):
        chunk_count = take("<i")
        if pos + 4 <= len(raw):
            n = take("<i")
            if n > 0 and pos + n <= len(raw):
                datasets = (raw[pos : pos + n].decode("utf-8", "replace"),)
    for name, e in entries.items():
        if e.counts[0] == 0:  # llama.cpp uses the values as they are when ncall is 0
            entries[name] = ImatrixEntry(e.sums, np.array([1], dtype=np.int64))
    return ImatrixData(entries, datasets, chunk_count, 0, source_name=path.name)


# -- collection ---------------------------------------------------------------


def weight_name(raw: str) -> str:
    """``CUDA0#blk.0.attn_k.weight#0`` → ``blk.0.attn_k.weight`` (scheduler copies)."""
    if "#" in raw:
        raw = raw.split("#", 2)[1]
    return raw


@dataclass
class _Stat:
    sums: np.ndarray
    counts: np.ndarray


@dataclass
class ImatrixCollector:
    """Accumulates x² statistics from the scheduler's eval callback."""

    stats: dict[str, _Stat] = field(default_factory=dict)
    enabled: bool = True
    error: BaseException | None = None
    calls: int = 0
    _g: Any = None

    def bind(self) -> Callable[[int, bool, int], bool]:
        from quant.native.ggml_ctypes import GgmlTensor, ggml

        self._g = ggml()
        g = self._g
        ptr_t = ctypes.POINTER(GgmlTensor)
        op_mm, op_mmid = g.op_mul_mat, g.op_mul_mat_id

        def callback(t: int, ask: bool, _ud: int) -> bool:
            try:
                if not self.enabled or self.error is not None:
                    return not ask
                p = ctypes.cast(t, ptr_t)
                node = p.contents
                if ask:
                    if node.op == op_mmid:
                        return True
                    if node.op != op_mm:
                        return False
                    src0, src1 = node.src[0], node.src[1]
                    if not src0 or not src1:
                        return False
                    s1 = src1.contents
                    if s1.ne[1] < MIN_ROWS or s1.type != 0:
                        return False
                    return weight_name(src0.contents.name.decode("utf-8", "replace")).startswith(
                        "blk."
                    )
                self._collect(node)
            except BaseException as exc:  # never let an exception reach the scheduler
                if self.error is None:
                    self.error = exc
            return True

        return callback

    def _collect(self, node: Any) -> None:
        g = self._g
        src0 = node.src[0]
        src1 = node.src[1]
        w = g.view(src0)
        name = weight_name(w.name)
        x = g.read(src1, np.float32)  # (ne3, ne2, ne1, ne0)
        self.calls += 1
        if node.op == g.op_mul_mat_id:
            ids = g.read(node.src[2], np.int32)  # (1, 1, n_tokens, n_ids)
            self.add_expert(name, x[0], ids[0, 0], w.ne[2])
        else:
            self.add_dense(name, x, (w.ne[2], w.ne[3]))

    def add_dense(self, name: str, x: np.ndarray, w_ne23: tuple[int, int]) -> None:
        """Accumulate a dense product: ``x`` is (ne3, ne2, rows, ne0) float32."""
        ne3, ne2, rows, ne0 = x.shape
        w2, w3 = max(1, w_ne23[0]), max(1, w_ne23[1])
        n_mat = w2 * w3
        st = self.stats.get(name)
        if st is None:
            st = _Stat(np.zeros(n_mat * ne0, dtype=np.float64), np.zeros(1, dtype=np.int64))
            self.stats[name] = st
        elif len(st.sums) != n_mat * ne0:
            raise ImatrixError(
                f"inconsistent input size for {name} ({len(st.sums)} vs {n_mat * ne0})."
            )
        acc = st.sums.reshape(n_mat, ne0)
        sq = np.square(x, dtype=np.float64).sum(axis=2)  # (ne3, ne2, ne0)
        for i3 in range(ne3):
            for i2 in range(ne2):
                acc[(i3 % w3) * w2 + (i2 % w2)] += sq[i3, i2]
        st.counts += (ne3 * ne2 * rows) // n_mat

    def add_expert(self, name: str, x: np.ndarray, ids: np.ndarray, n_expert: int) -> None:
        """Accumulate an expert product: ``x`` is (tokens, ne1, ne0), ``ids`` (tokens, n_used)."""
        n_tokens, ne1, ne0 = x.shape
        st = self.stats.get(name)
        if st is None:
            st = _Stat(
                np.zeros(n_expert * ne0, dtype=np.float64), np.zeros(n_expert, dtype=np.int64)
            )
            self.stats[name] = st
        elif len(st.sums) != n_expert * ne0 or len(st.counts) != n_expert:
            raise ImatrixError(f"inconsistent expert layout for {name}.")
        acc = st.sums.reshape(n_expert, ne0)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[0] != n_tokens:
            raise ImatrixError(f"{name}: {ids.shape[0]} routing rows for {n_tokens} tokens.")
        if ((ids < 0) | (ids >= n_expert)).any():
            raise ImatrixError(f"{name}: expert id out of range 0..{n_expert - 1}.")
        for idx in range(ids.shape[1]):
            rows = np.square(x[:, idx % ne1, :], dtype=np.float64)
            np.add.at(acc, ids[:, idx], rows)
            st.counts += np.bincount(ids[:, idx], minlength=n_expert)

    def check(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, QuantError):
                raise err
            raise ImatrixError(f"importance matrix collection failed: {err}") from err
        for name, st in self.stats.items():
            if not np.isfinite(st.sums).all():
                raise ImatrixError(
                    f"non-finite activations in {name}; the model overflows on this text "
                    "(try BF16/F32 input or other calibration text)."
                )

    def result(self, **kw: Any) -> ImatrixData:
        entries = {n: ImatrixEntry(s.sums.copy(), s.counts.copy()) for n, s in self.stats.items()}
        return ImatrixData(entries, **kw)


def chunk_tokens(
    tokens: np.ndarray, chunk_size: int, max_chunks: int | None, bos: int | None
) -> list[np.ndarray]:
    """Split ``tokens`` into whole chunks; the first token of each becomes BOS when given."""
    n = len(tokens) // chunk_size
    if max_chunks is not None:
        n = min(n, max_chunks)
    chunks = []
    for i in range(n):
        c = np.array(tokens[i * chunk_size : (i + 1) * chunk_size], dtype=np.int32)
        if bos is not None:
            c[0] = bos
        chunks.append(c)
    return chunks


def collect_imatrix(
    model: Path | str,
    calibration: CalibrationSet,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_chunks: int | None = None,
    threads: int | None = None,
    n_gpu_layers: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ImatrixData:
    """Run ``model`` over ``calibration`` in chunks and return its importance matrix.

    Chunks are ``chunk_size`` tokens, BOS first, with the KV cache cleared
    between them (as llama.cpp's tool does). Raises :class:`ImatrixError` when
    the text is shorter than one chunk.
    """
    from quant.native.llama_session import NativeModel

    model = Path(model)
    check_cancel(cancel)
    started = time.monotonic()
    collector = ImatrixCollector()
    stage = "imatrix"
    if on_progress is not None:
        on_progress(Progress(stage, 0, 0, f"loading {model.name}"))
    with NativeModel(
        model,
        n_ctx=chunk_size,
        threads=threads,
        cb_eval=collector.bind(),
        n_gpu_layers=n_gpu_layers,
    ) as m:
        collector.enabled = False
        tokens = calibration.tokenize(m)
        chunks = chunk_tokens(tokens, chunk_size, max_chunks, m.bos if m.add_bos else None)
        if not chunks:
            raise ImatrixError(
                f"calibration text '{calibration.name}' is {len(tokens)} tokens, less than one "
                f"{chunk_size}-token chunk; give more text or a smaller chunk size."
            )
        eta = EtaEstimator()
        total = len(chunks)
        collector.enabled = True
        for i, chunk in enumerate(chunks):
            check_cancel(cancel)
            m.clear()
            m.decode(chunk)
            collector.check()
            if on_progress is not None:
                on_progress(
                    Progress(
                        stage,
                        i + 1,
                        total,
                        f"chunk {i + 1}/{total} ({(i + 1) * chunk_size} tokens)",
                        eta_s=eta.eta(i + 1, total),
                    )
                )
    if not collector.stats:
        raise ImatrixError(
            f"{model.name}: no matrix products were seen; this architecture is not supported "
            "for importance matrices."
        )
    seconds = time.monotonic() - started
    data = collector.result(
        datasets=calibration.dataset_names,
        chunk_count=len(chunks),
        chunk_size=chunk_size,
        tokens=len(chunks) * chunk_size,
        seconds=seconds,
    )
    logger.info(
        "imatrix for %s: %d entries from %d chunks (%d tokens) in %.1f s",
        model.name,
        len(data.entries),
        data.chunk_count,
        data.tokens,
        seconds,
    )
    return data


__all__ = [
    "ImatrixCollector",
    "ImatrixData",
    "ImatrixEntry",
    "ImatrixError",
    "chunk_tokens",
    "collect_imatrix",
    "load_imatrix",
]
