"""The Advisor page ranks a model's options for a simulated machine, plans for a saved
profile, hands a type to the Convert page, and reports bad input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app.core.library import LibraryEntry, ModelSource
from app.core.settings import Settings
from app.ui.pages.advisor_page import AdvisorPage
from quant.advisor import Fit, Task
from quant.hardware.profile import HardwareProfile, MemoryInfo
from tests.ui.conftest import H100, make_profile, message_boxes

GIB = 1024**3


def _page(
    qtbot: Any, settings: Settings, starter_model: Path, profile: HardwareProfile
) -> AdvisorPage:
    page = AdvisorPage(settings)
    qtbot.addWidget(page)
    page.resize(1100, 800)
    entry = LibraryEntry(
        starter_model, "gemma-3-270m-q4_k_m", ModelSource.STARTER, starter_model.stat().st_size
    )
    page.set_entries([entry])
    page.set_machine_profile(profile)
    return page


def _run(qtbot: Any, page: AdvisorPage) -> None:
    with qtbot.waitSignal(page.advice_shown, timeout=20_000):
        page.run()


def test_a_simulated_laptop_gets_a_ranked_table_chart_and_reasons(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    laptop = make_profile(brand="Laptop CPU", physical=4, logical=8, bandwidth=30.0)
    page = _page(qtbot, settings, starter_model, laptop)
    _run(qtbot, page)
    options = page.options()
    assert page.table.rowCount() == len(options) >= 20
    labels = [page.table.item(r, 1).text() for r in range(page.table.rowCount())]
    assert "Q4_K_M (this file)" in labels and "Q8_0" in labels
    assert [page.table.item(r, 0).text() for r in range(3)] == ["1", "2", "3"]
    # A CPU-only machine: every option runs on the CPU, none needs the GPU.
    assert {page.table.item(r, 2).text() for r in range(page.table.rowCount())} == {"CPU only"}
    assert page.table.item(0, 3).text().endswith("RAM")
    assert page.table.item(0, 4).text() == "none"  # no layer on a GPU
    assert page.table.item(0, 5).text().endswith(" tok/s")
    top = page.advice.recommendation.top
    assert top is not None and top.key == options[0].key
    assert page.summary_label.text().startswith("Run ")
    # The chart has a dot for every option with a quality prediction.
    assert len(page.chart.points()) == sum(1 for o in options if o.quality.kld is not None)
    assert page.chart.unit == "MiB"
    # The top pick's reasons are shown.
    assert page.pick_title.text() == top.label
    assert page.reasons_label.text().startswith("• ")
    assert top.reasons[0] in page.reasons_label.text()


def test_planning_for_a_saved_gpu_profile(
    qtbot: Any, settings: Settings, starter_model: Path, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, starter_model, make_profile())
    _run(qtbot, page)
    server = tmp_path / "h100-server.json"
    server.write_text(make_profile(brand="Server CPU", gpus=(H100,)).to_json())
    with qtbot.waitSignal(page.advice_shown, timeout=20_000):
        page.plan_for_profile_file(server)
    advice = page.advice
    assert advice is not None and advice.profile_name == "h100-server.json"
    assert page.summary_label.text().startswith("Planning for h100-server.json")
    assert page.machine_combo.currentText() == "h100-server.json"
    fits = {o.fit for o in page.options()}
    assert Fit.GPU in fits
    assert page.options()[0].fit is Fit.GPU
    assert page.table.item(0, 2).text() == "fits on GPU"
    assert page.table.item(0, 4).text() == "all"
    assert "GPU" in page.table.item(0, 3).text()
    # Back to this machine: CPU only again.
    with qtbot.waitSignal(page.advice_shown, timeout=20_000):
        page.plan_for_this_machine()
    assert {o.fit for o in page.options()} == {Fit.CPU}


def test_changing_the_task_asks_again(qtbot: Any, settings: Settings, starter_model: Path) -> None:
    page = _page(qtbot, settings, starter_model, make_profile())
    page.show()
    _run(qtbot, page)
    with qtbot.waitSignal(page.advice_shown, timeout=20_000):
        page.set_task(Task.CODE)
    assert page.advice is not None
    assert page.advice.recommendation.task is Task.CODE
    with qtbot.waitSignal(page.advice_shown, timeout=20_000):
        page.set_context(16384)
    assert page.advice.recommendation.ctx == 16384


def test_convert_to_this_sends_the_chosen_type(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    page = _page(qtbot, settings, starter_model, make_profile())
    _run(qtbot, page)
    q8 = next(o for o in page.options() if o.label == "Q8_0")
    page.select_option(q8.key)
    assert page.selected_option() == q8
    assert page.convert_button.isEnabled()
    with qtbot.waitSignal(page.convert_requested, timeout=2_000) as sig:
        page.convert_button.click()
    assert sig.args == [str(starter_model), ["Q8_0"]]
    # The file that exists already is not something to convert to.
    this_file = next(o for o in page.options() if o.label.endswith("(this file)"))
    page.select_option(this_file.key)
    assert not page.convert_button.isEnabled()


def test_nothing_fits_a_tiny_machine(qtbot: Any, settings: Settings, starter_model: Path) -> None:
    base = make_profile()
    tiny = HardwareProfile(
        cpu=base.cpu,
        memory=MemoryInfo(total_bytes=256 * 1024**2, available_bytes=128 * 1024**2),
        measured_bandwidth_gbps=5.0,
    )
    page = _page(qtbot, settings, starter_model, tiny)
    _run(qtbot, page)
    assert page.advice is not None and page.advice.recommendation.nothing_fits
    assert "does not fit" in page.summary_label.text()
    assert {page.table.item(r, 2).text() for r in range(page.table.rowCount())} == {"too large"}


def test_a_bad_model_file_is_reported(
    qtbot: Any, settings: Settings, starter_model: Path, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, starter_model, make_profile())
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(os.urandom(2048))
    page.set_source(str(bad))
    assert page.current_source() == str(bad)
    page.run()
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=10_000)
    assert "garbage.gguf" in message_boxes()[0].text()
    assert message_boxes()[0].detailedText() == ""
    assert page.summary_label.text().startswith("No plan: ")
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=5_000)
