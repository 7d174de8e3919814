"""User settings: a versioned JSON file, written atomically.

Kept deliberately small: a dict of plain values with typed accessors. Unknown
keys are preserved so a newer version's settings survive an older version.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from app.core.paths import app_paths, private_dir
from quant.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SETTINGS_VERSION = 1


class Settings:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or app_paths().settings_file
        self._data: dict[str, Any] = {"version": SETTINGS_VERSION}
        # Where an unreadable settings file was moved to, when that happened on load.
        self.recovered_from: Path | None = None
        self.load()

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # A corrupt settings file must not keep the app from starting, nor be lost
            # by the next save: keep it beside the new one for the user to recover.
            self.recovered_from = self._set_aside(exc)
            return
        if isinstance(raw, dict):
            self._data.update(raw)

    def _set_aside(self, exc: Exception) -> Path | None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
        try:
            self.path.replace(aside)
        except OSError as move_exc:
            logger.warning("unreadable settings %s (%s) could not be set aside: %s",
                           self.path, exc, move_exc)  # fmt: skip
            return None
        logger.warning("settings %s were unreadable (%s); kept as %s", self.path, exc, aside.name)
        return aside

    def save(self) -> None:
        self._data["version"] = SETTINGS_VERSION
        private_dir(self.path.parent)
        atomic_write_text(self.path, json.dumps(self._data, indent=2, sort_keys=True))

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def section(self, key: str) -> dict[str, Any]:
        value = self._data.get(key)
        if not isinstance(value, dict):
            value = {}
            self._data[key] = value
        return value
