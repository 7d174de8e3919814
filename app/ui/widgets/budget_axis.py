"""A size axis for choosing a budget: the range a mix can take, the stock types on it.

The Convert page's size-budget mode shows where llama.cpp's stock types would
fall for the chosen model and lets the user put the budget anywhere between the
smallest and the largest mix: drag or click the axis, or use the arrow keys
(Page Up/Down for bigger steps). ``budget_changed`` carries the budget in bytes.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.core.convert_preview import BudgetAxis
from app.ui.theme import current_theme
from quant.units import human_bytes

_PAD_X = 14.0
_TRACK_Y = 58.0
_LABEL_ROWS = 4


class BudgetAxisWidget(QWidget):
    """The axis, the stock types' marks and the budget handle."""

    budget_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("budgetAxis")
        self._axis: BudgetAxis | None = None
        self._budget = 0
        self.setMinimumHeight(108)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(False)

    # -- values -----------------------------------------------------------------------

    def set_axis(self, axis: BudgetAxis | None) -> None:
        self._axis = axis
        if axis is not None and self._budget:
            self._budget = min(axis.max_bytes, max(axis.min_bytes, self._budget))
        self.update()

    def axis(self) -> BudgetAxis | None:
        return self._axis

    def set_budget(self, n_bytes: int, *, emit: bool = False) -> None:
        if self._axis is not None:
            n_bytes = min(self._axis.max_bytes, max(self._axis.min_bytes, n_bytes))
        changed = n_bytes != self._budget
        self._budget = int(n_bytes)
        self.update()
        if changed and emit:
            self.budget_changed.emit(self._budget)

    def budget(self) -> int:
        return self._budget

    def sizeHint(self) -> QSize:
        return QSize(520, 108)

    # -- geometry ------------------------------------------------------------------------

    def _x(self, n_bytes: float) -> float:
        a = self._axis
        if a is None or a.max_bytes <= a.min_bytes:
            return _PAD_X
        frac = (n_bytes - a.min_bytes) / (a.max_bytes - a.min_bytes)
        return _PAD_X + frac * (self.width() - 2 * _PAD_X)

    def _bytes_at(self, x: float) -> int:
        a = self._axis
        if a is None:
            return 0
        frac = (x - _PAD_X) / max(1.0, self.width() - 2 * _PAD_X)
        frac = min(1.0, max(0.0, frac))
        return int(a.min_bytes + frac * (a.max_bytes - a.min_bytes))

    # -- input -----------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._axis is not None and event.button() == Qt.MouseButton.LeftButton:
            self.set_budget(self._bytes_at(event.position().x()), emit=True)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._axis is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self.set_budget(self._bytes_at(event.position().x()), emit=True)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        a = self._axis
        if a is None:
            super().keyPressEvent(event)
            return
        span = a.max_bytes - a.min_bytes
        steps = {
            Qt.Key.Key_Left: -span // 200,
            Qt.Key.Key_Right: span // 200,
            Qt.Key.Key_PageDown: -span // 20,
            Qt.Key.Key_PageUp: span // 20,
        }
        step = steps.get(Qt.Key(event.key()))
        if step is None:
            super().keyPressEvent(event)
            return
        self.set_budget(self._budget + step, emit=True)

    # -- painting ---------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        t = current_theme()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        a = self._axis
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        p.setFont(small)
        fm = p.fontMetrics()
        track = QRectF(_PAD_X, _TRACK_Y - 3, self.width() - 2 * _PAD_X, 6)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(t.bar_track))
        p.drawRoundedRect(track, 3, 3)
        if a is None:
            p.setPen(QColor(t.text_muted))
            p.drawText(
                QRectF(0, 0, self.width(), _TRACK_Y - 8),
                Qt.AlignmentFlag.AlignCenter,
                "Choose a model to see its sizes",
            )
            p.end()
            return
        # The part of the axis the budget covers.
        if self._budget:
            filled = QRectF(track.x(), track.y(), self._x(self._budget) - track.x(), track.height())
            p.setBrush(QColor(t.accent_soft))
            p.drawRoundedRect(filled, 3, 3)
        # Stock types: a tick on the track and the name above, on one of a few rows so
        # that neighbours do not overwrite each other. The two either side of the budget
        # are named first; a name with no room left keeps only its tick.
        marks = sorted(a.marks, key=lambda m: m.size_bytes)
        below = [m for m in marks if m.size_bytes <= self._budget]
        above = [m for m in marks if m.size_bytes > self._budget]
        sides = {m.name for m in (below[-1:] + above[:1])}
        taken: list[list[tuple[float, float]]] = [[] for _ in range(_LABEL_ROWS)]
        for mark in sorted(marks, key=lambda m: m.name not in sides):
            x = self._x(mark.size_bytes)
            fits = mark.size_bytes <= self._budget
            color = QColor(t.text if fits else t.text_muted)
            p.setPen(QPen(color, 1.2))
            p.drawLine(QPointF(x, _TRACK_Y - 7), QPointF(x, _TRACK_Y + 7))
            w = fm.horizontalAdvance(mark.name)
            left = min(max(0.0, x - w / 2), self.width() - w)
            row = next(
                (
                    r
                    for r in range(_LABEL_ROWS)
                    if all(left + w + 3 < a0 or left > a1 + 3 for a0, a1 in taken[r])
                ),
                None,
            )
            if row is None:
                continue
            taken[row].append((left, left + w))
            y = _TRACK_Y - 10 - row * (fm.height() - 1)
            p.setPen(color)
            p.drawText(QPointF(left, y), mark.name)
        # The scale's ends, below the track.
        p.setPen(QColor(t.text_muted))
        low, high = human_bytes(a.min_bytes), human_bytes(a.max_bytes)
        p.drawText(QPointF(_PAD_X, _TRACK_Y + 22), low)
        p.drawText(QPointF(self.width() - _PAD_X - fm.horizontalAdvance(high), _TRACK_Y + 22), high)
        # The budget handle and its value.
        if self._budget:
            x = self._x(self._budget)
            p.setPen(QPen(QColor(t.surface), 2))
            p.setBrush(QColor(t.accent))
            p.drawEllipse(QPointF(x, _TRACK_Y), 8, 8)
            bold = QFont(small)
            bold.setBold(True)
            p.setFont(bold)
            text = f"{human_bytes(self._budget)} · {a.bpw(self._budget):.2f} bpw"
            w = p.fontMetrics().horizontalAdvance(text)
            left = min(max(0.0, x - w / 2), self.width() - w)
            p.setPen(QColor(t.accent))
            p.drawText(QPointF(left, _TRACK_Y + 38), text)
        p.end()
