"""What jobs and CLI commands write on stdout: JSON lines, and strict JSON documents.

**JSON lines** (``--json-progress``; every ``python -m quant JOB`` child, and
``quantdesk convert``, ``convert-hf`` and ``pull``): one JSON object per line and
nothing else on stdout, in this order:

* progress: :meth:`quant.progress.Progress.as_dict` — ``{"stage", "done", "total",
  "message", "bytes_done", "bytes_total", "eta_s"}`` (read back with
  :meth:`~quant.progress.Progress.from_dict`);
* ``{"stages": [names…]}``: the stages the job will report, in order;
* ``{"event": "writing" | "written" | "stage_done", …}``;
* ``{"log": {"level", "logger", "message"}}`` for INFO and above (child jobs);
* last: ``{"result": {…}}``, or ``{"error": "one sentence", "kind": ErrorClass}``
  (``"kind": "internal"`` for an unexpected failure), or, when the job was
  stopped, ``{"error": "cancelled", "cancelled": true}``.

The exit status goes with the last line: 0, 2 for an expected failure, 1 for an
unexpected one, 130 when stopped (:func:`exit_status`).

**JSON documents** (``--json``): :func:`json_text` writes strict JSON — a
number that is not finite (a NaN perplexity, an infinite ratio) becomes
``null``, so every ``--json`` output parses with any JSON reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from quant.errors import Cancelled, QuantError, refused_write
from quant.progress import Progress

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_FAILED = 2
EXIT_CANCELLED = 130

# The cancelled line, ready to write from a signal handler (which must not build it).
CANCELLED_LINE = b'{"error": "cancelled", "cancelled": true}\n'

_lock = threading.Lock()


def exit_status(exc: BaseException) -> int:
    """The exit status of a job that ended with ``exc``."""
    if isinstance(exc, Cancelled):
        return EXIT_CANCELLED
    if isinstance(exc, QuantError):
        return EXIT_FAILED
    return EXIT_INTERNAL


class JsonLines:
    """Writes the JSON-lines protocol to ``stream`` (stdout at the time of each line).

    Each line is written whole and flushed under one lock, so progress from a
    worker thread and log lines from another never interleave.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def write(self, obj: Mapping[str, Any]) -> None:
        line = json.dumps(obj, ensure_ascii=False, default=str) + "\n"
        with _lock:
            out = self._stream or sys.stdout
            out.write(line)
            out.flush()

    def progress(self, p: Progress) -> None:
        self.write(p.as_dict())

    def on_event(self, name: str, data: Mapping[str, Any]) -> None:
        """The engine's ``on_event`` callback: the stage list, or one job event."""
        if name == "stages":
            self.write({"stages": data["stages"]})
        else:
            self.write({"event": name, **data})

    def result(self, data: Any) -> None:
        self.write({"result": data})

    def cancelled(self, message: str = "cancelled") -> int:
        self.write({"error": message, "cancelled": True})
        return EXIT_CANCELLED

    def failure(self, exc: BaseException) -> int:
        """Write the last line for a job that ended with ``exc``; return its exit status.

        An unexpected exception (not the engine's) is logged with its traceback.
        """
        if isinstance(exc, Cancelled):
            return self.cancelled()
        exc = refused_write(exc) or exc  # a full disk or a read-only folder: one sentence
        if isinstance(exc, QuantError):
            self.write({"error": str(exc), "kind": type(exc).__name__})
        else:
            logger.error("job failed", exc_info=exc)
            self.write({"error": f"Unexpected error: {exc}", "kind": "internal"})
        return exit_status(exc)

    def run(self, job: Callable[[], Any]) -> int:
        """Run ``job`` and write its result, or its failure, as the last line.

        A process boundary: every exception ends as a line and an exit status.
        """
        try:
            result = job()
        except Exception as exc:
            return self.failure(exc)
        self.result(result)
        return EXIT_OK

    @contextlib.contextmanager
    def forwarding_logs(self, level: int = logging.INFO) -> Iterator[None]:
        """Send log records at ``level`` and above as ``{"log": …}`` lines while inside.

        Console handlers already installed keep showing what they showed before.
        """
        handler = _LogLines(self, level)
        root = logging.getLogger()
        for h in root.handlers:
            if h.level == logging.NOTSET:
                h.setLevel(root.level)
        root.addHandler(handler)
        root.setLevel(min(root.level or logging.WARNING, level))
        try:
            yield
        finally:
            root.removeHandler(handler)


class _LogLines(logging.Handler):
    def __init__(self, lines: JsonLines, level: int) -> None:
        super().__init__(level)
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info and record.levelno >= logging.ERROR:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            self._lines.write(
                {"log": {"level": record.levelname, "logger": record.name, "message": msg}}
            )
        except Exception:  # logging must never end a job
            self.handleError(record)


# --------------------------------------------------------------------------- documents


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return [_finite(v) for v in value]
    return value


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """``data`` as strict JSON: non-finite numbers become null, other objects their str()."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False, default=str)


def write_json(data: Any, stream: TextIO | None = None, *, indent: int | None = 2) -> None:
    """Print ``data`` as one strict JSON document and a newline (``--json`` output)."""
    out = stream or sys.stdout
    out.write(json_text(data, indent=indent) + "\n")
