"""Run an engine job in a child process and turn its JSON lines into Qt signals.

Long native jobs (imatrix, quantization, evaluation) cannot be interrupted from
Python, so they run as ``python -m quant JOB … --json-progress`` in their own
process group: Cancel sends SIGTERM (the child removes what it was writing and
exits), and after a grace period SIGKILL, after which the files the child
announced as in progress (``{"event": "writing", "path": …}``) are removed
here. Memory returns to the system when the job ends, and a native crash
cannot take the window down.

The child's protocol (see ``quant/__main__.py``): one JSON object per line on
stdout; progress objects, ``{"stages": […]}``, ``{"event": …}``,
``{"log": …}``, and last ``{"result": …}`` or ``{"error": …}``. Two reader
threads drain stdout and stderr; every signal is delivered on the GUI thread
(queued to this object's thread), and the GUI thread never waits on the child.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.core.engine_jobs import job_command, job_environment
from app.workers.failure import Failure
from quant.progress import Progress

logger = logging.getLogger(__name__)

KILL_GRACE_S = 5.0
_STDERR_TAIL = 60


class ProcessJob(QObject):
    """One child-process job; start it with :meth:`start`, stop it with :meth:`cancel`."""

    started = Signal()
    stages = Signal(list)  # stage names, in order
    progress = Signal(object)  # quant.progress.Progress
    job_event = Signal(dict)  # {"event": "stage_done" | "writing" | "written", …}
    log = Signal(str)  # a line for a log pane
    finished = Signal(object)  # the result dict
    failed = Signal(object)  # app.workers.failure.Failure
    cancelled = Signal()
    done = Signal()  # after any of finished / failed / cancelled

    def __init__(
        self,
        args: list[str],
        *,
        python: str | None = None,
        program: list[str] | None = None,
        env: dict[str, str] | None = None,
        parent: QObject | None = None,
    ) -> None:
        """``args`` follow ``python -m quant``; ``program`` replaces that prefix with
        another command speaking the same protocol (the tests run small scripts)."""
        super().__init__(parent)
        self.args = list(args)
        self.python = python or sys.executable
        self.program = list(program) if program is not None else job_command(self.python)
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._cancel_requested = False
        self._result: dict[str, Any] | None = None
        self._error: dict[str, Any] | None = None
        self._writing: set[str] = set()
        self._stderr: deque[str] = deque(maxlen=_STDERR_TAIL)
        self._threads: list[threading.Thread] = []
        self._killer: threading.Timer | None = None
        self._finished_state: str | None = None

    @classmethod
    def pipeline(cls, spec: Any, parent: QObject | None = None) -> ProcessJob:
        """A job running ``quant.jobs.pipeline.run_pipeline(spec)`` in a child process."""
        return cls(
            ["pipeline", "--json-progress", "--spec", json.dumps(spec.to_dict())], parent=parent
        )

    # -- control ---------------------------------------------------------------------

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("a ProcessJob runs once; make a new one")
        env = job_environment(self._env)
        cmd = [*self.program, *self.args]
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        logger.info("starting job: %s", " ".join(cmd[:4]))
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            **kwargs,
        )
        out = threading.Thread(target=self._read_stdout, name="job-stdout", daemon=True)
        err = threading.Thread(target=self._read_stderr, name="job-stderr", daemon=True)
        self._threads = [out, err]
        err.start()
        out.start()
        self.started.emit()

    def cancel(self) -> None:
        """Stop the job: SIGTERM now, SIGKILL after :data:`KILL_GRACE_S` seconds."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None or self._cancel_requested:
                self._cancel_requested = True
                return
            self._cancel_requested = True
        self._signal(signal.SIGTERM)
        self._killer = threading.Timer(KILL_GRACE_S, self._kill_if_alive)
        self._killer.daemon = True
        self._killer.start()

    def is_running(self) -> bool:
        return self._proc is not None and self._finished_state is None

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Join the reader threads (for tests and shutdown; never on the GUI thread's hot path)."""
        for t in self._threads:
            t.join(timeout_s)
        return all(not t.is_alive() for t in self._threads)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it ended (negative: the signal that ended it)."""
        return self._proc.returncode if self._proc is not None else None

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if sys.platform != "win32":
                os.killpg(proc.pid, sig)
            elif sig == signal.SIGTERM:
                proc.terminate()
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError) as exc:
            logger.debug("signal %s to job %s: %s", sig, proc.pid, exc)

    def _kill_if_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            logger.warning("job %s ignored SIGTERM for %.0f s; killing it", proc.pid, KILL_GRACE_S)
            self._signal(signal.SIGKILL if sys.platform != "win32" else signal.SIGTERM)

    # -- reading -----------------------------------------------------------------------

    def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)

    def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            for raw in proc.stdout:
                self._handle_line(raw.decode("utf-8", "replace"))
        finally:
            rc = proc.wait()
            if self._killer is not None:
                self._killer.cancel()
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join(5.0)
            self._finish(rc)

    def _handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except ValueError:
            self.log.emit(line)  # not protocol: show it rather than lose it
            return
        if not isinstance(obj, dict):
            return
        if "stage" in obj and "done" in obj:
            self.progress.emit(Progress.from_dict(obj))
        elif "stages" in obj:
            self.stages.emit([str(s) for s in obj["stages"]])
        elif "event" in obj:
            name = obj.get("event")
            path = str(obj.get("path", ""))
            if name == "writing" and path:
                self._writing.add(path)
            elif name == "written":
                self._writing.discard(_partial_name(path))
            elif name == "stage_done":
                self.log.emit(f"{obj.get('stage')}: {obj.get('message', '')}")
            self.job_event.emit(obj)
        elif "log" in obj:
            rec = obj["log"] if isinstance(obj["log"], dict) else {"message": str(obj["log"])}
            level = rec.get("level", "INFO")
            msg = str(rec.get("message", ""))
            self.log.emit(msg if level == "INFO" else f"{level.lower()}: {msg}")
        elif "result" in obj:
            self._result = obj["result"]
        elif "error" in obj:
            self._error = obj

    def _finish(self, rc: int) -> None:
        if self._result is not None and rc == 0:
            state = "finished"
        elif self._cancel_requested or (self._error or {}).get("cancelled"):
            state = "cancelled"
        else:
            state = "failed"
        if state != "finished":
            self._remove_leftovers()
        self._finished_state = state
        if state == "finished":
            self.finished.emit(self._result)
        elif state == "cancelled":
            self.cancelled.emit()
        else:
            self.failed.emit(self._failure(rc))
        self.done.emit()

    def _failure(self, rc: int) -> Failure:
        tail = "\n".join(self._stderr)
        if self._error is not None:
            return Failure.from_job_error(
                str(self._error.get("error", "the job failed")),
                str(self._error.get("kind", "")),
                tail,
            )
        if rc < 0:
            what = f"was killed by signal {-rc}"
            with contextlib.suppress(ValueError):
                what = f"was killed by {signal.Signals(-rc).name}"
        else:
            what = f"exited with status {rc}"
        return Failure.unexpected(
            f"The job process {what} without reporting a result; it may have run out of "
            "memory. See the details, or try a smaller model or fewer threads.",
            tail,
        )

    def _remove_leftovers(self) -> None:
        for p in list(self._writing):
            path = Path(p)
            try:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
                    logger.info("removed partial output %s", path)
            except OSError as exc:
                logger.warning("could not remove partial output %s: %s", path, exc)
        self._writing.clear()


def _partial_name(path: str) -> str:
    p = Path(path)
    return str(p.with_name(f".{p.name}.partial"))
