"""The Hub tab against a fake hub on 127.0.0.1: search, judge files, download, chat.

The repo's files are real (tiny) GGUF files, so the header read over byte ranges,
the advisor's fit badges, the checksum check and the library entry are all real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.download_queue import DownloadQueue, DownloadState
from app.core.library import ModelLibrary, ModelSource
from app.ui.pages.hub_tab import FILE_COL_FIT, FILE_COL_NAME, FILE_COL_TYPE, HubTab
from app.workers.download_manager import DownloadManager
from tests.fakehub import FakeHub, serve_fake_hub
from tests.ui.conftest import (
    H100,
    close_message_boxes,
    make_profile,
    message_boxes,
    write_tiny_gguf,
)

REPO = "acme/tiny-chat-GGUF"
OTHER = "acme/other-model-GGUF"


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, hf_cache) as fake:
        q4 = write_tiny_gguf(tmp_path / "q4.gguf", name="tiny-q4", n_layers=2)
        q8 = write_tiny_gguf(tmp_path / "q8.gguf", name="tiny-q8", n_layers=3)
        fake.repos[REPO] = {
            "tiny-chat-Q4_K_M.gguf": q4.read_bytes(),
            "tiny-chat-Q8_0.gguf": q8.read_bytes(),
            "README.md": b"# tiny chat",
        }
        fake.info[REPO] = {"downloads": 1234, "likes": 56}
        fake.repos[OTHER] = {"other-Q4_0.gguf": q4.read_bytes()}
        fake.info[OTHER] = {"downloads": 10, "likes": 1}
        yield fake


def _tab(qtbot: Any, library: ModelLibrary | None, tmp_path: Path) -> HubTab:
    manager = DownloadManager(DownloadQueue(tmp_path / "queue.json"))
    tab = HubTab(library, manager)
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.set_profile(make_profile())
    return tab


def _search(qtbot: Any, tab: HubTab, text: str) -> None:
    tab.search_edit.setText(text)
    tab.search()
    qtbot.waitUntil(lambda: not tab._searching.is_running(), timeout=10_000)


def _open(qtbot: Any, tab: HubTab, repo: str) -> None:
    row = tab.result_repos().index(repo)
    tab.results.selectRow(row)
    qtbot.waitUntil(lambda: tab._view is not None and not tab._opening.is_running(), timeout=15_000)


def _file_cells(tab: HubTab, col: int) -> list[str]:
    return [tab.files.item(r, col).text() for r in range(tab.files.rowCount())]


def test_search_lists_repos_and_a_repo_lists_files_with_fit_badges(
    qtbot: Any, library: ModelLibrary, hub: FakeHub, tmp_path: Path
) -> None:
    tab = _tab(qtbot, library, tmp_path)
    _search(qtbot, tab, "tiny-chat")
    assert tab.result_repos() == [REPO]
    assert tab.results.item(0, 1).text() == "1.2k"
    _open(qtbot, tab, REPO)
    names = _file_cells(tab, FILE_COL_NAME)
    assert len(names) == 2 and all("tiny-chat" in n for n in names)
    assert names[0].startswith("★ ")  # the advisor's pick comes first
    assert sorted(_file_cells(tab, FILE_COL_TYPE)) == ["Q4_K_M", "Q8_0"]
    # A 16 GiB CPU laptop runs these tiny files on the CPU.
    assert set(_file_cells(tab, FILE_COL_FIT)) == {"CPU only"}
    # Facts came from a header read over byte ranges, never a whole file.
    gets = [r for r in hub.requests if r[0] == "GET" and r[1].endswith(".gguf")]
    assert gets and all(r[2] is not None for r in gets)
    assert tab.download_button.isEnabled()
    assert tab.download_button.text().startswith("Download ")


def test_fit_badges_follow_the_machine(
    qtbot: Any, library: ModelLibrary, hub: FakeHub, tmp_path: Path
) -> None:
    tab = _tab(qtbot, library, tmp_path)
    _search(qtbot, tab, "tiny-chat")
    _open(qtbot, tab, REPO)
    tab.set_profile(make_profile(gpus=(H100,)))
    qtbot.waitUntil(lambda: not tab._opening.is_running() and tab._view is not None, timeout=15_000)
    qtbot.waitUntil(lambda: set(_file_cells(tab, FILE_COL_FIT)) == {"fits on GPU"}, timeout=5_000)


def test_download_lands_in_the_library_and_offers_chat(
    qtbot: Any, library: ModelLibrary, hub: FakeHub, hf_cache: Path, tmp_path: Path
) -> None:
    tab = _tab(qtbot, library, tmp_path)
    _search(qtbot, tab, "tiny-chat")
    _open(qtbot, tab, REPO)
    with qtbot.waitSignal(tab.model_downloaded, timeout=20_000) as downloaded:
        tab.download_selected()
    entry = downloaded.args[0]
    assert entry.source is ModelSource.HUGGINGFACE
    assert hf_cache in entry.path.parents
    assert any(e.path == entry.path for e in library.entries())
    rows = tab.download_rows()
    assert len(rows) == 1
    row = next(iter(rows.values()))
    qtbot.waitUntil(lambda: row.chat_button.isVisibleTo(tab), timeout=5_000)
    assert "in the library" in row.status.text()
    assert tab.download_button.text() == "Downloaded"
    with qtbot.waitSignal(tab.chat_requested, timeout=2_000) as chat:
        row.chat_button.click()
    assert Path(chat.args[0]) == entry.path


def test_pause_keeps_the_bytes_and_resume_finishes(
    qtbot: Any, library: ModelLibrary, hub: FakeHub, hf_cache: Path, tmp_path: Path
) -> None:
    tab = _tab(qtbot, library, tmp_path)
    _search(qtbot, tab, "tiny-chat")
    _open(qtbot, tab, REPO)
    hub.throttle(piece_bytes=4096, pause_s=0.02)
    tab.download_selected()
    manager = tab.manager
    qtbot.waitUntil(
        lambda: any(i.bytes_done > 0 and i.state is DownloadState.RUNNING for i in manager.items()),
        timeout=10_000,
    )
    (item,) = manager.items()
    row = tab.download_rows()[item.id]
    row.pause_button.click()
    qtbot.waitUntil(lambda: not manager.is_busy(), timeout=10_000)
    paused = manager.queue.get(item.id)
    assert paused is not None and paused.state is DownloadState.PAUSED
    assert row.pause_button.text() == "Resume"
    assert "Paused" in row.status.text()
    assert list(hf_cache.rglob("*.incomplete")), "the bytes received so far are kept"
    hub.throttle(piece_bytes=1 << 20, pause_s=0.0)
    with qtbot.waitSignal(tab.model_downloaded, timeout=20_000):
        row.pause_button.click()
    ranges = [r[2] for r in hub.downloads(item.filename)]
    assert ranges[-1] is not None and not ranges[-1].startswith("bytes=0-"), ranges


def test_a_queue_from_an_earlier_run_comes_back_paused(
    qtbot: Any, library: ModelLibrary, hub: FakeHub, tmp_path: Path
) -> None:
    earlier = DownloadQueue(tmp_path / "queue.json")
    item = earlier.add(REPO, "tiny-chat-Q8_0.gguf", size_bytes=1000)
    # The app closed while it was running.
    data = (tmp_path / "queue.json").read_text().replace('"queued"', '"running"')
    (tmp_path / "queue.json").write_text(data)
    tab = _tab(qtbot, library, tmp_path)
    row = tab.download_rows()[item.id]
    assert row.pause_button.text() == "Resume"
    assert "Paused" in row.status.text()
    with qtbot.waitSignal(tab.model_downloaded, timeout=20_000):
        row.pause_button.click()


def test_offline_says_so_and_keeps_working(
    qtbot: Any, library: ModelLibrary, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tab = _tab(qtbot, library, tmp_path)
    tab.show()
    qtbot.waitUntil(lambda: tab.offline is True, timeout=5_000)
    assert tab.banner.isVisibleTo(tab)
    assert "Offline" in tab.banner.text()
    assert not tab.search_button.isEnabled()
    assert not message_boxes()


def test_an_unreachable_hub_is_offline_not_a_traceback(
    qtbot: Any, library: ModelLibrary, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    import huggingface_hub.constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tab = _tab(qtbot, library, tmp_path)
    _search(qtbot, tab, "anything")
    qtbot.waitUntil(lambda: tab.offline is True, timeout=10_000)
    assert "Offline" in tab.banner.text()
    assert tab.result_repos() == []
    assert not message_boxes()
    close_message_boxes()


def test_window_search_download_library_chat(
    qtbot: Any, make_window: Any, hub: FakeHub, hf_cache: Path, starter_model: Path
) -> None:
    """The whole path a user takes: search, pick, download, find it in the library, chat.

    The hub serves the real starter model's bytes, so chat loads and answers.
    """
    from app.ui.pages.models_page import COL_USED, PATH_ROLE

    repo = "google/gemma-3-270m-it-GGUF"
    hub.repos[repo] = {"gemma-3-270m-it-Q4_K_M.gguf": starter_model.read_bytes()}
    win = make_window()
    win.switch_to("models")
    tab = win.models_page.show_hub()
    _search(qtbot, tab, "gemma-3-270m")
    _open(qtbot, tab, repo)
    assert _file_cells(tab, FILE_COL_FIT) == ["CPU only"]
    with qtbot.waitSignal(tab.model_downloaded, timeout=20_000) as downloaded:
        tab.download_selected()
    path = downloaded.args[0].path
    page = win.models_page
    qtbot.waitUntil(lambda: any(e.path == path for e in page.entries()), timeout=15_000)
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=15_000)
    (row,) = tab.download_rows().values()
    chat_page = win.page("chat")
    with qtbot.waitSignal(chat_page.model_loaded, timeout=60_000):
        row.chat_button.click()
    assert win.current_page_key() == "chat"
    # Opening it in chat is remembered in the library.
    proxy = page.proxy
    row_path = page.model.row_of(path).entry.path  # the starter: the same bytes
    cells = [
        proxy.index(r, COL_USED).data()
        for r in range(proxy.rowCount())
        if proxy.index(r, 0).data(PATH_ROLE) == str(row_path)
    ]
    assert cells == ["just now"]


def test_an_advisor_download_joins_the_one_queue(
    qtbot: Any, make_window: Any, hub: FakeHub, hf_cache: Path
) -> None:
    """ "Download this file" on the Advisor goes through the queue the Hub tab shows."""
    from quant.plan.advisor import OptionSource

    win = make_window()
    adv = win.switch_to("advisor")
    adv.set_source(REPO)
    adv.run()
    qtbot.waitUntil(lambda: not adv.is_busy() and bool(adv.options()), timeout=30_000)
    option = next(o for o in adv.options() if o.source is OptionSource.HUB_FILE)
    adv.select_option(option.key)
    hub.throttle(piece_bytes=4096, pause_s=0.02)
    adv.download_selected()
    queue = win.downloads.queue
    qtbot.waitUntil(lambda: any(i.bytes_done > 0 for i in queue.items()), timeout=10_000)
    (item,) = queue.items()
    assert item.repo_id == REPO and item.filename == option.filename
    # Cancel on the Advisor pauses the item in the queue, bytes kept.
    adv.cancel_download()
    qtbot.waitUntil(lambda: not adv.is_downloading(), timeout=10_000)
    assert queue.get(item.id).state is DownloadState.PAUSED
    assert "cancelled" in adv.download_title.text()
    # The Hub tab lists it, and resuming there finishes it; the Advisor sees it done.
    win.switch_to("models")
    tab = win.models_page.show_hub()
    row = tab.download_rows()[item.id]
    assert row.pause_button.text() == "Resume"
    hub.throttle(piece_bytes=1 << 20, pause_s=0.0)
    with qtbot.waitSignal(win.downloads.downloaded, timeout=20_000):
        row.pause_button.click()
    qtbot.waitUntil(lambda: adv.download_button.text() == "Downloaded", timeout=10_000)
