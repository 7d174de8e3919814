"""The Convert page: a model in, calibrated and measured GGUF files out.

Pick a source (an HF folder, a GGUF file, or a hub repo id), tick the target
types (each with its predicted size and quality from the format table) — or
switch to **Size budget** and choose the size on an axis where the stock types
are marked, for a Quantdesk mix chosen per tensor by measurement — choose the
calibration text, and Start. The job runs in a child process
(:class:`app.workers.process_job.ProcessJob`): one progress bar per stage, an
overall ETA, a log pane and a Cancel that stops it for real. Several jobs
queue and run one after another; the window stays responsive. When a job
ends, its report is shown as a table and a size-versus-KL-divergence chart (a
mix as a star beside the stock types, the budget as a line), with "Chat with
this" and "Show in folder".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.convert_preview import (
    BudgetAxis,
    ConversionPreview,
    SourceInfo,
    TypePreview,
    preview_conversion,
    resolve_budget,
)
from app.core.paths import app_paths
from app.core.quality import keep_report
from app.core.settings import Settings
from app.ui.errors import show_error
from app.ui.widgets.budget_axis import BudgetAxisWidget
from app.ui.widgets.cards import Card, muted
from app.workers.failure import Failure
from app.workers.process_job import ProcessJob
from app.workers.tasks import Call, LatestTask, start_task
from quant.errors import QuantError
from quant.plan.mix import parse_budget
from quant.plan.quality import kld_text
from quant.progress import Progress
from quant.units import human_bytes

logger = logging.getLogger(__name__)

SETTINGS_KEY = "convert"
# The types offered, most to least precise (names as llama.cpp's quantize tool uses).
OFFERED_TYPES = (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "Q3_K_M",
    "IQ3_M",
    "IQ3_XXS",
    "Q2_K",
    "IQ2_M",
    "IQ2_XS",
)
DEFAULT_TYPES = ("Q4_K_M",)
REPORT_COLUMNS = (
    "Type",
    "Size",
    "Bits/weight",
    "imatrix",
    "KLD mean",
    "KLD p99",
    "PPL",
    "ΔPPL",
    "Same top token",
)
MIX_LABEL = "Quantdesk mix"
# Rough share of a job's time per stage kind, for the overall ETA.
_STAGE_WEIGHT = {
    "prepare": 0.5,
    "imatrix": 3.0,
    "search": 4.0,
    "quantize": 2.0,
    "reference": 1.0,
    "evaluate": 1.0,
    "report": 0.1,
}


@dataclass
class QueuedJob:
    """A job in the queue and what it has reported so far."""

    number: int
    spec: Any  # quant.jobs.pipeline.JobSpec
    state: str = "queued"  # queued | running | finished | failed | cancelled
    report: dict[str, Any] | None = None
    failure: Failure | None = None
    item: QListWidgetItem | None = field(default=None, repr=False)

    @property
    def title(self) -> str:
        parts = [t.name for t in self.spec.types]
        if self.spec.budget:
            parts.append(f"mix for {_budget_text(self.spec.budget)}")
        name = Path(self.spec.source).name or self.spec.source
        return f"#{self.number} {name} → {', '.join(parts)}"


class StageRow:
    """One stage's label, progress bar and status text."""

    def __init__(self, grid: QGridLayout, row: int, name: str) -> None:
        self.name = name
        self.label = QLabel(name)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.bar.setFormat("waiting")
        self.status = muted("")
        self.status.setMinimumWidth(220)
        grid.addWidget(self.label, row, 0)
        grid.addWidget(self.bar, row, 1)
        grid.addWidget(self.status, row, 2)
        self.fraction = 0.0
        self.finished = False

    def update(self, p: Progress) -> None:
        frac = p.fraction
        if frac is None:
            self.bar.setRange(0, 0)  # busy indicator
            self.bar.setFormat("working")
        else:
            if p.bytes_total and p.stage.startswith("quantize"):
                frac = min(1.0, p.bytes_done / p.bytes_total)
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * frac))
            self.bar.setFormat(f"{100 * frac:.0f}%")
            self.fraction = frac
        eta = f" · {p.eta_s:.0f} s left" if p.eta_s else ""
        self.status.setText(f"{p.message[:60]}{eta}")

    def complete(self, message: str) -> None:
        self.bar.setRange(0, 1000)
        self.bar.setValue(1000)
        self.bar.setFormat("done")
        self.status.setText(message[:80])
        self.fraction = 1.0
        self.finished = True

    def widgets(self) -> list[QWidget]:
        return [self.label, self.bar, self.status]


