"""One download queue for the whole app, run one file at a time off the GUI thread.

The queue itself (:class:`app.core.download_queue.DownloadQueue`) is persisted:
what was asked for, what arrived and what failed survive a restart, and a
download that was running when the app closed comes back paused with its bytes
so far. This object drives it from the GUI: it starts the next pending item on a
worker thread, relays progress, and pauses by cancelling the transfer (the
bytes received stay in the Hugging Face cache and the next run resumes there).
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from app.core.download_queue import DownloadItem, DownloadQueue, DownloadState
from app.core.errors import AppError
from app.core.library import ModelSource, read_entry
from app.workers.failure import Failure
from app.workers.tasks import Call, TaskHandle, start_task
from quant.errors import HubError, QuantError

logger = logging.getLogger(__name__)


class DownloadManager(QObject):
    #: The queue changed (an item was added, paused, resumed, removed, started or ended).
    changed = Signal()
    #: The running item with fresh bytes, rate and time left (a DownloadItem).
    progress = Signal(object)
    #: A file arrived complete and checked: its app.core.library.LibraryEntry.
    downloaded = Signal(object)
    #: An item failed: (item id, app.workers.failure.Failure).
    failed = Signal(str, object)
    #: A transfer ended, done, failed or paused (the DownloadItem as it ended).
    item_ended = Signal(object)

    def __init__(self, queue: DownloadQueue | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue if queue is not None else DownloadQueue()
        self._task: TaskHandle[DownloadItem | None] | None = None
        self._running: str | None = None
        self._stopping = False

    # ------------------------------------------------------------------ queries
    def items(self) -> list[DownloadItem]:
        return self.queue.items()

    def running_key(self) -> str | None:
        return self._running

    def is_busy(self) -> bool:
        return self._task is not None

    # ------------------------------------------------------------------ changes
    def enqueue(
        self, repo_id: str, filename: str, *, revision: str | None = None, size_bytes: int = 0
    ) -> DownloadItem:
        item = self.queue.add(repo_id, filename, revision=revision, size_bytes=size_bytes)
        self.changed.emit()
        self._start_next()
        return item

    def pause(self, key: str) -> None:
        """Stop an item; a running transfer ends and keeps its bytes (the queue cancels it)."""
        self.queue.pause(key)
        self.changed.emit()

    def resume(self, key: str) -> None:
        self.queue.resume(key)
        self.changed.emit()
        self._start_next()

    def remove(self, key: str) -> None:
        """Forget an item; the bytes of an unfinished download are deleted."""
        self.queue.remove(key)
        self.changed.emit()

    def start(self) -> None:
        """Run what is pending (items queued before a restart wait for this)."""
        self._start_next()

    # ------------------------------------------------------------------ running
    def _start_next(self) -> None:
        if self._task is not None or self._stopping:
            return
        item = self.queue.next_pending()
        if item is None:
            return
        self._running = item.id
        self._task = start_task(
            Call(self.queue.run_next),
            parent=self,
            on_finished=self._on_finished,
            on_failed=self._on_failed,
            on_cancelled=self._on_cancelled,
            on_progress=self._on_progress,
            cancellable=True,
        )
        self.changed.emit()

    def _on_progress(self, item: DownloadItem) -> None:
        self.progress.emit(item)

    def _ended(self) -> str | None:
        key = self._running
        self._task = None
        self._running = None
        return key

    def _on_finished(self, item: DownloadItem | None) -> None:
        self._ended()
        if item is not None:
            self.item_ended.emit(item)
        if item is not None and item.state is DownloadState.DONE and item.path:
            try:
                entry = read_entry(item.path, ModelSource.HUGGINGFACE)
            except (QuantError, AppError) as exc:  # checked against its hash, so unlikely
                self.failed.emit(item.id, Failure.from_exception(exc))
            else:
                self.downloaded.emit(entry)
        elif item is not None and item.state is DownloadState.FAILED:
            error = HubError(item.error or "the download failed")
            self.failed.emit(item.id, Failure.from_exception(error))
        self.changed.emit()
        self._start_next()

    def _on_failed(self, failure: Failure) -> None:
        key = self._ended()
        if key is not None:
            self.failed.emit(key, failure)
        self.changed.emit()
        self._start_next()

    def _on_cancelled(self) -> None:
        self._ended()
        self.changed.emit()
        self._start_next()

    def shutdown(self) -> None:
        """Stop the running transfer; it is resumed on the next start of the app."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
