"""API keys Quantdesk keeps: the local server's own, and those of remote endpoints.

They are kept the way huggingface_hub keeps its token, never in the settings:
one JSON file in the config folder, the folder private to the user (0700) and
the file readable and writable by the user only (0600), written whole or not
at all. Keys are never logged; a damaged file reads as empty.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.core.paths import app_paths, private_dir
from quant.atomic import atomic_write_text

logger = logging.getLogger(__name__)

KEYS_FILE = "api-keys.json"
SERVER_KEY = "server"


class KeyFile:
    """Named secrets in one private file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or (app_paths().config_dir / KEYS_FILE)

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("the key file %s is unreadable (%s)", self.path, type(exc).__name__)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, name: str) -> str | None:
        return self._read().get(name) or None

    def set(self, name: str, value: str | None) -> None:
        """Save ``value`` under ``name`` (None or empty removes it)."""
        keys = self._read()
        if value:
            keys[name] = value
        elif name not in keys:
            return
        else:
            del keys[name]
        private_dir(self.path.parent)
        atomic_write_text(self.path, json.dumps(keys, indent=2, sort_keys=True))
        self.path.chmod(0o600)
