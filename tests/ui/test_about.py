"""The About box and the app's name and icon on every window."""

from __future__ import annotations

from typing import Any

import llama_cpp
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

import app
from app.ui.about import AboutDialog, BuildInfo, collect_build_info
from app.ui.main import DESKTOP_FILE_NAME, configure_application
from app.ui.widgets.icons import APP_ICON_SIZES, app_icon
from quant.hardware.profile import RuntimeInfo
from quant.resources import resources_dir


def test_every_window_gets_the_app_icon_and_name(qapp: QApplication) -> None:
    configure_application(qapp)
    assert qapp.applicationDisplayName() == "Quantdesk"
    assert qapp.applicationVersion() == app.__version__
    assert qapp.desktopFileName() == DESKTOP_FILE_NAME
    icon = qapp.windowIcon()
    assert not icon.isNull()
    assert {s.width() for s in icon.availableSizes()} == set(APP_ICON_SIZES)
    # a window that sets no icon of its own shows the application's
    box = QMessageBox()
    dialog = QDialog()
    try:
        for window in (box, dialog):
            assert window.windowIcon().cacheKey() == icon.cacheKey()
    finally:
        box.deleteLater()
        dialog.deleteLater()


def test_app_icon_comes_from_the_resources_folder() -> None:
    folder = resources_dir() / "icons"
    assert folder.is_dir()
    assert not app_icon().isNull()
    assert app_icon().pixmap(48, 48).width() == 48


def test_about_box_shows_version_llama_build_and_backends(
    make_window: Any, qtbot: Any, qapp: QApplication
) -> None:
    configure_application(qapp)
    win = make_window()
    qtbot.mouseClick(win.about_button, Qt.MouseButton.LeftButton)
    dialog = win.about_dialog
    assert isinstance(dialog, AboutDialog)
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    assert dialog.windowTitle() == "About Quantdesk"
    assert dialog.windowModality() == Qt.WindowModality.WindowModal
    assert dialog.version_label.text() == f"Version {app.__version__}"
    # the runtime part comes from the machine page's probe (the fake profile)
    assert dialog.llama_label.text().startswith("llama-cpp-python 0.3.36")
    assert dialog.backends_label.text().startswith("cpu — GPU offload not built in")
    assert dialog.devices_label.text() == "CPU"
    assert not dialog.icon_label.pixmap().isNull()

    dialog.copy_button.click()
    copied = QGuiApplication.clipboard().text()
    assert copied.startswith(f"Quantdesk {app.__version__}\n")
    assert "llama.cpp: llama-cpp-python 0.3.36" in copied
    assert "Backends: cpu (GPU offload: no)" in copied
    assert dialog.copy_button.text() == "Copied"

    # a second click replaces the box instead of stacking another
    win.show_about()
    assert win.about_dialog is not dialog
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5_000)
    win.about_dialog.close()


def test_build_info_asks_the_runtime_without_a_probe() -> None:
    info = collect_build_info()
    assert info.llama_cpp_version == llama_cpp.__version__
    assert info.backends[0] == "cpu"
    assert info.ggml_version  # asked from the loaded ggml library
    assert info.system_info.startswith("CPU :")
    assert info.llama_build.startswith(f"llama-cpp-python {llama_cpp.__version__} · ggml ")
    assert "Python environment" in info.install


def test_build_info_without_a_runtime_says_so() -> None:
    info = collect_build_info(RuntimeInfo(), ())
    assert isinstance(info, BuildInfo)
    assert info.llama_build == "not installed"
    assert info.ggml_version is None
    text = info.as_text()
    assert "llama.cpp: not installed" in text
    assert "Backends: none (GPU offload: no)" in text
    assert "System info: unavailable" in text
