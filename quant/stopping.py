"""What a long job does when it is told to stop: SIGTERM (the GUI's Cancel) or Ctrl-C.

A job may be deep inside llama.cpp (quantizing, collecting an importance matrix)
where Python cannot unwind: a Ctrl-C raised inside a ctypes callback is only
printed ("Exception ignored …") and the job runs on. So the handler does not
unwind: it removes every file the process has half-written
(:func:`quant.atomic.remove_in_flight`), says so in one line — the JSON
cancelled line for a parent reading the job protocol, a sentence on stderr for a
person — and exits at once with status 130. Nothing it does takes a lock or
imports a module, so it is safe wherever the signal lands.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

from quant.atomic import remove_in_flight
from quant.protocol import CANCELLED_LINE, EXIT_CANCELLED

STOPPED_SENTENCE = (
    b"\nquantdesk: stopped; the files it was writing were removed, and finished stages "
    b"are reused when you run the same command again\n"
)


@contextlib.contextmanager
def stop_on_signals(*, json_lines: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT end the process at once, leaving nothing
    half-written. Outside the main thread this does nothing (Python allows handlers there
    only)."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        remove_in_flight(from_signal=True)
        with contextlib.suppress(OSError):
            if json_lines:
                # The leading newline ends a line an interrupted write left half done.
                os.write(1, b"\n" + CANCELLED_LINE)
            else:
                os.write(2, STOPPED_SENTENCE)
        os._exit(EXIT_CANCELLED)

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    except ValueError:  # not the main thread
        previous.clear()
    try:
        yield
    finally:
        for stopped, handler in previous.items():
            signal.signal(stopped, handler)
