"""The Models page offers the models of remote endpoints to chat with, beside the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.library import ModelLibrary
from app.core.remote import RemoteStore
from app.core.settings import Settings
from tests.server.test_remote_listing import models_server


def test_the_models_page_offers_remote_models_to_chat_with(
    qtbot: Any, settings: Settings, library: ModelLibrary
) -> None:
    from app.ui.pages.models_page import ModelsPage

    with models_server({"data": [{"id": "llama-70b-awq"}]}) as url:
        RemoteStore(settings).add("lab", url)
        page = ModelsPage(settings, library)
        qtbot.addWidget(page)
        page.show()
        page.reload()
        qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    assert page.remote_row.isVisibleTo(page)
    assert page.remote_models() == ["lab:llama-70b-awq"]
    assert url in page.remote_combo.currentText()
    with qtbot.waitSignal(page.chat_requested, timeout=2_000) as asked:
        page.remote_chat_button.click()
    assert asked.args == [Path("lab:llama-70b-awq")]


def test_without_remotes_the_models_page_shows_no_remote_row(
    qtbot: Any, settings: Settings, library: ModelLibrary
) -> None:
    from app.ui.pages.models_page import ModelsPage

    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.show()
    page.reload()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    assert not page.remote_row.isVisibleTo(page)
    assert page.remote_models() == []
