"""The one way the GUI tells a user that something went wrong.

Expected failures (:class:`quant.errors.QuantError`, :class:`app.core.errors.AppError`)
carry a sentence written for people: it is shown as is. Anything else is a bug and
shows as "Unexpected error" with the traceback folded under "Show Details…".
A cancelled job is not an error and shows nothing.
"""

from __future__ import annotations

import logging
import traceback

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from app.core.errors import AppError
from quant.errors import Cancelled, QuantError

logger = logging.getLogger(__name__)


def describe(exc: BaseException) -> tuple[str, str, str]:
    """``(title, text, details)`` for ``exc``; ``details`` is empty for expected errors."""
    if isinstance(exc, QuantError | AppError):
        text = str(exc).strip() or type(exc).__name__
        first = text.split(maxsplit=1)[0]
        if first.isalpha() and first.islower():  # a sentence, not a file name
            text = text[:1].upper() + text[1:]
        return "Quantdesk", text, ""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "Unexpected error", text, details


def show_error(parent: QWidget | None, exc: BaseException) -> QMessageBox | None:
    """Show ``exc`` in a window-modal message box that does not block the caller.

    Returns the box (already open), or None for :class:`Cancelled`.
    """
    if isinstance(exc, Cancelled):
        return None
    title, text, details = describe(exc)
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
