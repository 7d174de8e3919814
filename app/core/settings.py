"""User settings: a versioned JSON file, written atomically.

Kept deliberately small: a dict of plain values with typed accessors. Unknown
keys are preserved so a newer version's settings survive an older version.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from app.core.paths import app_paths
from quant.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SETTINGS_VERSION = 1


class Settings:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or app_paths().settings_file
        self._data: dict[str, Any] = {"version": SETTINGS_VERSION}
        self.load()

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # A corrupt settings file must not keep the app from starting.
            logger.warning("ignoring unreadable settings %s: %s", self.path, exc)
            return
        if isinstance(raw, dict):
            self._data.update(raw)

    def save(self) -> None:
        self._data["version"] = SETTINGS_VERSION
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
