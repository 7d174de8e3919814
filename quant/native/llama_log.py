"""llama.cpp's log, routed into Python logging and to per-job line observers.

llama.cpp writes its log through one process-wide callback
(``llama_log_set``); by default it goes to stderr. :func:`install` replaces it
with a callback that joins the pieces llama.cpp emits into whole lines, logs
each line on the ``quant.native.llama_log.native`` logger, and hands it to every
active observer. Long jobs use :func:`observe` to turn lines such as
``[  12/ 236] blk.0.attn_q.weight ...`` into progress, and to capture the
sentence llama.cpp gives when a call fails.

The callback never raises: an exception escaping into C would abort the
process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)
native_logger = logging.getLogger(f"{__name__}.native")

# enum ggml_log_level in ggml/include/ggml.h: NONE, DEBUG, INFO, WARN, ERROR, CONT.
_LEVELS = {
    0: logging.DEBUG,  # LLAMA_LOG: unlevelled progress output
    1: logging.DEBUG,
    # llama.cpp's INFO is chatty (a line per tensor, per key); keep it out of the log file.
    2: logging.DEBUG,
    3: logging.WARNING,
    4: logging.ERROR,
}
_CONT = 5

# Warnings llama.cpp prints for normal situations; logged at INFO so that a console
# showing warnings is not flooded (a model with 640-wide rows gets one per tensor).
_ROUTINE_WARNINGS = (
    "falling back to",  # rows not divisible by the block size (src/llama-quant.cpp)
    "required fallback quantization",
    "using full-size SWA cache",
    "control-looking token",
)

LineObserver = Callable[[int, str], None]
"""Called with (Python logging level, line without its newline)."""


class _State:
    def __init__(self) -> None:
        self.partial: list[str] = []
        self.level = logging.DEBUG
        self.callback: Any = None  # the ctypes callback object; must stay referenced


_lock = threading.RLock()
_observers: list[LineObserver] = []
_st = _State()


def _emit(level: int, line: str) -> None:
    if level == logging.WARNING and any(s in line for s in _ROUTINE_WARNINGS):
        level = logging.INFO
    if native_logger.isEnabledFor(level):
        native_logger.log(level, "%s", line)
    for fn in list(_observers):
        try:
            fn(level, line)
        except Exception:  # an observer bug must not reach C
            logger.exception("llama.cpp log observer failed")


def _on_log(level: int, text: bytes | None, _user_data: object) -> None:
    try:
        if not text:
            return
        piece = text.decode("utf-8", "replace")
        with _lock:
            if level != _CONT:
                py_level = _LEVELS.get(level, logging.DEBUG)
                # A new message at a higher level starts a new line (llama.cpp
                # sometimes omits the newline before an error).
                if _st.partial and py_level > _st.level:
                    _emit(_st.level, "".join(_st.partial))
                    _st.partial.clear()
                _st.level = max(_st.level, py_level) if _st.partial else py_level
            _st.partial.append(piece)
            joined = "".join(_st.partial)
            if "\n" not in joined:
                return
            *lines, rest = joined.split("\n")
            _st.partial.clear()
            if rest:
                _st.partial.append(rest)
            for line in lines:
                if line.strip():
                    _emit(_st.level, line.rstrip())
    except Exception:  # never let an exception reach llama.cpp
        with contextlib.suppress(Exception):
            logger.exception("llama.cpp log callback failed")


def install() -> None:
    """Route llama.cpp's log through Python logging (idempotent, process-wide)."""
    with _lock:
        if _st.callback is not None:
            return
        import llama_cpp

        _st.callback = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(_st.callback, ctypes.c_void_p(0))


def flush() -> None:
    """Emit a trailing line that llama.cpp left without a newline."""
    with _lock:
        if _st.partial:
            line = "".join(_st.partial).rstrip()
            _st.partial.clear()
            if line.strip():
                _emit(_st.level, line)


@contextlib.contextmanager
def observe(fn: LineObserver) -> Iterator[None]:
    """Call ``fn(level, line)`` for every llama.cpp log line while the block runs."""
    install()
    with _lock:
        _observers.append(fn)
    try:
        yield
    finally:
        flush()
        with _lock, contextlib.suppress(ValueError):
            _observers.remove(fn)


class LineCollector:
    """An observer that keeps the warning and error lines of one call."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, level: int, line: str) -> None:
        if level >= logging.WARNING:
            self.problems.append(line.strip(" =\n"))

    def reason(self) -> str:
        """The most telling error line, for a user message ('' when none)."""
        for line in reversed(self.problems):
            if "failed to quantize:" in line:
                return line.split("failed to quantize:", 1)[1].strip()
        meaningful = [p for p in self.problems if p and set(p) != {"="}]
        return meaningful[-1] if meaningful else ""
