"""Downloads of model files from the Hugging Face hub into the standard HF cache.

A file lands where huggingface_hub itself puts it:
``<HF_HUB_CACHE>/models--ORG--NAME/blobs/<etag>``, with a
``snapshots/<commit>/<filename>`` link to it and ``refs/<revision>`` naming the
commit. Other huggingface_hub-based tools therefore reuse it, and Quantdesk's
library lists it with the rest of that cache.

Why the bytes are not fetched with ``hf_hub_download``: huggingface_hub 2.x
writes each download to a temporary file unique to the call and deletes it when
the call fails, and it offers no way to stop a download, so an interrupted
multi-gigabyte file would start over from zero. Here the bytes received so far
stay in ``blobs/<etag>.incomplete`` (the name huggingface_hub's cache scanner
reports as an interrupted download) and the next call continues from there
with an HTTP range request. A dropped connection that had delivered bytes is
resumed on the spot a few times before the call gives up.

Everything else follows huggingface_hub: its endpoint, token, timeouts and
offline switch (``HF_HUB_OFFLINE``), its HEAD request for the file's commit,
ETag and size, and its lock file, so two programs never write the same blob at
once. When the ETag is a SHA-256 (every LFS file's is), the received bytes are
checked against it before the file is put in place.

A split GGUF (``NAME-00001-of-00003.gguf``) is one model: :func:`download_gguf`
asks the hub about every part before fetching any byte, so a part missing from
the repo or a disk too small for all of them stops the download at once, reports
progress over the whole model, and checks that each part arrived as a GGUF file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from app.core.errors import AppError
from app.core.hub_token import gated_errors
from app.core.library import LibraryEntry, ModelSource, read_entry
from quant.atomic import atomic_write_text
from quant.errors import HubError, InsufficientResourcesError, QuantError
from quant.gguf.split import split_parts
from quant.hub.errors import hub_errors, is_offline, offline_error, transport_errors
from quant.progress import CancelToken, EtaEstimator, Progress, check_cancel
from quant.units import human_bytes
from quant.untrusted import (
    UntrustedHubValueError,
    UntrustedValueError,
    hub_commit,
    hub_etag,
    hub_repo_id,
    hub_revision,
    inside,
    repo_file_name,
)

logger = logging.getLogger(__name__)

STAGE = "download"
# Progress reports are at least this far apart (the first and the last always go out).
PROGRESS_EVERY_S = 0.1
# A dropped connection is resumed this many times within one call, as long as each
# attempt delivered some bytes; after that the call fails and a later call resumes.
MAX_RESUMES = 5
_LOCK_POLL_S = 0.25
_WRITE_BUFFER = 1024 * 1024
_HASH_BLOCK = 8 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")

ProgressFn = Callable[[Progress], None]
RemotesFn = Callable[[list["RemoteBlob"]], None]


class DownloadError(AppError):
    """A downloaded file could not be written into the cache (permissions, a full disk…)."""


class NotEnoughDiskError(InsufficientResourcesError):
    """The disk holding the HF cache has less free space than the download needs."""

    def __init__(self, message: str, *, needed_bytes: int, available_bytes: int) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes


@dataclass(frozen=True)
class RemoteBlob:
    """What the hub says about one file: which bytes to expect and where they are."""

    repo_id: str
    filename: str
    revision: str
    commit: str
    etag: str
    size: int
    url: str

    @property
    def sha256(self) -> str | None:
        """The file's SHA-256 when the ETag is one (LFS files), else None."""
        return self.etag if _SHA256_HEX.fullmatch(self.etag) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "commit": self.commit,
            "etag": self.etag,
            "size": self.size,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemoteBlob:
        """The blob :meth:`to_dict` wrote; ``KeyError``/``TypeError``/``ValueError`` if damaged.

        The values become cache paths, so they are checked as strictly as the hub's
        own answer (:class:`quant.untrusted.UntrustedValueError` is a ``ValueError``
        to the caller here: the saved entry is damaged).
        """
        try:
            return cls.checked(
                repo_id=data["repo_id"],
                filename=data["filename"],
                revision=data["revision"],
                commit=data["commit"],
                etag=data["etag"],
                size=int(data["size"]),
                url=str(data["url"]),
            )
        except UntrustedValueError as exc:
            raise ValueError(str(exc)) from exc

    @classmethod
    def checked(
        cls,
        *,
        repo_id: object,
        filename: object,
        revision: object,
        commit: object,
        etag: object,
        size: int,
        url: str,
    ) -> RemoteBlob:
        """A blob whose every path-forming value has the shape the hub uses."""
        if size < 0:
            raise UntrustedHubValueError(f"the hub announced a negative size ({size})")
        repo = hub_repo_id(repo_id)
        return cls(
            repo_id=repo,
            filename=repo_file_name(filename, repo_id=repo),
            revision=hub_revision(revision),
            commit=hub_commit(commit, what=f"the hub's answer for {repo}"),
            etag=hub_etag(etag, what=f"the hub's answer for {repo}"),
            size=size,
            url=url,
        )


