"""Before Qt starts on Linux, a missing X11 library is one sentence with the install command."""

from __future__ import annotations

import ctypes
import sys

import pytest

from app.core import platform_check
from app.core.platform_check import check_gui_platform

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def loader(missing: set[str]) -> object:
    real = ctypes.CDLL

    def fake(name: str, *args: object, **kwargs: object) -> object:
        if name in missing:
            raise OSError(f"{name}: cannot open shared object file")
        try:
            return real(name, *args, **kwargs)  # type: ignore[arg-type]
        except OSError:
            return object()  # every other library is present in this simulated desktop

    return fake


def test_missing_xcb_libraries_are_named_with_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        platform_check.ctypes, "CDLL", loader({"libxcb-cursor.so.0", "libxcb-icccm.so.4"})
    )
    result = check_gui_platform({"DISPLAY": ":0"})
    assert result.problem is not None
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4" in result.problem
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4" in result.problem
    assert "sudo dnf install xcb-util-cursor xcb-util-wm" in result.problem
    assert "\n" not in result.problem


def test_a_complete_desktop_starts_as_qt_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_check.ctypes, "CDLL", loader(set()))
    assert check_gui_platform({"DISPLAY": ":0"}) == platform_check.PlatformCheck()


def test_a_wayland_session_falls_back_to_wayland(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_check.ctypes, "CDLL", loader({"libxcb-keysyms.so.1"}))
    result = check_gui_platform({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})
    assert result.platform == "wayland" and result.problem is None


def test_no_graphical_session_and_explicit_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_check.ctypes, "CDLL", loader(set()))
    problem = check_gui_platform({}).problem
    assert problem is not None and "no graphical session" in problem
    assert check_gui_platform({"QT_QPA_PLATFORM": "offscreen"}).problem is None


def test_the_gui_entry_point_exits_2_with_the_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.ui.main import run_gui

    monkeypatch.setattr(platform_check.ctypes, "CDLL", loader({"libxcb-keysyms.so.1"}))
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert run_gui([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libxcb-keysyms1" in err[0]
