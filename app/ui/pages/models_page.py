"""The Models page: the library (a table with filters and fit badges) and the hub.

The **Library** tab lists every GGUF file Quantdesk knows — the starter model,
files and folders the user added, Quantdesk's own conversions, and other apps'
downloads used in place — with the facts read from each header (cached), the
advisor's fit badge for this machine, its measured quality (a report card:
mean KLD against a more precise file of the same model) and when it was last
used. Broken files are listed with the reason. "Measure quality" measures the
selected file in a child process (progress and Cancel), against the most
precise file of the same model the library has (``auto``), and keeps the card
with the library entry (:mod:`app.core.quality`). The folders are watched: a model that appears or
disappears shows up without pressing Refresh. Duplicates seen through several
apps are merged once their contents have been hashed in the background.

The **Hub** tab (:mod:`app.ui.pages.hub_tab`) searches the Hugging Face hub and
downloads into the standard cache; a finished download joins this library.

Listing, header reads and hashing run off the GUI thread. Adding a file
validates it and reads its header first; a file that is not a usable GGUF is
reported through :func:`app.ui.errors.show_error` and is not added.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QFileSystemWatcher,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.advice import inspect_source
from app.core.errors import AppError
from app.core.library import LibraryEntry, ModelLibrary, ModelSource, read_entry
from app.core.library_index import LibraryIndex, ModelRow
from app.core.library_listing import (
    LibraryListing,
    describe_entries,
    list_library,
    merge_duplicates,
    remember_starter,
)
from app.core.quality import QualityStore, measured_column, reference_candidates, summarize
from app.core.remote import RemoteModel
from app.core.settings import Settings
from app.ui import errors
from app.ui.theme import current_theme, fit_chip_kind, fit_color
from app.ui.widgets.cards import Card, ChipRow, KeyValueGrid, PageHeader, Spinner, chip, muted
from app.ui.widgets.flow_layout import FlowLayout
from app.ui.widgets.icons import icon
from app.workers.failure import Failure
from app.workers.process_job import ProcessJob
from app.workers.tasks import Call, LatestTask, start_task
from quant.errors import QuantError
from quant.facts.model import ModelFacts
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Fit
from quant.plan.quality import QualityMeasurement
from quant.progress import Progress
from quant.units import format_last_used, format_params, format_rate, human_bytes

logger = logging.getLogger(__name__)

COLUMNS = (
    "Name",
    "Source",
    "Size",
    "Architecture",
    "Params",
    "Quant",
    "Context",
    "Fit",
    "Quality",
    "Last used",
)
(
    COL_NAME,
    COL_SOURCE,
    COL_SIZE,
    COL_ARCH,
    COL_PARAMS,
    COL_QUANT,
    COL_CTX,
    COL_FIT,
    COL_QUALITY,
    COL_USED,
) = range(len(COLUMNS))
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PATH_ROLE = Qt.ItemDataRole.UserRole + 2
# A burst of file-system events (a download writing, an app unpacking) is one rescan.
WATCH_DEBOUNCE_MS = 1500

FIT_FILTERS = (
    ("Any fit", None),
    ("Runs on this machine", "runs"),
    ("Fits on the GPU", "gpu"),
    ("Too large", "too-large"),
    ("Broken", "broken"),
)

InspectFn = Callable[[Path], ModelFacts]
# A quality measurement's text: the convert pipeline's defaults, so the numbers compare.
QUALITY_CHUNKS = 16
QUALITY_CHUNK_SIZE = 512


# --------------------------------------------------------------------------- worker functions


def inspect_keyed(path: Path, inspect: InspectFn) -> tuple[str, ModelFacts | BaseException]:
    """``(str(path), facts)``, or the error in place of the facts; never raises."""
    try:
        return str(path), inspect(path)
    except Exception as exc:  # shown in the details panel instead
        logger.info("could not inspect %s: %s", path, exc)
        return str(path), exc


def quality_job_args(path: Path, entries: Sequence[LibraryEntry]) -> list[str]:
    """The ``python -m quant quality`` arguments for measuring ``path`` with ``auto``: every
    library file, Quantdesk's outputs and its F16 files are candidates. Lists folders: run
    it off the GUI thread."""
    from app.core.paths import app_paths

    candidates = reference_candidates(extra=[p for e in entries if not e.broken for p in e.paths])
    args = ["quality", str(path), "--reference", "auto"]
    args += ["--chunks", str(QUALITY_CHUNKS), "--chunk-size", str(QUALITY_CHUNK_SIZE)]
    args += ["--cache-dir", str(app_paths().cache_dir), "--json-progress"]
    for c in dict.fromkeys(candidates):
        if c != path:
            args += ["--candidate", str(c)]
    return args


def check_and_inspect(path: Path, inspect: InspectFn) -> tuple[LibraryEntry, ModelFacts]:
    """Validate a file for the library and read its facts; raises on a bad file."""
    entry = read_entry(path)
    return entry, inspect(entry.path)


# --------------------------------------------------------------------------- formatting


def params_text(f: ModelFacts) -> str:
    text = format_params(f.parameters, short=True)
    if f.is_moe and f.active_parameters:
        text += f" ({format_params(f.active_parameters, short=True)} active)"
    return text


def quant_text(f: ModelFacts) -> str:
    return f.file_type or "—"


# Rows about the file rather than the network's shape; shown beside the shape.
def _template_text(f: ModelFacts) -> str:
    """Whether chat uses the file's own template or a built-in one (and which)."""
    if f.has_chat_template:
        return "in the file"
    from app.core.chat.templates import guess_family

    family = guess_family(f.architecture, lambda _token: False)
    if family == "plain":
        return "none in the file; chat uses a plain format"
    return f"none in the file; chat uses the built-in {family.capitalize()} template"


FILE_ROWS = ("Tokenizer", "Chat template", "License", "File size", "File")


