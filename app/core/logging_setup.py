"""Log handlers for the entry points: console (warnings) and a rotating file."""

from __future__ import annotations

import logging
import logging.handlers

from app.core.paths import app_paths


def setup_logging(*, verbose: bool = False) -> None:
    root = logging.getLogger()
    if getattr(root, "_quantdesk_configured", False):
        return
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    try:
        log_dir = app_paths().log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(
            log_dir / "quantdesk.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
        fh.setLevel(logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    except OSError as exc:
        root.warning("file logging disabled: %s", exc)
    root._quantdesk_configured = True  # type: ignore[attr-defined]