@dataclass(frozen=True)
class CacheLayout:
    """Where one file of one repo lives in the HF cache (huggingface_hub's layout)."""

    storage: Path
    blob: Path
    partial: Path
    pointer: Path
    lock: Path

    @classmethod
    def of(cls, cache_dir: Path, remote: RemoteBlob) -> CacheLayout:
        """The paths of ``remote`` in ``cache_dir``, each checked to stay inside it.

        Raises :class:`quant.untrusted.UnsafePathError` before anything is created
        when a value (or a folder or link already in the cache) would lead outside.
        """
        folder = "models--" + remote.repo_id.replace("/", "--")
        storage = cache_dir / folder
        blob = storage / "blobs" / remote.etag
        layout = cls(
            storage=storage,
            blob=blob,
            partial=blob.with_name(remote.etag + ".incomplete"),
            pointer=storage / "snapshots" / remote.commit / PurePosixPath(remote.filename),
            lock=cache_dir / ".locks" / folder / f"{remote.etag}.lock",
        )
        for path in (layout.blob, layout.partial, layout.pointer):
            inside(storage, path)
        inside(cache_dir, layout.storage)
        inside(cache_dir, layout.lock)
        return layout


# --------------------------------------------------------------------------- queries


def hub_cache_dir() -> Path:
    """The HF hub cache folder huggingface_hub uses now (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hub_file(repo_id: str, filename: str, *, revision: str | None = None) -> Path | None:
    """The complete local copy of ``filename`` in the HF cache, without asking the hub."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=hub_cache_dir(), revision=revision
        )
    except Exception:  # a damaged cache only means "not there"
        logger.debug("HF cache lookup for %s/%s failed", repo_id, filename, exc_info=True)
        return None
    if isinstance(found, str) and Path(found).is_file():
        return Path(found)
    return None


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def cached_bytes(remote: RemoteBlob) -> int:
    """Bytes of ``remote`` already in the HF cache: its size when complete, else the partial's."""
    layout = CacheLayout.of(hub_cache_dir(), remote)
    try:
        if layout.blob.is_file():
            return min(layout.blob.stat().st_size, remote.size)
        if layout.partial.is_file():
            return min(layout.partial.stat().st_size, remote.size)
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- errors


def _offline_error(repo_id: str, filename: str) -> HubError:
    return offline_error(
        f"download {filename}",
        "turn offline mode off and try again, or choose a file that is already downloaded",
        repo_id=repo_id,
    )


@contextlib.contextmanager
def _hub_errors(repo_id: str, filename: str, missing_hint: str | None = None) -> Iterator[None]:
    with (
        hub_errors(
            repo_id,
            filename,
            offline=lambda: _offline_error(repo_id, filename),
            again="download again",
            missing_hint=missing_hint or "; plan again to see the files it has now",
        ),
        gated_errors(repo_id, "download again"),
    ):
        yield


@contextlib.contextmanager
def _disk_errors(path: Path, filename: str) -> Iterator[None]:
    """Turn failures to write the cache into sentences that name the folder."""
    try:
        yield
    except (QuantError, AppError):
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise InsufficientResourcesError(
                f"the disk holding {path.parent} filled up while downloading {filename}; the "
                "part downloaded so far is kept, so free up space and download again to resume"
            ) from exc
        raise DownloadError(
            f"cannot write {path} ({exc.strerror or exc}); check that the Hugging Face cache "
            "folder is writable, or set HF_HUB_CACHE to one that is"
        ) from exc


