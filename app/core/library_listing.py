"""The model library as ``quantdesk models`` and the Models page list it.

One listing: locate the starter model (assembling it on first launch), list every
model the library knows (:meth:`app.core.library.ModelLibrary.entries`), and
describe each one for a machine (:class:`app.core.library_index.LibraryIndex`):
facts from its header, fit badge, predicted speed and memory. Copies already
known to be the same file are merged; :func:`merge_duplicates` hashes the rest.

These functions read files and may take seconds on a large library: call them
off the GUI thread. None of them writes settings; :func:`remember_starter` does,
from the thread that owns them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from app.core.errors import AppError
from app.core.library import LibraryEntry, ModelLibrary, StarterModel
from app.core.library_index import LibraryIndex, ModelRow, describe_library
from app.core.remote import RemoteListing, RemoteStore, remote_listing
from quant.errors import Cancelled, QuantError
from quant.hardware.profile import HardwareProfile
from quant.progress import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibraryListing:
    """Every model with its row, and how the starter model fared."""

    rows: list[ModelRow]
    #: The starter model as located (not yet remembered: see :func:`remember_starter`).
    starter: StarterModel | None
    #: Why the starter model is unavailable (the rest of the library is still listed).
    starter_problem: QuantError | AppError | None
    #: Folders the scan could not search whole (a depth or size bound), as sentences.
    notes: tuple[str, ...] = ()
    #: Models served elsewhere (``quantdesk remote``), and why a remote could not be listed.
    remote: RemoteListing = field(default_factory=RemoteListing)

    @property
    def entries(self) -> list[LibraryEntry]:
        return [r.entry for r in self.rows]


def list_library(
    library: ModelLibrary,
    profile: HardwareProfile | None,
    index: LibraryIndex | None = None,
    *,
    hash_duplicates: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    remotes: bool = True,
) -> LibraryListing:
    """Locate (on first launch assemble) the starter model, list and describe the library.

    ``profile`` None leaves out the fit badges. ``index`` keeps headers and badges
    between listings (the GUI keeps one for its life). ``hash_duplicates`` hashes
    size-colliding files before listing (slow: whole files are read); otherwise
    only copies already known to be identical are merged. ``remotes`` also lists the
    models of every remote endpoint (each one asked over the network; one that does
    not answer becomes a note).
    """
    starter: StarterModel | None = None
    problem: QuantError | AppError | None = None
    try:
        starter = library.locate_starter(on_progress=on_progress, cancel=cancel)
    except Cancelled:
        raise
    except (QuantError, AppError) as exc:
        logger.warning("starter model unavailable: %s", exc)
        problem = exc
    rows = describe_library(
        library,
        profile,
        hash_duplicates=hash_duplicates,
        index=index,
        starter=starter,
        cancel=cancel,
        on_progress=on_progress,
    )
    remote = RemoteListing()
    if remotes:
        try:
            remote = remote_listing(RemoteStore(library.settings))
        except (AppError, OSError) as exc:
            logger.info("remote models not listed: %s", exc)
    return LibraryListing(with_quality(rows), starter, problem, tuple(library.scan_notes), remote)


def with_quality(rows: Sequence[ModelRow]) -> list[ModelRow]:
    """``rows`` with each file's quality report card (:mod:`app.core.quality`), convert
    reports in Quantdesk's models folder imported first."""
    from app.core.quality import QualityStore, quality_lookup, report_folders

    store = QualityStore()
    try:
        store.import_reports(report_folders())
    except OSError as exc:
        logger.info("convert reports not imported: %s", exc)
    lookup = quality_lookup(store)
    out = []
    for r in rows:
        m = None if r.broken else lookup(r.entry.path, r.sha256)
        out.append(replace(r, measured_quality=m) if m is not None else r)
    return out


def remember_starter(library: ModelLibrary, listing: LibraryListing) -> None:
    """Record the starter model a listing verified, so the next start skips its checksum.

    Writes the settings (raises OSError when they cannot be saved)."""
    if listing.starter is not None and library.cached_starter() != listing.starter:
        library.remember_starter(listing.starter)


def describe_entries(
    entries: Sequence[LibraryEntry],
    profile: HardwareProfile | None,
    index: LibraryIndex,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ModelRow]:
    """Rows for ``entries`` on ``profile`` (headers are cached in ``index``), with their
    quality report cards."""
    return with_quality(index.describe(entries, profile, cancel=cancel, on_progress=on_progress))


def merge_duplicates(
    entries: Sequence[LibraryEntry],
    profile: HardwareProfile | None,
    index: LibraryIndex,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ModelRow]:
    """Hash the files whose sizes collide (digests are cached), merge copies, describe the
    result."""
    merged = index.find_duplicates(entries, cancel=cancel, on_progress=on_progress)
    return with_quality(index.describe(merged, profile, cancel=cancel))
