"""Before Qt starts on Linux: can a window open at all, and if not, what to install.

Qt's X11 platform plugin (``xcb``) needs system libraries that a fresh desktop
does not always have (``libxcb-cursor0``, ``libxcb-icccm4``, ``libxcb-keysyms1``
…). Without them Qt prints a generic "could not load the Qt platform plugin"
page and aborts. :func:`check_gui_platform` finds out first, by asking the
system's dynamic loader for each library the plugin links to, and answers with
one sentence naming the missing libraries and the command that installs them
(Debian/Ubuntu and Fedora), or picks Qt's Wayland plugin when the session is a
Wayland one and that plugin can load.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# System libraries Qt's xcb plugin (libqxcb.so and libQt6XcbQpa) needs, with the
# Debian/Ubuntu and Fedora packages that provide them. Qt's own libraries and the
# ICU data PySide6 ships beside them are not listed.
XCB_LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}
# Qt's Wayland plugin (libqwayland.so) and its client libraries.
WAYLAND_LIBRARIES: dict[str, tuple[str, str]] = {
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
}

EXIT_NO_DISPLAY = 2


@dataclass(frozen=True)
class PlatformCheck:
    """``platform``: the Qt platform to use (None: Qt's own choice); ``problem``: why a
    window cannot open, as one sentence, or None."""

    platform: str | None = None
    problem: str | None = None


def missing_libraries(names: dict[str, tuple[str, str]], bundled: Path | None = None) -> list[str]:
    """The libraries of ``names`` the system's dynamic loader cannot find."""
    missing = []
    for soname in names:
        if bundled is not None and (bundled / soname).exists():
            continue
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def install_hint(missing: list[str], names: dict[str, tuple[str, str]]) -> str:
    debian = sorted({names[s][0] for s in missing})
    fedora = sorted({names[s][1] for s in missing})
    return (
        f"install them with 'sudo apt install {' '.join(debian)}' (Debian, Ubuntu) or "
        f"'sudo dnf install {' '.join(fedora)}' (Fedora), then start Quantdesk again"
    )


def _qt_lib_dir() -> Path | None:
    """The folder with Qt's own libraries inside PySide6 (wheel or bundle)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (root / "Qt" / "lib", root / "lib", root):
        if (candidate / "libQt6Core.so.6").exists():
            return candidate
    return None


def check_gui_platform(environ: dict[str, str] | None = None) -> PlatformCheck:
    """Whether Qt can open a window here; on Linux, what to set or install first."""
    env = dict(os.environ if environ is None else environ)
    if not sys.platform.startswith("linux"):
        return PlatformCheck()
    chosen = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    if chosen and chosen not in ("xcb", "wayland"):
        return PlatformCheck()  # offscreen, vnc, eglfs …: the user knows what they asked for
    bundled = _qt_lib_dir()
    wayland = bool(env.get("WAYLAND_DISPLAY")) and chosen != "xcb"
    if wayland and not missing_libraries(WAYLAND_LIBRARIES, bundled):
        if chosen == "wayland":
            return PlatformCheck()
        x_missing = missing_libraries(XCB_LIBRARIES, bundled) if env.get("DISPLAY") else ["X11"]
        # Prefer X11 (through XWayland) where it works, as Qt does; else Wayland itself.
        return PlatformCheck() if not x_missing else PlatformCheck(platform="wayland")
    if chosen == "wayland":
        missing = missing_libraries(WAYLAND_LIBRARIES, bundled)
        hint = install_hint(missing, WAYLAND_LIBRARIES)
        return PlatformCheck(
            problem=(
                "cannot open a window: Qt's Wayland platform plugin needs system libraries "
                f"that are missing ({', '.join(missing)}); {hint}"
            )
        )
    if not env.get("DISPLAY"):
        return PlatformCheck(
            problem=(
                "cannot open a window: there is no graphical session (DISPLAY and "
                "WAYLAND_DISPLAY are not set); start Quantdesk from the desktop, or use the "
                "command line ('quantdesk --help')"
            )
        )
    missing = missing_libraries(XCB_LIBRARIES, bundled)
    if not missing:
        return PlatformCheck()
    return PlatformCheck(
        problem=(
            "cannot open a window: Qt's X11 (xcb) platform plugin needs system libraries "
            f"that are missing ({', '.join(missing)}); {install_hint(missing, XCB_LIBRARIES)}"
        )
    )