# --------------------------------------------------------------------------- progress


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class _Reporter:
    """Bytes done and total, transfer rate and time left, at most every PROGRESS_EVERY_S."""

    def __init__(self, on_progress: ProgressFn | None, filename: str, total: int) -> None:
        self._emit = on_progress
        self.name = PurePosixPath(filename).name
        self.total = total
        self._first = 0
        self._started = time.monotonic()
        self._eta = EtaEstimator()
        self._last = 0.0
        self._done = 0

    def note(self, message: str, done: int | None = None) -> None:
        """A message; the bytes on disk stay what they are (a note never shows "0 B")."""
        if self._emit is not None:
            total = self.total
            have = self._done if done is None else done
            self._emit(Progress(STAGE, have, total, message, have, total))

    def checking(self, hashed: int, have: int) -> None:
        """Progress of reading back the bytes an earlier attempt left (``have`` are on disk)."""
        now = time.monotonic()
        if self._emit is None or (now - self._last < PROGRESS_EVERY_S and hashed < have):
            return
        self._last = now
        message = f"Checking the {human_bytes(have)} downloaded earlier…"
        self._emit(Progress(STAGE, hashed, have, message, have, self.total))

    def start(self, already: int) -> None:
        """Bytes from now on count toward the rate; ``already`` were on disk before."""
        self._first = already
        self._done = already
        self._started = time.monotonic()
        self._eta = EtaEstimator(self._started)
        self._last = 0.0

    def bytes(self, done: int, *, force: bool = False) -> None:
        self._done = done
        now = time.monotonic()
        if self._emit is None or (not force and now - self._last < PROGRESS_EVERY_S):
            return
        self._last = now
        fresh = done - self._first
        elapsed = max(now - self._started, 1e-6)
        rate = fresh / elapsed
        eta = self._eta.eta(fresh, self.total - self._first)
        parts = [f"{human_bytes(done)} of {human_bytes(self.total)}"]
        if fresh > 0 and done < self.total:
            parts.append(f"{human_bytes(rate)}/s")
            if eta is not None:
                parts.append(f"about {_duration(eta)} left")
        self._emit(Progress(STAGE, done, self.total, " · ".join(parts), done, self.total, eta))

    @property
    def done(self) -> int:
        return self._done


# --------------------------------------------------------------------------- the hub side


def _check_names(repo_id: str, filename: str, revision: str | None = None) -> None:
    hub_repo_id(repo_id)
    repo_file_name(filename, repo_id=repo_id)
    if revision is not None:
        hub_revision(revision)


def _timeout_s() -> float:
    from huggingface_hub import constants

    return float(constants.HF_HUB_DOWNLOAD_TIMEOUT)


