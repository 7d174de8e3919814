"""Where Quantdesk keeps its files on a user's machine (platformdirs user dirs).

``QUANTDESK_HOME`` overrides all of them with one folder, which is how tests and
portable installs keep everything in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "Quantdesk"


@dataclass(frozen=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.sqlite3"

    def ensure(self) -> AppPaths:
        """Create the app's folders, private to the user (0700), as huggingface_hub keeps
        its token: settings, chat history and logs are nobody else's business."""
        for d in (self.config_dir, self.data_dir, self.cache_dir, self.log_dir, self.models_dir):
            private_dir(d)
        return self


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (created if missing).

    An existing folder of the user's loses its group and other permissions; one
    that belongs to someone else is left as it is.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.stat()
        if st.st_mode & 0o077 and (not hasattr(os, "getuid") or st.st_uid == os.getuid()):
            path.chmod(st.st_mode & 0o700)
    except OSError:
        pass
    return path


def app_paths() -> AppPaths:
    home = os.environ.get("QUANTDESK_HOME")
    if home:
        root = Path(home)
        return AppPaths(root / "config", root / "data", root / "cache", root / "logs")
    return AppPaths(
        Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
    )
