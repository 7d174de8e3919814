"""The queue of hub downloads the user asked for, kept across restarts.

Each item is one GGUF model (every part of a split one) of one repo revision,
with its state (:class:`DownloadState`), the bytes it has and needs, and the
sentence of its last failure. The queue lives in ``downloads.json`` in
Quantdesk's data folder, written whole or not at all on every change of state.

One worker thread calls :meth:`DownloadQueue.run_next` in a loop (blocking in
:meth:`~DownloadQueue.wait_for_work` while nothing is queued); it downloads the
oldest queued item with :func:`app.core.downloads.download_gguf`, one at a
time. Any other thread (the GUI's) reads :meth:`~DownloadQueue.items` and calls
:meth:`~DownloadQueue.add`, :meth:`~DownloadQueue.pause`,
:meth:`~DownloadQueue.resume` and :meth:`~DownloadQueue.remove`; a lock keeps
them consistent. Pausing a running download cancels its transfer and keeps the
bytes received (``blobs/<etag>.incomplete`` in the HF cache); resuming queues it
again, and the next transfer continues from those bytes. After a restart, an
item that was running is shown paused, with the bytes already on disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from app.core.downloads import (
    CacheLayout,
    RemoteBlob,
    cached_bytes,
    download_gguf,
    hub_cache_dir,
)
from app.core.errors import AppError
from app.core.paths import app_paths
from quant.atomic import atomic_write_text
from quant.errors import Cancelled, QuantError
from quant.gguf.split import split_parts
from quant.progress import CancelToken, Progress
from quant.units import human_bytes

logger = logging.getLogger(__name__)

QUEUE_FILE = "downloads.json"
_VERSION = 1
# Progress is written to the queue file at most this often (state changes at once).
_SAVE_EVERY_S = 5.0


class DownloadState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    DONE = "done"

    @property
    def label(self) -> str:
        return {
            DownloadState.QUEUED: "Waiting",
            DownloadState.RUNNING: "Downloading",
            DownloadState.PAUSED: "Paused",
            DownloadState.FAILED: "Failed",
            DownloadState.DONE: "Done",
        }[self]


class QueueError(AppError):
    """A request the download queue cannot follow (an unknown item, a bad repo id)."""


@dataclass(frozen=True)
class DownloadItem:
    """One requested download, as the queue last saw it."""

    id: str
    repo_id: str
    filename: str
    revision: str | None
    state: DownloadState
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    message: str = ""
    eta_s: float | None = None
    path: str | None = None
    added_at: float = 0.0
    #: What the hub said about each part when the transfer started (for the bytes
    #: already on disk after a restart).
    remotes: tuple[RemoteBlob, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        return PurePosixPath(self.filename).name

    @property
    def fraction(self) -> float | None:
        if self.bytes_total <= 0:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)

    @property
    def can_pause(self) -> bool:
        return self.state in (DownloadState.QUEUED, DownloadState.RUNNING)

    @property
    def can_resume(self) -> bool:
        return self.state in (DownloadState.PAUSED, DownloadState.FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "state": self.state.value,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "error": self.error,
            "message": self.message,
            "eta_s": self.eta_s,
            "path": self.path,
            "added_at": self.added_at,
            "remotes": [r.to_dict() for r in self.remotes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DownloadItem:
        revision = data.get("revision")
        return cls(
            id=str(data["id"]),
            repo_id=str(data["repo_id"]),
            filename=str(data["filename"]),
            revision=str(revision) if revision else None,
            state=DownloadState(data["state"]),
            bytes_done=int(data.get("bytes_done") or 0),
            bytes_total=int(data.get("bytes_total") or 0),
            error=data.get("error") or None,
            message=str(data.get("message") or ""),
            eta_s=None,
            path=data.get("path") or None,
            added_at=float(data.get("added_at") or 0.0),
            remotes=tuple(RemoteBlob.from_dict(r) for r in data.get("remotes") or []),
        )


def item_id(repo_id: str, filename: str, revision: str | None = None) -> str:
    """The queue's key for a model file: repo, revision and the first part's name."""
    return f"{repo_id}@{revision or 'main'}:{split_parts(filename)[0]}"


def default_queue_file() -> Path:
    return app_paths().data_dir / QUEUE_FILE


ItemFn = Callable[[DownloadItem], None]


class _EitherToken(CancelToken):
    """Cancelled when the item's own token or the worker's token is."""

    def __init__(self, outer: CancelToken | None) -> None:
        super().__init__()
        self._outer = outer

    @property
    def cancelled(self) -> bool:
        return super().cancelled or (self._outer is not None and self._outer.cancelled)

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled by the user")


class DownloadQueue:
    """Downloads the user asked for, persisted in ``path`` (default: the data folder)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_queue_file()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wakes = 0
        self._items: dict[str, DownloadItem] = {}
        self._running: tuple[str, _EitherToken] | None = None
        self._last_save = 0.0
        self._load()

    # ------------------------------------------------------------------ reading
    def items(self) -> list[DownloadItem]:
        """Every item, oldest request first."""
        with self._lock:
            return sorted(self._items.values(), key=lambda i: i.added_at)

    def get(self, item_id: str) -> DownloadItem | None:
        with self._lock:
            return self._items.get(item_id)

    def next_pending(self) -> DownloadItem | None:
        """The item :meth:`run_next` would start: the oldest queued one."""
        with self._lock:
            return self._next_pending()

    def running(self) -> DownloadItem | None:
        with self._lock:
            return self._items.get(self._running[0]) if self._running else None

    # ------------------------------------------------------------------ changes
    def add(
        self,
        repo_id: str,
        filename: str,
        *,
        revision: str | None = None,
        size_bytes: int = 0,
    ) -> DownloadItem:
        """Queue ``filename`` of ``repo_id`` (any part of a split model means all of it).

        ``size_bytes`` (from the repo listing) shows the total before the transfer
        starts. Asking again for an item that is paused, failed or done queues it
        again; a queued or running one is returned as is.
        """
        if repo_id.count("/") != 1 or not filename or filename.startswith("/"):
            raise QueueError(
                f"cannot queue {filename!r} of {repo_id!r}: expected a repo id org/name "
                "and a file name inside it"
            )
        first = split_parts(filename)[0]
        key = item_id(repo_id, first, revision)
        with self._lock:
            current = self._items.get(key)
            if current is not None:
                if current.state in (DownloadState.QUEUED, DownloadState.RUNNING):
                    return current
                item = replace(current, state=DownloadState.QUEUED, error=None, message="")
            else:
                item = DownloadItem(
                    id=key,
                    repo_id=repo_id,
                    filename=first,
                    revision=revision,
                    state=DownloadState.QUEUED,
                    bytes_total=max(0, size_bytes),
                    added_at=time.time(),
                )
            self._items[key] = item
            self._save()
            self._changed.notify_all()
            return item

    def pause(self, item_id: str) -> DownloadItem:
        """Stop a queued or running item; a running transfer ends, its bytes are kept."""
        with self._lock:
            item = self._require(item_id)
            if not item.can_pause:
                return item
            item = replace(item, state=DownloadState.PAUSED, message="Paused", eta_s=None)
            self._items[item_id] = item
            if self._running and self._running[0] == item_id:
                self._running[1].cancel()
            self._save()
            return item

    def resume(self, item_id: str) -> DownloadItem:
        """Queue a paused or failed item again; its transfer continues from the kept bytes."""
        with self._lock:
            item = self._require(item_id)
            if not item.can_resume:
                return item
            item = replace(item, state=DownloadState.QUEUED, error=None, message="")
            self._items[item_id] = item
            self._save()
            self._changed.notify_all()
            return item

    def remove(self, item_id: str, *, delete_partial: bool = True) -> bool:
        """Forget an item; True when it was there.

        A running transfer is stopped. With ``delete_partial`` the bytes an
        unfinished download left in the HF cache are deleted (a finished file is
        never deleted: it is in the library).
        """
        with self._lock:
            item = self._items.pop(item_id, None)
            if item is None:
                return False
            running = self._running is not None and self._running[0] == item_id
            if running and self._running is not None:
                self._running[1].cancel()  # the worker deletes the bytes when it stops
            elif delete_partial and item.state is not DownloadState.DONE:
                _delete_partials(item)
            self._save()
            return True

    def clear_finished(self) -> int:
        """Forget every finished item (their files stay); returns how many."""
        with self._lock:
            done = [k for k, v in self._items.items() if v.state is DownloadState.DONE]
            for k in done:
                del self._items[k]
            if done:
                self._save()
            return len(done)

    # ------------------------------------------------------------------ the worker
    def wait_for_work(self, timeout_s: float | None = None) -> bool:
        """Block until an item is queued (True) or ``timeout_s`` passes (False).

        For the worker's loop: wait, :meth:`run_next`, repeat. :meth:`wake` ends a
        wait early (to let the worker see that it should stop).
        """
        with self._changed:
            woken = self._wakes
            self._changed.wait_for(
                lambda: self._wakes != woken or self._next_pending() is not None, timeout_s
            )
            return self._next_pending() is not None

    def wake(self) -> None:
        """End every :meth:`wait_for_work` now (it returns whether work is waiting)."""
        with self._changed:
            self._wakes += 1
            self._changed.notify_all()

    def run_next(
        self, on_progress: ItemFn | None = None, cancel: CancelToken | None = None
    ) -> DownloadItem | None:
        """Download the oldest queued item; return it as it ended, or None when none waits.

        Meant for one worker thread. ``on_progress`` receives the item with fresh
        bytes, rate and time left (on the worker thread). ``cancel`` stops the
        transfer as a pause does (for closing the app): the item is left paused.
        A failure leaves the item failed with its sentence and is not raised;
        only an unexpected error is, after the item is marked failed.
        """
        with self._lock:
            item = self._next_pending()
            if item is None:
                return None
            token = _EitherToken(cancel)
            self._running = (item.id, token)
            item = replace(item, state=DownloadState.RUNNING, error=None, message="Starting…")
            self._items[item.id] = item
            self._save()
        key = item.id
        known: list[RemoteBlob] = list(item.remotes)
        if on_progress is not None:
            on_progress(item)

        def remotes_known(remotes: list[RemoteBlob]) -> None:
            known[:] = remotes
            with self._lock:
                current = self._items.get(key)
                if current is not None:
                    total = sum(r.size for r in remotes)
                    self._items[key] = replace(current, remotes=tuple(remotes), bytes_total=total)
                    self._save()

        def progress(p: Progress) -> None:
            with self._lock:
                current = self._items.get(key)
                if current is None:
                    return
                current = replace(
                    current,
                    bytes_done=p.bytes_done if p.bytes_total else current.bytes_done,
                    bytes_total=p.bytes_total or current.bytes_total,
                    message=p.message
                    if current.state is DownloadState.RUNNING
                    else current.message,
                    eta_s=p.eta_s,
                )
                self._items[key] = current
                if time.monotonic() - self._last_save >= _SAVE_EVERY_S:
                    self._save()
            if on_progress is not None:
                on_progress(current)

        try:
            entry = download_gguf(
                item.repo_id,
                item.filename,
                revision=item.revision,
                on_progress=progress,
                cancel=token,
                on_remotes=remotes_known,
            )
        except Cancelled:
            return self._stopped(key, replace(item, remotes=tuple(known)))
        except (QuantError, AppError) as exc:
            return self._failed(key, str(exc))
        except Exception as exc:
            logger.exception("unexpected error downloading %s", item.id)
            self._failed(key, f"Unexpected error: {exc}; see the log for details")
            raise
        finally:
            with self._lock:
                self._running = None
        with self._lock:
            current = self._items.get(key)
            if current is None:  # removed just as it finished: the file stays in the cache
                return replace(item, state=DownloadState.DONE, path=str(entry.path))
            done = replace(
                current,
                state=DownloadState.DONE,
                bytes_done=current.bytes_total or entry.size_bytes,
                message=f"Downloaded {current.name}",
                eta_s=None,
                path=str(entry.path),
                error=None,
            )
            self._items[key] = done
            self._save()
        if on_progress is not None:
            on_progress(done)
        return done

    # ------------------------------------------------------------------ internals
    def _next_pending(self) -> DownloadItem | None:
        queued = [i for i in self._items.values() if i.state is DownloadState.QUEUED]
        return min(queued, key=lambda i: i.added_at) if queued else None

    def _require(self, item_id: str) -> DownloadItem:
        item = self._items.get(item_id)
        if item is None:
            raise QueueError(f"{item_id}: not in the download queue (it was removed)")
        return item

    def _stopped(self, key: str, started: DownloadItem) -> DownloadItem:
        with self._lock:
            current = self._items.get(key)
            if current is None:  # removed while running: its bytes go too
                _delete_partials(started)
                return replace(started, state=DownloadState.PAUSED, bytes_done=0, message="")
            state = DownloadState.PAUSED
            if current.state is DownloadState.QUEUED:  # resumed before the transfer ended
                state = DownloadState.QUEUED
            have = _bytes_on_disk(current)
            message = _paused_message(have, current.bytes_total)
            current = replace(
                current,
                state=state,
                bytes_done=have,
                message=message if state is DownloadState.PAUSED else "",
                eta_s=None,
            )
            self._items[key] = current
            self._save()
            return current

    def _failed(self, key: str, sentence: str) -> DownloadItem:
        with self._lock:
            current = self._items.get(key)
            if current is None:
                return DownloadItem(key, "", "", None, DownloadState.FAILED, error=sentence)
            current = replace(
                current,
                state=DownloadState.FAILED,
                error=sentence,
                message="Failed",
                eta_s=None,
                bytes_done=_bytes_on_disk(current),
            )
            self._items[key] = current
            self._save()
            return current

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("cannot read the download queue %s: %s", self.path, exc)
            return
        try:
            data = json.loads(text)
            raw = data["items"] if isinstance(data, dict) else []
            items = [DownloadItem.from_dict(d) for d in raw]
        except (ValueError, KeyError, TypeError) as exc:
            # Keep the damaged file for a look, and start with an empty queue.
            logger.warning("the download queue %s is damaged (%s); starting empty", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_name(self.path.name + ".damaged"))
            return
        for item in items:
            self._items[item.id] = _as_loaded(item)

    def _save(self) -> None:
        """Write the queue whole (caller holds the lock); a failure is logged, not raised."""
        self._last_save = time.monotonic()
        data = {"version": _VERSION, "items": [i.to_dict() for i in self.items()]}
        try:
            atomic_write_text(self.path, json.dumps(data, indent=1))
        except OSError as exc:
            logger.warning("cannot save the download queue to %s: %s", self.path, exc)


def _paused_message(have: int, total: int) -> str:
    return f"Paused at {human_bytes(have)} of {human_bytes(total)}" if total else "Paused"


def _as_loaded(item: DownloadItem) -> DownloadItem:
    """An item read back after a restart, with the bytes that are on disk now."""
    if item.state is DownloadState.DONE:
        return item
    have = _bytes_on_disk(item)
    if item.state is DownloadState.RUNNING:
        # The app stopped during the transfer: it is paused where the bytes end.
        return replace(
            item,
            state=DownloadState.PAUSED,
            bytes_done=have,
            message=_paused_message(have, item.bytes_total),
        )
    return replace(item, bytes_done=have)


def _bytes_on_disk(item: DownloadItem) -> int:
    """Bytes of ``item`` in the HF cache now (complete parts and partial ones)."""
    if not item.remotes:
        return 0
    return sum(cached_bytes(r) for r in item.remotes)


def _partial_paths(item: DownloadItem) -> Iterator[Path]:
    cache = hub_cache_dir()
    for remote in item.remotes:
        yield CacheLayout.of(cache, remote).partial


def _delete_partials(item: DownloadItem) -> None:
    for path in _partial_paths(item):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not delete %s: %s", path, exc)