def fact_rows(entry: LibraryEntry, f: ModelFacts) -> list[tuple[str, str]]:
    """The facts of one model as (label, value) rows, in reading order."""
    rows = [("Architecture", f.architecture), ("Parameters", params_text(f))]
    q = quant_text(f)
    if f.bits_per_weight:
        q += f" · {f.bits_per_weight:.2f} bits per weight"
    rows.append(("Quantization", q))
    rows.append(("Trained context", f"{f.context_length:,} tokens" if f.context_length else "—"))
    rows.append(("Layers", str(f.n_layers)))
    heads = f"{f.n_heads} query · {f.n_kv_heads} key/value"
    rows.append(("Attention heads", heads))
    hd = str(f.head_dim)
    if f.head_dim_v and f.head_dim_v != f.head_dim:
        hd += f" (values {f.head_dim_v})"
    rows.append(("Head size", hd))
    rows.append(("Embedding", f"{f.embedding_length:,}"))
    if f.feed_forward_length:
        rows.append(("Feed-forward", f"{f.feed_forward_length:,}"))
    rows.append(("Vocabulary", f"{f.vocab_size:,} tokens"))
    if f.sliding_window:
        n = f.n_swa_layers
        where = f" on {n} of {f.n_layers} layers" if n else ""
        rows.append(("Sliding window", f"{f.sliding_window:,} tokens{where}"))
    if f.is_moe:
        rows.append(("Experts", f"{f.n_experts} ({f.n_experts_used} used per token)"))
    tok = f.tokenizer_model or ("yes" if f.has_tokenizer else "none")
    rows.append(("Tokenizer", tok))
    rows.append(("Chat template", _template_text(f)))
    if f.license:
        rows.append(("License", f.license))
    rows.append(("File size", human_bytes(entry.size_bytes)))
    rows.append(("File", str(entry.path)))
    return rows


def tensor_type_summary(f: ModelFacts) -> list[tuple[str, int, int]]:
    """``(type, tensor count, bytes)`` per tensor type, largest share first."""
    if f.tensor_types:
        rows = [(t.type, t.n_tensors, t.n_bytes) for t in f.tensor_types]
        return sorted(rows, key=lambda r: -r[2])
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for t in f.tensors:
        counts[t.type] += 1
        sizes[t.type] += t.n_bytes
    return sorted(((k, counts[k], sizes[k]) for k in counts), key=lambda r: -r[2])


# --------------------------------------------------------------------------- table model


class LibraryTableModel(QAbstractTableModel):
    """Library rows (:class:`ModelRow`), with full facts for files inspected in detail."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[ModelRow] = []
        self._facts: dict[str, ModelFacts | BaseException] = {}

    # data
    def set_rows(self, rows: Sequence[ModelRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def add_row(self, row: ModelRow) -> int:
        for i, r in enumerate(self._rows):
            if r.entry.path == row.entry.path:
                self._rows[i] = row
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
                return i
        n = len(self._rows)
        self.beginInsertRows(QModelIndex(), n, n)
        self._rows.append(row)
        self.endInsertRows()
        return n

    def remove_path(self, path: Path) -> None:
        for i, r in enumerate(self._rows):
            if r.entry.path == path:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self._rows[i]
                self.endRemoveRows()
                return

    def set_facts(self, path: str, value: ModelFacts | BaseException) -> None:
        self._facts[path] = value
        for i, r in enumerate(self._rows):
            if str(r.entry.path) == path:
                self.dataChanged.emit(self.index(i, COL_ARCH), self.index(i, COL_CTX))

    def facts(self, path: Path) -> ModelFacts | BaseException | None:
        return self._facts.get(str(path))

    def rows(self) -> list[ModelRow]:
        return list(self._rows)

    def row_of(self, path: Path) -> ModelRow | None:
        """The row of ``path``: its own, or the one that lists it as a copy."""
        return next((r for r in self._rows if r.entry.path == path), None) or next(
            (r for r in self._rows if path in r.entry.also_at), None
        )

    def entries(self) -> list[LibraryEntry]:
        return [r.entry for r in self._rows]

    def entry(self, row: int) -> LibraryEntry:
        return self._rows[row].entry

    def model_row(self, row: int) -> ModelRow:
        return self._rows[row]

    # Qt interface
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        e = r.entry
        col = index.column()
        if role == PATH_ROLE:
            return str(e.path)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, col)
        if role == SORT_ROLE:
            return self._sort_key(r, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if e.broken:
                return e.broken
            if col == COL_FIT and r.fit is not None:
                return self._fit_tooltip(r)
            if col == COL_QUALITY:
                m = r.measured_quality
                return summarize(m) if m is not None else "Not measured yet: Measure quality"
            also = getattr(e, "also_at", ())
            if also:
                return f"{e.path}\nAlso at:\n" + "\n".join(str(p) for p in also)
            return str(e.path)
        if role == Qt.ItemDataRole.ForegroundRole:
            t = current_theme()
            if e.broken and col in (COL_NAME, COL_FIT):
                return QColor(t.bad)
            if col == COL_FIT:
                return QColor(fit_color(r.fit))
            if col in (COL_SOURCE, COL_SIZE, COL_USED) or (
                col == COL_QUALITY and r.measured_quality is None
            ):
                return QColor(t.text_muted)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (
            COL_SIZE,
            COL_PARAMS,
            COL_CTX,
            COL_QUALITY,
        ):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _fit_tooltip(r: ModelRow) -> str:
        bits = [r.fit_label]
        if r.predicted_tokens_per_s:
            bits.append(f"about {format_rate(r.predicted_tokens_per_s)} tokens/s")
        if r.predicted_ram_bytes:
            bits.append(f"{human_bytes(r.predicted_ram_bytes)} of RAM")
        if r.predicted_vram_bytes:
            bits.append(f"{human_bytes(r.predicted_vram_bytes)} of GPU memory")
        return "Predicted on this machine: " + ", ".join(bits)

    def _display(self, r: ModelRow, col: int) -> str:
        e = r.entry
        if col == COL_NAME:
            copies = len(getattr(e, "also_at", ()))
            return e.name + (f"  (+{copies} copies)" if copies else "")
        if col == COL_SOURCE:
            return e.source.label
        if col == COL_SIZE:
            return human_bytes(e.size_bytes)
        if col == COL_USED:
            return format_last_used(e.last_used)
        if e.broken:
            return "broken" if col in (COL_ARCH, COL_FIT) else ""
        f = self._facts.get(str(e.path))
        facts = f if isinstance(f, ModelFacts) else None
        if col == COL_ARCH:
            return (facts.architecture if facts else r.architecture) or "—"
        if col == COL_PARAMS:
            return params_text(facts) if facts else format_params(r.parameters, short=True)
        if col == COL_QUANT:
            return (facts.file_type if facts else r.file_type) or "—"
        if col == COL_CTX:
            ctx = facts.context_length if facts else r.context_length
            return f"{ctx:,}" if ctx else "—"
        if col == COL_FIT:
            return r.fit_label or "—"
        if col == COL_QUALITY:
            return measured_column(r.measured_quality)
        return ""

    @staticmethod
    def _sort_key(r: ModelRow, col: int) -> Any:
        e = r.entry
        if col == COL_NAME:
            return e.name.lower()
        if col == COL_SOURCE:
            return list(ModelSource).index(e.source)
        if col == COL_SIZE:
            return e.size_bytes
        if col == COL_ARCH:
            return r.architecture or ""
        if col == COL_PARAMS:
            return r.parameters or -1
        if col == COL_QUANT:
            return r.file_type or ""
        if col == COL_CTX:
            return r.context_length or -1
        if col == COL_FIT:
            return r.fit.rank if r.fit is not None else -2
        if col == COL_QUALITY:
            return r.measured_quality.kld_mean if r.measured_quality is not None else 1e9
        return e.last_used or 0.0


class LibraryFilter(QSortFilterProxyModel):
    """Text (name, source, architecture, type), source and fit filters."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._source: str | None = None
        self._fit: str | None = None

    def _refilter(self, change: Callable[[], None]) -> None:
        # Qt 6.10 replaced invalidateFilter() with begin/endFilterChange().
        if hasattr(self, "beginFilterChange"):
            self.beginFilterChange()
            change()
            self.endFilterChange()
        else:
            change()
            self.invalidateFilter()

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_text", text.strip().lower()))

    def set_source(self, source: str | None) -> None:
        self._refilter(lambda: setattr(self, "_source", source))

    def set_fit(self, fit: str | None) -> None:
        self._refilter(lambda: setattr(self, "_fit", fit))

    def _fit_accepts(self, r: ModelRow) -> bool:
        if self._fit == "broken":
            return bool(r.entry.broken)
        if r.entry.broken or r.fit is None:
            return False
        wanted = {
            "runs": r.fit is not Fit.TOO_LARGE,
            "gpu": r.fit is Fit.GPU,
            "too-large": r.fit is Fit.TOO_LARGE,
        }
        return wanted.get(self._fit or "", True)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        model = self.sourceModel()
        if not isinstance(model, LibraryTableModel):
            return True
        r = model.model_row(source_row)
        if self._source is not None and r.entry.source.value != self._source:
            return False
        if self._fit is not None and not self._fit_accepts(r):
            return False
        if self._text:
            hay = " ".join(
                str(x)
                for x in (
                    r.entry.name,
                    r.entry.source.label,
                    r.architecture or "",
                    r.file_type or "",
                    r.entry.path,
                )
            ).lower()
            return all(word in hay for word in self._text.split())
        return True


