"""Line icons drawn as SVG, tinted to the current palette.

Kept in code rather than as files so they ship inside the package. Each icon is a
24×24 stroke drawing in ``currentColor``; :func:`icon` substitutes a colour.
"""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QByteArray, QRectF, QSize, Qt
from PySide6.QtGui import QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

from app.ui.theme import current_theme
from quant.resources import resources_dir

_HEAD = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24" '
    'fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" '
    'stroke-linejoin="round">'
)

_SHAPES: dict[str, str] = {
    # a chip with pins
    "machine": '<rect x="6" y="6" width="12" height="12" rx="2"/><rect x="9.5" y="9.5" '
    'width="5" height="5" rx="1"/><path d="M9 2.5v3M15 2.5v3M9 18.5v3M15 18.5v3M2.5 9h3M2.5 15h3'
    'M18.5 9h3M18.5 15h3"/>',
    # stacked layers
    "models": '<path d="M12 3l9 4.5-9 4.5-9-4.5z"/><path d="M3 12l9 4.5 9-4.5"/>'
    '<path d="M3 16.5l9 4.5 9-4.5"/>',
    # a compass
    "advisor": '<circle cx="12" cy="12" r="9"/><path d="M15.5 8.5l-2 5-5 2 2-5z"/>',
    # a speech bubble
    "chat": '<path d="M4 5.5h16a1.5 1.5 0 0 1 1.5 1.5v9a1.5 1.5 0 0 1-1.5 1.5H10l-4.5 3.5V17.5'
    'H4A1.5 1.5 0 0 1 2.5 16V7A1.5 1.5 0 0 1 4 5.5z"/><path d="M7 10h10M7 13.5h6"/>',
    # two arrows turning one into the other
    "convert": '<path d="M4 8h13l-3.5-3.5"/><path d="M20 16H7l3.5 3.5"/>',
    "refresh": '<path d="M20 11a8 8 0 0 0-14.6-4.5L4 8"/><path d="M4 3.5V8h4.5"/>'
    '<path d="M4 13a8 8 0 0 0 14.6 4.5L20 16"/><path d="M20 20.5V16h-4.5"/>',
    "add": '<path d="M12 5v14M5 12h14"/>',
    "remove": '<path d="M4 7h16M9 7V4.5h6V7M6.5 7l1 13h9l1-13"/>',
    "folder": '<path d="M3 6.5A1.5 1.5 0 0 1 4.5 5H9l2 2.5h8.5A1.5 1.5 0 0 1 21 9v9.5a1.5 1.5 '
    '0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 18.5z"/>',
    "save": '<path d="M12 3v12M7 10l5 5 5-5"/><path d="M4 17v3h16v-3"/>',
    "open": '<path d="M12 15V3M7 8l5-5 5 5"/><path d="M4 17v3h16v-3"/>',
    "play": '<path d="M7 4.5v15l12-7.5z"/>',
    "file": '<path d="M6 2.5h8l4.5 4.5V21.5H6z"/><path d="M14 2.5V7h4.5"/>',
    "gpu": '<rect x="2.5" y="6" width="19" height="11" rx="2"/><circle cx="9" cy="11.5" r="2.8"/>'
    '<path d="M15 9.5h3.5M15 13.5h3.5M5 17v2.5M9 17v2.5M13 17v2.5"/>',
    "memory": '<rect x="2.5" y="7" width="19" height="9" rx="1.5"/><path d="M6 10v3M10 10v3'
    'M14 10v3M18 10v3M5 16v2.5M19 16v2.5"/>',
    "gauge": '<path d="M4.5 17a8.5 8.5 0 1 1 15 0"/><path d="M12 13l4-4"/>'
    '<circle cx="12" cy="13.5" r="1.2"/>',
    "apple": '<path d="M16.5 12.8c0-2.4 2-3.3 2-3.4-1.1-1.6-2.8-1.8-3.4-1.8-1.5-.2-2.8.8-3.5.8'
    "-.7 0-1.8-.8-3-.8-1.6 0-3 .9-3.8 2.3-1.6 2.8-.4 6.9 1.2 9.1.8 1.1 1.7 2.3 2.9 2.3 1.1 0 "
    '1.6-.7 3-.7s1.8.7 3 .7 2-1.1 2.8-2.2c.9-1.3 1.2-2.5 1.2-2.6 0 0-2.4-.9-2.4-3.7z"/>'
    '<path d="M14.5 5.6c.6-.8 1.1-1.8 1-2.9-.9 0-2 .6-2.7 1.4-.6.7-1.1 1.7-1 2.8 1 .1 2-.5 '
    '2.7-1.3z"/>',
    "runtime": '<path d="M8 6l-5.5 6L8 18M16 6l5.5 6L16 18M13.5 4l-3 16"/>',
    "info": '<circle cx="12" cy="12" r="9"/><path d="M12 11v5.5M12 7.5v.5"/>',
    # two stacked server units
    "server": '<rect x="3.5" y="4" width="17" height="7" rx="1.5"/><rect x="3.5" y="13" '
    'width="17" height="7" rx="1.5"/><path d="M7 7.5h.5M7 16.5h.5M11 7.5h6M11 16.5h6"/>',
}

NAMES = tuple(_SHAPES)


def svg(name: str, color: str) -> str:
    return f"{_HEAD}{_SHAPES[name]}</svg>".replace("currentColor", color)


@lru_cache(maxsize=256)
def _pixmap(name: str, color: str, size: int, ratio: float) -> QPixmap:
    renderer = QSvgRenderer(QByteArray(svg(name, color).encode()))
    px = QPixmap(int(size * ratio), int(size * ratio))
    px.setDevicePixelRatio(ratio)
    px.fill(Qt.GlobalColor.transparent)
    painter = QPainter(px)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return px


def icon(
    name: str,
    color: str | None = None,
    *,
    selected_color: str | None = None,
    size: int = 20,
    ratio: float = 2.0,
) -> QIcon:
    """An icon in ``color`` (default: the theme's text colour); a second colour for
    the selected state, e.g. white on the accent background of a selected sidebar row."""
    t = current_theme()
    ic = QIcon()
    normal = _pixmap(name, color or t.text, size, ratio)
    ic.addPixmap(normal, QIcon.Mode.Normal, QIcon.State.Off)
    ic.addPixmap(_pixmap(name, t.text_muted, size, ratio), QIcon.Mode.Disabled, QIcon.State.Off)
    if selected_color:
        ic.addPixmap(
            _pixmap(name, selected_color, size, ratio), QIcon.Mode.Selected, QIcon.State.Off
        )
    return ic


def icon_size(size: int = 18) -> QSize:
    return QSize(size, size)


#: Pixel sizes of the rendered app icon in ``resources/icons`` (``quantdesk-<N>.png``).
APP_ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


@lru_cache(maxsize=1)
def app_icon() -> QIcon:
    """Quantdesk's own icon in every rendered size (null when the files are missing).

    Set once on the application (``QApplication.setWindowIcon``) so every window and
    dialog carries it.
    """
    folder = resources_dir() / "icons"
    ic = QIcon()
    for size in APP_ICON_SIZES:
        png = folder / f"quantdesk-{size}.png"
        if png.is_file():
            ic.addFile(str(png), QSize(size, size))
    return ic
