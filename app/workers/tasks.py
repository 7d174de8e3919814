"""Run work off the GUI thread and hand its outcome back on the GUI thread.

Every piece of background work in the app starts here, through :func:`start_task`
(or :class:`LatestTask`, for requests where only the newest answer matters)::

    self._task = start_task(
        Call(hub.search_models, text, sort="downloads"),
        parent=self,
        on_finished=self._on_results,  # mypy checks it takes what search_models returns
        cancellable=True,  # search_models is called with cancel=…
    )

* A :class:`Call` is a function with its arguments, typed by the function, so mypy
  checks the arguments and that ``on_finished`` accepts the result.
* The engine's two keywords are opt-in, so a plain function needs no flag: with
  ``on_progress`` the function is called with ``on_progress=`` (its reports reach
  the callback), with ``cancellable=True`` it is called with ``cancel=``, the
  :class:`~quant.progress.CancelToken` that :meth:`TaskHandle.cancel` sets.
* A task ends exactly once: ``finished(result)``, ``failed(Failure)`` or
  ``cancelled()``. :class:`~quant.errors.Cancelled`, or any ending after
  :meth:`TaskHandle.cancel`, is ``cancelled``, never ``failed``. Without
  ``on_failed`` a failure goes to the reporter the GUI installs
  (:func:`app.ui.errors.report_failure`, a message box over ``parent``).
* Callbacks run on the thread that started the task (the GUI thread), never on a
  worker thread, and never after ``parent`` is deleted. Workers never touch widgets.
* Work runs on one thread pool. :func:`wait_all` (at quit, and after each GUI test)
  cancels every task and joins them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from PySide6.QtCore import QObject, Qt, QThread, QThreadPool, Signal, Slot

from app.workers.failure import Failure
from quant.errors import Cancelled
from quant.progress import CancelToken

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

FailureReporter = Callable[[QObject | None, Failure], object]

_FINISHED, _FAILED, _CANCELLED = "finished", "failed", "cancelled"
# Pool threads may wait on the network or the disk for a long time (a download runs
# for minutes), so the pool is wider than the CPU: work queues only beyond this.
_MIN_POOL_THREADS = 16


class Call(Generic[R]):
    """``fn(*args, **kwargs)``, to be run later; typed by ``fn``."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> None:
        self.fn: Callable[..., R] = fn
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = dict(kwargs)

    @property
    def name(self) -> str:
        return str(getattr(self.fn, "__qualname__", None) or repr(self.fn))

    def __call__(self, **extra: Any) -> R:
        return self.fn(*self.args, **self.kwargs, **extra)

    def __repr__(self) -> str:
        return f"Call({self.name})"


class TaskHandle(QObject, Generic[R]):
    """A started task, living on the thread that started it.

    Its signals are emitted on that thread: ``progress(object)``,
    ``finished(result)``, ``failed(Failure)``, ``cancelled()``; exactly one of the
    last three. The handle is a child of the task's ``parent`` and goes away with
    it, or once the outcome is delivered.
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(object)
    cancelled = Signal()

    def __init__(self, token: CancelToken, parent: QObject) -> None:
        super().__init__(parent)
        self._token = token
        self._ended = False

    def cancel(self) -> None:
        """Ask the work to stop; it ends in ``cancelled`` and its result is dropped."""
        self._token.cancel()

    def is_running(self) -> bool:
        """True until the outcome has been delivered."""
        return not self._ended

    @Slot(object)
    def _relay_progress(self, report: object) -> None:
        if not self._ended:
            self.progress.emit(report)

    @Slot(str, object)
    def _deliver(self, outcome: str, value: object) -> None:
        self._ended = True
        try:
            if outcome == _FINISHED:
                self.finished.emit(value)
            elif outcome == _FAILED:
                self.failed.emit(value)
            else:
                self.cancelled.emit()
        finally:
            self.deleteLater()


class _WorkerSignals(QObject):
    """What a worker emits from its pool thread; queued to the handle's thread."""

    progress = Signal(object)
    ended = Signal(str, object)


class _Job:
    """One task's work: the call, its token and its signals (owned by the pool thread)."""

    __slots__ = ("call", "extra", "signals", "token")

    def __init__(self, call: Call[Any], token: CancelToken, signals: _WorkerSignals) -> None:
        self.call = call
        self.token = token
        self.signals = signals
        self.extra: dict[str, Any] = {}

    def run(self) -> None:
        """Runs on a pool thread: call the function, emit exactly one outcome."""
        try:
            outcome, value = self._outcome()
            self.signals.ended.emit(outcome, value)
        finally:
            _state.live.discard(self)

    def _outcome(self) -> tuple[str, object]:
        if self.token.cancelled:  # cancelled before a thread was free
            return _CANCELLED, None
        try:
            result = self.call(**self.extra)
        except Cancelled:
            return _CANCELLED, None
        except Exception as exc:  # worker boundary: log, then report
            failure = Failure.from_exception(exc)
            if failure.expected:
                logger.info("task %s failed: %s", self.call.name, failure.message)
            else:
                logger.exception("task %s failed", self.call.name)
            return _FAILED, failure
        if self.token.cancelled:
            return _CANCELLED, None
        return _FINISHED, result


class _State:
    """The process's tasks: those not finished running, their pool, the failure reporter."""

    def __init__(self) -> None:
        self.live: set[_Job] = set()
        self.reporter: FailureReporter | None = None
        self._pool: QThreadPool | None = None

    @property
    def pool(self) -> QThreadPool:
        if self._pool is None:
            self._pool = QThreadPool()
            self._pool.setMaxThreadCount(max(_MIN_POOL_THREADS, 2 * QThread.idealThreadCount()))
        return self._pool


