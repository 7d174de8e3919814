"""The Advisor page: which format to run a model in, on this or another machine, and why.

Pick a model (from the library, a GGUF file, an HF folder, or a hub repo id), a
task and a context length; the advisor ranks every way to run it with the memory,
speed and quality each would have. Inspection and ranking run off the GUI thread;
changing a setting asks again. "Plan for" switches to a hardware profile saved on
another machine.

For a hub repo, the GGUF files it already has are options too: "Download this
file" fetches the selected one into the Hugging Face cache (resumable, with
progress and Cancel), adds it to the library, and offers "Chat with this"; a
file already on this machine is offered for chat instead.

On a datacenter NVIDIA GPU every option says which engine runs it — *here*
(llama.cpp in Quantdesk's chat) or *a serving engine* (vLLM, SGLang, with the
command that serves it) — and the summary names both the overall pick and the
best option to chat with here. Quality numbers say where they come from
(measured, calibrated, or a prior shown as a range).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.advice import Advice, InspectFn, advise, inspect_source
from app.core.download_queue import DownloadItem, DownloadState
from app.core.downloads import download_gguf
from app.core.errors import AppError
from app.core.library import LibraryEntry, ModelLibrary, ModelSource, read_entry
from app.core.profiles import recent_profile_files, remember_profile_file
from app.core.settings import Settings
from app.ui import errors
from app.ui.theme import current_theme, fit_chip_kind, fit_color
from app.ui.widgets.cards import Card, ChipRow, PageHeader, Spinner, chip, muted
from app.ui.widgets.icons import icon
from app.workers.download_manager import DownloadManager
from app.workers.failure import Failure
from app.workers.tasks import Call, LatestTask, TaskHandle, start_task
from quant.errors import HubError, QuantError
from quant.facts.model import ModelFacts, SourceKind
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Option, OptionSource, Recommendation, Task
from quant.plan.formats import FormatFamily, GpuFormat
from quant.plan.memory import KvType
from quant.plan.quality import quality_cell
from quant.progress import Progress
from quant.units import format_rate, human_bytes

logger = logging.getLogger(__name__)

TASK_LABELS = {
    Task.CHAT: "Chat",
    Task.CODE: "Code",
    Task.MATH: "Math and reasoning",
    Task.LONG_CONTEXT: "Long documents",
    Task.CREATIVE: "Creative writing",
    Task.RETRIEVAL: "Retrieval (RAG)",
}
CONTEXT_CHOICES = (0, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
KV_LABELS = {KvType.F16: "f16 (full)", KvType.Q8_0: "q8_0 (half)", KvType.Q4_0: "q4_0 (quarter)"}

COLUMNS = (
    "#",
    "Format",
    "Fit",
    "Memory",
    "GPU layers",
    "Generation",
    "Prompt",
    "Quality loss",
    "Same top token",
    "Runs",
)
THIS_MACHINE = "__this_machine__"
LOAD_PROFILE = "__load_profile__"

# --------------------------------------------------------------------------- formatting


def memory_text(o: Option) -> str:
    if o.vram_bytes and o.ram_bytes:
        return f"{human_bytes(o.vram_bytes)} GPU + {human_bytes(o.ram_bytes)} RAM"
    if o.vram_bytes:
        return f"{human_bytes(o.vram_bytes)} GPU"
    return f"{human_bytes(o.ram_bytes)} RAM"


def speed_text(low: float, typical: float, high: float) -> str:
    if typical <= 0:
        return "—"
    return f"{format_rate(typical)} tok/s"


def layers_text(o: Option) -> str:
    """How many layers run on the GPU: none, all, or k of n."""
    if o.family is not FormatFamily.GGUF:
        return "all" if o.vram_bytes else "—"
    if o.gpu_layers <= 0:
        return "none"
    # llama.cpp counts the output layer as one more, so a full offload reads n + 1.
    if o.gpu_layers >= o.n_layers:
        return "all"
    return f"{o.gpu_layers} of {o.n_layers}"


def quality_text(o: Option) -> str:
    """The Quality column: mean KLD and where it comes from (a prior is a range)."""
    return quality_cell(o.quality)


def option_label(o: Option) -> str:
    """The Format column: a hub repo's own files are named, so they stand apart from plans."""
    if o.source is OptionSource.HUB_FILE and o.filename:
        return f"{o.label} · {Path(o.filename).name}"
    return o.label


@dataclass(frozen=True)
class HubTarget:
    """A GGUF file of a hub repo that the selected option names."""

    repo_id: str
    filename: str
    size_bytes: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.repo_id, self.filename)

    @property
    def name(self) -> str:
        return Path(self.filename).name


def hub_target(facts: ModelFacts | None, o: Option | None) -> HubTarget | None:
    """The remote file behind ``o`` when it is one of a hub repo's GGUF files."""
    if facts is None or o is None or facts.kind is not SourceKind.HUB:
        return None
    if o.source is not OptionSource.HUB_FILE or not o.filename:
        return None
    size = next((r.size_bytes for r in facts.remote_files if r.filename == o.filename), 0)
    return HubTarget(facts.source, o.filename, size)


