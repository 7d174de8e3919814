"""Fixtures for the GUI tests: a fake machine, a library without other apps' folders,
tiny GGUF files built on the spot, and a main window wired to them."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QCoreApplication, QEvent

from app.core.library import ModelLibrary, StarterModel
from app.core.settings import Settings
from quant.hardware.profile import CpuInfo, GpuInfo, HardwareProfile, MemoryInfo, RuntimeInfo
from tests.ggufs import write_tiny_gguf

GIB = 1024**3


@pytest.fixture(autouse=True)
def _clean_up_after_each_test(qapp: Any) -> Iterator[None]:
    """No message box or background thread outlives the test that opened it."""
    from app.ui.main_window import drain_tasks

    yield
    close_message_boxes()
    assert drain_tasks(15.0), "a background task did not stop"
    # Free the test's Qt objects now, while no worker thread runs, rather than whenever an
    # allocation trips Python's collector in a later test: once, a collection inside a
    # paint, with the next test's chat worker loading a model, left both threads waiting.
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny-llama.gguf")


def make_profile(
    *,
    brand: str = "Testium 9000 Hexacore",
    physical: int = 6,
    logical: int = 12,
    gpus: tuple[GpuInfo, ...] = (),
    bandwidth: float | None = 41.5,
) -> HardwareProfile:
    return HardwareProfile(
        cpu=CpuInfo(
            brand=brand,
            arch="x86_64",
            physical_cores=physical,
            logical_cores=logical,
            features=("sse4.2", "avx", "avx2", "fma", "f16c"),
            features_source="/proc/cpuinfo",
        ),
        memory=MemoryInfo(
            total_bytes=16 * GIB,
            available_bytes=11 * GIB,
            swap_total_bytes=2 * GIB,
            swap_free_bytes=2 * GIB,
        ),
        gpus=gpus,
        backends=("cpu", "cuda") if gpus else ("cpu",),
        runtime=RuntimeInfo(
            llama_cpp_version="0.3.36", supports_gpu_offload=bool(gpus), devices=("CPU",)
        ),
        measured_bandwidth_gbps=bandwidth,
        notes=("no NVIDIA GPU: test profile",) if not gpus else (),
        source="probe",
    )


H100 = GpuInfo(
    vendor="nvidia",
    name="NVIDIA H100 80GB HBM3",
    memory_total_bytes=80 * GIB,
    memory_free_bytes=79 * GIB,
    compute_capability="9.0",
    memory_bandwidth_gbps=3352.0,
    driver_version="580.1",
    cuda_version="13.0",
)


class FakeProbe:
    """Stands in for the hardware probe; records how it was called."""

    def __init__(self, profile: HardwareProfile) -> None:
        self.profile = profile
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> HardwareProfile:
        self.calls.append(kwargs)
        return self.profile


@pytest.fixture
def fake_profile() -> HardwareProfile:
    return make_profile()


@pytest.fixture
def fake_probe(fake_profile: HardwareProfile) -> FakeProbe:
    return FakeProbe(fake_profile)


@pytest.fixture(scope="session")
def verified_starter(starter_model: Path) -> StarterModel:
    """The real starter model, checksum-verified once per test session."""
    st = starter_model.stat()
    return StarterModel(starter_model, st.st_size, st.st_mtime_ns)


@pytest.fixture
def settings(quantdesk_home: Path) -> Settings:
    return Settings()


@pytest.fixture
def library(settings: Settings, verified_starter: StarterModel) -> ModelLibrary:
    """The library with the starter model already verified and no other apps' folders."""
    lib = ModelLibrary(settings, external_roots=())
    lib.remember_starter(verified_starter)
    return lib


@pytest.fixture
def make_window(
    qtbot: Any, settings: Settings, library: ModelLibrary, fake_probe: FakeProbe
) -> Iterator[Callable[..., Any]]:
    """Build, show and wait for a main window (probe and library listing done)."""
    from app.ui.main_window import MainWindow, drain_tasks

    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        win_settings = overrides.pop("settings", settings)
        kwargs: dict[str, Any] = {"library": library, "probe_fn": fake_probe}
        kwargs.update(overrides)
        win = MainWindow(win_settings, **kwargs)
        qtbot.addWidget(win)
        win.show()
        qtbot.waitUntil(lambda: win.machine_page.profile is not None, timeout=10_000)
        qtbot.waitUntil(lambda: not win.models_page.is_busy(), timeout=15_000)
        made.append(win)
        return win

    yield make
    for win in made:
        win.close()
    assert drain_tasks(15.0)


def message_boxes() -> list[Any]:
    """Open message boxes (show_error's are window-modal and non-blocking)."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    return [
        w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
    ]


def close_message_boxes() -> None:
    for box in message_boxes():
        box.close()
