"""The Server page: start and stop the local server, its URL and key, the live request log,
and remote servers whose models appear in Chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from app.core.secrets import SERVER_KEY, KeyFile
from app.core.settings import Settings
from app.ui.pages.server_page import ServerPage
from app.workers.server_controller import ServerController
from tests.server.conftest import starter_catalog
from tests.ui.conftest import close_message_boxes


def _page(qtbot: Any, tmp_path: Path, starter: Path) -> ServerPage:
    settings = Settings(tmp_path / "settings.json")
    controller = ServerController(
        catalog=starter_catalog(starter, tmp_path / "home"),
        settings=Settings(tmp_path / "chat.json"),
    )
    page = ServerPage(settings, controller=controller, keys=KeyFile(tmp_path / "keys.json"))
    qtbot.addWidget(page)
    page.port_spin.setValue(_free_port())
    return page


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_public_address_needs_a_key(qtbot: Any, tmp_path: Path, starter_model: Path) -> None:
    page = _page(qtbot, tmp_path, starter_model)
    page.host_combo.setCurrentText("0.0.0.0")
    page.key_edit.setText("")
    assert "needs an API key" in page.hint.text()
    page.toggle_server()
    qtbot.waitUntil(lambda: bool(QApplication.topLevelWidgets()) and not page.controller.busy)
    assert not page.controller.running
    close_message_boxes()
    page.generate_key()
    assert page.key_edit.text().startswith("qd-")
    assert "every request must send the API key" in page.hint.text()


@pytest.mark.slow
def test_serving_shows_the_url_and_logs_requests(
    qtbot: Any, tmp_path: Path, starter_model: Path
) -> None:
    import openai

    page = _page(qtbot, tmp_path, starter_model)
    page.generate_key()
    key = page.key_edit.text()
    page.toggle_server()
    qtbot.waitUntil(lambda: page.controller.running and not page.controller.busy, timeout=20_000)
    url = page.url_edit.text()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert page.state_label.text().startswith("On")
    assert KeyFile(tmp_path / "keys.json").get(SERVER_KEY) == key
    page.copy_button.click()
    assert QApplication.clipboard().text() == url

    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    model = client.models.list().data[0].id
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    qtbot.waitUntil(lambda: page.log_table.rowCount() == 1, timeout=20_000)
    row = page.log_rows()[0]
    assert row[1] == model and row[3] == "200"
    assert row[6] != "—"  # generation tokens/s, measured
    page.refresh_models()
    assert page.models_table.rowCount() == 1
    assert page.models_table.item(0, 2).text().endswith("MiB")  # type: ignore[union-attr]

    page.toggle_server()
    qtbot.waitUntil(
        lambda: not page.controller.running and not page.controller.busy, timeout=20_000
    )
    assert page.state_label.text() == "Off"


def test_remote_servers_are_listed_and_removed(
    qtbot: Any, tmp_path: Path, starter_model: Path
) -> None:
    page = _page(qtbot, tmp_path, starter_model)
    remote = page.add_remote("gpu", "http://127.0.0.1:9/v1", "sk-secret")
    assert remote is not None and remote.has_key
    assert page.remote_table.rowCount() == 1
    assert page.remote_table.item(0, 2).text() == "saved"  # type: ignore[union-attr]
    qtbot.waitUntil(
        lambda: "unreachable" in (page.remote_table.item(0, 3).text()),  # type: ignore[union-attr]
        timeout=20_000,
    )
    page.remote_table.selectRow(0)
    page._remove_selected_remote()
    assert page.remote_table.rowCount() == 0
