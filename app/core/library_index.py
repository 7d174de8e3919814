"""Facts for listing the library: read from GGUF headers once, then from a cache.

:class:`LibraryIndex` turns library entries into :class:`ModelRow` values (the
architecture, parameter count, file type, context and chat template a header
names, and the advisor's fit badge on this machine) and finds copies of the same
file by content. Headers are read with :mod:`quant.gguf.header`, which
never reads tensor data, and what they say is kept in
``app_paths().cache_dir / "library-index.json"`` keyed by each file's path, size
and modification time, so a rescan of an unchanged library reads no file at all.
The facts are kept with their tensor list summarised (one row per tensor name
that repeats across layers), which is all a fit badge for another machine needs.
The cache is written atomically; a damaged one is ignored and rebuilt.

Content hashes (SHA-256) come from the layout when it names them (Ollama and
Hugging Face blobs); otherwise :meth:`LibraryIndex.find_duplicates` hashes the
files whose size collides with another entry's, cancellably and with progress,
and caches the digest under the same key.

Threads: one :class:`LibraryIndex` may be used from one worker thread at a time
(calls on one instance are serialised by a lock); it never writes settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from app.core.library import LibraryEntry, ModelLibrary, StarterModel, merge_same_content
from app.core.paths import app_paths
from quant.atomic import atomic_write_text
from quant.errors import ModelFileMissingError, NotGGUFError, QuantError
from quant.facts.model import (
    ModelFacts,
    RemoteFile,
    SourceKind,
    TensorInfo,
    TensorTypeSummary,
)
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Fit, Task, file_option
from quant.plan.quality import QualityMeasurement
from quant.plan.speed import CalibrationStore, Resource
from quant.progress import CancelToken, Progress, check_cancel

logger = logging.getLogger(__name__)

INDEX_FILE = "library-index.json"
INDEX_SCHEMA = 1
# Records of files not seen for this long are dropped, and at most this many are kept.
FORGET_AFTER_S = 30 * 24 * 3600.0
MAX_RECORDS = 5_000
# A record's "seen" time is refreshed at most this often (so a rescan need not write).
SEEN_RESOLUTION_S = 24 * 3600.0
# Hashing reads this much at a time (hashlib releases the GIL for large updates).
HASH_CHUNK = 4 << 20
# Bytes read at the start, middle and end of size-colliding files before hashing them whole.
SAMPLE_BYTES = 64 << 10

ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class ModelRow:
    """One library entry as listed: header facts and the fit badge on this machine.

    The facts are None for a broken entry (``entry.broken`` says why) and for
    facts a header does not give. ``fit`` is None without a hardware profile.
    """

    entry: LibraryEntry
    architecture: str | None
    parameters: int | None
    file_type: str | None
    context_length: int | None
    has_chat_template: bool | None
    fit: Fit | None
    fit_label: str
    predicted_tokens_per_s: float | None
    predicted_ram_bytes: int | None
    predicted_vram_bytes: int | None
    sha256: str | None
    #: The file's quality report card, when it was measured (app.core.quality).
    measured_quality: QualityMeasurement | None = None

    @property
    def broken(self) -> str | None:
        return self.entry.broken

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``quantdesk models --json`` (documented in the README)."""
        return {
            **self.entry.to_dict(),
            "sha256": self.sha256,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "file_type": self.file_type,
            "context_length": self.context_length,
            "has_chat_template": self.has_chat_template,
            "fit": self.fit.value if self.fit is not None else None,
            "fit_label": self.fit_label,
            "predicted_tokens_per_s": (
                round(self.predicted_tokens_per_s, 2)
                if self.predicted_tokens_per_s is not None
                else None
            ),
            "predicted_ram_bytes": self.predicted_ram_bytes,
            "predicted_vram_bytes": self.predicted_vram_bytes,
            "quality": self.measured_quality.to_dict() if self.measured_quality else None,
        }


@dataclass(frozen=True)
class _Prediction:
    fit: Fit
    tokens_per_s: float
    ram_bytes: int
    vram_bytes: int


@dataclass(frozen=True)
class _Query:
    """What one listing asks for: the machine, the task and context of the fit badge."""

    profile: HardwareProfile | None
    fingerprint: str
    task: Task
    ctx: int | None
    store: CalibrationStore