def remote_blob(
    repo_id: str, filename: str, *, revision: str | None = None, missing_hint: str | None = None
) -> RemoteBlob:
    """Ask the hub (one HEAD request) for the file's commit, ETag and size.

    ``missing_hint`` ends the sentence raised when the file is not in the repo.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    _check_names(repo_id, filename, revision)
    rev = revision or constants.DEFAULT_REVISION
    url = hf_hub_url(repo_id, filename, revision=rev, endpoint=constants.ENDPOINT)
    with _hub_errors(repo_id, filename, missing_hint):
        meta = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    if not meta.commit_hash or not meta.etag or meta.size is None:
        raise HubError(
            f"{repo_id}: the hub did not say which version of {filename} to download "
            "(no commit, ETag or size in its answer); try again later"
        )
    return RemoteBlob.checked(
        repo_id=repo_id,
        filename=filename,
        revision=rev,
        commit=meta.commit_hash,
        etag=meta.etag,
        size=int(meta.size),
        url=url,
    )


class _Sink:
    """The partial file, how many bytes it holds, and the running SHA-256 of them."""

    def __init__(self, fh: IO[bytes], path: Path, filename: str, hasher: Any) -> None:
        self.fh = fh
        self.path = path
        self.filename = filename
        self.hasher = hasher  # hashlib's sha256 object, or None when there is nothing to check

    def write(self, chunk: bytes) -> None:
        with _disk_errors(self.path, self.filename):
            self.fh.write(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)

    def restart(self) -> None:
        """Drop everything written so far (the server sent the file from its start)."""
        with _disk_errors(self.path, self.filename):
            self.fh.seek(0)
            self.fh.truncate()
        if self.hasher is not None:
            self.hasher = hashlib.sha256()

    def finish(self) -> None:
        with _disk_errors(self.path, self.filename):
            self.fh.flush()
            os.fsync(self.fh.fileno())


class _Interrupted(Exception):  # noqa: N818 - an internal signal, never raised to callers
    """A transfer attempt ended early after ``received`` bytes."""

    def __init__(self, received: int, cause: BaseException | None) -> None:
        super().__init__(str(cause) if cause else "the connection closed early")
        self.received = received
        self.cause = cause


def _stream(remote: RemoteBlob, sink: _Sink, report: _Reporter, cancel: CancelToken | None) -> None:
    """One GET of the bytes from ``report.done`` on, appended to ``sink``.

    Raises :class:`_Interrupted` when the connection fails or ends early.
    """
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    start = report.done
    headers: dict[str, str] = {**build_hf_headers(), "Accept-Encoding": "identity"}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    try:
        with get_session().stream("GET", remote.url, headers=headers, timeout=_timeout_s()) as r:
            hf_raise_for_status(r)
            if start > 0 and r.status_code != 206:
                logger.info("%s: the server ignored a resume request; starting over", remote.url)
                sink.restart()
                report.start(0)
            for chunk in r.iter_bytes():
                if not chunk:
                    continue
                done = report.done + len(chunk)
                if done > remote.size:
                    raise HubError(
                        f"{remote.repo_id}: the hub sent more than the {remote.size:,} bytes "
                        f"it announced for {remote.filename}; try again later"
                    )
                sink.write(chunk)
                report.bytes(done)
                check_cancel(cancel)
    except transport_errors() as exc:
        raise _Interrupted(report.done - start, exc) from exc
    if report.done < remote.size:
        raise _Interrupted(report.done - start, None)


def _hash_existing(partial: Path, have: int, report: _Reporter, cancel: CancelToken | None) -> Any:
    """SHA-256 of the bytes downloaded earlier, so a resumed file is checked whole."""
    hasher = hashlib.sha256()
    hashed = 0
    report.checking(0, have)
    with _disk_errors(partial, partial.name), partial.open("rb") as fh:
        while hashed < have:
            block = fh.read(min(_HASH_BLOCK, have - hashed))
            if not block:
                break
            hasher.update(block)
            hashed += len(block)
            report.checking(hashed, have)
            check_cancel(cancel)
    return hasher


def _transfer(
    remote: RemoteBlob, layout: CacheLayout, report: _Reporter, cancel: CancelToken | None
) -> None:
    """Fill ``layout.partial`` up to the full size, resuming what is there; then check it."""
    partial = layout.partial
    with _disk_errors(partial, remote.filename):
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        if have > remote.size:
            logger.warning("%s is larger than the file; starting over", partial)
            partial.unlink()
            have = 0
    needed = remote.size - have
    free = free_disk_bytes(partial.parent)
    if free < needed:
        raise NotEnoughDiskError(
            f"{remote.filename} needs {human_bytes(needed)} ({needed:,} bytes) more on the disk "
            f"holding {layout.storage.parent}, but only {human_bytes(free)} ({free:,} bytes) "
            "is free; free up space or set HF_HUB_CACHE to a folder on a larger disk",
            needed_bytes=needed,
            available_bytes=free,
        )
    expected = remote.sha256
    hasher: Any = None
    if expected:
        hasher = _hash_existing(partial, have, report, cancel) if have else hashlib.sha256()
    if have:
        logger.info("resuming %s at byte %d of %d", remote.filename, have, remote.size)
    report.start(have)
    report.bytes(have, force=True)

    resumes = 0
    with _disk_errors(partial, remote.filename):
        fh = partial.open("ab", buffering=_WRITE_BUFFER)
    with fh:
        sink = _Sink(fh, partial, remote.filename, hasher)
        while report.done < remote.size:
            try:
                with _hub_errors(remote.repo_id, remote.filename):
                    _stream(remote, sink, report, cancel)
            except _Interrupted as stop:
                if stop.received > 0 and resumes < MAX_RESUMES:
                    resumes += 1
                    logger.info(
                        "download of %s interrupted at byte %d (%s); resuming",
                        remote.filename,
                        report.done,
                        stop,
                    )
                    continue
                raise HubError(
                    f"{remote.repo_id}: the download of {remote.filename} stopped at "
                    f"{human_bytes(report.done)} of {human_bytes(remote.size)} "
                    f"({str(stop).rstrip('.')}); the "
                    "part downloaded so far is kept, so check the network connection and "
                    "download again to resume"
                ) from stop.cause
        sink.finish()
    report.bytes(report.done, force=True)
    if sink.hasher is not None and sink.hasher.hexdigest() != expected:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise HubError(
            f"{remote.repo_id}: {remote.filename} arrived damaged (its SHA-256 does not match "
            "the hub's), so it was deleted; download it again"
        )


# --------------------------------------------------------------------------- the cache side


def _link(blob: Path, pointer: Path) -> None:
    """Make ``pointer`` a relative link to ``blob``, replacing whatever was there at once."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        tmp.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:
        # No symlinks here (Windows without developer mode): the snapshot holds the
        # file itself, as huggingface_hub does in that case.
        logger.info("symlinks unavailable; moving %s to %s", blob, pointer)
        blob.replace(pointer)
        return
    tmp.replace(pointer)