class ConvertPage(QWidget):
    """Source, types and calibration in; a queue of jobs with live progress; reports out."""

    chat_requested = Signal(object)  # Path of a GGUF to chat with
    status_message = Signal(str)
    job_started = Signal(int)
    job_finished = Signal(object)  # the report dict
    job_failed = Signal(object)  # Failure
    job_cancelled = Signal(int)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("convertPage")
        self.settings = settings
        self._queue: list[QueuedJob] = []
        self._running: QueuedJob | None = None
        self._process: ProcessJob | None = None
        self._counter = 0
        self._stage_rows: dict[str, StageRow] = {}
        self._job_started_at = 0.0
        self._report: dict[str, Any] | None = None
        self._source_info: SourceInfo | None = None
        self._plot: Any = None
        # The user may type on: only the preview of the latest form is shown.
        self._previewing: LatestTask[ConversionPreview] = LatestTask(
            self, on_finished=self._on_preview, on_failed=self._on_preview_failed
        )
        # "Largest that fits this machine" probes the machine: off the GUI thread.
        self._fitting: LatestTask[tuple[str, tuple[str, ...]]] = LatestTask(
            self, on_finished=self._on_fit, on_failed=self._on_fit_failed
        )
        self._budget_repacked: tuple[str, ...] = ()
        self._build()
        self._restore()

    # -- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        outer.addWidget(scroll)
        self._scroll = scroll
        content = QWidget()
        scroll.setWidget(content)
        lay = QVBoxLayout(content)
        lay.setContentsMargins(24, 20, 24, 20)
        lay.setSpacing(14)

        title = QLabel("Convert")
        title.setObjectName("pageTitle")
        lay.addWidget(title)
        lay.addWidget(
            muted(
                "Make GGUF files calibrated with an importance matrix, and measure "
                "what each type costs against the full-precision model."
            )
        )

        # Source and options
        src_card = Card("Model", "convert")
        form = QFormLayout()
        row = QHBoxLayout()
        self.source_edit = QLineEdit()
        self.source_edit.setObjectName("sourceEdit")
        self.source_edit.setPlaceholderText(
            "HF model folder, F16/BF16/Q8_0 .gguf file, or hub id like google/gemma-3-1b-it"
        )
        self.source_edit.editingFinished.connect(self._source_changed)
        self.pick_file = QPushButton("GGUF file…")
        self.pick_file.clicked.connect(self._choose_file)
        self.pick_folder = QPushButton("Folder…")
        self.pick_folder.clicked.connect(self._choose_folder)
        row.addWidget(self.source_edit, 1)
        row.addWidget(self.pick_file)
        row.addWidget(self.pick_folder)
        form.addRow("Source", row)
        self.source_note = muted("")
        form.addRow("", self.source_note)

        self.calibration_combo = QComboBox()
        self.calibration_combo.setObjectName("calibrationCombo")
        self.calibration_combo.addItem("Built-in mix (prose, code, languages, chat)", "default")
        self.calibration_combo.addItem("Self-generated by the model", "self")
        self.calibration_combo.addItem("My text file or folder…", "path")
        self.calibration_combo.activated.connect(self._calibration_changed)
        self.calibration_path = ""
        form.addRow("Calibration", self.calibration_combo)

        self.imatrix_combo = QComboBox()
        self.imatrix_combo.setObjectName("imatrixCombo")
        self.imatrix_combo.addItem("Collect (recommended below 5 bits)", "auto")
        self.imatrix_combo.addItem("None", "none")
        self.imatrix_combo.addItem("From a file…", "file")
        self.imatrix_combo.activated.connect(self._imatrix_changed)
        self.imatrix_path = ""
        form.addRow("Importance matrix", self.imatrix_combo)

        self.evaluate_check = QCheckBox("Measure quality against the full-precision model")
        self.evaluate_check.setChecked(True)
        form.addRow("", self.evaluate_check)

        out_row = QHBoxLayout()
        self.out_edit = QLineEdit(str(app_paths().models_dir))
        self.out_edit.setObjectName("outEdit")
        out_btn = QPushButton("Browse…")
        out_btn.clicked.connect(self._choose_out)
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(out_btn)
        form.addRow("Output folder", out_row)
        src_card.body.addLayout(form)
        lay.addWidget(src_card)

        # Types, or a size budget
        types_card = Card("Target types", "advisor")
        mode_row = QHBoxLayout()
        self.mode_types = QRadioButton("Stock types")
        self.mode_types.setObjectName("modeTypes")
        self.mode_budget = QRadioButton("Size budget — a Quantdesk mix")
        self.mode_budget.setObjectName("modeBudget")
        self.mode_types.setChecked(True)
        self._mode_group = QButtonGroup(self)
        self._mode_group.addButton(self.mode_types)
        self._mode_group.addButton(self.mode_budget)
        self.mode_types.toggled.connect(self._mode_changed)
        mode_row.addWidget(self.mode_types)
        mode_row.addWidget(self.mode_budget)
        mode_row.addStretch(1)
        types_card.body.addLayout(mode_row)
        self.budget_panel = QWidget()
        self.budget_panel.setObjectName("budgetPanel")
        bp = QVBoxLayout(self.budget_panel)
        bp.setContentsMargins(0, 0, 0, 0)
        explain = muted(
            "Quantdesk measures what each tensor's type costs this model and chooses one "
            "type per tensor for the smallest loss that fits the size. The mix is measured "
            "next to the stock types on either side of the budget and kept only if it is "
            "better."
        )
        explain.setWordWrap(True)
        bp.addWidget(explain)
        self.budget_axis = BudgetAxisWidget()
        self.budget_axis.budget_changed.connect(self._axis_moved)
        bp.addWidget(self.budget_axis)
        brow = QHBoxLayout()
        self.budget_edit = QLineEdit()
        self.budget_edit.setObjectName("budgetEdit")
        self.budget_edit.setPlaceholderText("3.2GB, 450MiB, 4.25bpw …")
        self.budget_edit.editingFinished.connect(self._budget_typed)
        self.fit_button = QPushButton("Largest that fits this machine")
        self.fit_button.setObjectName("fitButton")
        self.fit_button.clicked.connect(self._fit_machine)
        brow.addWidget(QLabel("Budget"))
        brow.addWidget(self.budget_edit, 1)
        brow.addWidget(self.fit_button)
        bp.addLayout(brow)
        self.budget_note = muted("")
        self.budget_note.setObjectName("budgetNote")
        self.budget_note.setWordWrap(True)
        bp.addWidget(self.budget_note)
        self.budget_panel.setVisible(False)
        types_card.body.addWidget(self.budget_panel)
        self.types_list = QListWidget()
        self.types_list.setObjectName("typesList")
        self.types_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.types_list.setMinimumHeight(180)
        for name in OFFERED_TYPES:
            item = QListWidgetItem(name)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.types_list.addItem(item)
        types_card.body.addWidget(self.types_list)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("startButton")
        self.start_button.setProperty("primary", True)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        types_card.body.addLayout(buttons)
        lay.addWidget(types_card)

        # Jobs
        jobs_card = Card("Jobs", "play")
        self._jobs_card = jobs_card
        self.queue_list = QListWidget()
        self.queue_list.setObjectName("queueList")
        self.queue_list.setMaximumHeight(110)
        jobs_card.body.addWidget(self.queue_list)
        head = QHBoxLayout()
        self.job_title = QLabel("No job running")
        self.job_title.setObjectName("jobTitle")
        self.eta_label = muted("")
        self.eta_label.setObjectName("etaLabel")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_current)
        head.addWidget(self.job_title, 1)
        head.addWidget(self.eta_label)
        head.addWidget(self.cancel_button)
        jobs_card.body.addLayout(head)
        self.stage_holder = QWidget()
        self.stage_grid = QGridLayout(self.stage_holder)
        self.stage_grid.setColumnStretch(1, 1)
        jobs_card.body.addWidget(self.stage_holder)
        self.log_view = QPlainTextEdit()
        self.log_view.setObjectName("logView")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setMinimumHeight(120)
        jobs_card.body.addWidget(self.log_view)
        lay.addWidget(jobs_card)

        # Report
        report_card = Card("Report", "gauge")
        self._report_card = report_card
        split = QSplitter(Qt.Orientation.Horizontal)
        self.report_table = QTableWidget(0, len(REPORT_COLUMNS))
        self.report_table.setObjectName("reportTable")
        self.report_table.setHorizontalHeaderLabels(REPORT_COLUMNS)
        self.report_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.report_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.report_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.report_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents
        )
        self.report_table.setMinimumHeight(160)
        self.report_table.itemSelectionChanged.connect(self._update_report_buttons)
        split.addWidget(self.report_table)
        self.chart = self._make_chart()
        split.addWidget(self.chart)
        # The table carries the numbers a user reads; the chart is the overview.
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([600, 400])
        report_card.body.addWidget(split)
        self.report_note = muted("")
        report_card.body.addWidget(self.report_note)
        rb = QHBoxLayout()
        self.chat_button = QPushButton("Chat with this")
        self.chat_button.setObjectName("chatButton")
        self.chat_button.setEnabled(False)
        self.chat_button.clicked.connect(self._chat_with_selected)
        self.folder_button = QPushButton("Show in folder")
        self.folder_button.setObjectName("folderButton")
        self.folder_button.setEnabled(False)
        self.folder_button.clicked.connect(self._show_folder)
        rb.addStretch(1)
        rb.addWidget(self.folder_button)
        rb.addWidget(self.chat_button)
        report_card.body.addLayout(rb)
        lay.addWidget(report_card)
        lay.addStretch(1)

    def _make_chart(self) -> QWidget:
        try:
            import pyqtgraph as pg
        except ImportError:  # the table still shows every number
            self._plot = None
            return muted("Install pyqtgraph for the size / quality chart.")
        plot: Any = pg.PlotWidget()
        plot.setObjectName("reportChart")
        plot.setMinimumSize(QSize(260, 180))
        plot.setBackground(None)
        plot.setLabel("bottom", "size", units="MiB")
        plot.setLabel("left", "mean KL divergence")
        plot.showGrid(x=True, y=True, alpha=0.2)
        self._plot = plot
        widget: QWidget = plot
        return widget

    # -- settings ------------------------------------------------------------------------

    def _section(self) -> dict[str, Any]:
        return self.settings.section(SETTINGS_KEY)

    def _restore(self) -> None:
        s = self._section()
        self.set_types(list(s.get("types") or DEFAULT_TYPES))
        if s.get("budget"):
            self.budget_edit.setText(str(s["budget"]))
        if s.get("mode") == "budget":
            self.mode_budget.setChecked(True)
        if s.get("out_dir"):
            self.out_edit.setText(str(s["out_dir"]))
        if s.get("source"):
            self.source_edit.setText(str(s["source"]))
            self._source_changed()

    def _remember(self) -> None:
        s = self._section()
        s["types"] = self.selected_types()
        s["mode"] = "budget" if self.budget_mode() else "types"
        s["budget"] = self.budget_edit.text().strip()
        s["out_dir"] = self.out_edit.text().strip()
        s["source"] = self.source_edit.text().strip()
        try:
            self.settings.save()
        except OSError as exc:
            logger.warning("could not save convert settings: %s", exc)

    # -- inputs --------------------------------------------------------------------------

    def preset(self, source: str, types: list[str]) -> None:
        """Fill in a source and target types (from the advisor's "Convert" button)."""
        self.source_edit.setText(source)
        if types:
            self.set_types(types)
        self._source_changed()

    def set_types(self, types: list[str]) -> None:
        wanted = {t.upper() for t in types}
        for i in range(self.types_list.count()):
            item = self.types_list.item(i)
            name = str(item.data(Qt.ItemDataRole.UserRole))
            item.setCheckState(Qt.CheckState.Checked if name in wanted else Qt.CheckState.Unchecked)
        present = {
            str(self.types_list.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(self.types_list.count())
        }
        for t in sorted(wanted - present):  # a type the list does not offer yet
            extra = QListWidgetItem(t)
            extra.setData(Qt.ItemDataRole.UserRole, t)
            extra.setFlags(extra.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            extra.setCheckState(Qt.CheckState.Checked)
            self.types_list.addItem(extra)
        self._describe_types()

    # -- size budget ---------------------------------------------------------------------

    def budget_mode(self) -> bool:
        return self.mode_budget.isChecked()

    def set_budget(self, text: str) -> None:
        """Switch to size-budget mode with ``text`` (``3.2GB``, ``4.25bpw``) as the budget."""
        self.budget_edit.setText(text)
        self.mode_budget.setChecked(True)
        self._budget_typed()

    def budget_bytes(self) -> int | None:
        """The budget in bytes, or None when the field does not hold one yet."""
        text = self.budget_edit.text().strip()
        if not text:
            return None
        try:
            budget = parse_budget(text)
        except QuantError:
            return None
        axis = self.budget_axis.axis()
        if budget.n_bytes is None and axis is None:
            return None
        return budget.resolve(axis.n_parameters if axis is not None else 0)

    def _mode_changed(self) -> None:
        budget = self.budget_mode()
        self.budget_panel.setVisible(budget)
        self.types_list.setVisible(not budget)
        if budget and self.budget_bytes() is None:
            self._default_budget()
        self._update_budget_note()

    def _default_budget(self) -> None:
        """A first budget: the size of Q4_K_M, the type most people would pick."""
        axis = self.budget_axis.axis()
        if axis is None:
            return
        mark = next((m for m in axis.marks if m.name == "Q4_K_M"), None)
        n = mark.size_bytes if mark else (axis.min_bytes + axis.max_bytes) // 2
        self.budget_edit.setText(str(n))
        self.budget_axis.set_budget(n)

    def _axis_moved(self, n_bytes: int) -> None:
        self._budget_repacked = ()
        self.budget_edit.setText(str(n_bytes))
        self._update_budget_note()

    def _budget_typed(self) -> None:
        self._budget_repacked = ()
        n = self.budget_bytes()
        if n is not None:
            self.budget_axis.set_budget(n)
        self._update_budget_note()

    def _fit_machine(self) -> None:
        source = self.source_edit.text().strip()
        if not source:
            show_error(self, QuantError("Choose a model first: the fit depends on its size."))
            return
        self.fit_button.setEnabled(False)
        self.budget_note.setText("Planning the largest file that runs on this machine…")
        self._fitting.start(Call(resolve_budget, source, "fit"))

    def _on_fit(self, result: tuple[str, tuple[str, ...]]) -> None:
        self.fit_button.setEnabled(True)
        budget, repacked = result
        self.budget_edit.setText(budget)
        self._budget_typed()
        self._budget_repacked = repacked
        self._update_budget_note(fit=True)

    def _on_fit_failed(self, failure: Failure) -> None:
        self.fit_button.setEnabled(True)
        self.budget_note.setText(failure.message)

    def _update_budget_note(self, *, fit: bool = False) -> None:
        if not self.budget_mode():
            return
        axis = self.budget_axis.axis()
        n = self.budget_bytes()
        if n is None:
            self.budget_note.setText(
                "Type a size (3.2GB, 450MiB, a number of bytes) or bits per weight (4.25bpw), "
                "or click along the axis."
            )
            return
        text = f"Budget {human_bytes(n)}"
        if axis is not None:
            text += f" ({axis.bpw(n):.2f} bits per weight)"
            below = [m for m in axis.marks if m.size_bytes <= n]
            above = [m for m in axis.marks if m.size_bytes > n]
            lo = max(below, key=lambda m: m.size_bytes) if below else None
            hi = min(above, key=lambda m: m.size_bytes) if above else None
            sides = [f"{m.name} ({human_bytes(m.size_bytes)})" for m in (lo, hi) if m]
            if sides:
                text += ", compared with " + " and ".join(sides)
            if n < axis.min_bytes:
                text += " — below the smallest mix this model can take"
        if fit:
            text += ": the largest file that runs on this machine at the chat context"
        self.budget_note.setText(text + ".")

    def selected_types(self) -> list[str]:
        out = []
        for i in range(self.types_list.count()):
            item = self.types_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(str(item.data(Qt.ItemDataRole.UserRole)))
        return out

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a GGUF model", "", "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.source_edit.setText(path)
            self._source_changed()

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a Hugging Face model folder")
        if path:
            self.source_edit.setText(path)
            self._source_changed()

    def _choose_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def _calibration_changed(self, index: int) -> None:
        if self.calibration_combo.itemData(index) == "path":
            path = QFileDialog.getExistingDirectory(self, "Folder of calibration text")
            if not path:
                path, _ = QFileDialog.getOpenFileName(
                    self, "Calibration text file", "", "Text (*.txt *.md *.jsonl);;All (*)"
                )
            if path:
                self.calibration_path = path
                self.calibration_combo.setItemText(index, f"My text: {Path(path).name}")
            else:
                self.calibration_combo.setCurrentIndex(0)

    def _imatrix_changed(self, index: int) -> None:
        if self.imatrix_combo.itemData(index) == "file":
            path, _ = QFileDialog.getOpenFileName(
                self, "Importance matrix", "", "imatrix (*.gguf *.dat);;All (*)"
            )
            if path:
                self.imatrix_path = path
                self.imatrix_combo.setItemText(index, f"From {Path(path).name}")
            else:
                self.imatrix_combo.setCurrentIndex(0)
        self._describe_types()  # the predicted quality depends on the importance matrix

    def set_calibration(self, kind: str, path: str = "") -> None:
        """Choose the calibration text: ``"default"``, ``"self"`` or ``"path"`` with ``path``."""
        self.calibration_path = path
        self.calibration_combo.setCurrentIndex(self.calibration_combo.findData(kind))

    def _source_changed(self) -> None:
        """Describe the source and preview each type in the background (headers are read)."""
        self._refresh_preview(reread=True)

    def _describe_types(self) -> None:
        """Predicted size and quality next to each type, for the source already described."""
        self._refresh_preview(reread=False)

    def _refresh_preview(self, *, reread: bool) -> None:
        text = self.source_edit.text().strip()
        known = self._source_info
        if reread or known is None or known.source != text:
            known = None
            self.source_note.setText("reading…" if text else "")
        names = [
            str(self.types_list.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(self.types_list.count())
        ]
        imatrix = self.imatrix_combo.currentData() != "none"
        self._previewing.start(Call(preview_conversion, text, names, imatrix=imatrix, known=known))

    def _on_preview(self, preview: ConversionPreview) -> None:
        self._source_info = preview.source
        self.source_note.setText(preview.source.note)
        self._set_axis(preview.axis)
        by_name = {p.name: p for p in preview.types}
        for i in range(self.types_list.count()):
            item = self.types_list.item(i)
            p = by_name.get(str(item.data(Qt.ItemDataRole.UserRole)))
            if p is not None:
                item.setText(_type_text(p))
                item.setToolTip(p.description)

    def _on_preview_failed(self, failure: Failure) -> None:
        self._source_info = None
        self.source_note.setText(failure.message)
        self._set_axis(None)

    def _set_axis(self, axis: BudgetAxis | None) -> None:
        self.budget_axis.set_axis(axis)
        n = self.budget_bytes()
        if n is not None:
            self.budget_axis.set_budget(n)
        elif self.budget_mode():
            self._default_budget()
        self._update_budget_note()

    # -- jobs ------------------------------------------------------------------------------

    def build_spec(self) -> Any:
        """The job the form describes; raises QuantError with a sentence when it is incomplete."""
        from quant.facts import detect_source
        from quant.jobs.pipeline import JobSpec
        from quant.jobs.quantize import parse_file_type

        source = self.source_edit.text().strip()
        if not source:
            raise QuantError("Choose a model first: a GGUF file, an HF folder or a hub repo id.")
        detect_source(source, need_weights=True)
        budget: str | None = None
        if self.budget_mode():
            types: list[str] = []
            text = self.budget_edit.text().strip()
            if not text:
                raise QuantError("Choose a size budget: type a size such as 3.2GB or 4.25bpw.")
            parse_budget(text)
            budget = text
        else:
            types = self.selected_types()
            if not types:
                raise QuantError("Tick at least one target type, for example Q4_K_M.")
        cal = self.calibration_combo.currentData()
        calibration = (
            None if cal == "default" else "self" if cal == "self" else self.calibration_path
        )
        im = self.imatrix_combo.currentData()
        imatrix = self.imatrix_path if im == "file" else str(im)
        s = self._section()
        chunk = int(s.get("chunk_size", 512))
        kw: dict[str, Any] = {}
        if s.get("imatrix_chunks"):
            kw["imatrix_chunks"] = int(s["imatrix_chunks"])
        if s.get("eval_chunks"):
            kw["eval_chunks"] = int(s["eval_chunks"])
        return JobSpec(
            source=source,
            types=tuple(parse_file_type(t) for t in types),
            imatrix=imatrix,
            calibration=calibration,
            eval_text=None if self.evaluate_check.isChecked() else "none",
            out_dir=self.out_edit.text().strip() or str(app_paths().models_dir),
            cache_dir=str(app_paths().cache_dir),
            imatrix_chunk_size=chunk,
            eval_chunk_size=chunk,
            # A quantized GGUF (the starter model, say) is expanded to F16 first; the
            # source note says the new files carry its loss.
            requantize=True,
            budget=budget,
            budget_repacked=self._budget_repacked if budget else (),
            **kw,
        )

    def start(self) -> None:
        """Queue the job the form describes (it starts at once when nothing is running)."""
        try:
            spec = self.build_spec()
        except QuantError as exc:
            show_error(self, exc)
            return
        self._remember()
        self._counter += 1
        job = QueuedJob(self._counter, spec)
        job.item = QListWidgetItem(f"{job.title} — queued")
        self.queue_list.addItem(job.item)
        self._queue.append(job)
        self.status_message.emit(f"Queued {job.title}")
        self._start_next()

    def cancel_current(self) -> None:
        if self._process is not None and self._running is not None:
            self.cancel_button.setEnabled(False)
            self.eta_label.setText("cancelling…")
            self._append_log("cancelling…")
            self._process.cancel()

    def is_busy(self) -> bool:
        return self._running is not None or bool(self._queue)

    def queued_count(self) -> int:
        return len(self._queue)

    def _start_next(self) -> None:
        if self._running is not None or not self._queue:
            return
        job = self._queue.pop(0)
        self._running = job
        job.state = "running"
        self._set_item(job, "running")
        self._reset_stages([])
        self.log_view.clear()
        self.job_title.setText(job.title)
        self.eta_label.setText("starting…")
        self.cancel_button.setEnabled(True)
        self._job_started_at = time.monotonic()
        proc = ProcessJob.pipeline(job.spec, parent=self)
        proc.stages.connect(self._reset_stages)
        proc.progress.connect(self._on_progress)
        proc.job_event.connect(self._on_event)
        proc.log.connect(self._append_log)
        proc.finished.connect(self._on_finished)
        proc.failed.connect(self._on_failed)
        proc.cancelled.connect(self._on_cancelled)
        proc.done.connect(self._on_done)
        self._process = proc
        try:
            proc.start()
        except OSError as exc:
            self._process = None
            self._on_failed(Failure.unexpected(f"Could not start the job process ({exc})."))
            self._on_done()
            return
        # The stage bars and log are below the form: bring them into view.
        QTimer.singleShot(0, self, lambda: self._scroll.ensureWidgetVisible(self._jobs_card, 0, 0))
        self.job_started.emit(job.number)

    def _set_item(self, job: QueuedJob, state: str) -> None:
        if job.item is not None:
            job.item.setText(f"{job.title} — {state}")

    def _reset_stages(self, names: list[str]) -> None:
        # A budget job names its stock types once it knows their sizes: stages that
        # already finished keep their state.
        finished = {
            name: row.status.text() for name, row in self._stage_rows.items() if row.finished
        }
        for row in self._stage_rows.values():
            for w in row.widgets():
                self.stage_grid.removeWidget(w)
                w.deleteLater()
        self._stage_rows = {}
        for i, name in enumerate(names):
            self._stage_rows[name] = StageRow(self.stage_grid, i, name)
            if name in finished:
                self._stage_rows[name].complete(finished[name])

    def _row(self, stage: str) -> StageRow | None:
        return self._stage_rows.get(stage)

    def _on_progress(self, p: Progress) -> None:
        row = self._row(p.stage)
        if row is not None and not row.finished:
            row.update(p)
        self._update_eta()

    def _on_event(self, obj: dict[str, Any]) -> None:
        if obj.get("event") == "stage_done":
            row = self._row(str(obj.get("stage")))
            if row is not None:
                row.complete(str(obj.get("message", "")))
            self._update_eta()

    def _update_eta(self) -> None:
        if not self._stage_rows:
            return
        total = done = 0.0
        for name, row in self._stage_rows.items():
            w = _STAGE_WEIGHT.get(name.split(" ")[0], 1.0)
            total += w
            done += w * row.fraction
        frac = done / total if total else 0.0
        elapsed = time.monotonic() - self._job_started_at
        if frac <= 0.02 or frac >= 1.0:
            self.eta_label.setText(f"{100 * frac:.0f}%")
            return
        left = elapsed * (1 - frac) / frac
        self.eta_label.setText(f"{100 * frac:.0f}% · about {_duration(left)} left")

    def _append_log(self, line: str) -> None:
        self.log_view.appendPlainText(line)

    def _on_finished(self, report: dict[str, Any]) -> None:
        job = self._running
        if job is not None:
            job.state = "finished"
            job.report = report
            self._set_item(job, "done")
        self.show_report(report)
        # Its measurements become the made files' report cards (Models page, Advisor).
        start_task(Call(keep_report, report), parent=self, on_failed=lambda _f: None)
        QTimer.singleShot(
            0, self, lambda: self._scroll.ensureWidgetVisible(self._report_card, 0, 0)
        )
        self.status_message.emit(f"Finished {job.title if job else 'job'}")
        self.job_finished.emit(report)

    def _on_failed(self, failure: Failure) -> None:
        job = self._running
        if job is not None:
            job.state = "failed"
            job.failure = failure
            self._set_item(job, "failed")
        self._append_log(f"failed: {failure.message}")
        if failure.details:
            logger.info("job failure details:\n%s", failure.details)
        show_error(self, failure)
        self.job_failed.emit(failure)

    def _on_cancelled(self) -> None:
        job = self._running
        if job is not None:
            job.state = "cancelled"
            self._set_item(job, "cancelled")
        self._append_log("cancelled; nothing half-written was kept")
        self.job_cancelled.emit(job.number if job else 0)

    def _on_done(self) -> None:
        self._running = None
        if self._process is not None:
            self._process.deleteLater()
        self._process = None
        self.cancel_button.setEnabled(False)
        self.eta_label.setText("")
        self.job_title.setText("No job running" if not self._queue else "Starting the next job…")
        self._start_next()

    # -- report ------------------------------------------------------------------------------

    def show_report(self, report: dict[str, Any]) -> None:
        """Fill the table and the chart from a pipeline report."""
        self._report = report
        outputs = sorted(_report_rows(report), key=lambda o: o["size_bytes"])
        self.report_table.setRowCount(len(outputs))
        for r, o in enumerate(outputs):
            ev = o.get("evaluation") or {}
            top1 = ev.get("top1_agreement")
            cells = [
                _row_label(o),
                human_bytes(o["size_bytes"]),
                f"{o['bits_per_weight']:.2f}",
                "yes" if o.get("imatrix") else "no",
                _num(ev.get("kld_mean"), 5),
                _num(ev.get("kld_p99"), 4),
                _num(ev.get("perplexity"), 3),
                _num(ev.get("delta_perplexity"), 3, signed=True),
                "—" if top1 is None else f"{100 * top1:.1f}%",
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                item.setData(Qt.ItemDataRole.UserRole, o["path"])
                self.report_table.setItem(r, c, item)
        if outputs:
            self.report_table.selectRow(0)
        ref = report.get("reference")
        cal = report.get("calibration")
        notes = []
        if ref:
            notes.append(
                f"Reference {Path(report['base_model']).name}: PPL {ref['perplexity']:.3f} "
                f"on {ref['tokens']} held-out tokens."
            )
        if cal:
            notes.append(f"Calibration: {cal['name']}.")
        mix = report.get("mix")
        if mix and mix.get("verdict"):
            notes.append(str(mix["verdict"]))
        notes.append(f"Report: {report.get('report_path', '')}")
        self.report_note.setText(" ".join(notes))
        self._plot_report(outputs, budget=mix.get("budget_bytes") if mix else None)
        self._update_report_buttons()

    def _plot_report(self, outputs: list[dict[str, Any]], *, budget: int | None = None) -> None:
        if self._plot is None:
            return
        import pyqtgraph as pg

        from app.ui.theme import current_theme

        plot = self._plot
        plot.clear()
        pts = [
            (o["size_bytes"] / 2**20, o["evaluation"]["kld_mean"], o)
            for o in outputs
            if o.get("evaluation")
        ]
        if not pts:
            return
        theme = current_theme()
        stock = [(x, y) for x, y, o in pts if o["type"] != MIX_TYPE]
        mixes = [(x, y) for x, y, o in pts if o["type"] == MIX_TYPE]
        if stock:
            plot.plot(
                [p[0] for p in stock],
                [p[1] for p in stock],
                pen=pg.mkPen(theme.text_muted, width=1, style=Qt.PenStyle.DotLine),
                symbol="o",
                symbolSize=9,
                symbolBrush=theme.text_muted,
                symbolPen=None,
            )
        if mixes:
            plot.plot(
                [p[0] for p in mixes],
                [p[1] for p in mixes],
                pen=None,
                symbol="star",
                symbolSize=18,
                symbolBrush=theme.accent,
                symbolPen=None,
            )
        if budget:
            line = pg.InfiniteLine(
                pos=budget / 2**20,
                angle=90,
                pen=pg.mkPen(theme.accent, width=1, style=Qt.PenStyle.DashLine),
            )
            plot.addItem(line)
        for x, y, o in pts:
            color = theme.accent if o["type"] == MIX_TYPE else theme.text
            label = pg.TextItem(_row_label(o), anchor=(0, 1), color=color)
            label.setPos(x, y)
            plot.addItem(label)
        xs = [p[0] for p in pts] + ([budget / 2**20] if budget else [])
        ys = [p[1] for p in pts]
        # Room around the points so their labels are not cut at the edges.
        x_pad = max((max(xs) - min(xs)) * 0.15, 1.0)
        y_pad = max((max(ys) - min(ys)) * 0.15, max(ys) * 0.1, 1e-4)
        plot.setXRange(min(xs) - x_pad, max(xs) + x_pad * 2, padding=0)
        plot.setYRange(max(0.0, min(ys) - y_pad), max(ys) + y_pad * 2, padding=0)

    def report_rows(self) -> list[list[str]]:
        """The report table's text, row by row (what the user reads)."""
        rows = []
        for r in range(self.report_table.rowCount()):
            cells = (self.report_table.item(r, c) for c in range(self.report_table.columnCount()))
            rows.append([cell.text() if cell is not None else "" for cell in cells])
        return rows

    def _selected_path(self) -> Path | None:
        items = self.report_table.selectedItems()
        if not items:
            return None
        return Path(str(items[0].data(Qt.ItemDataRole.UserRole)))

    def _update_report_buttons(self) -> None:
        path = self._selected_path()
        ok = path is not None and path.exists()
        self.chat_button.setEnabled(ok)
        self.folder_button.setEnabled(ok)

    def _chat_with_selected(self) -> None:
        path = self._selected_path()
        if path is not None:
            self.chat_requested.emit(path)

    def _show_folder(self) -> None:
        path = self._selected_path()
        if path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))

    # -- shutdown ------------------------------------------------------------------------------

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel queued and running jobs (on window close)."""
        self._queue.clear()
        if self._process is not None:
            self._process.cancel()
            self._process.wait(timeout_s)


MIX_TYPE = "MIX"  # quant.jobs.pipeline.MIX


def _report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's outputs, with a mix that was not kept added back for comparison."""
    rows = list(report.get("outputs", []))
    mix = report.get("mix")
    if mix and not mix.get("kept", True) and mix.get("evaluation"):
        rows.append(
            {
                "type": MIX_TYPE,
                "path": mix.get("path", ""),
                "size_bytes": mix["size_bytes"],
                "bits_per_weight": mix["bits_per_weight"],
                "imatrix": bool(report.get("imatrix")),
                "evaluation": mix["evaluation"],
                "removed": True,
            }
        )
    return rows


def _row_label(o: dict[str, Any]) -> str:
    if o["type"] != MIX_TYPE:
        return str(o["type"])
    return f"{MIX_LABEL} (removed)" if o.get("removed") else MIX_LABEL


def _budget_text(budget: str) -> str:
    try:
        b = parse_budget(budget)
    except QuantError:
        return budget
    return b.describe()


def _num(v: Any, digits: int, *, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{float(v):+.{digits}f}" if signed else f"{float(v):.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _type_text(p: TypePreview) -> str:
    """A type's line in the list: bits per weight, and with a known source its predicted
    size and quality."""
    parts = [p.name, f"{p.bits_per_weight:.2f} bpw"]
    if p.size_bytes is not None:
        parts.append(f"≈ {human_bytes(p.size_bytes)}")
        if p.quality is not None and p.quality.kld is not None:
            q = p.quality
            parts.append(f"KLD ≈ {kld_text(q)} ({q.provenance.label})")
        elif p.kld is not None:
            parts.append(f"KLD ≈ {p.kld:.3f}")
            if p.same_top_token is not None:
                parts.append(f"same top token ≈ {100 * p.same_top_token:.0f}%")
    if p.needs_imatrix:
        parts.append("needs an importance matrix")
    return "   ·   ".join(parts)
