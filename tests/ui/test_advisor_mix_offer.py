"""The Advisor's "a Quantdesk mix for your budget", and where its button leads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from app.core.library import LibraryEntry, ModelSource
from app.core.settings import Settings
from app.ui.pages.advisor_page import AdvisorPage
from quant.facts import inspect_model
from quant.hardware.profile import MemoryInfo
from quant.plan.advisor import recommend
from tests.ui.conftest import make_profile


def test_a_mix_is_offered_when_the_stock_types_leave_memory_unused(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    roomy = make_profile()
    ram = {o.label: o.ram_bytes for o in recommend(inspect_model(starter_model), roomy).options}
    # Enough for Q4_K_M but well short of Q6_K: a stock type leaves memory unused.
    between = (ram["Q4_K_M"] + ram["Q6_K"]) // 2
    machine = replace(roomy, memory=MemoryInfo(total_bytes=2 * between, available_bytes=between))

    page = AdvisorPage(settings)
    qtbot.addWidget(page)
    page.set_entries(page_entries(starter_model))
    page.set_machine_profile(machine)
    page.show()
    with qtbot.waitSignal(page.advice_shown, timeout=30_000):
        page.run()
    assert page.advice is not None
    offer = page.advice.recommendation.mix_offer
    assert offer is not None
    assert "A Quantdesk mix for your budget" in page.summary_label.text()
    assert page.mix_button.isVisible()
    with qtbot.waitSignal(page.mix_requested, timeout=2_000) as sig:
        page.mix_button.click()
    assert sig.args == [str(starter_model), offer.budget_bytes]

    roomy_page = AdvisorPage(settings)
    qtbot.addWidget(roomy_page)
    roomy_page.set_entries(page_entries(starter_model))
    roomy_page.set_machine_profile(roomy)
    roomy_page.show()
    with qtbot.waitSignal(roomy_page.advice_shown, timeout=30_000):
        roomy_page.run()
    # F16 fits this one: no mix has anything to gain.
    assert not roomy_page.mix_button.isVisible()


def page_entries(starter_model: Path) -> list[LibraryEntry]:
    return [
        LibraryEntry(
            starter_model, "gemma-3-270m-q4_k_m", ModelSource.STARTER, starter_model.stat().st_size
        )
    ]


def test_the_offer_opens_the_convert_page_in_budget_mode(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    from app.ui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.open_convert_budget(str(starter_model), 200_000_000)
    page: Any = win.switch_to("convert")
    assert page.source_edit.text() == str(starter_model)
    assert page.budget_mode() and page.budget_bytes() == 200_000_000