class _QueuedDownload:
    """A download this page asked the app's queue for; Cancel pauses it there."""

    def __init__(self, manager: DownloadManager, item_id: str) -> None:
        self.manager = manager
        self.item_id = item_id

    def cancel(self) -> None:
        self.manager.pause(self.item_id)


class AdvisorPage(QWidget):
    status_message = Signal(str)
    #: The user wants to make this file: (source model, [llama.cpp file type names]).
    convert_requested = Signal(str, list)
    #: The user wants the offered Quantdesk mix: (source model, budget in bytes).
    mix_requested = Signal(str, int)
    #: A new recommendation is on screen.
    advice_shown = Signal(object)
    #: A hub file was downloaded and added to the library (its LibraryEntry).
    model_downloaded = Signal(object)
    #: The user wants to chat with a downloaded model (its path).
    chat_requested = Signal(object)
    #: A download's progress (quant.progress.Progress), as shown under the summary.
    download_progress = Signal(object)
    #: The user started a serving engine and wants to chat with it: (base URL, a name).
    remote_requested = Signal(str, str)

    def __init__(
        self,
        settings: Settings,
        library: ModelLibrary | None = None,
        *,
        inspect_fn: InspectFn | None = None,
        downloads: DownloadManager | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``downloads`` is the app's download queue: a hub file downloaded from here
        joins it (shown, paused and resumed on the Hub tab too). Without it the page
        downloads on its own."""
        super().__init__(parent)
        self.setObjectName("advisorPage")
        self.settings = settings
        self.library = library
        self._inspect: InspectFn = inspect_fn or inspect_source
        self._machine: HardwareProfile | None = None
        # A changed setting asks again: the answer to an older question is dropped.
        self._planning: LatestTask[Advice] = LatestTask(
            self,
            on_finished=self._on_advice,
            on_failed=self._on_failed,
            on_cancelled=self._on_done,
            cancellable=True,
        )
        self._advice: Advice | None = None
        self._options: list[Option] = []
        self._entries: list[LibraryEntry] = []
        self._download: TaskHandle[LibraryEntry] | _QueuedDownload | None = None
        self._downloads = downloads
        self._download_target: HubTarget | None = None
        self._downloaded: dict[tuple[str, str], Path] = {}
        self._chat_path: Path | None = None
        # The hub file the download panel describes (the running or the last download).
        self._panel_key: tuple[str, str] | None = None

        outer = QVBoxLayout(self)
        outer.setContentsMargins(28, 22, 28, 12)
        outer.setSpacing(14)
        header = PageHeader(
            "Advisor",
            "Which file to run a model in on this machine, for what you want to do — with "
            "the memory, speed and quality loss of every option, and the reasons.",
        )
        self.spinner = Spinner()
        self.run_button = QPushButton(icon("play", current_theme().accent_text), "Recommend")
        self.run_button.setProperty("primary", True)
        header.add_action(self.spinner)
        header.add_action(self.run_button)
        outer.addWidget(header)

        controls = Card()
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(6)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.setMinimumContentsLength(20)
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        line = self.model_combo.lineEdit()
        if line is not None:
            line.setPlaceholderText("A library model, a .gguf file, an HF folder or org/name")
        self.file_button = QPushButton(icon("file"), "File…")
        self.folder_button = QPushButton(icon("folder"), "Folder…")
        self.task_combo = QComboBox()
        for task, label in TASK_LABELS.items():
            self.task_combo.addItem(label, task.value)
        self.ctx_combo = QComboBox()
        for n in CONTEXT_CHOICES:
            self.ctx_combo.addItem("Task default" if n == 0 else f"{n:,} tokens", n)
        self.kv_combo = QComboBox()
        for kv, label in KV_LABELS.items():
            self.kv_combo.addItem(label, kv.value)
        self.kv_combo.setToolTip("The KV cache's storage type; 8-bit roughly halves it")
        self.machine_combo = QComboBox()
        self.machine_combo.setToolTip(
            "Plan for this machine or for one described by a profile saved with 'Save profile…'"
        )
        # Two rows: the model on the first, the dials on the second.
        grid.addWidget(muted("Model", wrap=False), 0, 0)
        grid.addWidget(self.model_combo, 0, 1, 1, 5)
        grid.addWidget(self.file_button, 0, 6)
        grid.addWidget(self.folder_button, 0, 7)
        dials: list[tuple[str, QWidget]] = [
            ("Task", self.task_combo),
            ("Context", self.ctx_combo),
            ("KV cache", self.kv_combo),
            ("Plan for", self.machine_combo),
        ]
        col = 0
        for label, w in dials:
            grid.addWidget(muted(label, wrap=False), 1, col)
            grid.addWidget(w, 1, col + 1, 1, 2 if label == "Plan for" else 1)
            col += 2
        for c in (1, 3, 5, 7):
            grid.setColumnStretch(c, 1)
        controls.body.addLayout(grid)
        outer.addWidget(controls)

        self.summary_label = QLabel("Pick a model to see how it would run.")
        self.summary_label.setObjectName("banner")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.summary_label)
        outer.addWidget(self._build_download_panel())

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(12)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("optionsTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(32)
        hh = self.table.horizontalHeader()
        hh.setHighlightSections(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        splitter.addWidget(self.table)

        lower = QWidget()
        ll = QGridLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.setHorizontalSpacing(14)
        chart_card = Card("Size, quality and speed", "gauge")
        from app.ui.widgets.option_chart import OptionChart

        self.chart = OptionChart()
        chart_card.body.addWidget(self.chart)
        self.reasons_card = Card("Why this pick", "info")
        self.pick_title = QLabel("—")
        self.pick_title.setStyleSheet("font-size: 12pt; font-weight: 600;")
        self.pick_title.setWordWrap(True)
        self.pick_chips = ChipRow()
        self.reasons_label = QLabel("")
        self.reasons_label.setWordWrap(True)
        self.reasons_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reasons_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.extra_label = muted("")
        self.convert_button = QPushButton(icon("convert"), "Convert to this")
        self.convert_button.setEnabled(False)
        self.download_button = QPushButton(icon("save"), "Download this file")
        self.download_button.setEnabled(False)
        self.serving_button = QPushButton(icon("open"), "Find on the hub")
        self.serving_button.setVisible(False)
        self.mix_button = QPushButton(icon("convert"), "Make a Quantdesk mix")
        self.mix_button.setObjectName("mixButton")
        self.mix_button.setVisible(False)
        self.serving_label = QLabel("")
        self.serving_label.setObjectName("servingRepos")
        self.serving_label.setWordWrap(True)
        self.serving_label.setTextFormat(Qt.TextFormat.PlainText)
        self.serving_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.serving_label.setVisible(False)
        # The ready-made repos found: the command below is for the one chosen here.
        self.serving_combo = QComboBox()
        self.serving_combo.setObjectName("servingRepoChoice")
        self.serving_combo.setVisible(False)
        self.serving_command = QLabel("")
        self.serving_command.setObjectName("servingCommand")
        self.serving_command.setWordWrap(True)
        self.serving_command.setTextFormat(Qt.TextFormat.PlainText)
        self.serving_command.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.serving_command.setVisible(False)
        self.connect_button = QPushButton(icon("add"), "Connect to it…")
        self.connect_button.setToolTip(
            "Once the command runs on the GPU machine, add it as a remote server: its model "
            "then appears in Chat"
        )
        self.connect_button.setVisible(False)
        self._serving_repos: list[Any] = []
        # The advisor's own command for the selected option (a GPU format), shown
        # in the same place until a ready-made repo's command replaces it.
        self._option_command: str | None = None
        self.reasons_card.body.addWidget(self.pick_title)
        self.reasons_card.body.addWidget(self.pick_chips)
        # The reasons scroll when the card is short, so the buttons stay in view.
        text = QWidget()
        text.setObjectName("reasonsText")
        text_layout = QVBoxLayout(text)
        text_layout.setContentsMargins(0, 0, 6, 0)
        text_layout.setSpacing(8)
        # Ready-made serving repos, when asked for, come first: the answer to the click.
        text_layout.addWidget(self.serving_label)
        text_layout.addWidget(self.serving_combo)
        text_layout.addWidget(self.serving_command)
        text_layout.addWidget(self.reasons_label)
        text_layout.addWidget(self.extra_label)
        text_layout.addStretch(1)
        self.reasons_scroll = QScrollArea()
        self.reasons_scroll.setWidgetResizable(True)
        self.reasons_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.reasons_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.reasons_scroll.setStyleSheet(
            "QScrollArea, QWidget#reasonsText { background: transparent; }"
        )
        self.reasons_scroll.setWidget(text)
        self.reasons_card.body.addWidget(self.reasons_scroll, 1)
        actions = QHBoxLayout()
        actions.setSpacing(8)
        actions.addWidget(self.convert_button)
        actions.addWidget(self.download_button)
        actions.addWidget(self.serving_button)
        actions.addWidget(self.connect_button)
        actions.addWidget(self.mix_button)
        actions.addStretch(1)
        self.reasons_card.body.addLayout(actions)
        ll.addWidget(chart_card, 0, 0)
        ll.addWidget(self.reasons_card, 0, 1)
        ll.setColumnStretch(0, 3)
        ll.setColumnStretch(1, 2)
        splitter.addWidget(lower)
        splitter.setSizes([250, 400])
        outer.addWidget(splitter, 1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self.run)
        self.run_button.clicked.connect(self.run)
        self.file_button.clicked.connect(self._ask_file)
        self.folder_button.clicked.connect(self._ask_folder)
        self.model_combo.activated.connect(lambda _i: self._debounce.start())
        if line is not None:
            line.returnPressed.connect(self.run)
        for combo in (self.task_combo, self.ctx_combo, self.kv_combo):
            combo.currentIndexChanged.connect(lambda _i: self._debounce.start())
        self.machine_combo.activated.connect(self._on_machine_chosen)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.chart.option_clicked.connect(self.select_option)
        self.convert_button.clicked.connect(self._convert_selected)
        self.mix_button.clicked.connect(self._request_mix)
        self.serving_button.clicked.connect(self.find_serving_repos)
        self.serving_combo.currentIndexChanged.connect(self._show_serving_command)
        self.connect_button.clicked.connect(self._connect_serving)
        self.download_button.clicked.connect(self.download_selected)
        self.download_cancel_button.clicked.connect(self.cancel_download)
        self.chat_button.clicked.connect(self._chat_with_download)
        self._fill_machines()
        if downloads is not None:
            downloads.progress.connect(self._on_queue_progress)
            downloads.item_ended.connect(self._on_queue_ended)

    def _build_download_panel(self) -> QWidget:
        """One row under the summary: the file, its progress, rate and time left, Cancel;
        once the file is here, where it is and "Chat with this"."""
        panel = Card()
        panel.layout().setContentsMargins(16, 10, 16, 10)  # type: ignore[union-attr]
        row = QHBoxLayout()
        row.setSpacing(12)
        self.download_title = QLabel("")
        self.download_title.setStyleSheet("font-weight: 600;")
        self.download_bar = QProgressBar()
        self.download_bar.setRange(0, 1000)
        self.download_bar.setValue(0)
        self.download_bar.setMinimumWidth(160)
        # Wraps rather than widening the window when the text is long.
        self.download_status = muted("", wrap=True)
        self.download_status.setMinimumWidth(220)
        self.download_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_cancel_button = QPushButton("Cancel")
        self.download_cancel_button.setObjectName("cancelButton")
        self.chat_button = QPushButton(icon("chat", current_theme().accent_text), "Chat with this")
        self.chat_button.setProperty("primary", True)
        self.chat_button.setVisible(False)
        row.addWidget(self.download_title)
        row.addWidget(self.download_bar, 2)
        row.addWidget(self.download_status, 3)
        row.addWidget(self.download_cancel_button)
        row.addWidget(self.chat_button)
        panel.body.addLayout(row)
        panel.setVisible(False)
        self.download_panel = panel
        self._serving_task: TaskHandle[list[Any]] | None = None
        self._serving_key: str | None = None
        return panel

    # ------------------------------------------------------------------ inputs
    def set_entries(self, entries: Sequence[LibraryEntry]) -> None:
        """Offer the library's models; keeps the current choice when it is still there."""
        current = self.current_source()
        self._entries = list(entries)
        self._update_download_button(sync_panel=False)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for e in self._entries:
            self.model_combo.addItem(f"{e.name}  ({e.source.label})", str(e.path))
        self.model_combo.blockSignals(False)
        if current:
            self.set_source(current)
        elif self._entries:
            self.model_combo.setCurrentIndex(0)

    def set_machine_profile(self, profile: HardwareProfile) -> None:
        """This machine's probed profile (used when "Plan for" is "This machine")."""
        first = self._machine is None
        self._machine = profile
        if first and self.isVisible() and self._advice is None and self.current_source():
            self._debounce.start()

    def set_source(self, source: str) -> None:
        """Choose a model by path or hub id (a library entry when it is one)."""
        idx = self.model_combo.findData(source)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
        else:
            self.model_combo.setEditText(source)

    def current_source(self) -> str:
        text = self.model_combo.currentText().strip()
        idx = self.model_combo.currentIndex()
        if idx >= 0 and text == self.model_combo.itemText(idx):
            return str(self.model_combo.itemData(idx))
        return text

    def set_task(self, task: Task) -> None:
        self.task_combo.setCurrentIndex(self.task_combo.findData(task.value))

    def set_context(self, ctx: int) -> None:
        idx = self.ctx_combo.findData(ctx)
        if idx < 0:
            self.ctx_combo.addItem(f"{ctx:,} tokens", ctx)
            idx = self.ctx_combo.count() - 1
        self.ctx_combo.setCurrentIndex(idx)

    def set_kv_type(self, kv: KvType) -> None:
        self.kv_combo.setCurrentIndex(self.kv_combo.findData(kv.value))

    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a model", str(Path.home()), "Models (*.gguf config.json);;All files (*)"
        )
        if path:
            self.set_source(path)
            self.run()

    def _ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Choose a Hugging Face model folder", str(Path.home())
        )
        if path:
            self.set_source(path)
            self.run()

    # ------------------------------------------------------------------ machines
    def _fill_machines(self, select: Path | None = None) -> None:
        self.machine_combo.blockSignals(True)
        self.machine_combo.clear()
        self.machine_combo.addItem("This machine", THIS_MACHINE)
        for p in recent_profile_files(self.settings):
            self.machine_combo.addItem(p.name, str(p))
            self.machine_combo.setItemData(
                self.machine_combo.count() - 1, str(p), Qt.ItemDataRole.ToolTipRole
            )
        self.machine_combo.addItem("Load profile…", LOAD_PROFILE)
        idx = self.machine_combo.findData(str(select)) if select else 0
        self.machine_combo.setCurrentIndex(max(0, idx))
        self.machine_combo.blockSignals(False)

    def plan_for_profile_file(self, path: Path) -> None:
        """Plan for the machine described by the saved profile ``path``."""
        remember_profile_file(self.settings, path)
        self._fill_machines(select=path)
        self.run()

    def plan_for_this_machine(self) -> None:
        self.machine_combo.setCurrentIndex(0)
        self.run()

    def _on_machine_chosen(self, index: int) -> None:
        data = self.machine_combo.itemData(index)
        if data == LOAD_PROFILE:
            path, _ = QFileDialog.getOpenFileName(
                self,
                "Plan for another machine",
                str(Path.home()),
                "Hardware profile (*.json);;All files (*)",
            )
            if path:
                self.plan_for_profile_file(Path(path))
            else:
                self.machine_combo.setCurrentIndex(0)
            return
        self._debounce.start()

    def _chosen_profile_path(self) -> Path | None:
        data = self.machine_combo.currentData()
        if data in (None, THIS_MACHINE, LOAD_PROFILE):
            return None
        return Path(str(data))

    # ------------------------------------------------------------------ running
    def is_busy(self) -> bool:
        return self._planning.is_running()

    def run(self) -> None:
        """Ask the advisor again with the current choices (off the GUI thread)."""
        self._debounce.stop()
        source = self.current_source()
        if not source:
            self.summary_label.setText("Pick a model to see how it would run.")
            return
        # Qt hands enum data back as plain strings.
        task = Task(self.task_combo.currentData())
        ctx = int(self.ctx_combo.currentData() or 0)
        kv = KvType(self.kv_combo.currentData())
        self.spinner.start()
        self.run_button.setEnabled(False)
        self.status_message.emit("Planning…")
        self._planning.start(
            Call(
                advise,
                source,
                profile=self._machine,
                profile_path=self._chosen_profile_path(),
                task=task,
                ctx=ctx or None,
                kv_type=kv,
                inspect=self._inspect,
            )
        )

    def _on_done(self) -> None:
        self.spinner.stop()
        self.run_button.setEnabled(True)

    def _on_failed(self, failure: Failure) -> None:
        self._on_done()
        self.summary_label.setText(f"No plan: {failure.message}")
        errors.show_error(self, failure)

    def _on_advice(self, advice: Advice) -> None:
        self._on_done()
        self.show_advice(advice)

    # ------------------------------------------------------------------ showing
    def show_advice(self, advice: Advice) -> None:
        self._advice = advice
        rec = advice.recommendation
        self._options = list(rec.options)
        text = rec.summary
        if advice.profile_name != "this machine":
            text = f"Planning for {advice.profile_name} ({rec.hardware}). {text}"
        if rec.suggestions:
            text += "\n" + "\n".join(f"• {s}" for s in rec.suggestions)
        if rec.mix_offer is not None:
            text += f"\n• A Quantdesk mix for your budget: {rec.mix_offer.text}"
        self.mix_button.setVisible(rec.mix_offer is not None)
        self.summary_label.setText(text)
        self._fill_table(rec)
        top = rec.top
        self.chart.set_options(self._options, top_key=top.key if top else None)
        if self._options:
            self.table.selectRow(0)
            # Row 0 may have been selected already: show the new advice's option anyway.
            self._show_option(self.selected_option())
        else:
            self._show_option(None)
        self.status_message.emit(f"{len(self._options)} options for {rec.model}")
        self.advice_shown.emit(advice)

    @property
    def advice(self) -> Advice | None:
        return self._advice

    def options(self) -> list[Option]:
        return list(self._options)

    def _fill_table(self, rec: Recommendation) -> None:
        t = current_theme()
        self.table.setRowCount(len(rec.options))
        for r, o in enumerate(rec.options):
            s = o.speed
            layers = layers_text(o)
            q = o.quality
            same = f"{q.same_top_token * 100:.1f}%" if q.same_top_token is not None else "—"
            cells = [
                str(o.rank),
                option_label(o),
                o.fit.label,
                memory_text(o),
                layers,
                speed_text(s.generation_low, s.generation, s.generation_high),
                speed_text(s.prompt_low, s.prompt, s.prompt_high),
                quality_text(o),
                same,
                o.engine.short,
            ]
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, o.key)
                if c == 2:
                    item.setForeground(QColor(fit_color(o.fit)))
                if not o.fits and c != 2:
                    item.setForeground(QColor(t.text_muted))
                if c in (0, 4, 5, 6, 7, 8):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                if c == 5:
                    item.setToolTip(
                        f"{format_rate(s.generation_low)}–{format_rate(s.generation_high)} "
                        "tokens/s, "
                        f"bound by {s.generation_bound.value}"
                    )
                if c == 6:
                    item.setToolTip(
                        f"{format_rate(s.prompt_low)}–{format_rate(s.prompt_high)} tokens/s, "
                        f"bound by {s.prompt_bound.value}"
                    )
                if c == 7:
                    item.setToolTip(f"{q.provenance.label}: {q.basis}")
                if c == 9:
                    item.setToolTip(f"Runs {o.engine.label}")
                if c == 1 and o.filename:
                    item.setToolTip(
                        f"{o.filename} — a file the hub repo has; download it below"
                        if o.source is OptionSource.HUB_FILE
                        else o.filename
                    )
                self.table.setItem(r, c, item)

    def select_option(self, key: str) -> None:
        for r, o in enumerate(self._options):
            if o.key == key:
                self.table.selectRow(r)
                return

    def selected_option(self) -> Option | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._options):
            return None
        return self._options[rows[0].row()]

    def _on_row_selected(self) -> None:
        self._show_option(self.selected_option())

    def _show_option(self, o: Option | None) -> None:
        rec = self._advice.recommendation if self._advice else None
        if o is None or rec is None:
            self.pick_title.setText("—")
            self.pick_chips.set_chips([])
            self.reasons_label.setText("")
            self.extra_label.setText("")
            self._option_command = None
            self.convert_button.setEnabled(False)
            self.convert_button.setVisible(False)
            self._update_serving(None)
            self._update_download_button()
            return
        is_top = rec.top is not None and o.key == rec.top.key
        title = self.reasons_card.title_label
        assert title is not None
        title.setText("Why this pick" if is_top else f"Why option {o.rank}")
        self.pick_title.setText(option_label(o))
        chips = [chip(o.fit.label, fit_chip_kind(o.fit))]
        if rec.two_lanes or o.family is FormatFamily.GPU:
            chips.append(chip(f"runs {o.engine.short}", tooltip=f"Runs {o.engine.label}"))
        chips.append(chip(o.quality.provenance.label, tooltip=o.quality.basis))
        if o.meets_task:
            chips.append(chip(f"good for {rec.task.value}", "good"))
        if o.imatrix.value == "required":
            chips.append(chip("needs an imatrix", "warn"))
        chips.append(chip(f"{o.effective_bpw:.2f} bits/weight"))
        self.pick_chips.set_chips(chips)
        self.reasons_label.setText("\n".join(f"• {r}" for r in o.reasons))
        self.extra_label.setText("\n".join(rec.notes))
        self._option_command = self._advice.serving_command(o) if self._advice else None
        self.chart.set_options(
            self._options, top_key=rec.top.key if rec.top else None, selected_key=o.key
        )
        convertible = o.family is FormatFamily.GGUF and o.source is OptionSource.PLANNED
        self.convert_button.setEnabled(convertible)
        # Shown where it can act; the file itself, a hub file or a serving format has its
        # own actions (or none).
        self.convert_button.setVisible(convertible)
        self.convert_button.setToolTip(
            f"Make {o.file_type} from this model on the Convert page"
            if convertible
            else "Only GGUF types Quantdesk can make are converted here"
        )
        self._update_serving(o)
        self._show_serving_command()
        self._update_download_button()

    # ------------------------------------------------------------------ serving repos
    def serving_base(self) -> str | None:
        """The hub repo whose pre-quantized versions are looked for (a hub source only)."""
        if self._advice is None:
            return None
        f = self._advice.facts
        return f.source if f.kind is SourceKind.HUB and f.source else None

    def _update_serving(self, o: Option | None) -> None:
        gpu = o is not None and o.family is FormatFamily.GPU
        self.serving_button.setVisible(gpu)
        if o is None or o.key != self._serving_key:
            self.serving_label.setVisible(False)
            self._serving_repos = []
            self._show_serving_command()
        if o is None or not gpu:
            return
        base = self.serving_base()
        self.serving_button.setEnabled(base is not None and self._serving_task is None)
        self.serving_button.setToolTip(
            f"Look for {o.file_type} versions of {base} that others published on the hub, "
            "with the command that serves them"
            if base
            else "Enter the model as a hub repo id (org/name) to look for pre-quantized "
            "versions of it"
        )

    def find_serving_repos(self) -> None:
        """Find pre-quantized repos of the model in the selected serving format (off-thread)."""
        from app.core.hub import find_serving_repos

        o = self.selected_option()
        base = self.serving_base()
        if o is None or base is None or o.family is not FormatFamily.GPU:
            return
        try:
            fmt = GpuFormat(o.file_type)
        except ValueError:
            return
        self._serving_key = o.key
        self.serving_button.setEnabled(False)
        self.serving_label.setText(f"Looking for {fmt.value} versions of {base} on the hub…")
        self.serving_label.setVisible(True)
        self._serving_task = start_task(
            Call(
                find_serving_repos,
                base,
                fmt,
                limit=8,
                ctx=o.ctx,
                tensor_parallel=self.serving_gpus(),
            ),
            parent=self,
            on_finished=self._on_serving_repos,
            on_failed=self._on_serving_failed,
            on_cancelled=self._on_serving_failed,
            cancellable=True,
        )

    def _on_serving_repos(self, repos: list[Any]) -> None:
        self._serving_task = None
        o = self.selected_option()
        if o is not None and o.key == self._serving_key:
            self._serving_repos = list(repos[:5])
            self.serving_combo.blockSignals(True)
            self.serving_combo.clear()
            for r in self._serving_repos:
                size = f" · {human_bytes(r.size_bytes)}" if r.size_bytes else ""
                self.serving_combo.addItem(f"{r.repo_id}{size}")
            self.serving_combo.blockSignals(False)
            if repos:
                lines = [
                    "Ready-made on the hub (llama.cpp does not run these; vLLM does). "
                    "Pick one; run the command on the GPU machine, then Connect to it:"
                ]
            else:
                lines = [
                    f"No {o.file_type} versions of this model were found on the hub; "
                    "make one with the serving engine's own tools (for example "
                    "llm-compressor), or run a GGUF option here."
                ]
            self.serving_label.setText("\n".join(lines))
            self.serving_label.setVisible(True)
            self._show_serving_command()
            # The list sits above the reasons: bring the top into view.
            self.reasons_scroll.verticalScrollBar().setValue(0)
        self._update_serving(o)

    def serving_gpus(self) -> int:
        """NVIDIA GPUs of the planned machine: vLLM splits the model over all of them."""
        if self._advice is None:
            return 1
        return max(1, sum(1 for g in self._advice.profile.gpus if g.vendor == "nvidia"))

    def _show_serving_command(self, *_: object) -> None:
        i = self.serving_combo.currentIndex()
        repo = self._serving_repos[i] if 0 <= i < len(self._serving_repos) else None
        shown = repo is not None and self.serving_label.isVisibleTo(self)
        self.serving_combo.setVisible(shown)
        self.connect_button.setVisible(shown)
        command = repo.command if shown and repo is not None else self._option_command
        self.serving_command.setText(f"Serve it with:\n{command}" if command else "")
        self.serving_command.setVisible(bool(command))

    def serving_command_text(self) -> str:
        return self.serving_command.text() if self.serving_command.isVisibleTo(self) else ""

    def _connect_serving(self) -> None:
        i = self.serving_combo.currentIndex()
        if not 0 <= i < len(self._serving_repos):
            return
        repo_id = str(self._serving_repos[i].repo_id)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", repo_id.rsplit("/", 1)[-1]).strip("-")[:40]
        # vLLM listens on port 8000 unless told otherwise.
        self.remote_requested.emit("http://localhost:8000/v1", name or "vllm")

    def _on_serving_failed(self, failure: Failure | None = None) -> None:
        self._serving_task = None
        if failure is not None:
            self.serving_label.setText(failure.message)
            self.serving_label.setVisible(True)
        self._update_serving(self.selected_option())

    def serving_text(self) -> str:
        """What the serving section shows: the repos found and the chosen one's command."""
        if not self.serving_label.isVisibleTo(self):
            return ""
        repos = [self.serving_combo.itemText(i) for i in range(self.serving_combo.count())]
        return "\n".join([self.serving_label.text(), *repos, self.serving_command_text()])

    def _request_mix(self) -> None:
        rec = self._advice.recommendation if self._advice else None
        if rec is None or rec.mix_offer is None or self._advice is None:
            return
        source = self._advice.facts.source or self.current_source()
        self.mix_requested.emit(source, rec.mix_offer.budget_bytes)

    def _convert_selected(self) -> None:
        o = self.selected_option()
        if o is None or self._advice is None:
            return
        self.convert_requested.emit(
            self._advice.facts.source or self.current_source(), [o.file_type]
        )

    # ------------------------------------------------------------------ downloading
    def selected_hub_target(self) -> HubTarget | None:
        """The hub file the selected option names, if it names one."""
        facts = self._advice.facts if self._advice else None
        return hub_target(facts, self.selected_option())

    def is_downloading(self) -> bool:
        return self._download is not None

    def local_copy(self, target: HubTarget) -> Path | None:
        """A complete copy of ``target`` on this machine: downloaded here, in the library, or
        in the Hugging Face cache when the advice was made."""
        done = self._downloaded.get(target.key)
        if done is not None:
            return done
        if self._advice is not None:
            for o in self._options:
                if o.filename == target.filename and o.source is OptionSource.HUB_FILE:
                    cached = self._advice.local_file(o)
                    if cached is not None:
                        return cached
        folder = "models--" + target.repo_id.replace("/", "--")
        tail = Path(target.filename).parts
        for e in self._entries:
            parts = e.path.parts
            if folder in parts and parts[-len(tail) :] == tail:
                return e.path
        return None

    def _update_download_button(self, *, sync_panel: bool = True) -> None:
        """Show "Download this file" for a hub file, enabled while it is not yet here.

        With ``sync_panel`` (a new selection), the download panel follows the
        selected file while nothing downloads; a download that just ended keeps
        its outcome on screen until the selection changes.
        """
        target = self.selected_hub_target()
        have = self.local_copy(target) if target is not None else None
        button = self.download_button
        button.setText("Downloaded" if have is not None else "Download this file")
        button.setEnabled(target is not None and have is None and self._download is None)
        # Only a file a hub repo has can be downloaded: for this file, a plan or a serving
        # format the button would only be noise.
        button.setVisible(target is not None)
        if target is None:
            button.setToolTip("")
        elif have is not None:
            button.setToolTip(f"{target.name} is already here: {have}")
        elif self._download is not None:
            button.setToolTip("One download at a time; wait for the current one or cancel it")
        else:
            size = f" ({human_bytes(target.size_bytes)})" if target.size_bytes else ""
            button.setToolTip(
                f"Download {target.name}{size} from {target.repo_id} into the Hugging Face "
                "cache and add it to the library; an interrupted download resumes"
            )
        if sync_panel and self._download is None:
            self._sync_panel(target, have)

    def _sync_panel(self, target: HubTarget | None, have: Path | None) -> None:
        if target is not None and have is not None:
            if self._chat_path != have or not self.download_panel.isVisibleTo(self):
                self._show_downloaded(target, have)
        elif target is None or target.key != self._panel_key:
            self.download_panel.setVisible(False)
            self._chat_path = None
            self._panel_key = None

    def download_selected(self) -> None:
        """Download the selected hub file off the GUI thread."""
        target = self.selected_hub_target()
        if target is None or self._download is not None:
            return
        self._download_target = target
        self._panel_key = target.key
        self._chat_path = None
        self.download_panel.setVisible(True)
        self.download_title.setText(f"Downloading {target.name}")
        self.download_title.setToolTip(f"{target.filename} from {target.repo_id}")
        self.download_bar.setValue(0)
        self.download_bar.setVisible(True)
        self.download_cancel_button.setVisible(True)
        self.download_cancel_button.setEnabled(True)
        self.download_status.setText("Starting…")
        self.download_status.setToolTip("")
        self.chat_button.setVisible(False)
        self.status_message.emit(f"Downloading {target.name}…")
        # The strip takes room from the table: keep the chosen row in view.
        QTimer.singleShot(0, self._scroll_to_selection)
        if self._downloads is not None:
            try:
                item = self._downloads.enqueue(
                    target.repo_id, target.filename, size_bytes=target.size_bytes
                )
            except (QuantError, AppError) as exc:
                self._download_ended()
                errors.show_error(self, exc)
                return
            self._download = _QueuedDownload(self._downloads, item.id)
            self._update_download_button()
            return
        self._download = start_task(
            Call(download_gguf, target.repo_id, target.filename),
            parent=self,
            on_finished=self._on_downloaded,
            on_failed=self._on_download_failed,
            on_cancelled=self._on_download_cancelled,
            on_progress=self._on_download_progress,
            cancellable=True,
        )
        self._update_download_button()

    def _queued_id(self) -> str | None:
        d = self._download
        return d.item_id if isinstance(d, _QueuedDownload) else None

    def _on_queue_progress(self, item: DownloadItem) -> None:
        if item.id != self._queued_id():
            return
        self._on_download_progress(
            Progress(
                "download",
                item.bytes_done,
                item.bytes_total,
                item.message,
                bytes_done=item.bytes_done,
                bytes_total=item.bytes_total,
                eta_s=item.eta_s,
            )
        )

    def _on_queue_ended(self, item: DownloadItem) -> None:
        if item.id != self._queued_id():
            return
        if item.state is DownloadState.DONE and item.path:
            try:
                entry = read_entry(item.path, ModelSource.HUGGINGFACE)
            except (QuantError, AppError) as exc:
                self._on_download_failed(Failure.from_exception(exc))
                return
            self._on_downloaded(entry)
        elif item.state is DownloadState.FAILED:
            error = HubError(item.error or "the download failed")
            self._on_download_failed(Failure.from_exception(error))
        else:  # paused here or on the Hub tab
            self._on_download_cancelled()

    def _scroll_to_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.table.scrollTo(rows[0])

    def cancel_download(self) -> None:
        if self._download is None:
            return
        self.download_cancel_button.setEnabled(False)
        self.download_status.setText("Cancelling…")
        self._download.cancel()

    def _on_download_progress(self, p: Progress) -> None:
        if self._download is None:
            return
        fraction = p.fraction
        if fraction is not None:
            self.download_bar.setValue(round(fraction * 1000))
        if p.message:
            self.download_status.setText(p.message)
        self.download_progress.emit(p)

    def _download_ended(self) -> HubTarget | None:
        target = self._download_target
        self._download = None
        self.download_cancel_button.setVisible(False)
        return target

    def _on_downloaded(self, entry: LibraryEntry) -> None:
        target = self._download_ended()
        if self.library is not None:
            try:
                self.library.record(entry)
            except OSError as exc:  # the file is in the cache either way
                logger.warning("could not add %s to the library: %s", entry.path, exc)
        if target is not None:
            self._downloaded[target.key] = entry.path
            self._show_downloaded(target, entry.path)
        self.status_message.emit(f"Downloaded {entry.name}")
        self.model_downloaded.emit(entry)
        self._update_download_button(sync_panel=False)

    def _show_downloaded(self, target: HubTarget, path: Path) -> None:
        self._chat_path = path
        self._panel_key = target.key
        self.download_panel.setVisible(True)
        self.download_title.setText(f"{target.name} is downloaded")
        self.download_bar.setValue(1000)
        self.download_bar.setVisible(False)
        self.download_cancel_button.setVisible(False)
        where = "the Hugging Face cache and your library" if self.library else "the cache"
        self.download_title.setToolTip(f"{target.filename} from {target.repo_id}")
        self.download_status.setText(f"In {where}")
        self.download_status.setToolTip(str(path))
        self.chat_button.setVisible(True)

    def _on_download_failed(self, failure: Failure) -> None:
        target = self._download_ended()
        name = target.name if target else "the file"
        self.download_title.setText(f"Download of {name} stopped")
        self.download_status.setText(
            "What arrived is kept in the Hugging Face cache; Download resumes from there."
        )
        self._update_download_button(sync_panel=False)
        errors.show_error(self, failure)

    def _on_download_cancelled(self) -> None:
        target = self._download_ended()
        name = target.name if target else "the file"
        self.download_title.setText(f"Download of {name} cancelled")
        self.download_status.setText(
            "The part downloaded so far is kept in the Hugging Face cache; Download resumes "
            "from there."
        )
        self.status_message.emit(f"Download of {name} cancelled")
        self._update_download_button(sync_panel=False)

    def _chat_with_download(self) -> None:
        if self._chat_path is not None:
            self.chat_requested.emit(self._chat_path)

    def shutdown(self) -> None:
        self._debounce.stop()
        self._planning.cancel()
        if self._download is not None:
            self._download.cancel()
        if self._serving_task is not None:
            self._serving_task.cancel()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self._advice is None and not self._planning.is_running() and self.current_source():
            self._debounce.start()
