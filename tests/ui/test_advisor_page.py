"""The Advisor page ranks a model's options for a simulated machine, plans for a saved
profile, hands a type to the Convert page, reports bad input, and downloads a hub
repo's GGUF file into the library (with progress, cancel and resume)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.library import LibraryEntry, ModelLibrary, ModelSource
from app.core.settings import Settings
from app.ui.pages.advisor_page import AdvisorPage
from quant.hardware.profile import HardwareProfile, MemoryInfo
from quant.plan.advisor import Fit, Option, OptionSource, Task
from tests.fakehub import SHA, FakeHub, serve_fake_hub
from tests.ui.conftest import H100, make_profile, message_boxes, write_tiny_gguf

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


def test_the_reasons_follow_the_newest_advice(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    """The top row stays selected from one answer to the next: its reasons must not."""
    page = _page(qtbot, settings, starter_model, make_profile())
    page.show()
    _run(qtbot, page)
    before = page.reasons_label.text()
    with qtbot.waitSignal(page.advice_shown, timeout=20_000):
        page.set_context(32768)
    top = page.advice.recommendation.top if page.advice else None
    assert top is not None and top.ctx == 32768
    assert page.reasons_label.text() == "\n".join(f"• {r}" for r in top.reasons)
    assert page.reasons_label.text() != before


def test_quick_changes_show_only_the_last_answer(
    qtbot: Any, settings: Settings, starter_model: Path
) -> None:
    page = _page(qtbot, settings, starter_model, make_profile())
    page.show()
    _run(qtbot, page)
    shown: list[Task] = []
    page.advice_shown.connect(lambda advice: shown.append(advice.recommendation.task))
    for task in (Task.CODE, Task.MATH, Task.LONG_CONTEXT):
        page.set_task(task)
        page.run()  # the user presses Enter after each change
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=20_000)
    qtbot.wait(300)  # anything late would arrive now
    assert shown == [Task.LONG_CONTEXT]
    assert page.task_combo.currentText() == "Long documents"
    assert not page.spinner.is_spinning() and page.run_button.isEnabled()


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
    assert not page.convert_button.isEnabled() and not page.convert_button.isVisibleTo(page)
    assert not page.download_button.isVisibleTo(page)  # nor something to download


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


# --------------------------------------------------------------------------- hub downloads

HUB_REPO = "acme/tiny-GGUF"


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A hub repo with two real (tiny) GGUF files, served from 127.0.0.1."""
    with serve_fake_hub(monkeypatch, hf_cache) as fake:
        q4 = write_tiny_gguf(tmp_path / "q4.gguf", name="tiny-q4", n_layers=2)
        q8 = write_tiny_gguf(tmp_path / "q8.gguf", name="tiny-q8", n_layers=3)
        fake.repos[HUB_REPO] = {
            "Tiny-Q4_K_M.gguf": q4.read_bytes(),
            "Tiny-Q8_0.gguf": q8.read_bytes(),
            "README.md": b"# tiny",
        }
        yield fake


def _hub_page(qtbot: Any, settings: Settings, library: ModelLibrary) -> AdvisorPage:
    page = AdvisorPage(settings, library)
    qtbot.addWidget(page)
    page.resize(1100, 800)
    page.set_machine_profile(make_profile())
    page.set_source(HUB_REPO)
    _run(qtbot, page)
    return page


def _hub_option(page: AdvisorPage, filename: str) -> Option:
    return next(
        o for o in page.options() if o.source is OptionSource.HUB_FILE and o.filename == filename
    )


