"""The one way the GUI tells a user that something went wrong.

Every failure arrives as an :class:`app.workers.failure.Failure` (an exception
caught here is turned into one). An expected failure (:class:`quant.errors.QuantError`,
:class:`app.core.errors.AppError`, a child job's own error) carries a sentence
written for people: it is shown as is. Anything else is a bug and shows as
"Unexpected error" with the details (a traceback, a child's stderr) folded under
"Show Details…". A cancelled job is not an error and shows nothing.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from app.workers.failure import Failure
from quant.errors import Cancelled

logger = logging.getLogger(__name__)


def as_sentence(text: str) -> str:
    """An engine message shown on its own: its first word capitalised, unless that word is
    a name (a file, a repo id) that must be shown as it is."""
    text = text.strip()
    first = text.split(maxsplit=1)[0] if text else ""
    if first.isalpha() and first.islower():
        return text[:1].upper() + text[1:]
    return text


def describe(what: Failure | BaseException) -> tuple[str, str, str]:
    """``(title, text, details)`` for a failure; ``details`` is empty for expected ones."""
    failure = what if isinstance(what, Failure) else Failure.from_exception(what)
    if failure.expected:
        return "Quantdesk", as_sentence(failure.message) or failure.kind, ""
    return "Unexpected error", failure.message, failure.details or failure.message


def show_error(parent: QWidget | None, what: Failure | BaseException) -> QMessageBox | None:
    """Show a failure in a window-modal message box that does not block the caller.

    Returns the box (already open), or None for :class:`Cancelled`.
    """
    if isinstance(what, Cancelled):
        return None
    title, text, details = describe(what)
    box = QMessageBox(parent)
    box.setObjectName("errorBox")
    box.setWindowTitle(title)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setTextFormat(Qt.TextFormat.PlainText)
    if details:
        logger.error("unexpected error shown to the user: %s", text)
        box.setIcon(QMessageBox.Icon.Critical)
        box.setText("Unexpected error")
        box.setInformativeText(
            f"{text}\n\nThe app is still running. If this keeps happening, please report it "
            "with the details below."
        )
        box.setDetailedText(details)
    else:
        logger.info("error shown to the user: %s", text)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setText(text)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setWindowModality(
        Qt.WindowModality.WindowModal if parent else Qt.WindowModality.ApplicationModal
    )
    box.open()
    return box


def report_failure(owner: QObject | None, failure: Failure) -> None:
    """Background work's default ``on_failed``: a box over the widget that started it."""
    show_error(owner if isinstance(owner, QWidget) else None, failure)
