"""ProcessJob: a child process speaking the JSON-lines protocol, stopped for real.

Each test runs a tiny Python script as the child (no model, no engine), the way
``python -m quant JOB --json-progress`` behaves, and waits on the real signals.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.workers import process_job
from app.workers.failure import Failure
from app.workers.process_job import ProcessJob
from quant.progress import Progress

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

WAIT_MS = 15_000

# Every child script starts with these helpers.
PRELUDE = """
import json, os, signal, sys, time
from pathlib import Path
def say(obj):
    print(json.dumps(obj), flush=True)
"""


class Outcome:
    """Everything a job emitted, in order, and on which thread."""

    def __init__(self, job: ProcessJob) -> None:
        self.progress: list[Progress] = []
        self.stages: list[list[str]] = []
        self.events: list[dict[str, Any]] = []
        self.log: list[str] = []
        self.finished: list[Any] = []
        self.failed: list[Failure] = []
        self.cancelled = 0
        self.done = 0
        self.on_gui_thread: set[bool] = set()

        def record(sink: Callable[[Any], None]) -> Callable[..., None]:
            def slot(*args: Any) -> None:
                self.on_gui_thread.add(threading.current_thread() is threading.main_thread())
                sink(*args)

            return slot

        job.progress.connect(record(self.progress.append))
        job.stages.connect(record(self.stages.append))
        job.job_event.connect(record(self.events.append))
        job.log.connect(record(self.log.append))
        job.finished.connect(record(self.finished.append))
        job.failed.connect(record(self.failed.append))
        job.cancelled.connect(record(self._count_cancelled))
        job.done.connect(record(self._count_done))

    def _count_cancelled(self) -> None:
        self.cancelled += 1

    def _count_done(self) -> None:
        self.done += 1


@pytest.fixture
def py_job(qapp: Any, tmp_path: Path) -> Iterator[Callable[[str], tuple[ProcessJob, Outcome]]]:
    """``py_job(code)``: a ProcessJob whose child runs ``code`` (after PRELUDE)."""
    made: list[ProcessJob] = []

    def make(code: str) -> tuple[ProcessJob, Outcome]:
        script = tmp_path / f"child{len(made)}.py"
        script.write_text(PRELUDE + textwrap.dedent(code))
        job = ProcessJob([], program=[sys.executable, str(script)])
        made.append(job)
        return job, Outcome(job)

    yield make
    for job in made:  # a failing test must not leave a child behind
        if job.is_running():
            job._signal(signal.SIGKILL)
        job.wait(10)


def _run(qtbot: Any, job: ProcessJob) -> None:
    with qtbot.waitSignal(job.done, timeout=WAIT_MS):
        job.start()


def test_a_result_with_progress_and_stages(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        say({"stages": ["prepare", "quantize Q4_K_M"]})
        for i in range(3):
            say({"stage": "prepare", "done": i + 1, "total": 3, "message": f"step {i + 1}",
                 "bytes_done": 0, "bytes_total": 0, "eta_s": 2.5})
        say({"event": "stage_done", "stage": "prepare", "message": "ready"})
        say({"result": {"outputs": [1, 2]}})
        """
    )
    _run(qtbot, job)
    assert out.finished == [{"outputs": [1, 2]}]
    assert out.failed == [] and out.cancelled == 0 and out.done == 1
    assert out.stages == [["prepare", "quantize Q4_K_M"]]
    assert out.progress == [Progress("prepare", i, 3, f"step {i}", 0, 0, 2.5) for i in (1, 2, 3)]
    assert "prepare: ready" in out.log
    assert out.on_gui_thread == {True}
    assert job.returncode == 0
    assert not job.is_running()


def test_the_engines_error_is_an_expected_failure_with_the_stderr_tail(
    qtbot: Any, py_job: Any
) -> None:
    job, out = py_job(
        """
        for i in range(100):
            print(f"stderr line {i}", file=sys.stderr)
        say({"error": "x.gguf: not a GGUF file (magic b'abcd')", "kind": "ModelFormatError"})
        sys.exit(2)
        """
    )
    _run(qtbot, job)
    (failure,) = out.failed
    assert failure.expected
    assert failure.message == "x.gguf: not a GGUF file (magic b'abcd')"
    assert failure.kind == "ModelFormatError"
    lines = failure.details.splitlines()
    assert lines[0] == "stderr line 40" and lines[-1] == "stderr line 99"  # the last 60
    assert out.finished == [] and out.cancelled == 0


def test_an_internal_error_is_unexpected(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        print("Traceback (most recent call last): …", file=sys.stderr)
        say({"error": "Unexpected error: division by zero", "kind": "internal"})
        sys.exit(1)
        """
    )
    _run(qtbot, job)
    (failure,) = out.failed
    assert not failure.expected
    assert "Traceback" in failure.details


def test_an_exit_without_a_result_says_its_status(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        print("something went wrong", file=sys.stderr)
        sys.exit(3)
        """
    )
    _run(qtbot, job)
    (failure,) = out.failed
    assert not failure.expected
    assert failure.message.startswith("The job process exited with status 3 without reporting")
    assert failure.details == "something went wrong"