def test_download_a_hub_file_into_the_library_and_chat_with_it(
    qtbot: Any, settings: Settings, library: ModelLibrary, hub: FakeHub, hf_cache: Path
) -> None:
    page = _hub_page(qtbot, settings, library)
    remote = [o for o in page.options() if o.source is OptionSource.HUB_FILE]
    assert {o.filename for o in remote} == {"Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf"}
    # A plan is something to convert to, not a file to download.
    planned = next(o for o in page.options() if o.source is OptionSource.PLANNED)
    page.select_option(planned.key)
    assert not page.download_button.isVisibleTo(page)
    assert not page.download_panel.isVisibleTo(page)

    q8 = _hub_option(page, "Tiny-Q8_0.gguf")
    page.select_option(q8.key)
    assert page.download_button.isVisibleTo(page)
    row = page.options().index(q8)
    cell = page.table.item(row, 1)
    assert cell is not None and cell.text() == "Q8_0 · Tiny-Q8_0.gguf"
    assert page.download_button.isEnabled()
    assert "Tiny-Q8_0.gguf" in page.download_button.toolTip()
    before = [e.path for e in library.entries()]

    hub.throttle(16 * 1024, 0.01)  # slow enough to see the bar move
    bar_values: list[int] = []
    page.download_bar.valueChanged.connect(bar_values.append)
    messages: list[str] = []
    page.download_progress.connect(lambda p: messages.append(p.message))
    with qtbot.waitSignal(page.model_downloaded, timeout=20_000) as done:
        page.download_button.click()
        assert page.is_downloading() and not page.download_button.isEnabled()
        assert page.download_title.text() == "Downloading Tiny-Q8_0.gguf"
    entry = done.args[0]
    assert any(" of " in m and "/s" in m and "left" in m for m in messages)  # rate and ETA
    expected = hf_cache / "models--acme--tiny-GGUF" / "snapshots" / SHA / "Tiny-Q8_0.gguf"
    assert entry.path == expected
    assert expected.read_bytes() == hub.repos[HUB_REPO]["Tiny-Q8_0.gguf"]
    assert any(0 < v < 1000 for v in bar_values) and bar_values[-1] == 1000
    # The library grew by the downloaded file.
    after = [e.path for e in library.entries()]
    assert set(after) - set(before) == {expected}
    assert page.download_button.text() == "Downloaded"
    assert not page.download_button.isEnabled()
    assert page.download_title.text() == "Tiny-Q8_0.gguf is downloaded"
    assert page.download_status.text() == "In the Hugging Face cache and your library"
    assert page.download_status.toolTip() == str(expected)
    assert page.chat_button.isVisibleTo(page)
    with qtbot.waitSignal(page.chat_requested, timeout=2_000) as chat:
        page.chat_button.click()
    assert chat.args == [expected]

    # The repo's other file is still a download away; coming back offers chat again.
    page.select_option(_hub_option(page, "Tiny-Q4_K_M.gguf").key)
    assert page.download_button.isEnabled()
    assert not page.download_panel.isVisibleTo(page)
    page.select_option(q8.key)
    assert page.chat_button.isVisibleTo(page) and not page.download_button.isEnabled()


def test_cancel_a_download_then_resume_it_after_a_network_failure(
    qtbot: Any, settings: Settings, library: ModelLibrary, hub: FakeHub, hf_cache: Path
) -> None:
    page = _hub_page(qtbot, settings, library)
    page.select_option(_hub_option(page, "Tiny-Q4_K_M.gguf").key)
    data = hub.repos[HUB_REPO]["Tiny-Q4_K_M.gguf"]
    before = len(library.entries())
    snapshot = hf_cache / "models--acme--tiny-GGUF" / "snapshots" / SHA / "Tiny-Q4_K_M.gguf"
    blobs = hf_cache / "models--acme--tiny-GGUF" / "blobs"

    hub.throttle(4 * 1024, 0.02)  # about 200 KiB/s: seconds for the whole file
    page.download_button.click()
    qtbot.waitUntil(lambda: page.download_bar.value() > 0, timeout=10_000)
    page.download_cancel_button.click()
    qtbot.waitUntil(lambda: not page.is_downloading(), timeout=10_000)
    assert page.download_title.text() == "Download of Tiny-Q4_K_M.gguf cancelled"
    assert "kept in the Hugging Face cache" in page.download_status.text()
    assert not page.download_cancel_button.isVisibleTo(page)
    assert not message_boxes()  # a cancel is not an error
    (part,) = blobs.glob("*.incomplete")
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    assert not snapshot.exists() and len(library.entries()) == before
    assert page.download_button.isEnabled()

    # The network fails part-way: the error is shown, the bytes that came are kept.
    hub.throttle(1024 * 1024, 0.0)
    hub.drop_at = kept + 50_000
    page.download_button.click()
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=10_000)
    assert "download again to resume" in message_boxes()[0].text()
    assert page.download_title.text() == "Download of Tiny-Q4_K_M.gguf stopped"
    assert part.stat().st_size == kept + 50_000
    assert not snapshot.exists() and len(library.entries()) == before

    # Back online: Download continues from where it stopped.
    hub.drop_at = None
    with qtbot.waitSignal(page.model_downloaded, timeout=20_000):
        page.download_button.click()
    assert hub.downloads("Tiny-Q4_K_M.gguf")[-1][2] == f"bytes={kept + 50_000}-"
    assert snapshot.read_bytes() == data
    assert len(library.entries()) == before + 1


