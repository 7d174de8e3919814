"""The Machine page: what this computer is and what the installed runtime can use.

The probe runs off the GUI thread (first on start-up, again on Refresh); the page
shows a spinner until it answers. "Save profile…" writes the ``quantdesk hw --json``
format; "Load profile…" shows a saved profile instead, for planning another
machine, and remembers it so the Advisor can plan for it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.core.profiles import (
    load_profile,
    probe_this_machine,
    remember_profile_file,
    save_profile,
)
from app.core.settings import Settings
from app.ui import errors
from app.ui.widgets.cards import (
    Card,
    ChipRow,
    KeyValueGrid,
    PageHeader,
    Spinner,
    UsageBar,
    chip,
    muted,
)
from app.ui.widgets.icons import icon
from app.workers.failure import Failure
from app.workers.tasks import Call, TaskHandle, start_task
from quant.hardware.profile import AppleInfo, GpuInfo, HardwareProfile
from quant.progress import Progress
from quant.units import format_rate, human_bytes

logger = logging.getLogger(__name__)

#: Called as ``probe_fn(use_cache=…, on_progress=…, cancel=…)``.
ProbeFn = Callable[..., HardwareProfile]

# Features llama.cpp's CPU kernels use, shown even when absent so a missing one is visible.
KEY_FEATURES = {
    "x86_64": (
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx_vnni",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "amx",
    ),
    "arm64": ("neon", "dotprod", "i8mm", "fp16", "bf16", "sve"),
}
KEY_FEATURES["amd64"] = KEY_FEATURES["x86_64"]
KEY_FEATURES["aarch64"] = KEY_FEATURES["arm64"]


class MachinePage(QWidget):
    #: The probed profile of this machine (not a loaded one), each time it arrives.
    profile_changed = Signal(object)
    status_message = Signal(str)

    def __init__(
        self, settings: Settings, *, probe_fn: ProbeFn | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("machinePage")
        self.settings = settings
        self._probe_fn: ProbeFn = probe_fn or probe_this_machine
        self._task: TaskHandle[HardwareProfile] | None = None
        self._probed: HardwareProfile | None = None
        self._shown: HardwareProfile | None = None
        self._loaded_from: Path | None = None

        outer = QVBoxLayout(self)
        outer.setContentsMargins(28, 22, 28, 12)
        outer.setSpacing(14)
        self.header = PageHeader(
            "This machine",
            "What Quantdesk found on this computer. Every plan and speed estimate starts here.",
        )
        self.spinner = Spinner()
        self.refresh_button = QPushButton(icon("refresh"), "Refresh")
        self.refresh_button.setToolTip("Probe again and re-measure memory bandwidth")
        self.load_button = QPushButton(icon("open"), "Load profile…")
        self.load_button.setToolTip("Show a profile saved on another machine, to plan for it")
        self.save_button = QPushButton(icon("save"), "Save profile…")
        self.save_button.setToolTip("Save this profile as JSON (the 'quantdesk hw --json' format)")
        self.save_button.setEnabled(False)
        for w in (self.spinner, self.refresh_button, self.load_button, self.save_button):
            self.header.add_action(w)
        outer.addWidget(self.header)

        self.banner = QWidget()
        bl = QHBoxLayout(self.banner)
        bl.setContentsMargins(0, 0, 0, 0)
        self.banner_label = QLabel()
        self.banner_label.setObjectName("banner")
        self.banner_label.setWordWrap(True)
        self.back_button = QPushButton("Back to this machine")
        bl.addWidget(self.banner_label, 1)
        bl.addWidget(self.back_button)
        self.banner.setVisible(False)
        outer.addWidget(self.banner)

        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        body.setObjectName("pageBody")
        self.grid = QGridLayout(body)
        self.grid.setContentsMargins(0, 0, 4, 12)
        self.grid.setHorizontalSpacing(14)
        self.grid.setVerticalSpacing(14)
        self.grid.setColumnStretch(0, 1)
        self.grid.setColumnStretch(1, 1)
        self.scroll_area.setWidget(body)
        outer.addWidget(self.scroll_area, 1)

        self.refresh_button.clicked.connect(lambda: self.start_probe(refresh=True))
        self.save_button.clicked.connect(self._ask_save)
        self.load_button.clicked.connect(self._ask_load)
        self.back_button.clicked.connect(self.show_this_machine)

        # Filled by _render; tests and other pages read them.
        self.cpu_brand_label = QLabel()
        self.cores_label = QLabel()
        self.feature_chips = ChipRow()
        self._render_waiting()

    # ------------------------------------------------------------------ state
    @property
    def profile(self) -> HardwareProfile | None:
        """The probed profile of this machine (None until the first probe answers)."""
        return self._probed

    @property
    def shown_profile(self) -> HardwareProfile | None:
        return self._shown

    def is_busy(self) -> bool:
        return self._task is not None

    # ------------------------------------------------------------------ probing
    def start_probe(self, *, refresh: bool = False) -> None:
        """Probe off the GUI thread; ``refresh`` re-measures instead of using cached figures."""
        if self._task is not None:
            return
        self.spinner.start()
        self.refresh_button.setEnabled(False)
        self.status_message.emit("Probing this machine…")
        self._task = start_task(
            Call(self._probe_fn, use_cache=not refresh),
            parent=self,
            on_finished=self._on_probed,
            on_failed=self._on_probe_failed,
            on_cancelled=self._on_probe_done,
            on_progress=self._on_progress,
            cancellable=True,
        )

    def _on_progress(self, p: Progress) -> None:
        if p.message:
            self.status_message.emit(p.message)

    def _on_probe_done(self) -> None:
        self._task = None
        self.spinner.stop()
        self.refresh_button.setEnabled(True)

    def _on_probed(self, profile: HardwareProfile) -> None:
        self._on_probe_done()
        self._probed = profile
        if self._loaded_from is None:
            self._show(profile)
        self.status_message.emit("Machine probed")
        self.profile_changed.emit(profile)

    def _on_probe_failed(self, failure: Failure) -> None:
        self._on_probe_done()
        if self._shown is None:
            self._render_message("The probe failed. Press Refresh to try again.")
        errors.show_error(self, failure)

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ------------------------------------------------------------------ save / load
    def _ask_save(self) -> None:
        if self._shown is None:
            return
        default = str(Path.home() / "hardware-profile.json")
        path, _ = QFileDialog.getSaveFileName(
            self, "Save hardware profile", default, "Hardware profile (*.json)"
        )
        if path:
            self.save_profile(Path(path))

    def save_profile(self, path: Path) -> TaskHandle[Path] | None:
        """Write the shown profile to ``path`` (``.json`` added; atomically, off the GUI thread)."""
        if self._shown is None:
            return None
        return start_task(
            Call(save_profile, self._shown, path),
            parent=self,
            on_finished=self._on_saved,
            on_failed=self._report,
        )

    def _report(self, failure: Failure) -> None:
        errors.show_error(self, failure)

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Load hardware profile",
            str(Path.home()),
            "Hardware profile (*.json);;All files (*)",
        )
        if path:
            self.load_profile(Path(path))

    def load_profile(self, path: Path) -> TaskHandle[HardwareProfile]:
        """Show the profile saved in ``path`` (read off the GUI thread)."""
        return start_task(
            Call(load_profile, path),
            parent=self,
            on_finished=lambda profile: self._on_loaded(path, profile),
            on_failed=self._report,
        )

    def _on_saved(self, path: Path) -> None:
        self.status_message.emit(f"Saved the profile to {path}")

    def _on_loaded(self, path: Path, profile: HardwareProfile) -> None:
        self._loaded_from = path
        remember_profile_file(self.settings, path)
        self._show(profile)
        self.status_message.emit(f"Showing the saved profile {path.name}")

    def show_this_machine(self) -> None:
        self._loaded_from = None
        if self._probed is not None:
            self._show(self._probed)
        else:
            self._render_waiting()
        self.banner.setVisible(False)

    # ------------------------------------------------------------------ rendering
    def _clear(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.setParent(None)
                w.deleteLater()

    def _render_waiting(self) -> None:
        self._render_message("Probing CPU, memory, GPUs and the llama.cpp runtime…")

    def _render_message(self, text: str) -> None:
        self._clear()
        card = Card("This machine", "machine")
        card.body.addWidget(muted(text))
        self.grid.addWidget(card, 0, 0, 1, 2)
        self.grid.setRowStretch(1, 1)

    def _show(self, profile: HardwareProfile) -> None:
        self._shown = profile
        self.save_button.setEnabled(True)
        if self._loaded_from is not None:
            self.banner_label.setText(
                f"Showing the saved profile {self._loaded_from.name} — planning for another "
                "machine. The Advisor can plan for it too."
            )
            self.banner.setVisible(True)
        else:
            self.banner.setVisible(False)
        self._clear()
        cards: list[tuple[QWidget, int]] = [
            (self._cpu_card(profile), 1),
            (self._memory_card(profile), 1),
        ]
        for gpu in profile.gpus:
            cards.append((self._gpu_card(gpu), 1))
        if profile.apple is not None:
            cards.append((self._apple_card(profile.apple), 1))
        if not profile.gpus and profile.apple is None:
            cards.append((self._no_gpu_card(profile), 1))
        cards.append((self._runtime_card(profile), 1))
        cards.append((self._bandwidth_card(profile), 1))
        if profile.notes:
            cards.append((self._notes_card(profile), 2))
        row = col = 0
        for card, span in cards:
            if span == 2 and col == 1:
                row, col = row + 1, 0
            self.grid.addWidget(card, row, col, 1, span, Qt.AlignmentFlag.AlignTop)
            col += span
            if col >= 2:
                row, col = row + 1, 0
        self.grid.setRowStretch(row + 1, 1)

    def _cpu_card(self, p: HardwareProfile) -> Card:
        card = Card("CPU", "machine")
        self.cpu_brand_label = QLabel(p.cpu.brand)
        self.cpu_brand_label.setObjectName("cpuBrand")
        self.cpu_brand_label.setWordWrap(True)
        self.cpu_brand_label.setStyleSheet("font-size: 12pt; font-weight: 600;")
        card.body.addWidget(self.cpu_brand_label)
        self.cores_label = QLabel(
            f"{p.cpu.physical_cores} physical cores · {p.cpu.logical_cores} threads · {p.cpu.arch}"
        )
        self.cores_label.setObjectName("cpuCores")
        card.body.addWidget(self.cores_label)
        present = list(p.cpu.features)
        key = KEY_FEATURES.get(p.cpu.arch, ())
        chips = [chip(f, "true", "available") for f in present]
        chips += [chip(f, "off", "not available on this CPU") for f in key if f not in present]
        self.feature_chips = ChipRow()
        self.feature_chips.set_chips(chips)
        card.body.addWidget(muted("Instruction sets llama.cpp can use"))
        card.body.addWidget(self.feature_chips)
        if p.cpu.features_source and p.cpu.features_source != "unknown":
            card.body.addWidget(muted(f"Read from {p.cpu.features_source}"))
        elif not present:
            card.body.addWidget(muted("The CPU's features could not be read"))
        return card

    def _memory_card(self, p: HardwareProfile) -> Card:
        card = Card("Memory", "memory")
        m = p.memory
        used = max(0, m.total_bytes - m.available_bytes)
        big = QLabel(human_bytes(m.total_bytes))
        big.setObjectName("bigNumber")
        card.body.addWidget(big)
        bar = UsageBar()
        bar.setObjectName("ramBar")
        bar.set_fraction(used / m.total_bytes if m.total_bytes else 0.0)
        card.body.addWidget(bar)
        card.body.addWidget(
            muted(f"{human_bytes(m.available_bytes)} available · {human_bytes(used)} in use")
        )
        kv = KeyValueGrid()
        swap = (
            "none"
            if m.swap_total_bytes <= 0
            else f"{human_bytes(m.swap_total_bytes)} ({human_bytes(m.swap_free_bytes)} free)"
        )
        kv.set_rows([("Swap", swap)])
        card.body.addWidget(kv)
        return card

    def _gpu_card(self, g: GpuInfo) -> Card:
        card = Card(f"GPU {g.index}", "gpu")
        name = QLabel(g.name)
        name.setStyleSheet("font-size: 12pt; font-weight: 600;")
        name.setWordWrap(True)
        card.body.addWidget(name)
        used = max(0, g.memory_total_bytes - g.memory_free_bytes)
        bar = UsageBar()
        bar.setObjectName("vramBar")
        bar.set_fraction(used / g.memory_total_bytes if g.memory_total_bytes else 0.0)
        card.body.addWidget(bar)
        card.body.addWidget(
            muted(
                f"VRAM {human_bytes(g.memory_total_bytes)} · "
                f"{human_bytes(g.memory_free_bytes)} free"
            )
        )
        kv = KeyValueGrid()
        rows = [
            ("Compute capability", g.compute_capability or "unknown"),
            ("Memory bandwidth", _gbps(g.memory_bandwidth_gbps)),
        ]
        if g.driver_version:
            rows.append(("Driver", g.driver_version))
        if g.cuda_version:
            rows.append(("CUDA", g.cuda_version))
        kv.set_rows(rows)
        card.body.addWidget(kv)
        return card

    def _apple_card(self, a: AppleInfo) -> Card:
        card = Card("Apple Silicon", "apple")
        name = QLabel(a.chip)
        name.setStyleSheet("font-size: 12pt; font-weight: 600;")
        card.body.addWidget(name)
        kv = KeyValueGrid()
        ws = human_bytes(a.gpu_working_set_bytes)
        ws += " (Metal's default share)" if a.working_set_estimated else " (iogpu.wired_limit_mb)"
        kv.set_rows(
            [
                ("Unified memory", human_bytes(a.unified_memory_bytes)),
                ("GPU working set", ws),
                ("Memory bandwidth", _gbps(a.memory_bandwidth_gbps)),
            ]
        )
        card.body.addWidget(kv)
        card.body.addWidget(
            muted("Models on the GPU must fit the working-set limit, not all of unified memory.")
        )
        return card

    def _no_gpu_card(self, p: HardwareProfile) -> Card:
        card = Card("GPU", "gpu")
        card.body.addWidget(QLabel("No supported GPU found"))
        card.body.addWidget(
            muted(
                "Models run on the CPU from system RAM. GGUF files "
                "(Q4_K_M and up) are the formats to use here."
            )
        )
        return card

    def _runtime_card(self, p: HardwareProfile) -> Card:
        card = Card("llama.cpp runtime", "runtime")
        r = p.runtime
        chips = [chip(b, "true") for b in p.backends]
        chips.append(
            chip("GPU offload", "good")
            if r.supports_gpu_offload
            else chip("no GPU offload", "off", "this build runs on the CPU only")
        )
        row = ChipRow()
        row.setObjectName("backendChips")
        row.set_chips(chips)
        card.body.addWidget(row)
        kv = KeyValueGrid()
        rows = [("llama-cpp-python", r.llama_cpp_version or "not installed")]
        if r.devices:
            rows.append(("Devices", ", ".join(r.devices)))
        kv.set_rows(rows)
        card.body.addWidget(kv)
        if r.system_info:
            info = muted(_short_system_info(r.system_info))
            info.setToolTip(r.system_info)
            card.body.addWidget(info)
        return card

    def _bandwidth_card(self, p: HardwareProfile) -> Card:
        card = Card("Measured memory bandwidth", "gauge")
        value = QLabel(_gbps(p.measured_bandwidth_gbps))
        value.setObjectName("bigNumber")
        card.body.addWidget(value)
        if p.measured_bandwidth_gbps:
            # Generation reads every weight once per token, so bandwidth / model size bounds it.
            ceiling = p.measured_bandwidth_gbps * 1e9 / (4.9 * 1e9)
            card.body.addWidget(
                muted(
                    "Generation speed on the CPU is bound by how fast weights stream from RAM: "
                    f"at most ≈{format_rate(ceiling)} tokens/s for a 4.9 GB model (an 8B Q4_K_M)."
                )
            )
        else:
            card.body.addWidget(muted("Not measured. Press Refresh to measure it."))
        return card

    def _notes_card(self, p: HardwareProfile) -> Card:
        card = Card("Notes", "info")
        for note in p.notes:
            label = QLabel(f"• {note}")
            label.setWordWrap(True)
            label.setProperty("muted", "true")
            card.body.addWidget(label)
        return card

    def summary(self) -> dict[str, Any]:
        """What the page shows, as plain values (for tests and accessibility)."""
        return {
            "cpu": self.cpu_brand_label.text(),
            "cores": self.cores_label.text(),
            "features": self.feature_chips.texts(),
        }


def _gbps(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.1f} GB/s"


def _short_system_info(text: str) -> str:
    """Keep the enabled flags of ``llama_print_system_info()``; drop the ``= 0`` ones."""
    parts = [s.strip() for s in text.split("|")]
    kept = [s for s in parts if s and not s.endswith("= 0")]
    short = " | ".join(kept)
    return short if len(short) <= 240 else short[:237] + "…"
