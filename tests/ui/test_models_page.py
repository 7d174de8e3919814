"""The Models page lists the library, shows inspected facts, adds and forgets files,
and reports bad files without going down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.core.library import ModelLibrary
from app.core.settings import Settings
from app.ui.pages.models_page import (
    COL_ARCH,
    COL_CTX,
    COL_FIT,
    COL_NAME,
    COL_QUANT,
    COL_SOURCE,
    ModelsPage,
)
from tests.ui.conftest import message_boxes, write_tiny_gguf


def _page(qtbot: Any, settings: Settings, library: ModelLibrary) -> ModelsPage:
    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    page.reload()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    return page


def _cell(page: ModelsPage, row: int, col: int) -> str:
    return str(page.proxy.index(row, col).data(Qt.ItemDataRole.DisplayRole))


def _row_of(page: ModelsPage, path: Path) -> int:
    for row in range(page.proxy.rowCount()):
        if page.proxy.index(row, 0).data(Qt.ItemDataRole.UserRole + 2) == str(path):
            return row
    raise AssertionError(f"{path} not listed")


def test_first_launch_lists_the_starter_model_with_its_facts(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    # A fresh home: nothing verified yet, so the page locates the starter model itself.
    library = ModelLibrary(settings, external_roots=())
    assert library.cached_starter() is None
    page = _page(qtbot, settings, library)
    assert page.proxy.rowCount() == 1
    row = _row_of(page, starter_model)
    assert _cell(page, row, COL_SOURCE) == "Starter"
    assert _cell(page, row, COL_NAME) == "gemma-3-270m-q4_k_m"
    qtbot.waitUntil(lambda: _cell(page, row, COL_ARCH) == "gemma3", timeout=10_000)
    assert _cell(page, row, COL_QUANT) == "Q4_K_M"
    assert _cell(page, row, COL_CTX) == "32,768"
    # The verified file is remembered, so the next start skips the checksum.
    assert Settings().section("library")["starter"]["path"] == str(starter_model)
    # The first row is selected and its facts are shown.
    qtbot.waitUntil(lambda: page.details_text().get("Architecture") == "gemma3", timeout=10_000)
    assert page.details_text()["Trained context"] == "32,768 tokens"
    assert page.details_text()["Parameters"] == "268M"


def test_adding_a_gguf_shows_its_facts_and_persists(
    qtbot: Any, settings: Settings, library: ModelLibrary, tiny_gguf: Path
) -> None:
    page = _page(qtbot, settings, library)
    with qtbot.waitSignal(page.entries_changed, timeout=10_000):
        page.add_files([tiny_gguf])
    assert page.selected_entry() is not None
    assert page.selected_entry().path == tiny_gguf
    facts = page.details_text()
    assert facts["Architecture"] == "llama"
    assert facts["Layers"] == "2"
    assert facts["Attention heads"] == "4 query · 2 key/value"
    assert facts["Trained context"] == "2,048 tokens"
    row = _row_of(page, tiny_gguf)
    assert _cell(page, row, COL_SOURCE) == "Added"
    assert _cell(page, row, COL_ARCH) == "llama"
    # Another library over the same settings file sees it.
    again = ModelLibrary(Settings(), external_roots=())
    assert tiny_gguf in [e.path for e in again.entries()]


def test_random_bytes_are_refused_with_a_clear_message(
    qtbot: Any, settings: Settings, library: ModelLibrary, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, library)
    bad = tmp_path / "holiday-photo.gguf"
    bad.write_bytes(os.urandom(4096))
    before = page.proxy.rowCount()
    page.add_files([bad])
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=10_000)
    box = message_boxes()[0]
    assert box.text().startswith("holiday-photo.gguf: not a GGUF file")
    assert box.detailedText() == ""  # a known error: no traceback
    assert page.proxy.rowCount() == before
    assert page.isVisible()
    assert str(bad) not in Settings().section("library").get("added", [])


def test_a_truncated_gguf_is_refused(
    qtbot: Any, settings: Settings, library: ModelLibrary, tiny_gguf: Path, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, library)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:300])
    page.add_files([cut])
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=10_000)
    text = message_boxes()[0].text()
    assert "cut.gguf" in text
    assert message_boxes()[0].detailedText() == ""
    assert page.proxy.rowCount() == 1
    assert not page.is_busy()


def test_remove_forgets_but_keeps_the_file(
    qtbot: Any, settings: Settings, library: ModelLibrary, tiny_gguf: Path
) -> None:
    page = _page(qtbot, settings, library)
    with qtbot.waitSignal(page.entries_changed, timeout=10_000):
        page.add_files([tiny_gguf])
    assert page.select_path(tiny_gguf)
    with qtbot.waitSignal(page.entries_changed, timeout=2_000):
        page.remove_button.click()
    assert tiny_gguf not in [e.path for e in page.entries()]
    assert tiny_gguf.exists()
    assert tiny_gguf not in [e.path for e in ModelLibrary(Settings(), external_roots=()).entries()]


def test_chat_with_this_asks_for_the_selected_model(
    qtbot: Any, settings: Settings, library: ModelLibrary
) -> None:
    page = _page(qtbot, settings, library)
    starter = page.entries()[0]
    assert page.select_path(starter.path)
    with qtbot.waitSignal(page.chat_requested, timeout=2_000) as sig:
        page.chat_button.click()
    assert sig.args == [starter.path]


def test_filter_narrows_the_table(
    qtbot: Any, settings: Settings, library: ModelLibrary, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, library)
    path = write_tiny_gguf(tmp_path / "zebra-model.gguf")
    with qtbot.waitSignal(page.entries_changed, timeout=10_000):
        page.add_files([path])
    assert page.proxy.rowCount() == 2
    page.filter_edit.setText("zebra")
    assert page.proxy.rowCount() == 1
    assert _cell(page, 0, COL_NAME) == "zebra-model"
    page.filter_edit.clear()
    assert page.proxy.rowCount() == 2


def test_an_unreadable_listed_file_is_explained_in_the_details(
    qtbot: Any, settings: Settings, library: ModelLibrary, tiny_gguf: Path
) -> None:
    page = _page(qtbot, settings, library)
    with qtbot.waitSignal(page.entries_changed, timeout=10_000):
        page.add_files([tiny_gguf])
    # The file is damaged after it was added: the next listing flags it.
    tiny_gguf.write_bytes(tiny_gguf.read_bytes()[:200])
    page.model._facts.clear()
    page.reload()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=10_000)
    row = _row_of(page, tiny_gguf)
    assert _cell(page, row, COL_ARCH) == "broken"
    assert _cell(page, row, COL_FIT) == "broken"
    page.select_path(tiny_gguf)
    qtbot.waitUntil(lambda: "cannot be used" in page.details_message.text(), timeout=5_000)
    assert "tiny-llama.gguf" in page.details_message.text()


@pytest.fixture
def opened_urls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    opened: list[Any] = []
    monkeypatch.setattr("PySide6.QtGui.QDesktopServices.openUrl", opened.append)
    return opened


def test_show_in_folder_opens_the_models_folder(
    qtbot: Any, settings: Settings, library: ModelLibrary, opened_urls: list[Any]
) -> None:
    page = _page(qtbot, settings, library)
    starter = page.entries()[0]
    assert page.select_path(starter.path)
    page.folder_button.click()
    assert [u.toLocalFile() for u in opened_urls] == [str(starter.path.parent)]


def test_the_spinner_stops_once_the_selected_models_header_is_read(
    qtbot: Any, settings: Settings, library: ModelLibrary
) -> None:
    """The listing ends while the details panel still reads a header: the spinner waits
    for that read, then stops."""
    import threading

    from quant.facts import inspect_model

    release = threading.Event()

    def slow_inspect(path: Path) -> Any:
        assert release.wait(10)
        return inspect_model(path)

    page = ModelsPage(settings, library, inspect_fn=slow_inspect)
    qtbot.addWidget(page)
    page.show()
    page.reload()
    qtbot.waitUntil(lambda: page.proxy.rowCount() == 1 and page.is_busy(), timeout=20_000)
    qtbot.waitUntil(lambda: page._single_inspects != set(), timeout=20_000)
    assert page.spinner.is_spinning()
    release.set()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    qtbot.waitUntil(lambda: "Architecture" in page.details_text(), timeout=10_000)
    assert not page.spinner.is_spinning()
    assert page.refresh_button.isEnabled()
