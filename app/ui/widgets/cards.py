"""Building blocks of the pages: cards, chips, page headers, key/value grids, usage bars."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.ui.theme import current_theme
from app.ui.widgets.flow_layout import FlowLayout
from app.ui.widgets.icons import icon


class Card(QFrame):
    """A rounded panel with an optional icon and title; add content to :attr:`body`."""

    def __init__(
        self, title: str = "", icon_name: str | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(18, 14, 18, 16)
        outer.setSpacing(10)
        self.title_label: QLabel | None = None
        if title:
            row = QHBoxLayout()
            row.setSpacing(8)
            if icon_name:
                ic = QLabel()
                ic.setPixmap(icon(icon_name, current_theme().accent).pixmap(QSize(20, 20)))
                row.addWidget(ic)
            self.title_label = QLabel(title)
            self.title_label.setObjectName("sectionTitle")
            row.addWidget(self.title_label)
            row.addStretch(1)
            self.header_row = row
            outer.addLayout(row)
        self.body = QVBoxLayout()
        self.body.setSpacing(8)
        outer.addLayout(self.body)


def chip(text: str, kind: str = "true", tooltip: str = "") -> QLabel:
    """A small rounded label.

    ``kind`` is ``"true"`` (neutral), ``"good"``, ``"warn"`` or ``"off"`` (absent feature).
    """
    label = QLabel(text)
    label.setProperty("chip", kind)
    if tooltip:
        label.setToolTip(tooltip)
    return label


class ChipRow(QWidget):
    """Chips that wrap onto several lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.flow = FlowLayout(self, spacing=6)

    def set_chips(self, chips: Iterable[QLabel]) -> None:
        self.flow.clear()
        for c in chips:
            self.flow.addWidget(c)
        self.updateGeometry()

    def texts(self) -> list[str]:
        out = []
        for i in range(self.flow.count()):
            item = self.flow.itemAt(i)
            w = item.widget() if item is not None else None
            if isinstance(w, QLabel):
                out.append(w.text())
        return out


def muted(text: str = "", *, wrap: bool = True) -> QLabel:
    label = QLabel(text)
    label.setProperty("muted", "true")
    label.setWordWrap(wrap)
    return label


class PageHeader(QWidget):
    """A page's title, a one-line explanation and a row of actions.

    The actions sit to the right of the title, or below it when the page is too
    narrow for both on one line, so a small window never cuts them off.
    """

    def __init__(self, title: str, subtitle: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(16)
        self._grid.setVerticalSpacing(2)
        self._grid.setColumnStretch(0, 1)
        self.title = QLabel(title)
        self.title.setObjectName("pageTitle")
        self.subtitle = QLabel(subtitle)
        self.subtitle.setObjectName("pageSubtitle")
        self.subtitle.setWordWrap(True)
        self._grid.addWidget(self.title, 0, 0)
        self._grid.addWidget(self.subtitle, 1, 0)
        self._actions_box = QWidget()
        self.actions_row = QHBoxLayout(self._actions_box)
        self.actions_row.setContentsMargins(0, 0, 0, 0)
        self.actions_row.setSpacing(8)
        self._stacked: bool | None = None
        self._place(stacked=False)

    def add_action(self, widget: QWidget) -> None:
        self.actions_row.addWidget(widget)

    def is_stacked(self) -> bool:
        return bool(self._stacked)

    def _place(self, *, stacked: bool) -> None:
        if stacked == self._stacked:
            return
        self._stacked = stacked
        self._grid.removeWidget(self._actions_box)
        if stacked:
            self._grid.addWidget(self._actions_box, 2, 0, 1, 2, Qt.AlignmentFlag.AlignLeft)
        else:
            self._grid.addWidget(
                self._actions_box,
                0,
                1,
                2,
                1,
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
            )

    def resizeEvent(self, event: QResizeEvent) -> None:
        needed = self.title.sizeHint().width() + 16 + self._actions_box.sizeHint().width()
        self._place(stacked=event.size().width() < needed)
        super().resizeEvent(event)

    def minimumSizeHint(self) -> QSize:
        width = max(
            self.title.minimumSizeHint().width(), self._actions_box.minimumSizeHint().width()
        )
        return QSize(width, super().minimumSizeHint().height())


class KeyValueGrid(QWidget):
    """Two columns: a muted key and a selectable value, one fact per row."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(16)
        self.grid.setVerticalSpacing(6)
        self.grid.setColumnStretch(1, 1)
        self._values: dict[str, QLabel] = {}

    def set_rows(self, rows: Iterable[tuple[str, str]]) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.setParent(None)
                w.deleteLater()
        self._values = {}
        for r in range(self.grid.rowCount()):
            self.grid.setRowStretch(r, 0)
        r = -1
        for r, (key, value) in enumerate(rows):
            k = muted(key, wrap=False)
            k.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            v = QLabel(value)
            v.setWordWrap(True)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.grid.addWidget(k, r, 0)
            self.grid.addWidget(v, r, 1)
            self._values[key] = v
        # Rows keep their natural height; spare space goes below the last one.
        self.grid.setRowStretch(r + 1, 1)

    def value(self, key: str) -> str | None:
        label = self._values.get(key)
        return label.text() if label is not None else None

    def items(self) -> dict[str, str]:
        return {k: v.text() for k, v in self._values.items()}


class UsageBar(QWidget):
    """A horizontal bar showing ``used`` of ``total`` with a label, e.g. VRAM in use."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._fraction = 0.0
        self._color: str | None = None
        self.setMinimumHeight(10)
        self.setMaximumHeight(10)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_fraction(self, fraction: float, color: str | None = None) -> None:
        self._fraction = min(1.0, max(0.0, fraction))
        self._color = color
        self.update()

    def fraction(self) -> float:
        return self._fraction

    def paintEvent(self, event: QPaintEvent) -> None:
        t = current_theme()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect())
        radius = r.height() / 2
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(t.bar_track))
        p.drawRoundedRect(r, radius, radius)
        if self._fraction > 0:
            color = self._color or (
                t.bad if self._fraction > 0.9 else t.warn if self._fraction > 0.75 else t.accent
            )
            fill = QRectF(r.x(), r.y(), max(r.height(), r.width() * self._fraction), r.height())
            p.setBrush(QColor(color))
            p.drawRoundedRect(fill, radius, radius)
        p.end()


class Spinner(QWidget):
    """A small rotating arc shown while work runs off the GUI thread."""

    def __init__(self, parent: QWidget | None = None, size: int = 18) -> None:
        super().__init__(parent)
        self._angle = 0
        self._timer = QTimer(self)
        self._timer.setInterval(40)
        self._timer.timeout.connect(self._tick)
        self.setFixedSize(size, size)
        self.setVisible(False)

    def start(self) -> None:
        self.setVisible(True)
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.setVisible(False)

    def is_spinning(self) -> bool:
        return self._timer.isActive()

    def _tick(self) -> None:
        self._angle = (self._angle + 30) % 360
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pen = QPen(QColor(current_theme().accent), 2.4)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        p.setPen(pen)
        r = QRectF(self.rect()).adjusted(2.5, 2.5, -2.5, -2.5)
        p.drawArc(r, -self._angle * 16, 270 * 16)
        p.end()