# --------------------------------------------------------------------------- the page


class ModelsPage(QWidget):
    #: The user asked to chat with a model (its path).
    chat_requested = Signal(object)
    #: The user asked for the advisor's plan for a model (its path).
    advise_requested = Signal(object)
    #: The user asked to convert/quantize a model (its path).
    convert_requested = Signal(object)
    #: The list of entries changed (list[LibraryEntry]).
    entries_changed = Signal(list)
    status_message = Signal(str)

    def __init__(
        self,
        settings: Settings,
        library: ModelLibrary,
        *,
        downloads: Any = None,
        inspect_fn: InspectFn | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``downloads`` is the app's DownloadManager (made with the Hub tab when None)."""
        super().__init__(parent)
        self.setObjectName("modelsPage")
        self.settings = settings
        self.library = library
        self._downloads = downloads
        self._inspect: InspectFn = inspect_fn or inspect_source
        self._profile: HardwareProfile | None = None
        # One index for the page's life: headers and fit badges are remembered between scans.
        self.index = LibraryIndex()
        # Listing, fit badges and the duplicate check: each answers for the newest
        # listing only (see _listing_changed).
        self._loading: LatestTask[LibraryListing] = LatestTask(
            self,
            on_finished=self._on_loaded,
            on_failed=self._on_load_failed,
            on_cancelled=lambda: self._busy(False),
            on_progress=self._on_progress,
            cancellable=True,
        )
        self._describing: LatestTask[list[ModelRow]] = LatestTask(
            self,
            on_finished=self._on_described,
            on_failed=self._on_describe_failed,
            on_cancelled=lambda: self._busy(False),
            cancellable=True,
        )
        self._deduplicating: LatestTask[list[ModelRow]] = LatestTask(
            self,
            on_finished=self._on_merged,
            on_failed=self._on_merge_failed,
            on_cancelled=lambda: self._busy(False),
            on_progress=self._on_progress,
            cancellable=True,
        )
        # The profile the running listing was started with.
        self._load_profile: HardwareProfile | None = None
        self._pending_adds = 0
        self._single_inspects: set[str] = set()
        self.hub_tab: Any = None
        # The quality measurement running in a child process, and the file it measures.
        self._quality_job: ProcessJob | None = None
        self._quality_path: Path | None = None

        outer = QVBoxLayout(self)
        outer.setContentsMargins(28, 22, 28, 12)
        outer.setSpacing(14)
        header = PageHeader(
            "Models",
            "The starter model, files and folders you added, and GGUF files other apps "
            "downloaded — used where they are, never copied. Drop .gguf files anywhere to "
            "add them, or find new ones on the Hub tab.",
        )
        self.spinner = Spinner()
        self.add_button = QPushButton(icon("add", current_theme().accent_text), "Add…")
        self.add_button.setProperty("primary", True)
        self.add_button.setToolTip("Add GGUF files to the library")
        self.add_folder_button = QPushButton(icon("folder"), "Add folder…")
        self.add_folder_button.setToolTip(
            "Watch a folder: every GGUF file in it (and its subfolders) is listed"
        )
        self.refresh_button = QPushButton(icon("refresh"), "Refresh")
        self.refresh_button.setToolTip("Look for new models again")
        for w in (self.spinner, self.refresh_button, self.add_folder_button, self.add_button):
            header.add_action(w)
        outer.addWidget(header)

        self.problem_label = QLabel()
        self.problem_label.setObjectName("banner")
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.TextFormat.PlainText)
        self.problem_label.setVisible(False)
        outer.addWidget(self.problem_label)

        self.tabs = QTabWidget()
        self.tabs.setObjectName("modelsTabs")
        self.tabs.setDocumentMode(True)
        self.library_tab = self._build_library_tab()
        self.tabs.addTab(self.library_tab, icon("models"), "Library")
        self._hub_holder = QWidget()
        QVBoxLayout(self._hub_holder).setContentsMargins(0, 0, 0, 0)
        self.tabs.addTab(self._hub_holder, icon("open"), "Hub")
        self.tabs.currentChanged.connect(self._on_tab)
        outer.addWidget(self.tabs, 1)

        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._on_disk_changed)
        self._watch_timer = QTimer(self)
        self._watch_timer.setSingleShot(True)
        self._watch_timer.setInterval(WATCH_DEBOUNCE_MS)
        self._watch_timer.timeout.connect(self.reload)

        self.add_button.clicked.connect(self._ask_add)
        self.add_folder_button.clicked.connect(self._ask_add_folder)
        self.refresh_button.clicked.connect(self.reload)
        self._update_buttons()

    def _build_library_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.setContentsMargins(0, 10, 0, 0)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setHandleWidth(12)
        splitter.setChildrenCollapsible(False)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.setSpacing(10)
        filters = QHBoxLayout()
        filters.setSpacing(8)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by name, source, architecture or type")
        self.filter_edit.setClearButtonEnabled(True)
        self.source_combo = QComboBox()
        self.source_combo.setObjectName("sourceFilter")
        self.source_combo.addItem("All sources", None)
        for source in ModelSource:
            self.source_combo.addItem(source.label, source.value)
        self.fit_combo = QComboBox()
        self.fit_combo.setObjectName("fitFilter")
        for label, value in FIT_FILTERS:
            self.fit_combo.addItem(label, value)
        filters.addWidget(self.filter_edit, 1)
        filters.addWidget(self.source_combo)
        filters.addWidget(self.fit_combo)
        ll.addLayout(filters)

        self.model = LibraryTableModel(self)
        self.proxy = LibraryFilter(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setObjectName("modelsTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_SOURCE, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(34)
        hh = self.table.horizontalHeader()
        hh.setHighlightSections(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        hh.setMinimumSectionSize(60)
        ll.addWidget(self.table, 1)
        self.empty_label = muted(
            "No models yet. Press Add… or drop .gguf files on the window, or find one on "
            "the Hub tab.",
            wrap=True,
        )
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setVisible(False)
        ll.addWidget(self.empty_label)

        # A wrapping row keeps the window usable on narrow screens.
        button_row = QWidget()
        buttons = FlowLayout(button_row, spacing=8)
        self.chat_button = QPushButton(icon("chat", current_theme().accent_text), "Chat with this")
        self.chat_button.setProperty("primary", True)
        self.advise_button = QPushButton(icon("advisor"), "Advise")
        self.advise_button.setToolTip("How to run this model on this machine, and what else would")
        self.convert_button = QPushButton(icon("convert"), "Convert…")
        self.convert_button.setToolTip("Make other quantizations of this model")
        self.quality_button = QPushButton(icon("gauge"), "Measure quality")
        self.quality_button.setToolTip(
            "Measure what this file lost against the most precise file of the same model in "
            "the library (KL divergence, same top token, perplexity on held-out text)"
        )
        self.folder_button = QPushButton(icon("folder"), "Show in folder")
        self.remove_button = QPushButton(icon("remove"), "Remove")
        self.remove_button.setToolTip("Forget this model; the file stays where it is")
        for b in (
            self.chat_button,
            self.advise_button,
            self.convert_button,
            self.quality_button,
            self.folder_button,
            self.remove_button,
        ):
            buttons.addWidget(b)
        ll.addWidget(button_row)
        ll.addWidget(self._build_quality_panel())
        ll.addWidget(self._build_remote_row())
        splitter.addWidget(left)

        self.details_scroll = QScrollArea()
        self.details_scroll.setWidgetResizable(True)
        self.details_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.details_scroll.setMinimumHeight(160)
        self.details_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.details = Card("Details", "info")
        self.details_title = QLabel("Select a model")
        self.details_title.setStyleSheet("font-size: 12pt; font-weight: 600;")
        self.details_chips = ChipRow()
        self.details_message = muted("Its facts, read from the file's header, appear here.")
        self.details_grid = KeyValueGrid()
        self.file_grid = KeyValueGrid()
        self.types_title = QLabel("Tensor types")
        self.types_title.setObjectName("sectionTitle")
        self.types_grid = KeyValueGrid()
        self.notes_label = muted("")
        title_row = QHBoxLayout()
        title_row.setSpacing(12)
        title_row.addWidget(self.details_title)
        title_row.addWidget(self.details_chips, 1)
        self.details.body.addLayout(title_row)
        self.details.body.addWidget(self.details_message)
        columns = QHBoxLayout()
        columns.setSpacing(28)
        columns.addWidget(self.details_grid, 3)
        side = QVBoxLayout()
        side.setSpacing(8)
        side.addWidget(self.file_grid)
        side.addSpacing(6)
        side.addWidget(self.types_title)
        side.addWidget(self.types_grid)
        side.addWidget(self.notes_label)
        side.addStretch(1)
        columns.addLayout(side, 2)
        self.details.body.addLayout(columns)
        self.details.body.addStretch(1)
        self.types_title.setVisible(False)
        self.details_scroll.setWidget(self.details)
        splitter.addWidget(self.details_scroll)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([330, 420])
        layout.addWidget(splitter, 1)

        self.chat_button.clicked.connect(self._chat_selected)
        self.advise_button.clicked.connect(self._advise_selected)
        self.convert_button.clicked.connect(self._convert_selected)
        self.quality_button.clicked.connect(self.measure_selected)
        self.folder_button.clicked.connect(self._show_selected_in_folder)
        self.remove_button.clicked.connect(self.remove_selected)
        self.filter_edit.textChanged.connect(self.proxy.set_text)
        self.source_combo.currentIndexChanged.connect(
            lambda _i: self.proxy.set_source(self.source_combo.currentData())
        )
        self.fit_combo.currentIndexChanged.connect(
            lambda _i: self.proxy.set_fit(self.fit_combo.currentData())
        )
        self.table.doubleClicked.connect(lambda _i: self._chat_selected())
        self.table.customContextMenuRequested.connect(self._context_menu)
        sel = self.table.selectionModel()
        sel.selectionChanged.connect(lambda *_: self._on_selection())
        return tab

    def _build_remote_row(self) -> QWidget:
        """Models served elsewhere (remote endpoints): pick one and chat with it."""
        self.remote_row = QWidget()
        row = QHBoxLayout(self.remote_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        label = QLabel("Served elsewhere")
        label.setToolTip(
            "Models of the OpenAI-compatible servers added on the Server page or with "
            "'quantdesk remote add'; they run there, not on this machine"
        )
        self.remote_combo = QComboBox()
        self.remote_combo.setObjectName("remoteModels")
        self.remote_chat_button = QPushButton(icon("chat"), "Chat with it")
        row.addWidget(label)
        row.addWidget(self.remote_combo, 1)
        row.addWidget(self.remote_chat_button)
        self.remote_chat_button.clicked.connect(self._chat_remote)
        self.remote_row.setVisible(False)
        return self.remote_row

    def set_remote_models(self, models: Sequence[RemoteModel]) -> None:
        self.remote_combo.clear()
        for m in models:
            self.remote_combo.addItem(f"{m.id}  ·  {m.remote}  ·  {m.url}", str(m.ref))
        self.remote_row.setVisible(bool(models))

    def remote_models(self) -> list[str]:
        """The remote models listed, as NAME:MODEL."""
        return [str(self.remote_combo.itemData(i)) for i in range(self.remote_combo.count())]

    def _chat_remote(self) -> None:
        ref = self.remote_combo.currentData()
        if ref:
            self.chat_requested.emit(Path(str(ref)))

    def _build_quality_panel(self) -> QWidget:
        """One row under the buttons while a quality measurement runs: file, bar, Cancel."""
        panel = QWidget()
        panel.setObjectName("qualityPanel")
        row = QHBoxLayout(panel)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(10)
        self.quality_title = QLabel("")
        self.quality_title.setStyleSheet("font-weight: 600;")
        self.quality_bar = QProgressBar()
        self.quality_bar.setRange(0, 1000)
        self.quality_bar.setMinimumWidth(140)
        self.quality_status = muted("", wrap=True)
        self.quality_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.quality_cancel = QPushButton("Cancel")
        self.quality_cancel.setObjectName("cancelButton")
        self.quality_cancel.clicked.connect(self.cancel_quality)
        self.quality_dismiss = QPushButton("Dismiss")
        self.quality_dismiss.clicked.connect(lambda: panel.setVisible(False))
        # When nothing here can be the reference: the hub repo's file, one click away.
        self.quality_get = QPushButton(icon("open"), "Get it on the Hub")
        self.quality_get.setVisible(False)
        self.quality_get.clicked.connect(self._open_suggested_repo)
        self._suggested_repo: str | None = None
        row.addWidget(self.quality_title)
        row.addWidget(self.quality_bar, 2)
        row.addWidget(self.quality_status, 3)
        row.addWidget(self.quality_cancel)
        row.addWidget(self.quality_get)
        row.addWidget(self.quality_dismiss)
        panel.setVisible(False)
        self.quality_panel = panel
        return panel

    # ------------------------------------------------------------------ quality
    def is_measuring(self) -> bool:
        return self._quality_job is not None or self._quality_path is not None

    def measure_selected(self) -> None:
        """Measure the selected file's quality in a child process (reference: ``auto``)."""
        entry = self._usable_selected()
        if entry is None or self.is_measuring():
            return
        self._quality_path = entry.path
        self.quality_panel.setVisible(True)
        self.quality_title.setText(f"Measuring {entry.name}")
        self.quality_bar.setVisible(True)
        self.quality_bar.setRange(0, 0)  # busy until the job reports
        self.quality_status.setText("Looking for the most precise file of this model…")
        self.quality_cancel.setVisible(True)
        self.quality_cancel.setEnabled(True)
        self.quality_dismiss.setVisible(False)
        self.quality_get.setVisible(False)
        self._update_buttons()
        self.status_message.emit(f"Measuring the quality of {entry.name}…")
        start_task(
            Call(quality_job_args, entry.path, self.entries()),
            parent=self,
            on_finished=self._start_quality_job,
            on_failed=self._on_quality_failed,
        )

    def _start_quality_job(self, args: list[str]) -> None:
        if self._quality_path is None:  # cancelled while the arguments were made
            return
        job = ProcessJob(args, parent=self)
        job.progress.connect(self._on_quality_progress)
        job.finished.connect(self._on_quality_done)
        job.failed.connect(self._on_quality_failed)
        job.cancelled.connect(self._on_quality_cancelled)
        self._quality_job = job
        try:
            job.start()
        except OSError as exc:
            self._quality_job = None
            self._on_quality_failed(Failure.unexpected(f"Could not start the job ({exc})."))

    def cancel_quality(self) -> None:
        self.quality_cancel.setEnabled(False)
        self.quality_status.setText("Cancelling…")
        if self._quality_job is not None:
            self._quality_job.cancel()
        else:
            self._on_quality_cancelled()

    def _on_quality_progress(self, p: Progress) -> None:
        words = {"reference": "Reference", "evaluate": "This file"}
        if p.total > 0:
            # The reference's pass and the file's take about as long: half the bar each.
            half = 0 if p.stage != "evaluate" else 500
            self.quality_bar.setRange(0, 1000)
            self.quality_bar.setValue(half + round(500 * p.done / p.total))
        self.quality_status.setText(
            f"{words.get(p.stage, p.stage.capitalize())}: {p.message}" if p.message else ""
        )

    def _quality_ended(self) -> Path | None:
        path = self._quality_path
        self._quality_job = None
        self._quality_path = None
        self.quality_cancel.setVisible(False)
        self.quality_dismiss.setVisible(True)
        self.quality_bar.setVisible(False)
        self._update_buttons()
        return path

    def _on_quality_done(self, result: dict[str, Any]) -> None:
        path = self._quality_ended()
        try:
            m = QualityMeasurement.from_dict(result)
        except ValueError as exc:
            self._on_quality_failed(Failure.unexpected(f"The job's result was unreadable ({exc})."))
            return
        if path is None:
            return
        try:
            QualityStore().record(m, path)
        except (OSError, AppError) as exc:
            logger.warning("quality of %s not kept: %s", path, exc)
        row = self.model.row_of(path)
        if row is not None:
            from dataclasses import replace

            self.model.add_row(replace(row, measured_quality=m))
        self.quality_title.setText(f"Measured {path.name}")
        self.quality_status.setText(summarize(m))
        self.status_message.emit(f"Measured the quality of {path.name}")
        sel = self.selected_entry()
        if sel is not None and sel.path == path:
            self._on_selection()

    def _on_quality_failed(self, failure: Failure) -> None:
        path = self._quality_ended()
        self.quality_title.setText(f"No measurement of {path.name}" if path else "No measurement")
        self.quality_status.setText(failure.message)
        if failure.kind == "NoReferenceError" and path is not None:
            from app.core.quality import suggest_reference

            start_task(
                Call(suggest_reference, path),
                parent=self,
                on_finished=self._on_reference_suggestion,
                on_failed=lambda _f: None,
            )
        elif not failure.expected:
            errors.show_error(self, failure)

    def _on_reference_suggestion(self, hint: Any) -> None:
        if hint is None:
            return
        self.quality_status.setText(
            f"{self.quality_status.text()} Its hub repo has {hint.filename} ({hint.file_type}): "
            f"get it on the Hub tab ({hint.repo_id}), then measure again."
        )
        self._suggested_repo = str(hint.repo_id)
        self.quality_get.setToolTip(f"Open {hint.repo_id} on the Hub tab")
        self.quality_get.setVisible(True)

    def _open_suggested_repo(self) -> None:
        if self._suggested_repo:
            self.show_hub().open_repo(self._suggested_repo)

    def _on_quality_cancelled(self) -> None:
        path = self._quality_ended()
        self.quality_title.setText(f"Measurement of {path.name} cancelled" if path else "")
        self.quality_status.setText("Nothing was kept.")
        self.status_message.emit("Quality measurement cancelled")

    # ------------------------------------------------------------------ hub tab
    def _on_tab(self, index: int) -> None:
        if self.tabs.widget(index) is self._hub_holder:
            self.ensure_hub_tab()

    def ensure_hub_tab(self) -> Any:
        """The Hub tab, built the first time it is shown (it loads the hub client)."""
        if self.hub_tab is not None:
            return self.hub_tab
        from app.ui.pages.hub_tab import HubTab

        if self._downloads is None:
            from app.workers.download_manager import DownloadManager

            self._downloads = DownloadManager(parent=self)
        tab = HubTab(self.library, self._downloads)
        tab.status_message.connect(self.status_message)
        tab.chat_requested.connect(self.chat_requested)
        tab.model_downloaded.connect(self._on_downloaded)
        if self._profile is not None:
            tab.set_profile(self._profile)
        layout = self._hub_holder.layout()
        assert layout is not None
        layout.addWidget(tab)
        self.hub_tab = tab
        self._downloads.start()
        return tab

    def show_hub(self) -> Any:
        self.tabs.setCurrentWidget(self._hub_holder)
        return self.ensure_hub_tab()

    def _on_downloaded(self, entry: LibraryEntry) -> None:
        self.reload()

    # ------------------------------------------------------------------ queries
    def entries(self) -> list[LibraryEntry]:
        return self.model.entries()

    def rows(self) -> list[ModelRow]:
        return self.model.rows()

    def selected_entry(self) -> LibraryEntry | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.entry(self.proxy.mapToSource(rows[0]).row())

    def is_busy(self) -> bool:
        return (
            self._loading.is_running()
            or self._describing.is_running()
            or self._deduplicating.is_running()
            or self._pending_adds > 0
            or bool(self._single_inspects)
        )

    # ------------------------------------------------------------------ machine
    def set_profile(self, profile: HardwareProfile) -> None:
        """Fit badges are for this machine: describe the rows again for the new profile."""
        self._profile = profile
        if self.hub_tab is not None:
            self.hub_tab.set_profile(profile)
        # A running listing uses the profile it started with; _on_loaded describes again.
        if not self._loading.is_running() and self.model.rowCount():
            self._describe(self.entries())

    def _describe(self, entries: Sequence[LibraryEntry]) -> None:
        """Fit badges (and facts) for ``entries`` on the current profile, off the GUI thread."""
        self._busy(True)
        self._describing.start(Call(describe_entries, list(entries), self._profile, self.index))

    def _listing_changed(self, *, describe: bool = False) -> None:
        """The listing changed (listed again, a file added or removed).

        Badges or a duplicate check still computing for the old listing would undo
        this one when they arrive: they are asked again for this listing, and the
        old answers are dropped.
        """
        if describe or self._describing.is_running():
            self._describe(self.entries())
        if self._deduplicating.is_running():
            self._find_duplicates()

    def _on_described(self, rows: list[ModelRow]) -> None:
        self._busy(False)
        self._set_rows(rows)

    def _on_describe_failed(self, failure: Failure) -> None:
        self._busy(False)
        errors.show_error(self, failure)

    # ------------------------------------------------------------------ loading
    def reload(self) -> None:
        """List the library again (off the GUI thread); a listing under way starts over."""
        self._watch_timer.stop()
        self._busy(True)
        self._load_profile = self._profile
        self._loading.start(Call(list_library, self.library, self._profile, self.index))

    def _on_progress(self, p: Progress) -> None:
        if p.message:
            self.status_message.emit(p.message)

    def _on_load_failed(self, failure: Failure) -> None:
        self._busy(False)
        errors.show_error(self, failure)

    def _on_loaded(self, result: LibraryListing) -> None:
        try:
            remember_starter(self.library, result)
        except OSError as exc:
            logger.warning("could not remember the starter model: %s", exc)
        problems = [f"The starter model is unavailable: {result.starter_problem}"] * (
            result.starter_problem is not None
        )
        notes = (*result.notes, *result.remote.notes)
        problems += [n[:1].upper() + n[1:].rstrip(".") + "." for n in notes]
        self.problem_label.setText("\n".join(problems))
        self.problem_label.setVisible(bool(problems))
        self._set_rows(result.rows)
        self.set_remote_models(result.remote.models)
        self.status_message.emit("Library up to date")
        self._watch()
        # The machine was probed while the listing ran: badges for this machine.
        self._listing_changed(describe=self._profile is not self._load_profile)
        self._find_duplicates()
        self._busy(False)

    def _set_rows(self, rows: Sequence[ModelRow]) -> None:
        selected = self.selected_entry()
        self.model.set_rows(rows)
        self.empty_label.setVisible(not rows)
        self.entries_changed.emit(self.model.entries())
        if selected is not None and self.select_path(selected.path):
            self._on_selection()
        elif rows:
            self.table.selectRow(0)
        else:
            self._on_selection()

    def _find_duplicates(self) -> None:
        """Hash files whose sizes collide, in the background, and merge copies."""
        entries = self.entries()
        sizes = Counter(e.size_bytes for e in entries if not e.broken)
        if not any(n > 1 for n in sizes.values()):
            self._deduplicating.cancel()
            return
        self._busy(True)
        self._deduplicating.start(Call(merge_duplicates, entries, self._profile, self.index))

    def _on_merged(self, rows: list[ModelRow]) -> None:
        self._busy(False)
        if [r.entry.path for r in rows] != [e.path for e in self.entries()] or any(
            r.entry.also_at for r in rows
        ):
            self._set_rows(rows)

    def _on_merge_failed(self, failure: Failure) -> None:
        # Duplicates stay listed twice; nothing else is affected.
        self._busy(False)
        logger.warning("duplicate check failed: %s", failure.message)

    # ------------------------------------------------------------------ watching
    def _watch(self) -> None:
        try:
            wanted = {str(p) for p in self.library.watch_paths() if p.is_dir()}
        except OSError as exc:
            logger.info("library folders not watched: %s", exc)
            return
        current = set(self._watcher.directories())
        gone = sorted(current - wanted)
        new = sorted(wanted - current)
        if gone:
            self._watcher.removePaths(gone)
        if new:
            self._watcher.addPaths(new)

    def watched_folders(self) -> list[str]:
        return list(self._watcher.directories())

    def _on_disk_changed(self, _path: str) -> None:
        self._watch_timer.start()

    # ------------------------------------------------------------------ adding
    def _ask_add(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Add models", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if paths:
            self.add_files([Path(p) for p in paths])

    def _ask_add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of models", str(Path.home()))
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> None:
        try:
            added = self.library.add_folder(folder)
        except (AppError, QuantError, OSError) as exc:
            errors.show_error(self, exc)
            return
        self.status_message.emit(f"Watching {added} for models")
        self.reload()

    def add_files(self, paths: Sequence[Path]) -> None:
        """Validate and inspect each file off the GUI thread, then add the good ones."""
        for path in paths:
            self._pending_adds += 1
            self._busy(True)
            start_task(
                Call(check_and_inspect, Path(path), self._inspect),
                parent=self,
                on_finished=self._on_added,
                on_failed=self._on_add_failed,
            )

    def _on_added(self, result: tuple[LibraryEntry, ModelFacts]) -> None:
        self._pending_adds -= 1
        entry, facts = result
        try:
            self.library.record(entry)
        except OSError as exc:
            logger.warning("library not saved: %s", exc)
        self.model.set_facts(str(entry.path), facts)
        self.model.add_row(_row_from_facts(entry, facts))
        self.empty_label.setVisible(False)
        self.select_path(entry.path)
        self.status_message.emit(f"Added {entry.name}")
        self.entries_changed.emit(self.model.entries())
        # The fit badge needs the advisor: describe the whole library again (cached).
        self._listing_changed(describe=True)
        self._busy(False)

    def _on_add_failed(self, failure: Failure) -> None:
        self._pending_adds -= 1
        self._busy(False)
        errors.show_error(self, failure)

    # ------------------------------------------------------------------ actions
    def remove_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        self.library.forget(entry)
        self.model.remove_path(entry.path)
        self.empty_label.setVisible(self.model.rowCount() == 0)
        self.status_message.emit(f"Removed {entry.name} from the library; the file stays on disk")
        self.entries_changed.emit(self.model.entries())
        self._on_selection()
        self._listing_changed()

    def _usable_selected(self) -> LibraryEntry | None:
        entry = self.selected_entry()
        return entry if entry is not None and not entry.broken else None

    def _chat_selected(self) -> None:
        entry = self._usable_selected()
        if entry is not None:
            self.chat_requested.emit(entry.path)

    def _advise_selected(self) -> None:
        entry = self._usable_selected()
        if entry is not None:
            self.advise_requested.emit(entry.path)

    def _convert_selected(self) -> None:
        entry = self._usable_selected()
        if entry is not None:
            self.convert_requested.emit(entry.path)

    def _show_selected_in_folder(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(entry.path.parent)))

    def context_actions(self) -> list[tuple[str, Callable[[], None], bool]]:
        """The context menu of the selected row: (label, action, enabled)."""
        entry = self.selected_entry()
        usable = entry is not None and not entry.broken
        return [
            ("Chat with this", self._chat_selected, usable),
            ("Advise…", self._advise_selected, usable),
            ("Convert…", self._convert_selected, usable),
            ("Show in folder", self._show_selected_in_folder, entry is not None),
            ("Remove from library", self.remove_selected, entry is not None),
        ]

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        self.table.selectRow(index.row())
        menu = QMenu(self)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        for label, action, enabled in self.context_actions():
            act = menu.addAction(label)
            act.setEnabled(enabled)
            act.triggered.connect(action)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def mark_used(self, path: Path) -> None:
        """A model was opened in chat: remember when, and show it."""
        try:
            self.library.mark_used(path)
        except OSError as exc:
            logger.warning("could not record when %s was used: %s", path, exc)
            return
        row = self.model.row_of(Path(path))
        if row is not None:
            from dataclasses import replace

            entry = replace(row.entry, last_used=self.library.last_used(path) or time.time())
            self.model.add_row(replace(row, entry=entry))

    def select_path(self, path: Path) -> bool:
        for row in range(self.proxy.rowCount()):
            idx = self.proxy.index(row, 0)
            if self.proxy.data(idx, PATH_ROLE) == str(path):
                self.table.selectionModel().select(
                    idx,
                    QItemSelectionModel.SelectionFlag.ClearAndSelect
                    | QItemSelectionModel.SelectionFlag.Rows,
                )
                self.table.scrollTo(idx)
                return True
        return False

    # ------------------------------------------------------------------ details
    def _on_selection(self) -> None:
        self._update_buttons()
        entry = self.selected_entry()
        if entry is None:
            self._show_details_message(
                "Select a model", "Its facts, read from the file's header, appear here."
            )
            return
        if entry.broken:
            self._show_details_message(
                entry.name, f"This file cannot be used: {entry.broken}", error=True
            )
            return
        facts = self.model.facts(entry.path)
        if facts is None:
            self._show_details_message(entry.name, "Reading the model's header…")
            self._inspect_one(entry.path)
        elif isinstance(facts, BaseException):
            self._show_details_message(entry.name, f"This file cannot be used: {facts}", error=True)
        else:
            self._show_facts(entry, facts)

    def _inspect_one(self, path: Path) -> None:
        key = str(path)
        if key in self._single_inspects:
            return
        self._single_inspects.add(key)
        start_task(
            Call(inspect_keyed, path, self._inspect),
            parent=self,
            on_finished=self._on_single_inspected,
        )

    def _on_single_inspected(self, result: tuple[str, ModelFacts | BaseException]) -> None:
        key, value = result
        self._single_inspects.discard(key)
        self._busy(False)  # the spinner waits for this header too (is_busy)
        self.model.set_facts(key, value)
        sel = self.selected_entry()
        if sel is not None and str(sel.path) == key:
            self._on_selection()

    def _show_details_message(self, title: str, text: str, *, error: bool = False) -> None:
        self.details_title.setText(title)
        self.details_chips.set_chips([])
        self.details_message.setText(text)
        self.details_message.setObjectName("errorText" if error else "")
        self.details_message.setProperty("muted", "false" if error else "true")
        self.details_message.style().unpolish(self.details_message)
        self.details_message.style().polish(self.details_message)
        self.details_message.setVisible(True)
        self.details_grid.set_rows([])
        self.file_grid.set_rows([])
        self.types_grid.set_rows([])
        self.types_title.setVisible(False)
        self.notes_label.setVisible(False)

    def _show_facts(self, entry: LibraryEntry, f: ModelFacts) -> None:
        self.details_title.setText(entry.name)
        chips = [chip(entry.source.label)]
        if f.file_type:
            chips.append(chip(f.file_type))
        if f.is_moe:
            chips.append(chip("MoE"))
        if f.has_chat_template:
            chips.append(chip("chat template", "good"))
        row = self.model.row_of(entry.path)
        if row is not None and row.fit is not None:
            chips.append(
                chip(row.fit_label, fit_chip_kind(row.fit), LibraryTableModel._fit_tooltip(row))
            )
        self.details_chips.set_chips(chips)
        self.details_message.setVisible(False)
        rows = fact_rows(entry, f)
        if row is not None and row.fit is not None and row.predicted_tokens_per_s:
            rows.append(
                (
                    "On this machine",
                    f"{row.fit_label} · about {format_rate(row.predicted_tokens_per_s)} tokens/s",
                )
            )
        if row is not None and row.measured_quality is not None:
            rows.append(("Measured quality", summarize(row.measured_quality)))
        also = getattr(entry, "also_at", ())
        if also:
            rows.append(("Also at", "\n".join(str(p) for p in also)))
        rows.append(("Last used", format_last_used(entry.last_used)))
        self.details_grid.set_rows(r for r in rows if r[0] not in FILE_ROWS)
        self.file_grid.set_rows(r for r in rows if r[0] in FILE_ROWS)
        summary = tensor_type_summary(f)
        self.types_title.setVisible(bool(summary))
        self.types_grid.set_rows((t, f"{n} tensors · {human_bytes(b)}") for t, n, b in summary[:10])
        self.notes_label.setText("\n".join(f"• {n}" for n in f.notes))
        self.notes_label.setVisible(bool(f.notes))

    def details_text(self) -> dict[str, str]:
        """The facts shown for the selected model, label → value (empty when none)."""
        return {**self.details_grid.items(), **self.file_grid.items()}

    # ------------------------------------------------------------------ misc
    def _update_buttons(self) -> None:
        entry = self.selected_entry()
        usable = entry is not None and not entry.broken
        for b in (self.chat_button, self.advise_button, self.convert_button):
            b.setEnabled(usable)
        self.quality_button.setEnabled(usable and not self.is_measuring())
        for b in (self.folder_button, self.remove_button):
            b.setEnabled(entry is not None)

    def _busy(self, on: bool) -> None:
        if on or not self.is_busy():
            (self.spinner.start if on else self.spinner.stop)()
        self.refresh_button.setEnabled(not self._loading.is_running())

    def shutdown(self) -> None:
        self._watch_timer.stop()
        if self._quality_job is not None:
            self._quality_job.cancel()
        for task in (self._loading, self._describing, self._deduplicating):
            task.cancel()
        if self.hub_tab is not None:
            self.hub_tab.shutdown()
        if self._downloads is not None:
            self._downloads.shutdown()


def _row_from_facts(entry: LibraryEntry, f: ModelFacts) -> ModelRow:
    """A table row for a just-added file, before the advisor has judged its fit."""
    return ModelRow(
        entry=entry,
        architecture=f.architecture,
        parameters=f.parameters,
        file_type=f.file_type,
        context_length=f.context_length,
        has_chat_template=f.has_chat_template,
        fit=None,
        fit_label="",
        predicted_tokens_per_s=None,
        predicted_ram_bytes=None,
        predicted_vram_bytes=None,
        sha256=None,
    )
