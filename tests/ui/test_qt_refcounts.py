"""The Qt binding keeps Python's reference counts straight.

PySide6 6.12.0 drops a reference to ``None`` on every call that returns nothing;
on CPython 3.11 the live chat chart made thousands of such calls a second and
the process aborted ("Fatal Python error: none_dealloc") within seconds of the
first answer. pyproject.toml excludes that release; this test catches a binding
that brings the leak back.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot


class _Emitter(QObject):
    value = Signal(object)


def test_void_calls_and_signals_do_not_leak_references(qtbot: QtBot) -> None:
    label = QLabel()
    qtbot.addWidget(label)
    timer = QTimer()
    emitter = _Emitter()
    emitter.value.connect(lambda _v: None)
    before_none = sys.getrefcount(None)
    before_true = sys.getrefcount(True)
    for _ in range(5000):
        label.setText("x")
        timer.stop()
        emitter.value.emit(None)
        emitter.value.emit(True)
    assert abs(sys.getrefcount(None) - before_none) < 100
    assert abs(sys.getrefcount(True) - before_true) < 100