class _MemoCalibration(CalibrationStore):
    """The speed calibration store, read once per listing instead of once per estimate."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[tuple[str, Resource], float | None] = {}

    def efficiency(self, key: str, resource: Resource) -> float | None:
        k = (key, resource)
        if k not in self._memo:
            self._memo[k] = super().efficiency(key, resource)
        return self._memo[k]


def default_index_path() -> Path:
    return app_paths().cache_dir / INDEX_FILE


class LibraryIndex:
    """Header facts, fit badges and content hashes of library files, cached on disk.

    ``header_reads`` and ``files_hashed`` count the files this instance opened,
    which is how a caller (or a test) sees that a rescan came from the cache.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_index_path()
        self.header_reads = 0
        self.files_hashed = 0
        self._records: dict[str, dict[str, Any]] | None = None
        self._dirty = False
        self._facts: dict[str, tuple[int, int, ModelFacts]] = {}
        self._predictions: dict[tuple[str, int, int, str, str, int | None], _Prediction] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the cache file
    def _load(self) -> dict[str, dict[str, Any]]:
        if self._records is not None:
            return self._records
        records: dict[str, dict[str, Any]] = {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raw = None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning(
                "ignoring the damaged library index %s (%s); rebuilding it", self.path, exc
            )
            raw = None
        if isinstance(raw, dict) and raw.get("schema") == INDEX_SCHEMA:
            files = raw.get("files")
            if isinstance(files, dict):
                records = {str(k): v for k, v in files.items() if isinstance(v, dict)}
        elif raw is not None:
            logger.info("library index %s has another schema; rebuilding it", self.path)
        self._records = records
        return records

    def save(self) -> None:
        """Write the cache if it changed (atomically; a failure is logged, not raised)."""
        with self._lock:
            if not self._dirty or self._records is None:
                return
            now = time.time()
            kept = sorted(
                (
                    (k, r)
                    for k, r in self._records.items()
                    if now - _num(r.get("seen"), now) < FORGET_AFTER_S
                ),
                key=lambda kr: _num(kr[1].get("seen"), 0.0),
                reverse=True,
            )[:MAX_RECORDS]
            self._records = dict(kept)
            data = {"schema": INDEX_SCHEMA, "files": self._records}
            try:
                atomic_write_text(self.path, json.dumps(data, separators=(",", ":"), default=str))
            except OSError as exc:
                logger.warning("could not write the library index %s: %s", self.path, exc)
                return
            self._dirty = False

    def _record(self, entry: LibraryEntry, *, create: bool) -> dict[str, Any] | None:
        """The cache record of ``entry``'s file as it is now, or None (or a new one)."""
        records = self._load()
        key = str(entry.path)
        size, mtime_ns = entry.size_bytes, entry.mtime_ns
        if not mtime_ns:
            try:
                st = entry.path.stat()
            except OSError:
                st = None
            if st is not None:
                size, mtime_ns = st.st_size, st.st_mtime_ns
        rec = records.get(key)
        if rec is not None and rec.get("size") == size and rec.get("mtime_ns") == mtime_ns:
            now = time.time()
            if now - _num(rec.get("seen"), 0.0) > SEEN_RESOLUTION_S:
                rec["seen"] = now
                self._dirty = True
            return rec
        if not create:
            return None
        rec = {"size": size, "mtime_ns": mtime_ns, "seen": time.time()}
        records[key] = rec
        self._facts.pop(key, None)
        self._dirty = True
        return rec

    # ------------------------------------------------------------------ facts
    def _read_header(self, entry: LibraryEntry, rec: dict[str, Any]) -> None:
        from quant.facts.gguf import inspect_gguf

        self.header_reads += 1
        path = entry.path
        for k in ("broken", "facts", "retry"):
            rec.pop(k, None)
        if rec.get("size") == 0:
            rec["broken"] = (
                f"{path.name}: empty file (0 bytes); the download or copy did not finish, "
                "make it again"
            )
            return
        try:
            facts = inspect_gguf(path)
        except QuantError as exc:
            rec["broken"] = _broken_reason(exc)
            # A file that could not be opened may be readable next time without changing
            # (permissions, a disk mounted again): such a verdict is not kept.
            if isinstance(exc, ModelFileMissingError) or isinstance(exc.__cause__, OSError):
                rec["retry"] = True
            return
        except OSError as exc:
            rec["broken"] = (
                f"{path.name}: cannot be read ({exc.strerror or exc}); check its permissions"
            )
            rec["retry"] = True
            return
        except Exception as exc:  # one odd file must not stop the listing of the others
            logger.warning("unexpected error reading the header of %s", path, exc_info=True)
            rec["broken"] = (
                f"{path.name}: its header could not be read ({type(exc).__name__}: {exc}); "
                "check the file with 'quantdesk inspect' or remove it from the library"
            )
            rec["retry"] = True
            return
        rec["facts"] = _encode_facts(facts)
        self._facts[str(path)] = (int(rec["size"]), int(rec["mtime_ns"]), facts)

    def _facts_of(self, key: str, rec: dict[str, Any]) -> ModelFacts | None:
        cached = self._facts.get(key)
        if cached is not None and cached[0] == rec.get("size") and cached[1] == rec.get("mtime_ns"):
            return cached[2]
        encoded = rec.get("facts")
        facts = _decode_facts(encoded) if isinstance(encoded, dict) else None
        if facts is not None:
            self._facts[key] = (int(rec["size"]), int(rec["mtime_ns"]), facts)
        return facts

    def _predict(
        self, entry: LibraryEntry, key: str, rec: dict[str, Any], q: _Query
    ) -> _Prediction | None:
        if q.profile is None:
            return None
        memo_key = (key, int(rec["size"]), int(rec["mtime_ns"]), q.fingerprint, q.task.value, q.ctx)
        hit = self._predictions.get(memo_key)
        if hit is not None:
            return hit
        facts = self._facts_of(key, rec)
        if facts is None and "facts" in rec:
            # A record this version cannot decode: read the header again.
            self._read_header(entry, rec)
            self._dirty = True
            facts = self._facts_of(key, rec)
        if facts is None:
            return None
        try:
            option = file_option(facts, q.profile, task=q.task, ctx=q.ctx, store=q.store)
        except QuantError as exc:
            logger.info("no fit badge for %s: %s", key, exc)
            return None
        except Exception:  # a model the memory model cannot plan keeps its row, without a badge
            logger.warning("no fit badge for %s", key, exc_info=True)
            return None
        pred = _Prediction(option.fit, option.speed.generation, option.ram_bytes, option.vram_bytes)
        self._predictions[memo_key] = pred
        return pred

    def describe(
        self,
        entries: Sequence[LibraryEntry],
        profile: HardwareProfile | None,
        *,
        task: Task = Task.CHAT,
        ctx: int | None = None,
        cancel: CancelToken | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[ModelRow]:
        """One row per entry, in order: header facts and, with ``profile``, the fit badge.

        Reads the header of each file the cache does not know (or that changed
        since); a file that is not GGUF, is truncated or cannot be read comes back
        with ``entry.broken`` set. The cache is saved at the end, and also when
        cancelled, so the headers read so far are not read again.
        """
        with self._lock:
            try:
                q = _Query(
                    profile,
                    _profile_fingerprint(profile) if profile is not None else "",
                    task,
                    ctx,
                    _MemoCalibration(),
                )
                return self._describe(entries, q, cancel, on_progress)
            finally:
                self.save()

    def _describe(
        self,
        entries: Sequence[LibraryEntry],
        q: _Query,
        cancel: CancelToken | None,
        on_progress: ProgressFn | None,
    ) -> list[ModelRow]:
        total = len(entries)
        rows: list[ModelRow] = []
        for i, entry in enumerate(entries):
            check_cancel(cancel)
            before = self.header_reads
            rows.append(self._row(entry, q))
            if on_progress and (self.header_reads != before or i % 64 == 0 or i + 1 == total):
                on_progress(Progress("library", i + 1, total, f"Read {entry.name}"))
        return rows

    def _row(self, entry: LibraryEntry, q: _Query) -> ModelRow:
        if entry.broken is not None:
            return _empty_row(entry)
        rec = self._record(entry, create=True)
        assert rec is not None
        key = str(entry.path)
        if ("facts" not in rec and "broken" not in rec) or rec.get("retry"):
            self._read_header(entry, rec)
            self._dirty = True
        sha = entry.sha256 or _str(rec.get("sha256"))
        if rec.get("broken"):
            return _empty_row(replace(entry, broken=str(rec["broken"]), sha256=sha))
        listed = rec.get("facts")
        f = listed if isinstance(listed, dict) else {}
        pred = self._predict(entry, key, rec, q)
        return ModelRow(
            entry=replace(entry, sha256=sha) if sha != entry.sha256 else entry,
            architecture=_str(f.get("architecture")),
            parameters=_int(f.get("parameters")),
            file_type=_str(f.get("file_type")),
            context_length=_int(f.get("context_length")) or None,
            has_chat_template=(bool(f["has_chat_template"]) if "has_chat_template" in f else None),
            fit=pred.fit if pred else None,
            fit_label=pred.fit.label if pred else "",
            predicted_tokens_per_s=pred.tokens_per_s if pred else None,
            predicted_ram_bytes=pred.ram_bytes if pred else None,
            predicted_vram_bytes=pred.vram_bytes if pred else None,
            sha256=sha,
        )

    # ------------------------------------------------------------------ duplicates
    def known_sha256(self, entry: LibraryEntry) -> str | None:
        """The entry's digest from its layout or an earlier hash of the unchanged file."""
        if entry.sha256:
            return entry.sha256
        with self._lock:
            rec = self._record(entry, create=False)
        return _str(rec.get("sha256")) if rec else None

    def merge_known_duplicates(self, entries: Sequence[LibraryEntry]) -> list[LibraryEntry]:
        """Merge copies whose digests are already known (no file is read)."""
        with self._lock:
            filled = []
            for e in entries:
                rec = None if e.broken or e.sha256 else self._record(e, create=False)
                digest = _str(rec.get("sha256")) if rec else None
                filled.append(replace(e, sha256=digest) if digest else e)
            return merge_same_content(filled)

    def find_duplicates(
        self,
        entries: Sequence[LibraryEntry],
        *,
        cancel: CancelToken | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[LibraryEntry]:
        """Merge copies of the same file (same size and SHA-256) into one entry each.

        Only files whose size equals another entry's are considered. Digests come
        from the layout or the cache when known; the rest are computed, after a
        cheap comparison of a few sampled blocks rules out files that differ. The
        first entry of a group stays, with the others' paths in ``also_at``. Long
        (it reads whole files): run it on a worker. Digests computed before a
        cancel are kept in the cache.
        """
        with self._lock:
            try:
                return self._find_duplicates(entries, cancel, on_progress)
            finally:
                self.save()

    def _find_duplicates(
        self,
        entries: Sequence[LibraryEntry],
        cancel: CancelToken | None,
        on_progress: ProgressFn | None,
    ) -> list[LibraryEntry]:
        by_size: dict[int, list[int]] = {}
        for i, e in enumerate(entries):
            if e.broken is None and e.size_bytes > 0:
                by_size.setdefault(e.size_bytes, []).append(i)
        digests: dict[int, str] = {}
        to_hash: list[int] = []
        for members in by_size.values():
            if len(members) < 2:
                continue
            unknown = []
            for i in members:
                d = entries[i].sha256
                if not d:
                    rec = self._record(entries[i], create=False)
                    d = _str(rec.get("sha256")) if rec else None
                if d:
                    digests[i] = d
                else:
                    unknown.append(i)
            if unknown:
                to_hash += self._worth_hashing(entries, members, unknown, cancel)
        tracker = _HashProgress(
            on_progress, len(to_hash), sum(entries[i].size_bytes for i in to_hash)
        )
        for n, i in enumerate(to_hash):
            digest = self._hash(entries[i], cancel, tracker, n)
            tracker.done_bytes += entries[i].size_bytes
            if digest:
                digests[i] = digest
        if to_hash:
            tracker.finish()
        filled = [
            replace(e, sha256=digests[i]) if i in digests and e.sha256 != digests[i] else e
            for i, e in enumerate(entries)
        ]
        return merge_same_content(filled)

    def _worth_hashing(
        self,
        entries: Sequence[LibraryEntry],
        members: list[int],
        unknown: list[int],
        cancel: CancelToken | None,
    ) -> list[int]:
        """Of the same-size ``members``, the ``unknown`` ones whose sampled blocks match another."""
        samples: dict[int, bytes | None] = {}
        for i in members:
            check_cancel(cancel)
            samples[i] = _sample(entries[i].path, entries[i].size_bytes)
        out = []
        for i in unknown:
            s = samples[i]
            if s is None:
                continue
            if any(j != i and samples[j] == s for j in members):
                out.append(i)
        return out

    def _hash(
        self, entry: LibraryEntry, cancel: CancelToken | None, tracker: _HashProgress, n: int
    ) -> str | None:
        h = hashlib.sha256()
        read = 0
        message = f"Checking {entry.name} for copies"
        tracker.report(n, message, 0)
        try:
            with entry.path.open("rb") as fh:
                while True:
                    check_cancel(cancel)
                    chunk = fh.read(HASH_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    read += len(chunk)
                    tracker.report(n, message, read)
        except OSError as exc:
            logger.info("could not hash %s: %s", entry.path, exc)
            return None
        self.files_hashed += 1
        if read != entry.size_bytes:
            logger.info("%s changed while it was hashed; not keeping its digest", entry.path)
            return None
        digest = h.hexdigest()
        rec = self._record(entry, create=True)
        assert rec is not None
        rec["sha256"] = digest
        self._dirty = True
        return digest


# --------------------------------------------------------------------------- helpers


class _HashProgress:
    """Progress of hashing a list of files: files and bytes done, and an ETA."""

    def __init__(self, on_progress: ProgressFn | None, files: int, total_bytes: int) -> None:
        self.on_progress = on_progress
        self.files = files
        self.total_bytes = total_bytes
        self.done_bytes = 0
        self.started = time.monotonic()

    def report(self, n: int, message: str, extra: int) -> None:
        if self.on_progress is None:
            return
        now = self.done_bytes + extra
        elapsed = time.monotonic() - self.started
        eta = (self.total_bytes - now) * elapsed / now if now and elapsed > 0.5 else None
        self.on_progress(
            Progress(
                "hash",
                n,
                self.files,
                message,
                bytes_done=now,
                bytes_total=self.total_bytes,
                eta_s=eta,
            )
        )

    def finish(self) -> None:
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    "hash",
                    self.files,
                    self.files,
                    "Checked for copies",
                    bytes_done=self.total_bytes,
                    bytes_total=self.total_bytes,
                )
            )


def describe_library(
    library: ModelLibrary,
    profile: HardwareProfile | None,
    *,
    hash_duplicates: bool = False,
    index: LibraryIndex | None = None,
    starter: StarterModel | None = None,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    cancel: CancelToken | None = None,
    on_progress: ProgressFn | None = None,
) -> list[ModelRow]:
    """List ``library`` (:meth:`ModelLibrary.entries`) and describe every entry.

    Copies already known to be identical are merged; ``hash_duplicates`` hashes
    the size-colliding files first (slow: whole files are read). ``index`` reuses
    an index (and its in-memory cache) across calls; ``starter`` is a starter model
    located but not yet remembered. Writes no settings.
    """
    idx = index if index is not None else LibraryIndex()
    if on_progress:
        on_progress(Progress("library", 0, 0, "Looking for models…"))
    entries = library.entries(starter=starter, cancel=cancel)
    if hash_duplicates:
        entries = idx.find_duplicates(entries, cancel=cancel, on_progress=on_progress)
    else:
        entries = idx.merge_known_duplicates(entries)
    return idx.describe(
        entries, profile, task=task, ctx=ctx, cancel=cancel, on_progress=on_progress
    )


def _empty_row(entry: LibraryEntry) -> ModelRow:
    return ModelRow(
        entry=entry,
        architecture=None,
        parameters=None,
        file_type=None,
        context_length=None,
        has_chat_template=None,
        fit=None,
        fit_label="",
        predicted_tokens_per_s=None,
        predicted_ram_bytes=None,
        predicted_vram_bytes=None,
        sha256=entry.sha256,
    )


def _broken_reason(exc: QuantError) -> str:
    """A header reader's error as one sentence with a next step."""
    message = str(exc)
    if ";" in message:
        return message
    if isinstance(exc.__cause__, OSError):  # the file could not be opened or read
        return f"{message}; check the file's permissions"
    if isinstance(exc, NotGGUFError):
        return (
            f"{message}; it is not a model llama.cpp can load, download it again or "
            "remove it from the library"
        )
    return f"{message}; download or convert the model again, or remove it from the library"


def _sample(path: Path, size: int) -> bytes | None:
    """A few blocks from the start, middle and end of a file (enough to tell most apart)."""
    try:
        with path.open("rb") as fh:
            parts = []
            for offset in sorted(
                {0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}
            ):
                fh.seek(offset)
                parts.append(fh.read(SAMPLE_BYTES))
            return b"".join(parts)
    except OSError as exc:
        logger.info("could not read %s: %s", path, exc)
        return None


def _profile_fingerprint(profile: HardwareProfile) -> str:
    data = json.dumps(profile.to_dict(), sort_keys=True, default=str)
    calibration = CalibrationStore().path
    with contextlib.suppress(OSError):
        data += f"|{calibration.stat().st_mtime_ns}"
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def _num(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# The facts are kept whole (without the chat template's text) so a fit can be
# recomputed for another machine without reading the header again. Tensors are
# summarised: one row per name that repeats across layers ("blk.N.attn_q.weight"
# with the same shape, type and size), with the layers it covers as ranges, and
# one row per other tensor; a 236-tensor model keeps about 20 rows.
_FACT_FIELDS = {f.name for f in fields(ModelFacts)}
_LAYER_NAME = re.compile(r"^(.*?blk\.)(0|[1-9][0-9]{0,8})(\..*)$")


def _encode_tensors(tensors: Sequence[TensorInfo]) -> list[list[Any]]:
    """Rows ``[prefix, suffix, shape, type, n_bytes, [[first, stop], …]]`` for tensors
    repeated across layers, ``[name, shape, type, n_bytes]`` for the others, in the
    order each first appears."""
    rows: list[list[Any]] = []
    repeated: dict[tuple[str, str, tuple[int, ...], str, int], list[list[int]]] = {}
    for t in tensors:
        m = _LAYER_NAME.match(t.name)
        if m is None:
            rows.append([t.name, list(t.shape), t.type, t.n_bytes])
            continue
        prefix, layer, suffix = m.group(1), int(m.group(2)), m.group(3)
        key = (prefix, suffix, t.shape, t.type, t.n_bytes)
        ranges = repeated.get(key)
        if ranges is None:
            ranges = repeated[key] = []
            rows.append([prefix, suffix, list(t.shape), t.type, t.n_bytes, ranges])
        if ranges and ranges[-1][1] == layer:
            ranges[-1][1] = layer + 1
        else:
            ranges.append([layer, layer + 1])
    return rows


def _decode_tensors(rows: object) -> tuple[TensorInfo, ...]:
    """The tensors :func:`_encode_tensors` summarised; ``ValueError`` for a damaged list.

    Tensors named before the first repeated one come first, then the repeated
    ones layer by layer, then the rest: the order of a llama.cpp file.
    """
    if not isinstance(rows, list):
        raise ValueError("the tensor list is not a list")
    head: list[TensorInfo] = []
    tail: list[TensorInfo] = []
    by_layer: dict[int, list[tuple[int, TensorInfo]]] = {}
    # Within a layer, tensors keep the order their names first appear in.
    rank: dict[tuple[str, str], int] = {}
    for row in rows:
        if not isinstance(row, list) or len(row) not in (4, 6):
            raise ValueError(f"tensor row {str(row)[:40]!r} is damaged")
        if len(row) == 4:
            name, shape, ttype, n_bytes = row
            (tail if by_layer else head).append(
                TensorInfo(str(name), tuple(int(x) for x in shape), str(ttype), int(n_bytes))
            )
            continue
        prefix, suffix, shape, ttype, n_bytes, ranges = row
        dims = tuple(int(x) for x in shape)
        order = rank.setdefault((str(prefix), str(suffix)), len(rank))
        for first, stop in ranges:
            for layer in range(int(first), int(stop)):
                info = TensorInfo(f"{prefix}{layer}{suffix}", dims, str(ttype), int(n_bytes))
                by_layer.setdefault(layer, []).append((order, info))
    layered = [
        t for layer in sorted(by_layer) for _, t in sorted(by_layer[layer], key=lambda r: r[0])
    ]
    return (*head, *layered, *tail)


def _encode_facts(facts: ModelFacts) -> dict[str, Any]:
    d = facts.to_dict(with_tensors=False)
    d["tensors"] = _encode_tensors(facts.tensors)
    return d


def _decode_facts(d: dict[str, Any]) -> ModelFacts | None:
    """Facts from :func:`_encode_facts`; None for a record this version cannot read."""
    try:
        kw = {k: v for k, v in d.items() if k in _FACT_FIELDS}
        kw["kind"] = SourceKind(d["kind"])
        kw["tensors"] = _decode_tensors(d.get("tensors", []))
        kw["tensor_types"] = tuple(TensorTypeSummary(**t) for t in d.get("tensor_types", []))
        kw["remote_files"] = tuple(RemoteFile(**r) for r in d.get("remote_files", []))
        kw["swa_layers"] = tuple(bool(x) for x in d.get("swa_layers", []))
        kw["n_kv_heads_per_layer"] = tuple(int(x) for x in d.get("n_kv_heads_per_layer", []))
        kw["notes"] = tuple(str(x) for x in d.get("notes", []))
        kw["extra"] = dict(d.get("extra") or {})
        return ModelFacts(**kw)
    except (KeyError, TypeError, ValueError) as exc:
        logger.info("library index record not readable (%s); reading the header again", exc)
        return None
