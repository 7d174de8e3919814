"""start_task and LatestTask: results, failures and cancellation reach the GUI thread once.

Each test runs real functions on the app's thread pool and waits on the real
signals, the way a page uses them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QObject

from app.workers import tasks
from app.workers.failure import Failure
from app.workers.tasks import Call, LatestTask, start_task
from quant.errors import Cancelled, HubError
from quant.progress import CancelToken, Progress

WAIT_MS = 5_000


def _on_gui_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Recorder:
    """Callbacks that remember what they got and on which thread."""

    def __init__(self) -> None:
        self.finished: list[Any] = []
        self.failed: list[Failure] = []
        self.cancelled = 0
        self.progress: list[Any] = []
        self.threads: set[bool] = set()

    def on_finished(self, value: Any) -> None:
        self.threads.add(_on_gui_thread())
        self.finished.append(value)

    def on_failed(self, failure: Failure) -> None:
        self.threads.add(_on_gui_thread())
        self.failed.append(failure)

    def on_cancelled(self) -> None:
        self.threads.add(_on_gui_thread())
        self.cancelled += 1

    def on_progress(self, report: Any) -> None:
        self.threads.add(_on_gui_thread())
        self.progress.append(report)

    @property
    def outcomes(self) -> int:
        return len(self.finished) + len(self.failed) + self.cancelled

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_finished": self.on_finished,
            "on_failed": self.on_failed,
            "on_cancelled": self.on_cancelled,
        }


def _settle(qtbot: Any, rec: Recorder, n: int = 1) -> None:
    qtbot.waitUntil(lambda: rec.outcomes >= n, timeout=WAIT_MS)
    # Nothing else arrives afterwards.
    tasks.wait_all(WAIT_MS)
    QCoreApplication.processEvents()


# --------------------------------------------------------------------------- start_task


def test_the_result_arrives_on_the_gui_thread_and_the_work_ran_off_it(
    qtbot: Any, owner: QObject
) -> None:
    ran_on_gui: list[bool] = []

    def add(a: int, b: int, *, scale: int = 1) -> int:
        ran_on_gui.append(_on_gui_thread())
        return (a + b) * scale

    rec = Recorder()
    handle = start_task(Call(add, 2, 3, scale=10), parent=owner, **rec.callbacks())
    assert handle.is_running()
    _settle(qtbot, rec)
    assert rec.finished == [50]
    assert rec.failed == [] and rec.cancelled == 0
    assert ran_on_gui == [False]
    assert rec.threads == {True}
    assert not handle.is_running()


def test_a_plain_function_gets_only_its_own_arguments(qtbot: Any, owner: QObject) -> None:
    def plain(text: str) -> str:  # no on_progress, no cancel: a TypeError if they were passed
        return text.upper()

    rec = Recorder()
    start_task(Call(plain, "gguf"), parent=owner, **rec.callbacks())
    _settle(qtbot, rec)
    assert rec.finished == ["GGUF"]


def test_progress_and_cancel_are_passed_when_asked_for(qtbot: Any, owner: QObject) -> None:
    seen: dict[str, Any] = {}

    def job(n: int, *, on_progress: Any = None, cancel: CancelToken | None = None) -> str:
        seen["cancel"] = cancel
        for i in range(n):
            on_progress(Progress("count", i + 1, n, f"step {i + 1}"))
        return "done"

    rec = Recorder()
    start_task(
        Call(job, 3),
        parent=owner,
        on_progress=rec.on_progress,
        cancellable=True,
        **rec.callbacks(),
    )
    _settle(qtbot, rec)
    assert rec.finished == ["done"]
    assert [p.message for p in rec.progress] == ["step 1", "step 2", "step 3"]
    assert isinstance(seen["cancel"], CancelToken)
    assert rec.threads == {True}


def test_an_unexpected_error_fails_with_its_traceback(qtbot: Any, owner: QObject) -> None:
    def broken() -> None:
        {}["missing"]

    rec = Recorder()
    start_task(Call(broken), parent=owner, **rec.callbacks())
    _settle(qtbot, rec)
    (failure,) = rec.failed
    assert not failure.expected
    assert failure.kind == "KeyError"
    assert failure.message == "KeyError: 'missing'"
    assert "Traceback" in failure.details and "broken" in failure.details
    assert isinstance(failure.error, KeyError)
    assert rec.finished == [] and rec.cancelled == 0


def test_an_expected_error_fails_with_its_sentence(qtbot: Any, owner: QObject) -> None:
    def offline() -> None:
        raise HubError("the hub cannot be reached; check the network")

    rec = Recorder()
    start_task(Call(offline), parent=owner, **rec.callbacks())
    _settle(qtbot, rec)
    (failure,) = rec.failed
    assert failure.expected
    assert failure.message == "the hub cannot be reached; check the network"
    assert failure.kind == "HubError"
    assert failure.details == ""


def test_without_on_failed_the_failure_is_reported_over_the_parent(
    qtbot: Any, owner: QObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[tuple[QObject | None, Failure, bool]] = []
    monkeypatch.setattr(
        tasks._state, "reporter", lambda parent, f: reported.append((parent, f, _on_gui_thread()))
    )

    def offline() -> None:
        raise HubError("no network")

    start_task(Call(offline), parent=owner)
    qtbot.waitUntil(lambda: bool(reported), timeout=WAIT_MS)
    ((parent, failure, on_gui),) = reported
    assert parent is owner
    assert failure.message == "no network"
    assert on_gui


def test_cancel_stops_cooperative_work_without_a_failure(qtbot: Any, owner: QObject) -> None:
    started = threading.Event()

    def forever(*, cancel: CancelToken) -> None:
        started.set()
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.01)

    rec = Recorder()
    handle = start_task(Call(forever), parent=owner, cancellable=True, **rec.callbacks())
    assert started.wait(5)
    handle.cancel()
    _settle(qtbot, rec)
    assert rec.cancelled == 1
    assert rec.finished == [] and rec.failed == []


def test_a_result_after_cancel_is_dropped(qtbot: Any, owner: QObject) -> None:
    release = threading.Event()

    def slow() -> str:  # cannot be interrupted: it finishes anyway
        assert release.wait(5)
        return "late"

    rec = Recorder()
    handle = start_task(Call(slow), parent=owner, **rec.callbacks())
    handle.cancel()
    release.set()
    _settle(qtbot, rec)
    assert rec.finished == []
    assert rec.cancelled == 1


def test_raising_cancelled_ends_as_cancelled(qtbot: Any, owner: QObject) -> None:
    def stopped() -> None:
        raise Cancelled("stopped by the user")

    rec = Recorder()
    start_task(Call(stopped), parent=owner, **rec.callbacks())
    _settle(qtbot, rec)
    assert rec.cancelled == 1 and rec.failed == []


def test_nothing_is_delivered_once_the_parent_is_gone(qtbot: Any, qapp: Any) -> None:
    from shiboken6 import delete

    release = threading.Event()
    parent = QObject()

    def slow() -> int:
        assert release.wait(5)
        return 1

    rec = Recorder()
    start_task(Call(slow), parent=parent, **rec.callbacks())
    delete(parent)  # the page closed while the work ran
    release.set()
    assert tasks.wait_all(WAIT_MS)
    QCoreApplication.processEvents()
    assert rec.outcomes == 0


def test_long_waits_do_not_hold_up_other_work(qtbot: Any, owner: QObject) -> None:
    """Eight tasks that wait for each other all finish: the pool is not limited to the CPUs."""
    n = 8
    barrier = threading.Barrier(n, timeout=5)

    def meet(i: int) -> int:
        barrier.wait()
        return i

    rec = Recorder()
    for i in range(n):
        start_task(Call(meet, i), parent=owner, **rec.callbacks())
    _settle(qtbot, rec, n)
    assert sorted(rec.finished) == list(range(n))


def test_wait_all_cancels_and_joins_everything(qtbot: Any, owner: QObject) -> None:
    started: list[str] = []
    ended: list[str] = []

    def until_cancelled(name: str, *, cancel: CancelToken) -> None:
        started.append(name)
        try:
            while True:
                cancel.raise_if_cancelled()
                time.sleep(0.01)
        finally:
            ended.append(name)

    def short() -> None:  # cannot be interrupted: waited for
        started.append("short")
        time.sleep(0.3)
        ended.append("short")

    rec = Recorder()
    for name in ("a", "b", "c"):
        start_task(Call(until_cancelled, name), parent=owner, cancellable=True, **rec.callbacks())
    start_task(Call(short), parent=owner, **rec.callbacks())
    assert tasks.running_count() == 4
    qtbot.waitUntil(lambda: len(started) == 4, timeout=WAIT_MS)
    assert tasks.wait_all(WAIT_MS)
    assert tasks.running_count() == 0
    assert sorted(ended) == ["a", "b", "c", "short"]
    QCoreApplication.processEvents()
    assert rec.cancelled == 4  # the short one's result came after wait_all cancelled it


def test_wait_all_says_when_a_task_is_still_running(qtbot: Any, owner: QObject) -> None:
    release = threading.Event()
    running = threading.Event()

    def stuck() -> None:  # ignores cancellation
        running.set()
        release.wait(5)

    start_task(Call(stuck), parent=owner)
    assert running.wait(5)
    assert not tasks.wait_all(50)
    assert tasks.running_count() == 1
    release.set()
    assert tasks.wait_all(WAIT_MS)


# --------------------------------------------------------------------------- LatestTask


def test_the_newest_request_wins_and_older_ones_are_cancelled(qtbot: Any, owner: QObject) -> None:
    gates = {q: threading.Event() for q in ("q", "qw", "qwe")}
    cancels: dict[str, CancelToken] = {}

    def search(text: str, *, cancel: CancelToken) -> str:
        cancels[text] = cancel
        assert gates[text].wait(5)
        return f"results for {text}"

    rec = Recorder()
    latest: LatestTask[str] = LatestTask(
        owner,
        on_finished=rec.on_finished,
        on_failed=rec.on_failed,
        on_cancelled=rec.on_cancelled,
        cancellable=True,
    )
    for text in ("q", "qw", "qwe"):  # typed one key at a time
        latest.start(Call(search, text))
        qtbot.waitUntil(lambda text=text: text in cancels, timeout=WAIT_MS)
    assert latest.is_running()
    gates["qwe"].set()  # the newest answers first …
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=WAIT_MS)
    assert not latest.is_running()
    gates["q"].set()  # … the older ones late
    gates["qw"].set()
    _settle(qtbot, rec)
    assert rec.finished == ["results for qwe"]
    assert rec.failed == [] and rec.cancelled == 0
    assert cancels["q"].cancelled and cancels["qw"].cancelled
    assert not cancels["qwe"].cancelled
    assert rec.threads == {True}


def test_a_late_failure_of_an_older_request_is_dropped(qtbot: Any, owner: QObject) -> None:
    release = threading.Event()

    def fails_late() -> str:
        assert release.wait(5)
        raise HubError("old request failed")

    def answers(text: str) -> str:
        return text

    rec = Recorder()
    latest: LatestTask[str] = LatestTask(
        owner, on_finished=rec.on_finished, on_failed=rec.on_failed
    )
    latest.start(Call(fails_late))
    latest.start(Call(answers, "new"))
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=WAIT_MS)
    release.set()
    _settle(qtbot, rec)
    assert rec.finished == ["new"]
    assert rec.failed == []


def test_the_newest_failure_is_reported(qtbot: Any, owner: QObject) -> None:
    def fails() -> str:
        raise HubError("the repo does not exist")

    rec = Recorder()
    latest: LatestTask[str] = LatestTask(
        owner, on_finished=rec.on_finished, on_failed=rec.on_failed
    )
    latest.start(Call(fails))
    _settle(qtbot, rec)
    assert [f.message for f in rec.failed] == ["the repo does not exist"]


def test_cancelling_the_newest_request_ends_it(qtbot: Any, owner: QObject) -> None:
    def forever(*, cancel: CancelToken) -> str:
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.01)

    rec = Recorder()
    latest: LatestTask[str] = LatestTask(
        owner, on_finished=rec.on_finished, on_cancelled=rec.on_cancelled, cancellable=True
    )
    latest.start(Call(forever))
    latest.cancel()
    _settle(qtbot, rec)
    assert rec.cancelled == 1
    assert not latest.is_running()


def test_only_the_newest_request_reports_progress(qtbot: Any, owner: QObject) -> None:
    release = threading.Event()

    def job(name: str, *, on_progress: Any) -> str:
        if name == "old":
            assert release.wait(5)
        on_progress(Progress("work", 1, 1, name))
        return name

    rec = Recorder()
    latest: LatestTask[str] = LatestTask(
        owner, on_finished=rec.on_finished, on_progress=rec.on_progress
    )
    latest.start(Call(job, "old"))
    latest.start(Call(job, "new"))
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=WAIT_MS)
    release.set()
    _settle(qtbot, rec)
    assert [p.message for p in rec.progress] == ["new"]


def test_a_request_cancelled_before_it_started_never_runs(qtbot: Any, owner: QObject) -> None:
    """Typing fast queues requests: the superseded ones are skipped, not run."""
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        release.wait(5)

    def search(text: str) -> str:
        ran.append(text)
        return text

    # Keep every pool thread busy so the searches wait in the queue.
    for _ in range(tasks._state.pool.maxThreadCount()):
        start_task(Call(blocker), parent=owner)
    rec = Recorder()
    latest: LatestTask[str] = LatestTask(owner, on_finished=rec.on_finished)
    for text in ("q", "qw", "qwe"):
        latest.start(Call(search, text))
    release.set()
    _settle(qtbot, rec)
    assert rec.finished == ["qwe"]
    assert ran == ["qwe"]
