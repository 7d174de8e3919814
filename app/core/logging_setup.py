"""Log handlers for the entry points: console (warnings) and a rotating file."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

from app.core.paths import app_paths


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files (the current one and each new one) are 0600."""

    def _open(self) -> Any:
        stream = super()._open()
        with contextlib.suppress(OSError):
            Path(self.baseFilename).chmod(0o600)
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(self, "_unwritable", False):
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A log file the disk refuses (full, read-only) is given up quietly: the command
        says what failed in its own sentence, never under a logging traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            self._unwritable = True
            return
        super().handleError(record)


def setup_logging(*, verbose: bool = False) -> None:
    """Start-up of both entry points: the app's private folders, then the log handlers."""
    root = logging.getLogger()
    if getattr(root, "_quantdesk_configured", False):
        return
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    try:
        log_dir = app_paths().ensure().log_dir
        fh = _PrivateRotatingFileHandler(
            log_dir / "quantdesk.log",
            maxBytes=2_000_000,
            backupCount=3,
            encoding="utf-8",
            # A file name that is not valid UTF-8 is logged with escapes, not a traceback.
            errors="backslashreplace",
        )
        fh.setLevel(logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    except OSError as exc:
        root.warning("file logging disabled: %s", exc)
    root._quantdesk_configured = True  # type: ignore[attr-defined]
