"""Run engine functions off the GUI thread and turn their callbacks into signals.

The engine's long functions take ``on_progress`` and ``cancel`` keywords; a
:class:`Worker` calls one in a ``QThread`` and re-emits its progress, result and
errors as signals on the GUI thread. Start work only through :func:`start_task`.
``Cancelled`` ends a task through ``cancelled``, never ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from app.workers.failure import Failure
from quant.errors import Cancelled
from quant.progress import CancelToken

logger = logging.getLogger(__name__)

TaskFn = Callable[..., Any]


class Worker(QObject):
    started = Signal()
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(object)  # app.workers.failure.Failure
    cancelled = Signal()
    done = Signal()  # after any of finished/failed/cancelled

    def __init__(
        self,
        fn: TaskFn,
        *,
        pass_progress: bool = True,
        pass_cancel: bool = True,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._fn = fn
        self._args = args
        self._kwargs = dict(kwargs or {})
        self.token = CancelToken()
        if pass_progress:
            self._kwargs["on_progress"] = self.progress.emit
        if pass_cancel:
            self._kwargs["cancel"] = self.token

    @Slot()
    def run(self) -> None:
        self.started.emit()
        try:
            result = self._fn(*self._args, **self._kwargs)
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # worker boundary: log, then report
            logger.exception("task %s failed", getattr(self._fn, "__name__", self._fn))
            self.failed.emit(Failure.from_exception(exc))
        else:
            if self.token.cancelled:
                self.cancelled.emit()
            else:
                self.finished.emit(result)
        finally:
            self.done.emit()

    def cancel(self) -> None:
        self.token.cancel()


class TaskHandle(QObject):
    """Keeps a worker and its thread alive until the work is done.

    The handle lives in the thread that started the task (the GUI thread), and
    relays the worker's signals from there: callbacks given to
    :func:`start_task` — plain functions and lambdas included — run on the
    thread that started the task, never on the worker's thread.
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(object)
    cancelled = Signal()

    def __init__(self, worker: Worker, thread: QThread, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.worker_thread = thread
        # Set once the thread has finished and its objects are scheduled for deletion:
        # from then on the handle answers from this flag, never from the deleted thread.
        self.finished_running = False
        # Signal-to-signal connections are queued into this handle's thread.
        worker.progress.connect(self.progress)
        worker.finished.connect(self.finished)
        worker.failed.connect(self.failed)
        worker.cancelled.connect(self.cancelled)

    def cancel(self) -> None:
        self.worker.cancel()

    def is_running(self) -> bool:
        return not self.finished_running and self.worker_thread.isRunning()

    def wait(self, ms: int = 30_000) -> bool:
        return self.finished_running or self.worker_thread.wait(ms)


_live: set[TaskHandle] = set()


def start_task(
    fn: TaskFn,
    *args: Any,
    on_finished: Callable[[Any], None] | None = None,
    on_failed: Callable[[Failure], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    on_cancelled: Callable[[], None] | None = None,
    pass_progress: bool = True,
    pass_cancel: bool = True,
    parent: QObject | None = None,
    **kwargs: Any,
) -> TaskHandle:
    """Run ``fn(*args, **kwargs, on_progress=…, cancel=…)`` in a new thread.

    Callbacks run on the GUI thread (queued signal delivery to ``parent``'s thread).
    """
    worker = Worker(
        fn, pass_progress=pass_progress, pass_cancel=pass_cancel, args=args, kwargs=kwargs
    )
    thread = QThread()
    worker.moveToThread(thread)
    handle = TaskHandle(worker, thread, parent)
    if on_finished:
        handle.finished.connect(on_finished)
    if on_failed:
        handle.failed.connect(on_failed)
    if on_progress:
        handle.progress.connect(on_progress)
    if on_cancelled:
        handle.cancelled.connect(on_cancelled)
    thread.started.connect(worker.run)
    # Direct: the thread's event loop ends as soon as the work does, even while the
    # GUI thread is busy (or blocked in wait_all at exit).
    worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)

    def _cleanup() -> None:
        _live.discard(handle)
        handle.finished_running = True
        worker.deleteLater()
        thread.deleteLater()
        handle.deleteLater()

    thread.finished.connect(_cleanup)
    _live.add(handle)
    thread.start()
    return handle


def running_tasks() -> list[TaskHandle]:
    """The tasks whose threads are still running."""
    return [h for h in list(_live) if h.is_running()]


def wait_all(ms: int = 10_000) -> bool:
    """Cancel and join every live task (used on application quit and in tests).

    Returns True when no task is left running.
    """
    for handle in list(_live):
        handle.cancel()
    for handle in list(_live):
        handle.wait(ms)
    return not running_tasks()
