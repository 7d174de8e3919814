"""The served models: every usable library model under a stable, readable id.

An id is the library's name for the model (file name without ``.gguf``, or
Ollama's ``name:tag``), with characters other than letters, digits and
``._:-/`` turned into ``-``. When two models would share an id, the second gets
its source (``@lm-studio``) and, if that is still taken, a short hash of its
path; the id depends only on the file's path and the library, so a client can
keep using it across restarts. The starter model also answers to ``starter``.
Broken files (truncated, not GGUF) are left out.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.library import ModelLibrary, ModelSource
from app.core.library_index import LibraryIndex, ModelRow, describe_library

logger = logging.getLogger(__name__)

STARTER_ALIAS = "starter"
# A listing older than this is refreshed before it answers.
REFRESH_S = 30.0

_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]+")


@dataclass(frozen=True)
class ServedModel:
    """One model the server offers."""

    id: str
    path: Path
    name: str
    source: str
    size_bytes: int
    architecture: str | None
    context_length: int | None
    has_chat_template: bool | None
    created: int

    def to_openai(self) -> dict[str, Any]:
        """The ``/v1/models`` object; Quantdesk's facts go in the ``quantdesk`` field."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.source,
            "quantdesk": {
                "path": str(self.path),
                "name": self.name,
                "size_bytes": self.size_bytes,
                "architecture": self.architecture,
                "context_length": self.context_length,
                "has_chat_template": self.has_chat_template,
            },
        }


def slug(name: str) -> str:
    text = _UNSAFE.sub("-", name.strip()).strip("-")
    return text or "model"


def assign_ids(rows: list[ModelRow]) -> list[ServedModel]:
    """Served models for the usable ``rows``, with ids unique among them."""
    taken: set[str] = set()
    out: list[ServedModel] = []
    for row in rows:
        if row.broken is not None:
            continue
        e = row.entry
        base = slug(e.name)
        candidates = [
            base,
            f"{base}@{e.source.value}",
            f"{base}@{hashlib.sha256(str(e.path).encode()).hexdigest()[:8]}",
        ]
        model_id = next((c for c in candidates if c.lower() not in taken), candidates[-1])
        taken.add(model_id.lower())
        try:
            created = int(e.path.stat().st_mtime)
        except OSError:
            created = 0
        out.append(
            ServedModel(
                id=model_id,
                path=e.path,
                name=e.name,
                source=e.source.value,
                size_bytes=e.size_bytes,
                architecture=row.architecture,
                context_length=row.context_length,
                has_chat_template=row.has_chat_template,
                created=created,
            )
        )
    return out


class Catalog:
    """The library as the server lists it; refreshed when stale or when an id is unknown.

    ``lister`` returns the library's rows (tests pass their own); by default the
    app's library is described from its header cache, without a hardware profile.
    Thread-safe.
    """

    def __init__(self, lister: Callable[[], list[ModelRow]] | None = None) -> None:
        self._lister = lister or _default_lister()
        self._lock = threading.Lock()
        self._models: list[ServedModel] = []
        self._at = -1e9

    def models(self, *, refresh: bool = False) -> list[ServedModel]:
        with self._lock:
            if refresh or time.monotonic() - self._at > REFRESH_S:
                self._models = assign_ids(self._lister())
                self._at = time.monotonic()
            return list(self._models)

    def find(self, model_id: str) -> ServedModel | None:
        """The model called ``model_id`` (ids compare without case), or None."""
        for refresh in (False, True):
            models = self.models(refresh=refresh)
            wanted = model_id.strip().lower()
            for m in models:
                if m.id.lower() == wanted:
                    return m
            if wanted == STARTER_ALIAS:
                starter = next((m for m in models if m.source == ModelSource.STARTER.value), None)
                if starter is not None:
                    return starter
        return None


def _default_lister() -> Callable[[], list[ModelRow]]:
    index = LibraryIndex()

    def lister() -> list[ModelRow]:
        library = ModelLibrary()
        starter = library.cached_starter()
        if starter is None:
            try:
                starter = library.locate_starter()
            except Exception as exc:  # the library still lists everything else
                logger.info("starter model unavailable: %s", exc)
        return describe_library(library, None, index=index, starter=starter)

    return lister