_state = _State()


def set_failure_reporter(reporter: FailureReporter | None) -> None:
    """Who shows a failure when the task has no ``on_failed`` (the GUI installs show_error)."""
    _state.reporter = reporter


def report_failure(parent: QObject | None, failure: Failure) -> None:
    """Show ``failure`` the app's one way (logged only when no GUI is installed)."""
    if _state.reporter is None:
        logger.error("background task failed: %s", failure.message)
        return
    _state.reporter(parent, failure)


def start_task(
    call: Call[R],
    *,
    parent: QObject,
    on_finished: Callable[[R], object] | None = None,
    on_failed: Callable[[Failure], object] | None = None,
    on_cancelled: Callable[[], object] | None = None,
    on_progress: Callable[[Any], object] | None = None,
    cancellable: bool = False,
) -> TaskHandle[R]:
    """Run ``call`` on the app's thread pool; the callbacks run on this thread.

    ``on_progress`` given: ``call`` gets ``on_progress=`` and its reports reach the
    callback. ``cancellable``: ``call`` gets ``cancel=``, set by
    :meth:`TaskHandle.cancel` and by :func:`wait_all`. Without ``on_failed`` a
    failure is shown over ``parent`` (:func:`report_failure`).
    """
    token = CancelToken()
    handle: TaskHandle[R] = TaskHandle(token, parent)
    signals = _WorkerSignals()
    job = _Job(call, token, signals)
    if on_progress is not None:
        job.extra["on_progress"] = signals.progress.emit
        handle.progress.connect(on_progress)
    if cancellable:
        job.extra["cancel"] = token
    queued = Qt.ConnectionType.QueuedConnection
    signals.progress.connect(handle._relay_progress, queued)
    signals.ended.connect(handle._deliver, queued)
    if on_finished is not None:
        handle.finished.connect(on_finished)
    if on_failed is not None:
        handle.failed.connect(on_failed)
    else:
        handle.failed.connect(lambda failure: report_failure(parent, failure))
    if on_cancelled is not None:
        handle.cancelled.connect(on_cancelled)
    _state.live.add(job)
    _state.pool.start(job.run)
    return handle


class LatestTask(Generic[R]):
    """Requests of one kind where only the newest answer counts.

    A search box, a form that plans again on every change, a listing redone when
    the disk changes: :meth:`start` cancels the request before it, and that
    request's late outcome (result, failure or cancellation) is dropped. The
    callbacks, given once here, only ever see the newest request, on the GUI
    thread. ``on_failed`` defaults to showing the failure over ``parent``.
    """

    def __init__(
        self,
        parent: QObject,
        *,
        on_finished: Callable[[R], object],
        on_failed: Callable[[Failure], object] | None = None,
        on_cancelled: Callable[[], object] | None = None,
        on_progress: Callable[[Any], object] | None = None,
        cancellable: bool = False,
    ) -> None:
        self._parent = parent
        self._on_finished = on_finished
        self._on_failed = on_failed
        self._on_cancelled = on_cancelled
        self._on_progress = on_progress
        self._cancellable = cancellable
        self._handle: TaskHandle[R] | None = None
        self._serial = 0  # which request is the newest

    def start(self, call: Call[R]) -> TaskHandle[R]:
        """Run ``call``; the request before it is cancelled and its outcome dropped."""
        if self._handle is not None:
            self._handle.cancel()
        self._serial += 1
        serial = self._serial

        def newest() -> bool:
            if serial != self._serial or self._handle is None:
                return False
            self._handle = None
            return True

        def finished(result: R) -> None:
            if newest():
                self._on_finished(result)

        def failed(failure: Failure) -> None:
            if newest():
                if self._on_failed is not None:
                    self._on_failed(failure)
                else:
                    report_failure(self._parent, failure)

        def cancelled() -> None:
            if newest() and self._on_cancelled is not None:
                self._on_cancelled()

        def progress(report: object) -> None:
            if serial == self._serial and self._on_progress is not None:
                self._on_progress(report)

        self._handle = start_task(
            call,
            parent=self._parent,
            on_finished=finished,
            on_failed=failed,
            on_cancelled=cancelled,
            on_progress=progress if self._on_progress is not None else None,
            cancellable=self._cancellable,
        )
        return self._handle

    def cancel(self) -> None:
        """Cancel the newest request; it ends through ``on_cancelled`` (its result is dropped)."""
        if self._handle is not None:
            self._handle.cancel()

    def is_running(self) -> bool:
        """True from :meth:`start` until the newest request's outcome is delivered."""
        return self._handle is not None


def running_count() -> int:
    """How many tasks have not finished running (queued ones included)."""
    return len(_state.live)


def cancel_all() -> None:
    """Ask every task to stop (application quit); returns at once."""
    for job in list(_state.live):
        job.token.cancel()


def wait_all(ms: int = 10_000) -> bool:
    """Cancel every task and join the pool for up to ``ms`` milliseconds.

    Returns True when no task is left running. Outcomes still queued for the GUI
    thread are delivered when its event loop next runs.
    """
    cancel_all()
    _state.pool.waitForDone(ms)
    return not _state.live


__all__ = [
    "Call",
    "LatestTask",
    "TaskHandle",
    "cancel_all",
    "report_failure",
    "running_count",
    "set_failure_reporter",
    "start_task",
    "wait_all",
]
