"""The app's look: a light and a dark palette that follow the system, and one style sheet.

Colours live in :class:`Theme`; widgets that paint themselves (bars, chips, charts)
read :func:`current_theme` so they match the palette. ``QUANTDESK_THEME=light|dark``
or the ``theme`` setting (``"system"``, ``"light"``, ``"dark"``) overrides the system.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from quant.plan.advisor import Fit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Theme:
    dark: bool
    window: str
    surface: str  # cards, tables
    surface_alt: str  # alternate rows, inputs
    sidebar: str
    border: str
    text: str
    text_muted: str
    accent: str
    accent_text: str
    accent_soft: str  # selection and chip backgrounds
    good: str
    warn: str
    bad: str
    bar_track: str

    def qcolor(self, name: str) -> QColor:
        return QColor(getattr(self, name))


LIGHT = Theme(
    dark=False,
    window="#f5f6f8",
    surface="#ffffff",
    surface_alt="#f3f5f8",
    sidebar="#eceff4",
    border="#dfe3ea",
    text="#1c2230",
    text_muted="#5d6677",
    accent="#3563e9",
    accent_text="#ffffff",
    accent_soft="#e3eafd",
    good="#1f9d55",
    warn="#c77c02",
    bad="#d64545",
    bar_track="#e7eaf0",
)

DARK = Theme(
    dark=True,
    window="#1a1d23",
    surface="#22262e",
    surface_alt="#272c35",
    sidebar="#15181d",
    border="#333a46",
    text="#e6e9ef",
    text_muted="#9aa3b2",
    accent="#6f95ff",
    accent_text="#0d1220",
    accent_soft="#2b3550",
    good="#4cc38a",
    warn="#e5a83b",
    bad="#f07171",
    bar_track="#323844",
)


class _Active:
    theme: Theme = LIGHT


def current_theme() -> Theme:
    return _Active.theme


def fit_color(fit: Fit | None) -> str:
    """The colour a fit badge is written in (muted when there is no verdict yet)."""
    t = current_theme()
    if fit is None:
        return t.text_muted
    return {Fit.GPU: t.good, Fit.PARTIAL: t.warn, Fit.CPU: t.text, Fit.TOO_LARGE: t.bad}[fit]


def fit_chip_kind(fit: Fit) -> str:
    """The chip style (:func:`app.ui.widgets.cards.chip`) of a fit badge."""
    return {Fit.GPU: "good", Fit.PARTIAL: "warn", Fit.CPU: "true", Fit.TOO_LARGE: "off"}[fit]


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    try:
        return bool(hints.colorScheme() == Qt.ColorScheme.Dark)
    except AttributeError:  # Qt < 6.5: judge by the platform palette
        return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def choose_theme(preference: str | None = None) -> Theme:
    """``preference`` is ``"light"``, ``"dark"`` or ``"system"``; the env var wins."""
    wanted = (os.environ.get("QUANTDESK_THEME") or preference or "system").lower()
    if wanted == "dark":
        return DARK
    if wanted == "light":
        return LIGHT
    return DARK if system_prefers_dark() else LIGHT


def apply_theme(app: QApplication, theme: Theme) -> None:
    """Set the style, palette, font and style sheet of the whole application."""
    _Active.theme = theme
    app.setStyle("Fusion")
    app.setPalette(_palette(theme))
    font = QFont(app.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    app.setFont(font)
    app.setStyleSheet(style_sheet(theme))


def _palette(t: Theme) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    p.setColor(role.Window, QColor(t.window))
    p.setColor(role.WindowText, QColor(t.text))
    p.setColor(role.Base, QColor(t.surface))
    p.setColor(role.AlternateBase, QColor(t.surface_alt))
    p.setColor(role.Text, QColor(t.text))
    p.setColor(role.Button, QColor(t.surface))
    p.setColor(role.ButtonText, QColor(t.text))
    p.setColor(role.ToolTipBase, QColor(t.surface))
    p.setColor(role.ToolTipText, QColor(t.text))
    p.setColor(role.PlaceholderText, QColor(t.text_muted))
    p.setColor(role.Highlight, QColor(t.accent))
    p.setColor(role.HighlightedText, QColor(t.accent_text))
    p.setColor(role.Link, QColor(t.accent))
    p.setColor(role.Mid, QColor(t.border))
    p.setColor(role.Midlight, QColor(t.border))
    p.setColor(role.Light, QColor(t.surface))
    p.setColor(role.Dark, QColor(t.border))
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, QColor(t.text_muted))
    return p


def style_sheet(t: Theme) -> str:
    return f"""
QWidget {{ color: {t.text}; }}
QMainWindow, QStackedWidget > QWidget#page {{ background: {t.window}; }}
QScrollArea, QScrollArea > QWidget > QWidget#pageBody {{ background: transparent; border: none; }}