def test_a_child_killed_by_a_signal_is_named_in_the_message(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        print("allocating 64 GiB", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    _run(qtbot, job)
    (failure,) = out.failed
    assert not failure.expected
    assert "was killed by SIGKILL without reporting a result" in failure.message
    assert "it may have run out of memory" in failure.message
    assert failure.details == "allocating 64 GiB"
    assert job.returncode == -signal.SIGKILL


def test_malformed_lines_are_shown_or_skipped_and_the_job_goes_on(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        print("llama.cpp says hello (not JSON)", flush=True)
        print("[1, 2, 3]", flush=True)
        print("{broken json", flush=True)
        say({"stage": "load", "done": "many", "total": None, "eta_s": "soon"})
        say({"log": {"level": "WARNING", "message": "low memory"}})
        say({"log": "plain text log"})
        say({"result": {"ok": True}})
        """
    )
    _run(qtbot, job)
    assert out.finished == [{"ok": True}]
    assert out.log == [
        "llama.cpp says hello (not JSON)",
        "{broken json",
        "warning: low memory",
        "plain text log",
    ]
    assert out.progress == [Progress("load", 0, 0)]


def test_cancel_stops_a_child_that_honours_sigterm(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        def stop(signum, frame):
            say({"error": "cancelled", "cancelled": True})
            sys.exit(130)
        signal.signal(signal.SIGTERM, stop)
        say({"stage": "imatrix", "done": 0, "total": 100})
        time.sleep(60)
        """
    )
    with qtbot.waitSignal(job.progress, timeout=WAIT_MS):
        job.start()
    started = time.monotonic()
    with qtbot.waitSignal(job.done, timeout=WAIT_MS):
        job.cancel()
    assert time.monotonic() - started < process_job.KILL_GRACE_S
    assert out.cancelled == 1 and out.failed == [] and out.finished == []
    assert job.returncode == 130  # it stopped itself; nothing was killed


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    qtbot: Any, py_job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_job, "KILL_GRACE_S", 0.5)
    partial = tmp_path / ".model-Q4_K_M.gguf.partial"
    job, out = py_job(
        f"""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        path = Path({str(partial)!r})
        say({{"event": "writing", "path": str(path)}})
        path.write_bytes(b"GGUF" + bytes(4096))
        say({{"stage": "quantize", "done": 1, "total": 10}})
        time.sleep(60)
        """
    )
    with qtbot.waitSignal(job.progress, timeout=WAIT_MS):
        job.start()
    assert partial.exists()
    started = time.monotonic()
    with qtbot.waitSignal(job.done, timeout=WAIT_MS):
        job.cancel()
    assert time.monotonic() - started >= 0.5
    assert job.returncode == -signal.SIGKILL
    assert out.cancelled == 1 and out.failed == []
    assert not partial.exists()  # the half-written file it announced is gone


def test_partial_outputs_are_removed_when_the_child_dies(
    qtbot: Any, py_job: Any, tmp_path: Path
) -> None:
    partial = tmp_path / ".b-Q5_K_M.gguf.partial"
    finished_file = tmp_path / "a-Q4_K_M.gguf"
    job, out = py_job(
        f"""
        done = Path({str(finished_file)!r})
        tmp = done.with_name("." + done.name + ".partial")
        say({{"event": "writing", "path": str(tmp)}})
        tmp.write_bytes(b"GGUF")
        os.replace(tmp, done)
        say({{"event": "written", "path": str(done)}})
        half = Path({str(partial)!r})
        say({{"event": "writing", "path": str(half)}})
        half.write_bytes(b"GGUF")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    _run(qtbot, job)
    assert len(out.failed) == 1
    assert not partial.exists()
    assert finished_file.exists()  # written whole before the crash: kept
    assert [e["event"] for e in out.events] == ["writing", "written", "writing"]


def test_a_job_runs_once(qtbot: Any, py_job: Any) -> None:
    job, _out = py_job('say({"result": {}})')
    _run(qtbot, job)
    with pytest.raises(RuntimeError, match="runs once"):
        job.start()


def test_the_gui_thread_does_not_wait_for_the_child(qtbot: Any, py_job: Any) -> None:
    job, out = py_job(
        """
        time.sleep(1.0)
        say({"result": {"slow": True}})
        """
    )
    started = time.monotonic()
    job.start()
    assert time.monotonic() - started < 0.5
    assert job.is_running()
    qtbot.waitUntil(lambda: out.done == 1, timeout=WAIT_MS)
    assert out.finished == [{"slow": True}]


def test_a_progress_line_is_read_back_exactly(qtbot: Any, py_job: Any) -> None:
    p = Progress("evaluate Q4_K_M", 7, 20, "chunk 7", 1024, 4096, 12.0)
    line = json.dumps(p.as_dict())
    job, out = py_job(f"print({line!r}, flush=True)\nsay({{'result': {{}}}})")
    _run(qtbot, job)
    assert out.progress == [p]
