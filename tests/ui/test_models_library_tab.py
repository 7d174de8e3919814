"""The Library tab of the Models page: fit badges for the machine, filters, broken
files, the context menu, watched folders, merged copies, last use, and a Hub tab
that is only built when it is shown."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMenu

import app.ui.pages.models_page as models_page_module
from app.core.library import ModelLibrary
from app.core.settings import Settings
from app.ui.pages.models_page import (
    COL_ARCH,
    COL_FIT,
    COL_NAME,
    COL_QUANT,
    COL_SOURCE,
    COL_USED,
    PATH_ROLE,
    ModelsPage,
)
from quant.hardware.profile import HardwareProfile, MemoryInfo
from tests.ui.conftest import GIB, H100, make_profile, message_boxes, write_tiny_gguf

MIB = 1024**2


# --------------------------------------------------------------------------- machines


def with_memory(profile: HardwareProfile, total: int, available: int) -> HardwareProfile:
    return replace(profile, memory=MemoryInfo(total, available, 0, 0))


def cpu_laptop() -> HardwareProfile:
    """No GPU, plenty of RAM: everything small runs on the CPU."""
    return with_memory(make_profile(), 64 * GIB, 56 * GIB)


def small_ram_machine() -> HardwareProfile:
    """256 MiB free: the starter model (about 430 MiB to run) does not fit, a tiny one does."""
    return with_memory(make_profile(), 1 * GIB, 256 * MIB)


def nvidia_workstation() -> HardwareProfile:
    return make_profile(gpus=(H100,))


# --------------------------------------------------------------------------- helpers


def _idle(qtbot: Any, page: ModelsPage, timeout: int = 15_000) -> None:
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=timeout)


def _page(qtbot: Any, settings: Settings, library: ModelLibrary) -> ModelsPage:
    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    page.reload()
    _idle(qtbot, page)
    return page


def _shown(page: ModelsPage) -> list[Path]:
    """The paths of the rows the table shows, in table order."""
    return [Path(page.proxy.index(r, 0).data(PATH_ROLE)) for r in range(page.proxy.rowCount())]


def _proxy_row(page: ModelsPage, path: Path) -> int | None:
    for r in range(page.proxy.rowCount()):
        if page.proxy.index(r, 0).data(PATH_ROLE) == str(path):
            return r
    return None


def _cell(page: ModelsPage, path: Path, col: int, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    row = _proxy_row(page, path)
    if row is None:
        return None
    return page.proxy.index(row, col).data(role)


def _select(page: ModelsPage, path: Path) -> None:
    assert page.select_path(path), f"{path} is not shown"
    entry = page.selected_entry()
    assert entry is not None
    assert entry.path == path


def _actions(page: ModelsPage) -> dict[str, tuple[Any, bool]]:
    return {label: (action, enabled) for label, action, enabled in page.context_actions()}


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], threading.Event]]:
    """Hold one of the page's worker functions until the returned event is set.

    Stands in for work that takes long on a large library (hashing, many fit badges).
    """
    events: list[threading.Event] = []

    def hold(name: str) -> threading.Event:
        release = threading.Event()
        real = getattr(models_page_module, name)

        def slow(*args: Any, **kwargs: Any) -> Any:
            assert release.wait(10.0), f"{name} was never released"
            return real(*args, **kwargs)

        monkeypatch.setattr(models_page_module, name, slow)
        events.append(release)
        return release

    yield hold
    for release in events:  # a failing test must not leave a worker waiting
        release.set()


def _folder_with_tiny(root: Path, name: str = "zebra") -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return root, write_tiny_gguf(root / f"{name}.gguf", name=name)


# --------------------------------------------------------------------------- 1. fit badges


@pytest.mark.parametrize(
    "machine",
    [
        (cpu_laptop, "CPU only"),
        (small_ram_machine, "too large"),
        (nvidia_workstation, "fits on GPU"),
    ],
    ids=["cpu-laptop", "small-ram", "nvidia-gpu"],
)
def test_fit_badge_follows_the_machine(
    qtbot: Any,
    settings: Settings,
    library: ModelLibrary,
    starter_model: Path,
    machine: tuple[Callable[[], HardwareProfile], str],
) -> None:
    make, label = machine
    page = _page(qtbot, settings, library)
    # Without a machine there is no badge to give.
    assert _cell(page, starter_model, COL_FIT) == "—"

    page.set_profile(make())
    qtbot.waitUntil(lambda: _cell(page, starter_model, COL_FIT) == label, timeout=10_000)
    _idle(qtbot, page)

    tip = _cell(page, starter_model, COL_FIT, Qt.ItemDataRole.ToolTipRole)
    assert tip.startswith(f"Predicted on this machine: {label}, about ")
    assert " tokens/s" in tip
    assert ("of GPU memory" in tip) == (label == "fits on GPU")

    _select(page, starter_model)
    qtbot.waitUntil(lambda: label in page.details_chips.texts(), timeout=10_000)
    on_machine = page.details_text()["On this machine"]
    assert on_machine.startswith(f"{label} · about ")
    assert on_machine.endswith(" tokens/s")


def test_a_gpu_is_predicted_faster_than_the_cpu(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path
) -> None:
    def tokens_per_s() -> float:
        tip = str(_cell(page, starter_model, COL_FIT, Qt.ItemDataRole.ToolTipRole))
        return float(tip.split("about ", 1)[1].split(" tokens/s", 1)[0])

    page = _page(qtbot, settings, library)
    page.set_profile(cpu_laptop())
    qtbot.waitUntil(lambda: _cell(page, starter_model, COL_FIT) == "CPU only", timeout=10_000)
    on_cpu = tokens_per_s()
    page.set_profile(nvidia_workstation())
    qtbot.waitUntil(lambda: _cell(page, starter_model, COL_FIT) == "fits on GPU", timeout=10_000)
    _idle(qtbot, page)
    assert tokens_per_s() > on_cpu > 0


def test_a_profile_given_while_the_library_loads_gets_its_badges(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path
) -> None:
    # What the main window does on start: the probe and the listing run side by side.
    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.show()
    page.reload()
    page.set_profile(cpu_laptop())
    _idle(qtbot, page)
    assert _cell(page, starter_model, COL_FIT) == "CPU only"


def test_late_fit_badges_do_not_undo_a_newer_listing(
    qtbot: Any,
    settings: Settings,
    library: ModelLibrary,
    tmp_path: Path,
    held: Callable[[str], threading.Event],
) -> None:
    page = _page(qtbot, settings, library)
    assert len(_shown(page)) == 1
    release = held("describe_entries")  # the fit badges for a new machine profile
    page.set_profile(cpu_laptop())
    # A model is added meanwhile, and the library is listed again (with badges).
    newcomer = library.add(write_tiny_gguf(tmp_path / "newcomer.gguf", name="newcomer")).path
    page.reload()
    qtbot.waitUntil(lambda: _proxy_row(page, newcomer) is not None, timeout=10_000)
    release.set()
    _idle(qtbot, page)
    assert newcomer in _shown(page)
    assert len(_shown(page)) == 2


# --------------------------------------------------------------------------- 2. filters


def test_source_filter_shows_one_source(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder, in_folder = _folder_with_tiny(tmp_path / "shelf", "shelf-model")
    added = write_tiny_gguf(tmp_path / "picked.gguf", name="picked")
    library.add_folder(folder)
    page = _page(qtbot, settings, library)
    with qtbot.waitSignal(page.entries_changed, timeout=10_000):
        page.add_files([added])
    _idle(qtbot, page)
    assert sorted(_shown(page)) == sorted([starter_model, in_folder, added])

    page.source_combo.setCurrentIndex(page.source_combo.findText("Added"))
    assert _shown(page) == [added]
    assert _cell(page, added, COL_SOURCE) == "Added"

    page.source_combo.setCurrentIndex(page.source_combo.findText("Folder"))
    assert _shown(page) == [in_folder]

    page.source_combo.setCurrentIndex(page.source_combo.findText("Starter"))
    assert _shown(page) == [starter_model]

    page.source_combo.setCurrentIndex(page.source_combo.findText("Ollama"))
    assert _shown(page) == []

    page.source_combo.setCurrentIndex(page.source_combo.findText("All sources"))
    assert len(_shown(page)) == 3


def test_fit_filter_keeps_what_runs_fits_or_is_broken(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder, tiny = _folder_with_tiny(tmp_path / "models", "zebra")
    broken = folder / "noise.gguf"
    broken.write_bytes(os.urandom(4096))
    library.add_folder(folder)
    page = _page(qtbot, settings, library)
    page.set_profile(small_ram_machine())
    qtbot.waitUntil(lambda: _cell(page, tiny, COL_FIT) == "CPU only", timeout=10_000)
    _idle(qtbot, page)
    assert _cell(page, starter_model, COL_FIT) == "too large"
    assert _cell(page, broken, COL_FIT) == "broken"

    def pick(text: str) -> list[Path]:
        page.fit_combo.setCurrentIndex(page.fit_combo.findText(text))
        return _shown(page)

    assert pick("Broken") == [broken]
    assert pick("Runs on this machine") == [tiny]
    assert pick("Too large") == [starter_model]
    assert pick("Fits on the GPU") == []
    assert sorted(pick("Any fit")) == sorted([starter_model, tiny, broken])
    # The filters combine: broken files among the added ones (none).
    page.source_combo.setCurrentIndex(page.source_combo.findText("Added"))
    assert pick("Broken") == []


def test_text_filter_matches_architecture_and_quant_type(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder, tiny = _folder_with_tiny(tmp_path / "shelf", "zebra")
    # Only the header names these words, not the files' names or paths.
    assert "llama" not in str(tiny).lower() and "f32" not in str(tiny).lower()
    assert "llama" not in str(starter_model).lower()
    library.add_folder(folder)
    page = _page(qtbot, settings, library)
    assert _cell(page, tiny, COL_ARCH) == "llama"
    assert _cell(page, tiny, COL_QUANT) == "F32"

    page.filter_edit.setText("llama")
    assert _shown(page) == [tiny]
    page.filter_edit.setText("F32")
    assert _shown(page) == [tiny]
    page.filter_edit.setText("Q4_K_M")
    assert _shown(page) == [starter_model]
    # Every word must match somewhere.
    page.filter_edit.setText("llama f32")
    assert _shown(page) == [tiny]
    page.filter_edit.setText("llama Q4_K_M")
    assert _shown(page) == []
    page.filter_edit.clear()
    assert len(_shown(page)) == 2


# --------------------------------------------------------------------------- 3. broken files


def test_broken_files_in_a_folder_are_listed_with_the_reason(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder, good = _folder_with_tiny(tmp_path / "downloads", "zebra")
    cut = folder / "cut-short.gguf"
    cut.write_bytes(good.read_bytes()[:300])
    noise = folder / "holiday-photo.gguf"
    noise.write_bytes(os.urandom(4096))

    page = _page(qtbot, settings, library)
    page.add_folder(folder)
    qtbot.waitUntil(lambda: _proxy_row(page, noise) is not None, timeout=10_000)
    _idle(qtbot, page)
    assert not message_boxes()  # listing a broken file is not an error
    assert sorted(_shown(page)) == sorted([starter_model, good, cut, noise])
    assert _cell(page, good, COL_ARCH) == "llama"

    reasons = {}
    for path in (cut, noise):
        assert _cell(page, path, COL_FIT) == "broken"
        assert _cell(page, path, COL_ARCH) == "broken"
        assert _cell(page, path, COL_SOURCE) == "Folder"
        _select(page, path)
        entry = page.selected_entry()
        assert entry is not None and entry.broken
        reasons[path] = entry.broken
        assert path.name in entry.broken
        assert _cell(page, path, COL_NAME, Qt.ItemDataRole.ToolTipRole) == entry.broken
        assert not page.chat_button.isEnabled()
        assert not page.advise_button.isEnabled()
        assert not page.convert_button.isEnabled()
        assert page.folder_button.isEnabled() and page.remove_button.isEnabled()
        actions = _actions(page)
        assert [actions[k][1] for k in ("Chat with this", "Advise…", "Convert…")] == [False] * 3
        assert actions["Remove from library"][1]
        assert page.details_message.text() == f"This file cannot be used: {entry.broken}"
        assert page.details_text() == {}
    assert "not a GGUF file" in reasons[noise]
    assert "not a GGUF file" not in reasons[cut]

    # Chat, advise and convert are refused for a broken file even when asked directly.
    _select(page, noise)
    asked: list[Any] = []
    for signal in (page.chat_requested, page.advise_requested, page.convert_requested):
        signal.connect(asked.append)
    page.table.doubleClicked.emit(page.proxy.index(_proxy_row(page, noise) or 0, 0))
    for label in ("Chat with this", "Advise…", "Convert…"):
        _actions(page)[label][0]()
    assert asked == []

    # The good file next to them is unaffected.
    _select(page, good)
    assert page.chat_button.isEnabled()
    qtbot.waitUntil(lambda: page.details_text().get("Architecture") == "llama", timeout=5_000)


# --------------------------------------------------------------------------- 4. context menu


def test_context_actions_ask_for_chat_advice_and_conversion(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path
) -> None:
    page = _page(qtbot, settings, library)
    _select(page, starter_model)
    actions = _actions(page)
    assert list(actions) == [
        "Chat with this",
        "Advise…",
        "Convert…",
        "Show in folder",
        "Remove from library",
    ]
    assert all(enabled for _action, enabled in actions.values())
    for label, signal in (
        ("Chat with this", page.chat_requested),
        ("Advise…", page.advise_requested),
        ("Convert…", page.convert_requested),
    ):
        with qtbot.waitSignal(signal, timeout=2_000) as sig:
            actions[label][0]()
        assert sig.args == [starter_model]


def test_right_click_opens_the_menu_for_the_row_under_the_pointer(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder, tiny = _folder_with_tiny(tmp_path / "shelf", "zebra")
    library.add_folder(folder)
    page = _page(qtbot, settings, library)
    _select(page, starter_model)
    row = _proxy_row(page, tiny)
    assert row is not None
    pos = page.table.visualRect(page.proxy.index(row, COL_NAME)).center()
    page.table.customContextMenuRequested.emit(pos)
    menus = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMenu) and w.isVisible()]
    assert len(menus) == 1
    menu = menus[0]
    try:
        # The row under the pointer becomes the selection the menu acts on.
        selected = page.selected_entry()
        assert selected is not None and selected.path == tiny
        by_text = {a.text(): a for a in menu.actions()}
        assert list(by_text) == [label for label, _a, _e in page.context_actions()]
        assert all(a.isEnabled() for a in by_text.values())
        with qtbot.waitSignal(page.advise_requested, timeout=2_000) as sig:
            by_text["Advise…"].trigger()
        assert sig.args == [tiny]
    finally:
        menu.close()


def test_remove_from_library_forgets_the_file_but_leaves_it_on_disk(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder, tiny = _folder_with_tiny(tmp_path / "shelf", "zebra")
    library.add_folder(folder)
    page = _page(qtbot, settings, library)
    _select(page, tiny)
    with qtbot.waitSignal(page.entries_changed, timeout=2_000) as sig:
        _actions(page)["Remove from library"][0]()
    assert tiny not in [e.path for e in sig.args[0]]
    assert _shown(page) == [starter_model]
    assert tiny.exists()
    assert tiny.read_bytes()[:4] == b"GGUF"
    # The folder is still scanned, but the forgotten file stays out of every listing.
    page.reload()
    _idle(qtbot, page)
    assert _shown(page) == [starter_model]
    assert tiny not in [e.path for e in ModelLibrary(Settings(), external_roots=()).entries()]


# --------------------------------------------------------------------------- 5. watching


def test_a_watched_folder_shows_new_and_deleted_files_without_refresh(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    made = write_tiny_gguf(tmp_path / "elsewhere.gguf", name="fresh")
    page = _page(qtbot, settings, library)
    assert str(folder) not in page.watched_folders()

    page.add_folder(folder)
    _idle(qtbot, page)
    assert str(folder) in page.watched_folders()
    assert library.folders() == [folder]

    arrived = folder / "fresh-download.gguf"
    shutil.copyfile(made, arrived)
    qtbot.waitUntil(lambda: _proxy_row(page, arrived) is not None, timeout=10_000)
    _idle(qtbot, page)
    assert _cell(page, arrived, COL_SOURCE) == "Folder"
    assert _cell(page, arrived, COL_ARCH) == "llama"

    arrived.unlink()
    qtbot.waitUntil(lambda: _proxy_row(page, arrived) is None, timeout=10_000)
    _idle(qtbot, page)
    assert _shown(page) == [starter_model]


# --------------------------------------------------------------------------- 6. duplicates


def test_copies_in_two_folders_become_one_row(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path, tmp_path: Path
) -> None:
    first, original = _folder_with_tiny(tmp_path / "a-models", "zebra")
    second = tmp_path / "b-models"
    second.mkdir()
    copy = second / "zebra.gguf"
    shutil.copyfile(original, copy)
    assert not original.samefile(copy)
    library.add_folder(first)
    library.add_folder(second)

    page = _page(qtbot, settings, library)  # waits for the background duplicate check too
    assert sorted(_shown(page)) == sorted([starter_model, original])
    row = page.model.row_of(original)
    assert row is not None
    assert row.entry.also_at == (copy,)
    assert _cell(page, original, COL_NAME) == "zebra  (+1 copies)"
    assert str(copy) in _cell(page, original, COL_NAME, Qt.ItemDataRole.ToolTipRole)
    _select(page, original)
    qtbot.waitUntil(lambda: "Also at" in page.details_text(), timeout=5_000)
    assert page.details_text()["Also at"] == str(copy)
    assert page.index.files_hashed == 2

    # The digests are remembered: a reload merges the copies again without rehashing.
    page.reload()
    _idle(qtbot, page)
    assert sorted(_shown(page)) == sorted([starter_model, original])
    assert page.index.files_hashed == 2


def test_a_late_duplicate_check_does_not_undo_a_newer_listing(
    qtbot: Any,
    settings: Settings,
    library: ModelLibrary,
    tmp_path: Path,
    held: Callable[[str], threading.Event],
) -> None:
    first, original = _folder_with_tiny(tmp_path / "a-models", "zebra")
    second = tmp_path / "b-models"
    second.mkdir()
    shutil.copyfile(original, second / "zebra.gguf")
    library.add_folder(first)
    library.add_folder(second)

    release = held("merge_duplicates")  # the background duplicate check
    page = ModelsPage(settings, library)
    qtbot.addWidget(page)
    page.show()
    page.reload()
    qtbot.waitUntil(page._deduplicating.is_running, timeout=10_000)

    # A model is added while the check runs, and the library is listed again.
    newcomer = library.add(write_tiny_gguf(tmp_path / "newcomer.gguf", name="newcomer")).path
    page.reload()
    qtbot.waitUntil(lambda: _proxy_row(page, newcomer) is not None, timeout=10_000)
    release.set()
    _idle(qtbot, page)
    assert newcomer in _shown(page)


# --------------------------------------------------------------------------- 7. last used


def test_last_used_is_shown_and_kept(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path
) -> None:
    page = _page(qtbot, settings, library)
    assert _cell(page, starter_model, COL_USED) == "never"
    page.mark_used(starter_model)
    assert _cell(page, starter_model, COL_USED) == "just now"
    assert library.last_used(starter_model) is not None
    page.reload()
    _idle(qtbot, page)
    assert _cell(page, starter_model, COL_USED) == "just now"
    # Another library over the same settings file knows it too.
    assert ModelLibrary(Settings(), external_roots=()).last_used(starter_model) is not None


# --------------------------------------------------------------------------- 8. hub tab


def test_the_hub_tab_is_not_built_until_shown(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path
) -> None:
    page = _page(qtbot, settings, library)
    assert [page.tabs.tabText(i) for i in range(page.tabs.count())] == ["Library", "Hub"]
    assert page.tabs.currentIndex() == 0
    assert page.hub_tab is None
    # Working in the Library tab does not build it either.
    page.set_profile(cpu_laptop())
    _idle(qtbot, page)
    page.filter_edit.setText("gemma")
    _select(page, starter_model)
    assert page.hub_tab is None


def test_showing_the_hub_tab_builds_it_once(
    qtbot: Any, settings: Settings, library: ModelLibrary
) -> None:
    page = _page(qtbot, settings, library)
    page.tabs.setCurrentIndex(1)
    hub = page.hub_tab
    assert hub is not None
    assert page.tabs.currentIndex() == 1
    page.tabs.setCurrentIndex(0)
    assert page.show_hub() is hub
    page.shutdown()
