"""The app services' exception tree; messages are sentences with a next step."""

from __future__ import annotations


class AppError(Exception):
    """Root of app.core's expected failures."""


class ModelLoadError(AppError):
    """A model could not be loaded (memory, unknown architecture, corrupt file)."""


class HistoryError(AppError):
    """The conversation history could not be read or written."""
