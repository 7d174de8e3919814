"""The Machine page shows the probed profile, re-probes, and saves and loads profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QLabel

from app.core.profiles import recent_profile_files
from app.core.settings import Settings
from app.ui.pages.machine_page import MachinePage
from quant.errors import HardwareProfileError
from quant.hardware.profile import HardwareProfile
from tests.ui.conftest import H100, FakeProbe, close_message_boxes, make_profile, message_boxes


def _page(qtbot: Any, settings: Settings, probe: Any) -> MachinePage:
    page = MachinePage(settings, probe_fn=probe)
    qtbot.addWidget(page)
    page.resize(1100, 800)
    page.show()
    return page


def _probe_and_wait(qtbot: Any, page: MachinePage) -> None:
    with qtbot.waitSignal(page.profile_changed, timeout=10_000):
        page.start_probe()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=5_000)


def _texts(page: MachinePage) -> list[str]:
    return [w.text() for w in page.findChildren(QLabel)]


def test_shows_cpu_brand_cores_and_features(
    qtbot: Any, settings: Settings, fake_probe: FakeProbe
) -> None:
    page = _page(qtbot, settings, fake_probe)
    _probe_and_wait(qtbot, page)
    summary = page.summary()
    assert summary["cpu"] == "Testium 9000 Hexacore"
    assert summary["cores"].startswith("6 physical cores · 12 threads")
    # Present features first, then the key ones this CPU lacks (shown greyed out).
    assert summary["features"][:5] == ["sse4.2", "avx", "avx2", "fma", "f16c"]
    assert "avx512f" in summary["features"][5:]
    texts = _texts(page)
    assert "16.0 GiB" in texts  # RAM
    assert "41.5 GB/s" in texts  # measured bandwidth
    assert "No supported GPU found" in texts
    assert "• no NVIDIA GPU: test profile" in texts
    assert fake_probe.calls == [
        {
            "use_cache": True,
            "on_progress": fake_probe.calls[0]["on_progress"],
            "cancel": fake_probe.calls[0]["cancel"],
        }
    ]


def test_gpu_card_shows_vram_compute_capability_and_bandwidth(
    qtbot: Any, settings: Settings
) -> None:
    page = _page(qtbot, settings, FakeProbe(make_profile(gpus=(H100,))))
    _probe_and_wait(qtbot, page)
    texts = _texts(page)
    assert "NVIDIA H100 80GB HBM3" in texts
    assert "9.0" in texts
    assert "3,352.0 GB/s" in texts
    assert "VRAM 80.0 GiB · 79.0 GiB free" in texts
    assert "GPU offload" in texts
    assert "No supported GPU found" not in texts


def test_refresh_reprobes_without_cache(
    qtbot: Any, settings: Settings, fake_probe: FakeProbe
) -> None:
    page = _page(qtbot, settings, fake_probe)
    _probe_and_wait(qtbot, page)
    fake_probe.profile = make_profile(brand="Refreshed CPU")
    with qtbot.waitSignal(page.profile_changed, timeout=10_000):
        page.refresh_button.click()
    qtbot.waitUntil(page.refresh_button.isEnabled, timeout=5_000)
    assert [c["use_cache"] for c in fake_probe.calls] == [True, False]
    assert page.summary()["cpu"] == "Refreshed CPU"
    assert not page.spinner.is_spinning()


def test_save_then_load_a_profile_for_another_machine(
    qtbot: Any, settings: Settings, fake_probe: FakeProbe, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, fake_probe)
    _probe_and_wait(qtbot, page)
    saved = tmp_path / "laptop"
    handle = page.save_profile(saved)
    assert handle is not None
    qtbot.waitUntil((tmp_path / "laptop.json").exists, timeout=5_000)
    data = json.loads((tmp_path / "laptop.json").read_text())
    assert data["cpu"]["brand"] == "Testium 9000 Hexacore"
    assert data["memory"]["total_bytes"] == 16 * 1024**3
    assert HardwareProfile.load(tmp_path / "laptop.json").cpu.physical_cores == 6

    other = tmp_path / "server.json"
    other.write_text(make_profile(brand="Big Server CPU", gpus=(H100,)).to_json())
    page.load_profile(other)
    qtbot.waitUntil(lambda: page.summary()["cpu"] == "Big Server CPU", timeout=5_000)
    assert page.banner.isVisible()
    assert "server.json" in page.banner_label.text()
    assert "NVIDIA H100 80GB HBM3" in _texts(page)
    # This machine's profile is still the probed one, and the file is offered for planning.
    assert page.profile is not None and page.profile.cpu.brand == "Testium 9000 Hexacore"
    assert recent_profile_files(Settings()) == [other]

    page.back_button.click()
    assert page.summary()["cpu"] == "Testium 9000 Hexacore"
    assert not page.banner.isVisible()


def test_a_bad_profile_file_shows_an_error(
    qtbot: Any, settings: Settings, fake_probe: FakeProbe, tmp_path: Path
) -> None:
    page = _page(qtbot, settings, fake_probe)
    _probe_and_wait(qtbot, page)
    bad = tmp_path / "notes.json"
    bad.write_text("this is not json")
    page.load_profile(bad)
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=5_000)
    box = message_boxes()[0]
    assert "notes.json" in box.text()
    assert "hardware profile" in box.text()
    close_message_boxes()
    assert page.summary()["cpu"] == "Testium 9000 Hexacore"
    assert not page.banner.isVisible()


def test_a_failing_probe_is_reported_and_can_be_retried(qtbot: Any, settings: Settings) -> None:
    calls: list[int] = []

    def flaky(**_kw: Any) -> HardwareProfile:
        calls.append(1)
        if len(calls) == 1:
            raise HardwareProfileError("the probe could not read /proc; try again")
        return make_profile(brand="Second Try CPU")

    page = _page(qtbot, settings, flaky)
    page.start_probe()
    qtbot.waitUntil(lambda: bool(message_boxes()), timeout=5_000)
    assert message_boxes()[0].text() == "The probe could not read /proc; try again"
    close_message_boxes()
    assert page.refresh_button.isEnabled()
    with qtbot.waitSignal(page.profile_changed, timeout=5_000):
        page.refresh_button.click()
    assert page.summary()["cpu"] == "Second Try CPU"
