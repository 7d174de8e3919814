"""Settings, chat history, logs and caches are the user's own: folders 0700, files 0600."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from app.core.history import History
from app.core.paths import app_paths
from app.core.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_apps_files_are_private(quantdesk_home: Path) -> None:
    from app.core import logging_setup

    root = logging.getLogger()
    had = list(root.handlers)
    try:
        logging_setup.setup_logging()
        logging.getLogger("quantdesk.test").warning("a line for the log file")
    finally:
        for h in root.handlers[:]:
            if h not in had:
                root.removeHandler(h)
                h.close()
        root._quantdesk_configured = False  # type: ignore[attr-defined]
    paths = app_paths()
    settings = Settings()
    settings.set("x", 1)
    settings.save()
    history = History()
    history.close()
    for folder in (paths.config_dir, paths.data_dir, paths.cache_dir, paths.log_dir):
        assert mode(folder) == 0o700, folder
    for file in (paths.settings_file, paths.history_db, paths.log_dir / "quantdesk.log"):
        assert mode(file) & 0o077 == 0, file
