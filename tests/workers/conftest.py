"""Fixtures for the Qt bridge's tests: no background task outlives its test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QObject

from app.workers import tasks


@pytest.fixture(autouse=True)
def _join_tasks(qapp: Any) -> Iterator[None]:
    yield
    assert tasks.wait_all(10_000), "a background task did not stop"
    QCoreApplication.processEvents()


@pytest.fixture
def owner(qapp: Any) -> Iterator[QObject]:
    """A QObject on the GUI thread for tasks to belong to (a page, in the app)."""
    obj = QObject()
    yield obj
    obj.deleteLater()
