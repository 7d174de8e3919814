"""The main window: opens, switches pages, remembers geometry, takes dropped files,
reports errors, and starts and quits as ``python -m app``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox, QWidget

from app.core.errors import ModelLoadError
from app.core.settings import Settings
from app.ui.errors import show_error
from app.ui.main_window import MainWindow, UnavailablePage
from quant.errors import Cancelled, ModelFormatError
from tests.ui.conftest import close_message_boxes, write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]


def test_window_opens_with_machine_and_models_filled(make_window: Any) -> None:
    win = make_window()
    assert win.isVisible()
    assert win.windowTitle() == "Quantdesk"
    assert win.current_page_key() == "machine"
    assert win.machine_page.summary()["cpu"] == "Testium 9000 Hexacore"
    assert "16.0 GiB RAM" in win._machine_label.text()
    assert [e.source.value for e in win.models_page.entries()] == ["starter"]
    assert win._library_label.text() == "1 model in the library"


def test_sidebar_switches_pages(make_window: Any, qtbot: Any) -> None:
    win = make_window()
    keys = win.page_keys()
    assert keys[:4] == ["machine", "models", "advisor", "chat"]
    for row, key in enumerate(keys):
        win.nav.setCurrentRow(row)
        assert win.current_page_key() == key
        holder = win.stack.currentWidget()
        assert holder.objectName() == f"holder_{key}"
        assert win.page(key).parent() is holder
        assert win.page(key).isVisible()
    assert win.page("models") is win.models_page


def test_geometry_and_last_page_are_restored(make_window: Any, settings: Settings) -> None:
    win = make_window()
    win.resize(760, 580)
    win.switch_to("models")
    win.close()

    again = make_window(settings=Settings())  # a fresh read of the settings file
    assert (again.width(), again.height()) == (760, 580)
    assert again.current_page_key() == "models"
    assert again.stack.currentWidget().objectName() == "holder_models"


def test_dropping_a_gguf_file_adds_it(make_window: Any, qtbot: Any, tmp_path: Path) -> None:
    win = make_window()
    path = write_tiny_gguf(tmp_path / "dropped.gguf")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(40, 40),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    win.dropEvent(event)
    assert win.current_page_key() == "models"
    qtbot.waitUntil(lambda: any(e.path == path for e in win.models_page.entries()), timeout=10_000)
    assert win._library_label.text() == "2 models in the library"


def test_chat_page_explains_a_missing_runtime(
    make_window: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.core.runtime.import_llama_first", lambda: None)
    win = make_window()
    page = win.switch_to("chat")
    assert isinstance(page, UnavailablePage)
    assert "llama_cpp failed to import" in page.message
    assert "pip install" in page.message


def test_chat_with_this_opens_the_model_on_the_chat_page(
    make_window: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []

    class RecordingChat(QWidget):
        def open_model(self, path: Path) -> None:
            opened.append(path)

    monkeypatch.setattr(MainWindow, "_make_chat_page", lambda self: RecordingChat())
    win = make_window()
    win.switch_to("models")
    models = win.models_page
    starter = models.entries()[0]
    assert models.select_path(starter.path)
    models.chat_button.click()
    assert win.current_page_key() == "chat"
    assert opened == [starter.path]


@pytest.mark.slow
def test_chat_with_this_loads_the_starter_model_for_chat(make_window: Any, qtbot: Any) -> None:
    from app.ui.pages.chat_page import ChatPage

    win = make_window()
    win.switch_to("models")
    starter = win.models_page.entries()[0]
    assert win.models_page.select_path(starter.path)
    page = win.page("chat")
    assert isinstance(page, ChatPage)
    with qtbot.waitSignal(page.model_loaded, timeout=120_000) as loaded:
        win.models_page.chat_button.click()
    assert win.current_page_key() == "chat"
    assert Path(loaded.args[0].path) == starter.path


def test_show_error_words(qtbot: Any) -> None:
    parent = QWidget()
    qtbot.addWidget(parent)
    box = show_error(parent, ModelFormatError("x.gguf: not a GGUF file (magic b'abcd')"))
    assert box is not None
    assert box.text() == "x.gguf: not a GGUF file (magic b'abcd')"
    assert box.icon() == QMessageBox.Icon.Warning
    assert box.detailedText() == ""
    box.close()

    box = show_error(parent, ModelLoadError("not enough memory; try Q4_K_M"))
    assert box is not None and box.text().startswith("Not enough memory")
    box.close()

    try:
        {}["missing"]
    except KeyError as exc:
        box = show_error(parent, exc)
    assert box is not None
    assert box.text() == "Unexpected error"
    assert "KeyError" in box.informativeText()
    assert "Traceback" in box.detailedText()
    box.close()

    assert show_error(parent, Cancelled("stopped")) is None
    close_message_boxes()


def test_python_m_app_starts_offscreen_and_quits(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QUANTDESK_HOME=str(tmp_path / "home"),
        QUANTDESK_QUIT_AFTER_MS="300",
        QUANTDESK_REPORT_STARTUP="1",
    )
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "app"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = [ln for ln in proc.stdout.splitlines() if ln.startswith("window-shown ")]
    assert len(shown) == 1
    assert float(shown[0].split()[1]) >= started
    # The window's state was saved when it closed.
    saved = Settings(tmp_path / "home" / "config" / "settings.json")
    assert saved.section("window").get("geometry")


def test_drag_enter_accepts_files_only(make_window: Any) -> None:
    from PySide6.QtGui import QDragEnterEvent

    win = make_window()
    files = QMimeData()
    files.setUrls([QUrl.fromLocalFile("/tmp/a.gguf")])
    ev = QDragEnterEvent(
        QPoint(5, 5),
        Qt.DropAction.CopyAction,
        files,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    win.dragEnterEvent(ev)
    assert ev.isAccepted()
    text = QMimeData()
    text.setText("hello")
    ev = QDragEnterEvent(
        QPoint(5, 5),
        Qt.DropAction.CopyAction,
        text,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    win.dragEnterEvent(ev)
    assert not ev.isAccepted()
