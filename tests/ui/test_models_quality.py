"""The Models page measures a file's quality in a child process and keeps the card.

A tiny F32 model (a byte vocabulary, so any text tokenizes) and its Q8_0 quantization
are in the library; "Measure quality" on the Q8_0 finds the F32 as its reference,
shows progress, and puts the result in the Quality column, the details and the
store. Cancel stops the child; a file with nothing more precise says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.core.library import ModelLibrary
from app.core.quality import QualityStore
from app.core.settings import Settings
from app.ui.pages import models_page
from app.ui.pages.models_page import COL_QUALITY, ModelsPage
from tests.ggufs import write_tiny_gguf


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    import llama_cpp  # noqa: F401  - before gguf (see app/core/runtime.py)

    from quant.gguf.types import LlamaFileType
    from quant.jobs.quantize import QuantizeOptions, quantize

    f32 = write_tiny_gguf(tmp_path / "tiny-F32.gguf", byte_tokens=True)
    q8 = tmp_path / "tiny-Q8_0.gguf"
    quantize(f32, q8, QuantizeOptions(LlamaFileType.Q8_0))
    return f32, q8


@pytest.fixture
def page(
    qtbot: Any,
    settings: Settings,
    pair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> ModelsPage:
    # Short measurements: two chunks of 64 tokens.
    monkeypatch.setattr(models_page, "QUALITY_CHUNKS", 2)
    monkeypatch.setattr(models_page, "QUALITY_CHUNK_SIZE", 64)
    library = ModelLibrary(settings, external_roots=())
    for p in pair:
        library.add(p)
    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.resize(1200, 760)
    page.show()
    page.reload()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    return page


def _cell(page: ModelsPage, path: Path, col: int) -> str:
    for row in range(page.proxy.rowCount()):
        if page.proxy.index(row, 0).data(Qt.ItemDataRole.UserRole + 2) == str(path):
            return str(page.proxy.index(row, col).data(Qt.ItemDataRole.DisplayRole))
    raise AssertionError(f"{path} not listed")


def test_measure_quality_fills_the_column_the_details_and_the_store(
    qtbot: Any, page: ModelsPage, pair: tuple[Path, Path]
) -> None:
    f32, q8 = pair
    assert _cell(page, q8, COL_QUALITY) == "—"
    assert page.select_path(q8)
    seen: list[int] = []
    page.quality_bar.valueChanged.connect(seen.append)
    qtbot.mouseClick(page.quality_button, Qt.MouseButton.LeftButton)
    assert page.is_measuring() and not page.quality_button.isEnabled()
    assert page.quality_panel.isVisible() and page.quality_cancel.isVisible()
    qtbot.waitUntil(lambda: not page.is_measuring(), timeout=120_000)
    assert page.quality_title.text() == f"Measured {q8.name}", page.quality_status.text()
    assert seen and max(seen) > 500  # the reference's pass, then the file's
    assert _cell(page, q8, COL_QUALITY).startswith("KLD ")
    card = QualityStore().for_file(q8)
    assert card is not None and card.reference == f32.name and card.base_type is None
    assert card.tokens == 2 * (64 - 32 - 1)
    assert page.details_text()["Measured quality"].startswith("Measured quality: mean KLD")
    # A second listing reads the card from the store.
    page.reload()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    assert _cell(page, q8, COL_QUALITY).startswith("KLD ")


def test_cancel_stops_the_child_and_keeps_nothing(
    qtbot: Any, page: ModelsPage, pair: tuple[Path, Path]
) -> None:
    _f32, q8 = pair
    page.select_path(q8)
    page.measure_selected()
    qtbot.waitUntil(lambda: page._quality_job is not None, timeout=20_000)
    qtbot.mouseClick(page.quality_cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.is_measuring(), timeout=30_000)
    assert page.quality_title.text().endswith("cancelled") or page.quality_title.text() == (
        f"Measured {q8.name}"  # the tiny job may finish before the signal lands
    )
    if page.quality_title.text().endswith("cancelled"):
        assert QualityStore().for_file(q8) is None
        assert _cell(page, q8, COL_QUALITY) == "—"


def test_the_most_precise_file_has_nothing_to_be_measured_against(
    qtbot: Any, page: ModelsPage, pair: tuple[Path, Path]
) -> None:
    f32, _q8 = pair
    page.select_path(f32)
    page.measure_selected()
    qtbot.waitUntil(lambda: not page.is_measuring(), timeout=60_000)
    assert page.quality_title.text() == f"No measurement of {f32.name}"
    assert "no more precise file of this model" in page.quality_status.text()
    assert page.quality_button.isEnabled()


def test_with_no_reference_here_the_hub_repo_s_file_is_one_click_away(
    qtbot: Any,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core import hub
    from app.core.hub import HubFile, HubRepo
    from app.ui.pages.hub_tab import HubTab
    from quant.hub.listing import RepoFile

    snap = tmp_path / "hf" / "models--someone--tiny-GGUF" / "snapshots" / "abc"
    only = write_tiny_gguf(snap / "tiny-F32.gguf", byte_tokens=True)

    def files(repo_id: str, *, revision: str | None = None) -> HubRepo:
        big = HubFile("tiny-F32-big.gguf", 10**6, "F32", (RepoFile("tiny-F32-big.gguf", 10**6),))
        return HubRepo(repo_id, "abc", None, (big,))

    opened: list[str] = []
    monkeypatch.setattr(hub, "repo_files", files)
    monkeypatch.setattr(HubTab, "open_repo", lambda self, repo_id: opened.append(repo_id))
    library = ModelLibrary(settings, external_roots=())
    library.add(only)
    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.show()
    page.reload()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    page.select_path(only)
    page.measure_selected()
    qtbot.waitUntil(page.quality_get.isVisible, timeout=60_000)
    assert "tiny-F32-big.gguf (F32)" in page.quality_status.text()
    qtbot.mouseClick(page.quality_get, Qt.MouseButton.LeftButton)
    assert opened == ["someone/tiny-GGUF"]