QListWidget#sidebar {{
    background: {t.sidebar}; border: none; border-right: 1px solid {t.border};
    padding: 10px 8px; outline: 0;
}}
QListWidget#sidebar::item {{
    padding: 9px 12px; margin: 2px 0; border-radius: 8px; color: {t.text};
}}
QListWidget#sidebar::item:hover {{ background: {t.accent_soft}; }}
QListWidget#sidebar::item:selected {{
    background: {t.accent}; color: {t.accent_text};
}}
QLabel#appTitle {{ font-size: 15pt; font-weight: 700; padding: 14px 14px 4px 16px; }}
QLabel#appSubtitle {{ color: {t.text_muted}; padding: 0 14px 10px 16px; }}
QWidget#sidebarPane {{ background: {t.sidebar}; border-right: 1px solid {t.border}; }}

QLabel#pageTitle {{ font-size: 17pt; font-weight: 700; }}
QLabel#pageSubtitle, QLabel[muted="true"] {{ color: {t.text_muted}; }}
QLabel#sectionTitle {{ font-size: 11pt; font-weight: 650; }}
QLabel#bigNumber {{ font-size: 20pt; font-weight: 700; }}
QLabel#banner {{
    background: {t.accent_soft}; border-radius: 8px; padding: 8px 12px;
}}
QLabel#errorText {{ color: {t.bad}; }}

QFrame#card {{
    background: {t.surface}; border: 1px solid {t.border}; border-radius: 12px;
}}
QLabel[chip="true"] {{
    background: {t.accent_soft}; color: {t.text}; border-radius: 10px;
    padding: 2px 9px; font-size: 9pt;
}}
QLabel[chip="good"] {{
    background: {t.good}; color: {t.surface}; border-radius: 10px; padding: 2px 9px;
    font-size: 9pt; font-weight: 600;
}}
QLabel[chip="warn"] {{
    background: {t.warn}; color: {t.surface}; border-radius: 10px; padding: 2px 9px;
    font-size: 9pt; font-weight: 600;
}}
QLabel[chip="off"] {{
    background: {t.bar_track}; color: {t.text_muted}; border-radius: 10px; padding: 2px 9px;
    font-size: 9pt;
}}

QPushButton {{
    background: {t.surface}; border: 1px solid {t.border}; border-radius: 8px;
    padding: 6px 14px; min-height: 20px;
}}
QPushButton:hover {{ border-color: {t.accent}; }}
QPushButton:pressed {{ background: {t.accent_soft}; }}
QPushButton:disabled {{ color: {t.text_muted}; background: {t.surface_alt}; }}
QPushButton[primary="true"] {{
    background: {t.accent}; color: {t.accent_text}; border: 1px solid {t.accent};
    font-weight: 600;
}}
QPushButton[primary="true"]:disabled {{
    background: {t.bar_track}; color: {t.text_muted}; border-color: {t.border};
}}

QLineEdit, QComboBox, QSpinBox {{
    background: {t.surface}; border: 1px solid {t.border}; border-radius: 8px;
    padding: 5px 8px; min-height: 20px; selection-background-color: {t.accent};
}}
QLineEdit:focus, QComboBox:focus, QSpinBox:focus {{ border-color: {t.accent}; }}
QComboBox::drop-down {{ border: none; width: 22px; }}
QComboBox QAbstractItemView {{
    background: {t.surface}; border: 1px solid {t.border}; selection-background-color:
    {t.accent_soft}; selection-color: {t.text}; outline: 0;
}}

QTableView, QTreeView {{
    background: {t.surface}; alternate-background-color: {t.surface_alt};
    border: 1px solid {t.border}; border-radius: 10px; gridline-color: transparent;
    selection-background-color: {t.accent_soft}; selection-color: {t.text}; outline: 0;
}}
QTableView::item {{ padding: 4px 6px; border: none; }}
QHeaderView {{ background: transparent; }}
QHeaderView::section {{
    background: {t.surface}; color: {t.text_muted}; border: none;
    border-bottom: 1px solid {t.border}; padding: 6px 6px; font-weight: 600;
}}
QTableCornerButton::section {{ background: {t.surface}; border: none; }}

QSplitter::handle {{ background: transparent; }}
QStatusBar {{ background: {t.sidebar}; border-top: 1px solid {t.border}; color: {t.text_muted}; }}
QStatusBar QLabel {{ color: {t.text_muted}; padding: 0 8px; }}
QToolTip {{
    background: {t.surface}; color: {t.text}; border: 1px solid {t.border}; padding: 4px;
}}
QScrollBar:vertical {{ background: transparent; width: 10px; margin: 2px; }}
QScrollBar::handle:vertical {{ background: {t.border}; border-radius: 4px; min-height: 30px; }}
QScrollBar:horizontal {{ background: transparent; height: 10px; margin: 2px; }}
QScrollBar::handle:horizontal {{ background: {t.border}; border-radius: 4px; min-width: 30px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}
"""
