"""Measured quality: report cards for library files, and the store the app keeps them in.

``quantdesk quality FILE`` and the Models page's "Measure quality" measure a GGUF
against a more precise file of the same model (:mod:`quant.jobs.quality`). With
``auto`` the reference is found among the files the user already has
(:func:`reference_candidates`: the library, Quantdesk's own outputs and the F16
files its convert jobs made); when there is none, the error names what to get,
and the hub repo's most precise GGUF file when the measured file came from one
(:func:`suggest_reference`).

Results are kept in ``quality.json`` in Quantdesk's data folder
(:class:`QualityStore`), keyed by the file's path, size and modification time
(and its SHA-256 when the library knows it, so a copy finds its card too). The
library listing reads it for the Models page's column, the Chat page's banner
reads it for the loaded file, and the Advisor reads every measurement of a
model (:func:`evidence_for`). Convert reports (``*-report.json``, beside the
files a convert job made) are measurements too: the store imports them, with
their lineage: a convert job that requantized an already-quantized file
measured against that file's F16 expansion.

Everything here reads files: call it off the GUI thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import AppError
from app.core.paths import app_paths
from quant.atomic import atomic_write_text
from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.plan.quality import QualityEvidence, QualityMeasurement, model_key
from quant.progress import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)

STORE_FILE = "quality.json"
STORE_SCHEMA = 1
# At most this many report cards are kept (the oldest go first).
MAX_RECORDS = 2000
_REPORT_GLOB = "*-report.json"
_REFERENCE_TYPES = ("F32", "BF16", "F16", "Q8_0")
_lock = threading.RLock()


def default_store_path() -> Path:
    return app_paths().data_dir / STORE_FILE


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class QualityStore:
    """Report cards and imported convert reports, one record per file path."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_store_path()

    # -- the file -----------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schema": STORE_SCHEMA, "files": {}, "reports": {}}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("ignoring the unreadable quality store %s (%s)", self.path, exc)
            return {"schema": STORE_SCHEMA, "files": {}, "reports": {}}
        if not isinstance(data, dict) or data.get("schema") != STORE_SCHEMA:
            return {"schema": STORE_SCHEMA, "files": {}, "reports": {}}
        for k in ("files", "reports"):
            if not isinstance(data.get(k), dict):
                data[k] = {}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        files = data["files"]
        if len(files) > MAX_RECORDS:
            keep = sorted(files.items(), key=lambda kv: str(kv[1].get("created", "")))
            data["files"] = dict(keep[-MAX_RECORDS:])
        atomic_write_text(self.path, json.dumps(data, indent=1, default=str))

    # -- records ------------------------------------------------------------------------
    def record(self, m: QualityMeasurement, path: Path | str, *, sha256: str | None = None) -> None:
        """Keep ``m`` as the card of the file at ``path`` (as the file is now)."""
        p = Path(path)
        ident = _identity(p)
        if ident is None:
            raise AppError(f"{p.name}: the file is gone; its quality was not kept.")
        with _lock:
            data = self._read()
            data["files"][str(p)] = {
                "size": ident[0],
                "mtime_ns": ident[1],
                "sha256": sha256,
                "measurement": m.to_dict(),
            }
            self._write(data)

    def for_file(self, path: Path | str, *, sha256: str | None = None) -> QualityMeasurement | None:
        """The card of the file at ``path`` if unchanged since (or of an identical copy)."""
        p = Path(path)
        ident = _identity(p)
        data = self._read()
        rec = data["files"].get(str(p))
        if rec and ident and (rec.get("size"), rec.get("mtime_ns")) == ident:
            return _measurement(rec)
        if sha256:
            for other in data["files"].values():
                if other.get("sha256") == sha256:
                    return _measurement(other)
        return None

    def measurements(self) -> list[QualityMeasurement]:
        """Every card whose file is still as it was measured (and those of files now gone,
        which still describe their model)."""
        out = []
        for rec in self._read()["files"].values():
            m = _measurement(rec)
            if m is not None:
                out.append(m)
        return out

    def records(self) -> dict[str, Any]:
        """The raw records by path (``size``, ``mtime_ns``, ``sha256``, ``measurement``)."""
        files: dict[str, Any] = self._read()["files"]
        return files

    def forget(self, path: Path | str) -> None:
        with _lock:
            data = self._read()
            if data["files"].pop(str(Path(path)), None) is not None:
                self._write(data)

    # -- convert reports ----------------------------------------------------------------
    def import_report(self, report: dict[str, Any], report_path: Path | None = None) -> int:
        """Keep the evaluations of a convert report as cards of the files it made.

        Returns how many files got a card. Files already carded since are kept.
        """
        made = 0
        with _lock:
            data = self._read()
            for m, path in measurements_from_report(report):
                ident = _identity(path)
                if ident is None:
                    continue
                old = data["files"].get(str(path))
                if (
                    old
                    and (old.get("size"), old.get("mtime_ns")) == ident
                    and str(old.get("measurement", {}).get("created", "")) >= m.created
                ):
                    continue
                data["files"][str(path)] = {
                    "size": ident[0],
                    "mtime_ns": ident[1],
                    "sha256": None,
                    "measurement": m.to_dict(),
                }
                made += 1
            if report_path is not None:
                ident = _identity(report_path)
                data["reports"][str(report_path)] = ident[1] if ident else 0
            if made or report_path is not None:
                self._write(data)
        return made

    def import_reports(self, folders: Iterable[Path]) -> int:
        """Import the convert reports in ``folders`` that are new or changed since last time."""
        known = self._read()["reports"]
        made = 0
        for folder in folders:
            try:
                reports = sorted(folder.glob(_REPORT_GLOB))
            except OSError:
                continue
            for rp in reports:
                ident = _identity(rp)
                if ident is None or known.get(str(rp)) == ident[1]:
                    continue
                try:
                    report = json.loads(rp.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    logger.info("skipping the unreadable report %s: %s", rp, exc)
                    continue
                if isinstance(report, dict):
                    made += self.import_report(report, rp)
        return made


def _measurement(rec: Any) -> QualityMeasurement | None:
    if not isinstance(rec, dict) or not isinstance(rec.get("measurement"), dict):
        return None
    try:
        return QualityMeasurement.from_dict(rec["measurement"])
    except ValueError as exc:
        logger.info("skipping a quality record this version cannot read: %s", exc)
        return None


def _inspect(path: Path) -> ModelFacts | None:
    from quant.facts.gguf import inspect_gguf

    try:
        return inspect_gguf(path)
    except (QuantError, OSError) as exc:
        logger.info("no header for %s: %s", path, exc)
        return None


def report_lineage(report: dict[str, Any]) -> str | None:
    """The type of the quantized file a convert job's reference expands, or None when the
    reference was the original weights.

    A job that requantized (``--requantize``) expanded its GGUF source to F16 first: the
    source's type. A job given a 16-bit file that holds quantized weights (an expansion
    made earlier): the type of the library file it expands, when one is found.
    """
    from quant.jobs.quality import holds_quantized_weights, same_weights

    source = str(report.get("source") or "")
    base_model = str(report.get("base_model") or "")
    if not base_model or report.get("source_kind") != "gguf":
        return None
    base = Path(base_model)
    if source and Path(source).name != base.name:
        src = _inspect(Path(source))
        if src is not None and (src.bits_per_weight or 16.0) < 15.5:
            return src.file_type or "quantized"
    if str(report.get("base_type") or "").upper() not in ("F16", "BF16", "F32"):
        return None
    try:
        if not base.is_file() or not holds_quantized_weights(base):
            return None
    except (QuantError, OSError) as exc:
        logger.info("lineage of %s not read: %s", base, exc)
        return None
    base_facts = _inspect(base)
    key = model_key(base_facts) if base_facts else ""
    from app.core.library import ModelLibrary

    try:
        library: Any = ModelLibrary()
    except (OSError, AppError) as exc:
        logger.info("library not read for lineage: %s", exc)
        library = None
    for cand in reference_candidates(library):
        f = _inspect(cand) if cand != base else None
        if f is None or (f.bits_per_weight or 16.0) >= 15.5 or model_key(f) != key:
            continue
        try:
            if same_weights(cand, base):
                return f.file_type or "quantized"
        except (QuantError, OSError):
            continue
    return "quantized"


def measurements_from_report(
    report: dict[str, Any],
) -> list[tuple[QualityMeasurement, Path]]:
    """The evaluated outputs of a convert report, as measurements with their lineage."""
    base_model = str(report.get("base_model") or "")
    base_type = report_lineage(report)
    text = report.get("evaluation_text") or {}
    reference = report.get("reference") or {}
    created = str(report.get("created") or "")
    out: list[tuple[QualityMeasurement, Path]] = []
    for o in report.get("outputs") or []:
        ev = o.get("evaluation") if isinstance(o, dict) else None
        if not isinstance(ev, dict) or not o.get("path"):
            continue
        path = Path(str(o["path"]))
        facts = _inspect(path)
        if facts is None:
            continue
        try:
            m = QualityMeasurement(
                file_type=str(o.get("type") or facts.file_type or "unknown"),
                kld_mean=float(ev["kld_mean"]),
                kld_median=float(ev.get("kld_median") or ev["kld_mean"]),
                kld_p99=float(ev.get("kld_p99") or ev["kld_mean"]),
                same_top_token=float(ev["top1_agreement"]),
                perplexity=float(ev["perplexity"]),
                reference_perplexity=float(ev["reference_perplexity"]),
                tokens=int(ev.get("tokens", reference.get("tokens", 0))),
                text=str(text.get("name", "held-out text")),
                reference=str(reference.get("model") or Path(base_model).name),
                reference_type=str(report.get("base_type") or "F16"),
                base_type=base_type,
                imatrix=bool(o.get("imatrix")),
                model_key=model_key(facts),
                architecture=facts.architecture,
                parameters=facts.parameters,
                origin="convert report",
                path=str(path),
                created=created,
            )
        except (KeyError, TypeError, ValueError) as exc:
            logger.info("skipping an output of a convert report: %s", exc)
            continue
        out.append((m, path))
    return out


# --------------------------------------------------------------------------- finding a reference


def report_folders() -> list[Path]:
    """Where convert reports are found: Quantdesk's models folder."""
    return [app_paths().models_dir]


def reference_candidates(
    library: Any | None = None,
    store: QualityStore | None = None,
    extra: Iterable[Path] = (),
) -> list[Path]:
    """Files a reference may be among: ``extra``, the library's, Quantdesk's outputs and the
    F16 files its convert jobs made.

    Files Quantdesk made from an already-quantized file (their card or convert report
    says so) are left out: they carry that file's loss, so they are no reference for
    another file of the model; the F16 expansion the convert job used is the better one.
    """
    st = store or QualityStore()
    try:
        st.import_reports(report_folders())
    except OSError as exc:
        logger.info("convert reports not imported: %s", exc)
    descendants = set()
    for key, rec in st.records().items():
        m = _measurement(rec)
        if m is not None and m.base_type:
            descendants.add(key)
    paths: list[Path] = [Path(p) for p in extra]
    if library is not None:
        try:
            for e in library.entries():
                if not e.broken:
                    paths.extend(e.paths)
        except (OSError, QuantError, AppError) as exc:
            logger.info("library not listed for references: %s", exc)
    p = app_paths()
    for folder in (p.models_dir, p.cache_dir / "f16"):
        try:
            paths.extend(sorted(folder.glob("*.gguf")))
        except OSError:
            continue
    return [q for q in dict.fromkeys(paths) if str(q) not in descendants]


def hub_repo_of(path: Path) -> str | None:
    """The hub repo a file in the Hugging Face cache came from (``models--ORG--NAME``)."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].startswith("models--") and i + 1 < len(parts) and parts[i + 1] == "snapshots":
            return parts[i][len("models--") :].replace("--", "/")
    return None


@dataclass(frozen=True)
class ReferenceSuggestion:
    """A file to get so a quality measurement has a reference."""

    repo_id: str
    filename: str
    file_type: str
    size_bytes: int

    @property
    def command(self) -> str:
        return f"quantdesk pull {self.repo_id} --file {self.filename}"


def suggest_reference(file: Path) -> ReferenceSuggestion | None:
    """The hub repo's most precise GGUF file, when ``file`` came from a repo that has one.

    Asks the hub (one request); offline or on any hub error, None.
    """
    repo_id = hub_repo_of(Path(file))
    if repo_id is None:
        return None
    from app.core.hub import repo_files

    try:
        repo = repo_files(repo_id)
    except (QuantError, AppError, OSError) as exc:
        logger.info("no reference suggestion from %s: %s", repo_id, exc)
        return None
    for ftype in _REFERENCE_TYPES:
        for f in repo.files:
            if f.complete and (f.quant_type or f.label).upper() == ftype and f.name != file.name:
                return ReferenceSuggestion(repo_id, f.filename, ftype, f.size_bytes)
    return None


def resolve_reference(
    file: Path,
    reference: str | Path = "auto",
    *,
    library: Any | None = None,
    ask_hub: bool = True,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Any:
    """The reference for measuring ``file``: the file named, or with ``auto`` the best one here.

    Raises :class:`quant.jobs.quality.NoReferenceError` (with the hub file to get
    when ``ask_hub`` and the repo has one) when nothing fits.
    """
    from quant.jobs.quality import NoReferenceError, ReferenceChoice, find_reference

    if str(reference) != "auto":
        ref = Path(reference).expanduser()
        if not ref.is_file():
            raise AppError(
                f"{ref}: no such reference file; check the path or use --reference auto."
            )
        choice: ReferenceChoice = find_reference(file, [ref], named=True, cancel=cancel)
        return choice
    try:
        return find_reference(
            file, reference_candidates(library), on_progress=on_progress, cancel=cancel
        )
    except NoReferenceError as exc:
        hint = suggest_reference(file) if ask_hub else None
        if hint is None:
            raise
        raise NoReferenceError(
            f"{exc} Its hub repo has {hint.filename} ({hint.file_type}): get it with "
            f"'{hint.command}' (or the Hub tab), then measure again.",
            model_name=exc.model_name,
            file_type=exc.file_type,
        ) from None


def evidence_for(
    facts: ModelFacts,
    *,
    path: Path | str | None = None,
    store: QualityStore | None = None,
    import_reports: bool = True,
) -> QualityEvidence:
    """Every measurement the Advisor may use for ``facts``'s model, and the file's own card."""
    st = store or QualityStore()
    if import_reports:
        try:
            st.import_reports(report_folders())
        except OSError as exc:
            logger.info("convert reports not imported: %s", exc)
    key = model_key(facts)
    ms = [
        m
        for m in st.measurements()
        if m.model_key == key or (m.architecture == facts.architecture and m.parameters)
    ]
    this = st.for_file(path) if path is not None and Path(path).is_file() else None
    return QualityEvidence(tuple(ms), this)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class ReportCard:
    """A measurement and the reference it was made against."""

    measurement: QualityMeasurement
    reference_path: Path
    reference_why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.measurement.to_dict(),
            "reference_path": str(self.reference_path),
            "reference_why": self.reference_why,
        }


def measure_file(
    file: Path | str,
    *,
    reference: str | Path = "auto",
    text: str | Path | None = None,
    library: Any | None = None,
    store: QualityStore | None = None,
    chunk_size: int = 512,
    max_chunks: int | None = 16,
    threads: int | None = None,
    ask_hub: bool = True,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ReportCard:
    """Find the reference, measure ``file`` in this process, keep the card, and return it.

    The GUI runs the measurement in a child process instead (``python -m quant
    quality``) and keeps the result with :meth:`QualityStore.record`.
    """
    from app.core.runtime import import_llama_first

    import_llama_first()
    from quant.jobs.calibration import from_path
    from quant.jobs.quality import measure_quality

    path = Path(file).expanduser()
    if not path.is_file():
        raise AppError(f"{path}: no such model file; check the path.")
    choice = resolve_reference(
        path, reference, library=library, ask_hub=ask_hub, on_progress=on_progress, cancel=cancel
    )
    eval_text = from_path(text) if text is not None else None
    m = measure_quality(
        path,
        choice,
        eval_text,
        chunk_size=chunk_size,
        max_chunks=max_chunks,
        cache_dir=app_paths().cache_dir,
        threads=threads,
        on_progress=on_progress,
        cancel=cancel,
    )
    (store or QualityStore()).record(m, path)
    return ReportCard(m, choice.path, choice.why)


def quality_lookup(
    store: QualityStore | None = None,
) -> Callable[[Path, str | None], QualityMeasurement | None]:
    """A function from (path, sha256) to the file's card: the store read once for many files."""
    st = store or QualityStore()
    by_path = st.records()
    by_sha = {r.get("sha256"): r for r in by_path.values() if r.get("sha256")}

    def lookup(path: Path, sha256: str | None) -> QualityMeasurement | None:
        rec = by_path.get(str(path))
        ident = _identity(path) if rec else None
        if rec and ident and (rec.get("size"), rec.get("mtime_ns")) == ident:
            return _measurement(rec)
        if sha256 and sha256 in by_sha:
            return _measurement(by_sha[sha256])
        return None

    return lookup


def summarize(m: QualityMeasurement) -> str:
    """One sentence for a banner or a tooltip."""
    against = (
        f"on top of the {m.base_type} file it was made from"
        if m.base_type
        else f"against {m.reference}"
    )
    return (
        f"Measured quality: mean KLD {m.kld_mean:.4g} {against}, same top token "
        f"{100 * m.same_top_token:.1f}%, perplexity {m.perplexity:.2f} (reference "
        f"{m.reference_perplexity:.2f}) on {m.tokens:,} tokens of {m.text}."
    )


def measured_column(m: QualityMeasurement | None) -> str:
    """The Models page's Quality column for a card (or its absence)."""
    if m is None:
        return "—"
    suffix = " +" if m.base_type else ""
    return f"KLD {m.kld_mean:.3g}{suffix}"


def card_for(path: Path | str) -> tuple[Path, QualityMeasurement | None]:
    """``(path, its report card or None)``: what the Chat page shows for a loaded file."""
    p = Path(path)
    return p, QualityStore().for_file(p)


def keep_report(report: dict[str, Any]) -> int:
    """Keep a finished convert job's evaluations as report cards of the files it made.

    Returns how many files got one; a store that cannot be written is logged, not raised
    (the report itself is on disk beside the files and is imported again later).
    """
    path = report.get("report_path")
    try:
        return QualityStore().import_report(report, Path(path) if path else None)
    except OSError as exc:
        logger.warning("convert report not kept with the library: %s", exc)
        return 0