def test_a_serving_format_finds_ready_made_repos_with_a_command(
    qtbot: Any,
    settings: Settings,
    library: ModelLibrary,
    hf_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an NVIDIA machine, an FP8 option of a hub model finds FP8 repos of it."""
    from tests.test_facts_config import tiny
    from tests.test_facts_hub import safetensors_repo

    base = "acme/Base-1B"
    with serve_fake_hub(monkeypatch, hf_cache) as fake:
        fake.repos[base] = safetensors_repo(tiny("llama"))
        fake.repos["someone/Base-1B-FP8-Dynamic"] = {
            "config.json": b'{"quantization_config": {"quant_method": "fp8"}}',
            "model.safetensors": b"\0" * 4096,
        }
        fake.info["someone/Base-1B-FP8-Dynamic"] = {
            "tags": [f"base_model:quantized:{base}"],
            "cardData": {"base_model": base},
            "config": {"quantization_config": {"quant_method": "fp8"}},
            "downloads": 500,
        }
        page = AdvisorPage(settings, library)
        qtbot.addWidget(page)
        page.resize(1200, 850)
        page.set_machine_profile(make_profile(gpus=(H100,)))
        page.set_source(base)
        _run(qtbot, page)
        fp8 = next(o for o in page.options() if o.file_type == "FP8")
        page.select_option(fp8.key)
        assert page.serving_button.isVisibleTo(page)
        assert page.serving_button.isEnabled()
        page.serving_button.click()
        # The advisor's own command shows at once; the ready-made repo's replaces it.
        qtbot.waitUntil(lambda: "vllm serve someone/" in page.serving_text(), timeout=10_000)
        text = page.serving_text()
        assert "someone/Base-1B-FP8-Dynamic" in text
        assert "vllm serve someone/Base-1B-FP8-Dynamic" in text
        # A GGUF option has no such button.
        gguf = next(o for o in page.options() if o.family.value == "gguf")
        page.select_option(gguf.key)
        assert not page.serving_button.isVisibleTo(page)
        assert not message_boxes()


def test_serving_on_several_gpus_splits_the_model_and_connects_as_a_remote(
    qtbot: Any,
    settings: Settings,
    library: ModelLibrary,
    hf_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With two NVIDIA GPUs the command uses tensor parallelism; Connect asks to add the
    server it starts as a remote."""
    from tests.test_facts_config import tiny
    from tests.test_facts_hub import safetensors_repo

    base = "acme/Base-1B"
    with serve_fake_hub(monkeypatch, hf_cache) as fake:
        fake.repos[base] = safetensors_repo(tiny("llama"))
        for name in ("someone/Base-1B-FP8-Dynamic", "other/Base-1B-FP8"):
            fake.repos[name] = {
                "config.json": b'{"quantization_config": {"quant_method": "fp8"}}',
                "model.safetensors": b"\0" * 4096,
            }
            fake.info[name] = {
                "tags": [f"base_model:quantized:{base}"],
                "cardData": {"base_model": base},
                "config": {"quantization_config": {"quant_method": "fp8"}},
                "downloads": 500 if name.startswith("someone") else 100,
            }
        page = AdvisorPage(settings, library)
        qtbot.addWidget(page)
        page.resize(1200, 850)
        page.set_machine_profile(make_profile(gpus=(H100, H100)))
        page.set_source(base)
        _run(qtbot, page)
        fp8 = next(o for o in page.options() if o.file_type == "FP8")
        page.select_option(fp8.key)
        page.serving_button.click()
        qtbot.waitUntil(lambda: "vllm serve someone/" in page.serving_text(), timeout=10_000)
        assert page.serving_gpus() == 2
        assert "vllm serve someone/Base-1B-FP8-Dynamic" in page.serving_command_text()
        assert "--tensor-parallel-size 2" in page.serving_command_text()
        page.serving_combo.setCurrentIndex(1)
        assert "vllm serve other/Base-1B-FP8" in page.serving_command_text()
        with qtbot.waitSignal(page.remote_requested) as asked:
            page.connect_button.click()
        assert asked.args == ["http://localhost:8000/v1", "Base-1B-FP8"]


def test_a_hub_file_already_on_this_machine_is_not_offered_for_download(
    qtbot: Any, settings: Settings, library: ModelLibrary, hub: FakeHub, hf_cache: Path
) -> None:
    from app.core.downloads import download_gguf

    # Fetched earlier by another tool: in the Hugging Face cache, not in the library.
    entry = download_gguf(HUB_REPO, "Tiny-Q8_0.gguf")
    page = _hub_page(qtbot, settings, library)
    q8 = _hub_option(page, "Tiny-Q8_0.gguf")
    assert page.advice is not None and page.advice.local_file(q8) == entry.path
    page.select_option(q8.key)
    assert page.download_button.text() == "Downloaded"
    assert not page.download_button.isEnabled()
    assert page.download_panel.isVisibleTo(page) and page.chat_button.isVisibleTo(page)
    q4 = _hub_option(page, "Tiny-Q4_K_M.gguf")
    page.select_option(q4.key)
    assert page.download_button.text() == "Download this file"
    assert page.download_button.isEnabled()


def test_an_h100_profile_shows_both_lanes_with_the_serving_command(
    qtbot: Any, settings: Settings, starter_model: Path, tmp_path: Path
) -> None:
    import json

    from tests.test_advisor_rules import LLAMA_8B

    folder = tmp_path / "Llama-3.1-8B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    page = _page(qtbot, settings, starter_model, make_profile())
    server = tmp_path / "h100-server.json"
    server.write_text(make_profile(brand="Server CPU", gpus=(H100,)).to_json())
    page.set_source(str(folder))
    page.set_task(Task.CODE)
    with qtbot.waitSignal(page.advice_shown, timeout=30_000):
        page.plan_for_profile_file(server)
    advice = page.advice
    assert advice is not None
    rec = advice.recommendation
    assert rec.top is not None and rec.top.key == "gpu:FP8"
    assert rec.best_here is not None and rec.best_here.key == "gguf:Q8_0"
    summary = page.summary_label.text()
    assert "Serve " in summary and "To chat in Quantdesk now: Q8_0" in summary
    runs = {page.table.item(r, 9).text() for r in range(page.table.rowCount())}
    assert runs == {"vLLM/SGLang", "here"}
    # The pick's command, ready to copy; a GGUF option has none.
    assert page.serving_command.isVisibleTo(page)
    assert f"vllm serve {folder} --max-model-len 4096 --quantization fp8" in (
        page.serving_command.text()
    )
    page.select_option(rec.best_here.key)
    assert not page.serving_command.isVisibleTo(page)
    assert any("Runs here" in r for r in rec.best_here.reasons)
    # Quality cells say where the number comes from.
    quality = {page.table.item(r, 7).text() for r in range(page.table.rowCount())}
    assert any(q.endswith("prior") for q in quality)