def _write_ref(layout: CacheLayout, remote: RemoteBlob) -> None:
    """Record which commit ``remote.revision`` named, for offline use later."""
    if remote.revision == remote.commit:
        return
    ref = inside(layout.storage / "refs", layout.storage / "refs" / PurePosixPath(remote.revision))
    try:
        if ref.is_file() and ref.read_text() == remote.commit:
            return
        atomic_write_text(ref, remote.commit)
    except OSError as exc:  # a read-only cache still serves the file just fetched
        logger.warning("could not record %s in %s: %s", remote.commit, ref, exc)


@contextlib.contextmanager
def _locked(path: Path, cancel: CancelToken | None, report: _Reporter) -> Iterator[None]:
    """Hold huggingface_hub's lock for this blob; waiting for it can be cancelled."""
    from filelock import FileLock, Timeout

    with _disk_errors(path, path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    told = False
    while True:
        check_cancel(cancel)
        try:
            lock.acquire(timeout=_LOCK_POLL_S)
            break
        except Timeout:
            if not told:
                told = True
                report.note(f"Waiting for another download of {report.name} to finish…")
    try:
        yield
    finally:
        lock.release()


def _is_complete(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


# --------------------------------------------------------------------------- entry points


def download_hub_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    on_progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Download ``filename`` of hub repo ``repo_id`` into the HF cache; return its path.

    The path is the cache's ``snapshots/<commit>/<filename>``. A file already in
    the cache costs one HEAD request (none in offline mode). A download that was
    interrupted or cancelled earlier resumes from the bytes already received.
    ``Cancelled`` leaves no file at the returned path: only the resumable
    ``blobs/<etag>.incomplete`` stays, and the next call continues from it.

    Raises :class:`HubError` (offline mode, no network, unknown repo or file, a
    gated repo without access, a damaged transfer), :class:`NotEnoughDiskError`
    before any byte is fetched when the cache's disk is too small, and
    :class:`DownloadError` when the cache cannot be written.
    """
    _check_names(repo_id, filename, revision)
    check_cancel(cancel)
    found = _cached_without_asking(repo_id, filename, revision)
    if found is not None:
        return found
    report = _Reporter(on_progress, filename, 0)
    report.note(f"Asking the hub about {report.name}…")
    remote = remote_blob(repo_id, filename, revision=revision)
    check_cancel(cancel)
    return _fetch(remote, report, cancel)


def _cached_without_asking(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The cached copy when the hub need not (commit) or cannot (offline) be asked."""
    if revision is not None and _COMMIT.fullmatch(revision):
        # A commit's files never change: a cached copy needs no question to the hub.
        found = cached_hub_file(repo_id, filename, revision=revision)
        if found is not None:
            return found
    if is_offline():
        found = cached_hub_file(repo_id, filename, revision=revision)
        if found is not None:
            return found
        raise _offline_error(repo_id, filename)
    return None


def _fetch(remote: RemoteBlob, report: _Reporter, cancel: CancelToken | None) -> Path:
    """Bring ``remote`` into the cache (resuming a partial) and link its snapshot path."""
    filename = remote.filename
    report.total = remote.size
    layout = CacheLayout.of(hub_cache_dir(), remote)
    if _is_complete(layout.pointer, remote.size):
        _write_ref(layout, remote)
        report.bytes(remote.size, force=True)
        return layout.pointer

    with _locked(layout.lock, cancel, report):
        if not _is_complete(layout.blob, remote.size):
            _transfer(remote, layout, report, cancel)
            with _disk_errors(layout.blob, filename):
                layout.partial.replace(layout.blob)
            logger.info("downloaded %s/%s into %s", remote.repo_id, filename, layout.blob)
        with _disk_errors(layout.pointer, filename):
            _link(layout.blob, layout.pointer)
    _write_ref(layout, remote)
    report.note(f"Downloaded {report.name} ({human_bytes(remote.size)})", remote.size)
    return layout.pointer


def download_gguf(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    on_progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    on_remotes: RemotesFn | None = None,
) -> LibraryEntry:
    """Download a GGUF model file (every part of a split one) and describe it for the library.

    ``filename`` may name any part of a split model. Before the first byte, every
    part is looked up on the hub (``on_remotes`` then receives what the hub said
    about each, which is what a caller needs to find the partial bytes later) and
    the disk is checked for room for all of them. Progress covers the whole model:
    ``bytes_done``/``bytes_total`` count every part, and the message says which part
    is arriving.

    Returns the library entry of the file llama.cpp opens (the first part of a
    split model), with source :attr:`ModelSource.HUGGINGFACE`; the caller records it
    (:meth:`ModelLibrary.record`). Raises as :func:`download_hub_file` does, and
    :class:`quant.errors.ModelFormatError` when a file turns out not to be GGUF.
    """
    parts = split_parts(filename)
    for part in parts:
        _check_names(repo_id, part, revision)
    check_cancel(cancel)
    cached = [_cached_without_asking(repo_id, part, revision) for part in parts]
    if all(p is not None for p in cached):
        return _checked_entry([p for p in cached if p is not None])

    first = _Reporter(on_progress, parts[0], 0)
    count = len(parts)
    first.note(
        f"Asking the hub about {first.name}…"
        if count == 1
        else f"Asking the hub about the {count} parts of {first.name}…"
    )
    remotes: list[RemoteBlob] = []
    for i, part in enumerate(parts, start=1):
        hint = None
        if count > 1:
            hint = (
                f"; it is part {i} of {count} of a split model, so the model cannot be "
                "downloaded whole: choose another file of the repo"
            )
        remotes.append(remote_blob(repo_id, part, revision=revision, missing_hint=hint))
        check_cancel(cancel)
    if on_remotes is not None:
        on_remotes(list(remotes))
    if count > 1:
        _check_room(remotes)

    total = sum(r.size for r in remotes)
    paths: list[Path] = []
    offset = 0
    for i, remote in enumerate(remotes, start=1):
        forward = on_progress
        if on_progress is not None and count > 1:
            forward = _part_progress(on_progress, i, count, offset, total)
        paths.append(_fetch(remote, _Reporter(forward, remote.filename, remote.size), cancel))
        offset += remote.size
    return _checked_entry(paths)


def _check_room(remotes: list[RemoteBlob]) -> None:
    """Room on the cache's disk for every part still to come, before the first byte."""
    cache = hub_cache_dir()
    needed = sum(r.size - cached_bytes(r) for r in remotes)
    if needed <= 0:
        return
    free = free_disk_bytes(cache)
    if free < needed:
        name = PurePosixPath(remotes[0].filename).name
        raise NotEnoughDiskError(
            f"the {len(remotes)} parts of {name} need {human_bytes(needed)} ({needed:,} bytes) "
            f"more on the disk holding {cache}, but only {human_bytes(free)} ({free:,} bytes) "
            "is free; free up space or set HF_HUB_CACHE to a folder on a larger disk",
            needed_bytes=needed,
            available_bytes=free,
        )


def _checked_entry(paths: list[Path]) -> LibraryEntry:
    """Every part must be a GGUF file; the first one is the model's library entry."""
    entries = [read_entry(p, ModelSource.HUGGINGFACE) for p in paths]
    return entries[0]


def _part_progress(
    on_progress: ProgressFn, index: int, count: int, offset: int, total: int
) -> ProgressFn:
    """Progress of part ``index`` as progress over the whole split model."""

    def forward(p: Progress) -> None:
        done = offset + p.bytes_done
        eta = p.eta_s
        part_left = p.bytes_total - p.bytes_done
        if eta is not None and part_left > 0:
            eta = eta * (total - done) / part_left  # the later parts at this part's rate
        on_progress(
            Progress(
                p.stage, done, total, f"Part {index} of {count}: {p.message}", done, total, eta
            )
        )

    return forward
