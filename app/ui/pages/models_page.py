"""The Models page: the library as a table, and the inspected facts of the selected model.

Listing the library (which may assemble the starter model on first launch) and
reading model headers run off the GUI thread. Adding a file validates it and
reads its header first; a file that is not a usable GGUF is reported through
:func:`app.ui.errors.show_error` and is not added.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import AppError
from app.core.library import LibraryEntry, ModelLibrary, ModelSource, StarterModel, read_entry
from app.core.settings import Settings
from app.ui import errors
from app.ui.theme import current_theme
from app.ui.widgets.cards import Card, ChipRow, KeyValueGrid, PageHeader, Spinner, chip, muted
from app.ui.widgets.flow_layout import FlowLayout
from app.ui.widgets.icons import icon
from app.workers.tasks import TaskHandle, start_task
from quant.errors import Cancelled, QuantError
from quant.facts.model import ModelFacts
from quant.progress import CancelToken, Progress, check_cancel
from quant.units import human_bytes

logger = logging.getLogger(__name__)

COLUMNS = ("Name", "Source", "Size", "Architecture", "Params", "Quant", "Context")
COL_NAME, COL_SOURCE, COL_SIZE, COL_ARCH, COL_PARAMS, COL_QUANT, COL_CTX = range(len(COLUMNS))
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PATH_ROLE = Qt.ItemDataRole.UserRole + 2

InspectFn = Callable[[Path], ModelFacts]


def default_inspect(path: Path) -> ModelFacts:
    from quant.facts import inspect_model

    facts: ModelFacts = inspect_model(path)
    return facts


# --------------------------------------------------------------------------- worker functions


@dataclass(frozen=True)
class LibraryLoad:
    entries: list[LibraryEntry]
    starter: StarterModel | None
    starter_problem: BaseException | None


def load_library(
    library: ModelLibrary,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> LibraryLoad:
    """Locate (and on first launch assemble) the starter model, then list the library."""
    starter: StarterModel | None = None
    problem: BaseException | None = None
    try:
        starter = library.locate_starter(on_progress=on_progress, cancel=cancel)
    except Cancelled:
        raise
    except (QuantError, AppError) as exc:
        logger.warning("starter model unavailable: %s", exc)
        problem = exc
    if on_progress:
        on_progress(Progress("library", 0, 0, "Looking for models…"))
    return LibraryLoad(library.entries(starter=starter, cancel=cancel), starter, problem)


def inspect_many(
    paths: Sequence[Path],
    inspect: InspectFn,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, ModelFacts | BaseException]:
    """Read every model's header; a failure is kept as the value, not raised."""
    out: dict[str, ModelFacts | BaseException] = {}
    for i, p in enumerate(paths):
        check_cancel(cancel)
        try:
            out[str(p)] = inspect(p)
        except Exception as exc:  # one bad file must not hide the facts of the others
            logger.info("could not inspect %s: %s", p, exc)
            out[str(p)] = exc
        if on_progress:
            on_progress(Progress("inspect", i + 1, len(paths), f"Read {p.name}"))
    return out


def inspect_keyed(path: Path, inspect: InspectFn) -> tuple[str, ModelFacts | BaseException]:
    """``(str(path), facts)``, or the error in place of the facts; never raises."""
    try:
        return str(path), inspect(path)
    except Exception as exc:  # shown in the details panel instead
        logger.info("could not inspect %s: %s", path, exc)
        return str(path), exc


def check_and_inspect(path: Path, inspect: InspectFn) -> tuple[LibraryEntry, ModelFacts]:
    """Validate a file for the library and read its facts; raises on a bad file."""
    entry = read_entry(path)
    return entry, inspect(entry.path)


# --------------------------------------------------------------------------- formatting


def human_count(n: int | None) -> str:
    if not n:
        return "—"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def params_text(f: ModelFacts) -> str:
    text = human_count(f.parameters)
    if f.is_moe and f.active_parameters:
        text += f" ({human_count(f.active_parameters)} active)"
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
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[LibraryEntry] = []
        self._facts: dict[str, ModelFacts | BaseException] = {}

    # data
    def set_entries(self, entries: Sequence[LibraryEntry]) -> None:
        self.beginResetModel()
        self._entries = list(entries)
        self.endResetModel()

    def add_entry(self, entry: LibraryEntry) -> int:
        for i, e in enumerate(self._entries):
            if e.path == entry.path:
                return i
        row = len(self._entries)
        self.beginInsertRows(QModelIndex(), row, row)
        self._entries.append(entry)
        self.endInsertRows()
        return row

    def remove_path(self, path: Path) -> None:
        for i, e in enumerate(self._entries):
            if e.path == path:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self._entries[i]
                self.endRemoveRows()
                return

    def set_facts(self, path: str, value: ModelFacts | BaseException) -> None:
        self._facts[path] = value
        for i, e in enumerate(self._entries):
            if str(e.path) == path:
                self.dataChanged.emit(self.index(i, COL_ARCH), self.index(i, COL_CTX))

    def facts(self, path: Path) -> ModelFacts | BaseException | None:
        return self._facts.get(str(path))

    def entries(self) -> list[LibraryEntry]:
        return list(self._entries)

    def entry(self, row: int) -> LibraryEntry:
        return self._entries[row]

    # Qt interface
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._entries)

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
        e = self._entries[index.row()]
        col = index.column()
        if role == PATH_ROLE:
            return str(e.path)
        f = self._facts.get(str(e.path))
        facts = f if isinstance(f, ModelFacts) else None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(e, facts, f, col)
        if role == SORT_ROLE:
            return self._sort_key(e, facts, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if isinstance(f, BaseException):
                return str(f)
            return str(e.path)
        if role == Qt.ItemDataRole.ForegroundRole:
            if isinstance(f, BaseException) and col >= COL_ARCH:
                return QColor(current_theme().bad)
            if col in (COL_SOURCE, COL_SIZE) or (f is None and col >= COL_ARCH):
                return QColor(current_theme().text_muted)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_SIZE, COL_PARAMS, COL_CTX):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _display(e: LibraryEntry, facts: ModelFacts | None, raw: object, col: int) -> str:
        if col == COL_NAME:
            return e.name
        if col == COL_SOURCE:
            return e.source.label
        if col == COL_SIZE:
            return human_bytes(e.size_bytes)
        if facts is None:
            if isinstance(raw, BaseException):
                return "unreadable" if col == COL_ARCH else ""
            return "…"
        if col == COL_ARCH:
            return facts.architecture
        if col == COL_PARAMS:
            return params_text(facts)
        if col == COL_QUANT:
            return quant_text(facts)
        if col == COL_CTX:
            return f"{facts.context_length:,}" if facts.context_length else "—"
        return ""

    @staticmethod
    def _sort_key(e: LibraryEntry, facts: ModelFacts | None, col: int) -> Any:
        if col == COL_NAME:
            return e.name.lower()
        if col == COL_SOURCE:
            return list(ModelSource).index(e.source)
        if col == COL_SIZE:
            return e.size_bytes
        if facts is None:
            return "" if col in (COL_ARCH, COL_QUANT) else -1
        if col == COL_ARCH:
            return facts.architecture
        if col == COL_PARAMS:
            return facts.parameters
        if col == COL_QUANT:
            return facts.file_type or ""
        return facts.context_length


# --------------------------------------------------------------------------- the page


class ModelsPage(QWidget):
    #: The user asked to chat with a model (its path).
    chat_requested = Signal(object)
    #: The list of entries changed (list[LibraryEntry]).
    entries_changed = Signal(list)
    status_message = Signal(str)

    def __init__(
        self,
        settings: Settings,
        library: ModelLibrary,
        *,
        inspect_fn: InspectFn | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("modelsPage")
        self.settings = settings
        self.library = library
        self._inspect: InspectFn = inspect_fn or default_inspect
        self._load_task: TaskHandle | None = None
        self._inspect_task: TaskHandle | None = None
        self._pending_adds = 0
        self._single_inspects: set[str] = set()

        outer = QVBoxLayout(self)
        outer.setContentsMargins(28, 22, 28, 12)
        outer.setSpacing(14)
        header = PageHeader(
            "Models",
            "The starter model, files you added, and GGUF files other apps downloaded — "
            "used where they are, never copied. Drop .gguf files anywhere to add them.",
        )
        self.spinner = Spinner()
        self.add_button = QPushButton(icon("add", current_theme().accent_text), "Add…")
        self.add_button.setProperty("primary", True)
        self.add_button.setToolTip("Add GGUF files to the library")
        self.refresh_button = QPushButton(icon("refresh"), "Refresh")
        self.refresh_button.setToolTip("Look for new models again")
        for w in (self.spinner, self.refresh_button, self.add_button):
            header.add_action(w)
        outer.addWidget(header)

        self.problem_label = QLabel()
        self.problem_label.setObjectName("banner")
        self.problem_label.setWordWrap(True)
        self.problem_label.setVisible(False)
        outer.addWidget(self.problem_label)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setHandleWidth(12)
        splitter.setChildrenCollapsible(False)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.setSpacing(10)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by name, source or architecture")
        self.filter_edit.setClearButtonEnabled(True)
        ll.addWidget(self.filter_edit)

        self.model = LibraryTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterKeyColumn(-1)
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
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(34)
        hh = self.table.horizontalHeader()
        hh.setHighlightSections(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        hh.setMinimumSectionSize(60)
        ll.addWidget(self.table, 1)
        self.empty_label = muted(
            "No models yet. Press Add… or drop .gguf files on the window.", wrap=True
        )
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setVisible(False)
        ll.addWidget(self.empty_label)

        # A wrapping row keeps the window usable on narrow screens.
        button_row = QWidget()
        buttons = FlowLayout(button_row, spacing=8)
        self.chat_button = QPushButton(icon("chat", current_theme().accent_text), "Chat with this")
        self.chat_button.setProperty("primary", True)
        self.folder_button = QPushButton(icon("folder"), "Show in folder")
        self.remove_button = QPushButton(icon("remove"), "Remove")
        self.remove_button.setToolTip("Forget this model; the file stays where it is")
        buttons.addWidget(self.chat_button)
        buttons.addWidget(self.folder_button)
        buttons.addWidget(self.remove_button)
        ll.addWidget(button_row)
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
        outer.addWidget(splitter, 1)

        self.add_button.clicked.connect(self._ask_add)
        self.refresh_button.clicked.connect(self.reload)
        self.chat_button.clicked.connect(self._chat_selected)
        self.folder_button.clicked.connect(self._show_selected_in_folder)
        self.remove_button.clicked.connect(self.remove_selected)
        self.filter_edit.textChanged.connect(self.proxy.setFilterFixedString)
        self.table.doubleClicked.connect(lambda _i: self._chat_selected())
        sel = self.table.selectionModel()
        sel.selectionChanged.connect(lambda *_: self._on_selection())
        self._update_buttons()

    # ------------------------------------------------------------------ queries
    def entries(self) -> list[LibraryEntry]:
        return self.model.entries()

    def selected_entry(self) -> LibraryEntry | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.entry(self.proxy.mapToSource(rows[0]).row())

    def is_busy(self) -> bool:
        return (
            self._load_task is not None
            or self._inspect_task is not None
            or self._pending_adds > 0
            or bool(self._single_inspects)
        )

    # ------------------------------------------------------------------ loading
    def reload(self) -> None:
        """List the library again (off the GUI thread)."""
        if self._load_task is not None:
            return
        self._busy(True)
        self._load_task = start_task(
            load_library,
            self.library,
            on_finished=self._on_loaded,
            on_failed=self._on_load_failed,
            on_cancelled=self._on_load_cancelled,
            on_progress=self._on_progress,
            parent=self,
        )

    def _on_progress(self, p: Progress) -> None:
        if p.message:
            self.status_message.emit(p.message)

    def _on_load_cancelled(self) -> None:
        self._load_task = None
        self._busy(False)

    def _on_load_failed(self, exc: BaseException) -> None:
        self._on_load_cancelled()
        errors.show_error(self, exc)

    def _on_loaded(self, result: LibraryLoad) -> None:
        self._load_task = None
        if result.starter is not None and self.library.cached_starter() != result.starter:
            try:
                self.library.remember_starter(result.starter)
            except OSError as exc:
                logger.warning("could not remember the starter model: %s", exc)
        if result.starter_problem is not None:
            self.problem_label.setText(
                f"The starter model is unavailable: {result.starter_problem}"
            )
            self.problem_label.setVisible(True)
        else:
            self.problem_label.setVisible(False)
        selected = self.selected_entry()
        self.model.set_entries(result.entries)
        self.empty_label.setVisible(not result.entries)
        self.status_message.emit("Library up to date")
        self.entries_changed.emit(self.model.entries())
        self._inspect_missing()
        if selected is not None:
            self.select_path(selected.path)
        elif result.entries:
            self.table.selectRow(0)
        self._busy(False)

    def _inspect_missing(self) -> None:
        todo = [e.path for e in self.model.entries() if self.model.facts(e.path) is None]
        if not todo or self._inspect_task is not None:
            return
        self._busy(True)
        self._inspect_task = start_task(
            inspect_many,
            todo,
            self._inspect,
            on_finished=self._on_inspected_many,
            on_failed=self._on_inspect_many_failed,
            on_cancelled=self._on_inspect_many_failed,
            parent=self,
        )

    def _on_inspect_many_failed(self, exc: BaseException | None = None) -> None:
        self._inspect_task = None
        self._busy(False)
        if exc is not None:
            errors.show_error(self, exc)

    def _on_inspected_many(self, results: dict[str, ModelFacts | BaseException]) -> None:
        self._inspect_task = None
        for path, value in results.items():
            self.model.set_facts(path, value)
        self._on_selection()
        self._busy(False)
        # Entries added while this ran still need their facts.
        self._inspect_missing()

    # ------------------------------------------------------------------ adding
    def _ask_add(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Add models", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if paths:
            self.add_files([Path(p) for p in paths])

    def add_files(self, paths: Sequence[Path]) -> None:
        """Validate and inspect each file off the GUI thread, then add the good ones."""
        for path in paths:
            self._pending_adds += 1
            self._busy(True)
            start_task(
                check_and_inspect,
                Path(path),
                self._inspect,
                pass_progress=False,
                pass_cancel=False,
                on_finished=self._on_added,
                on_failed=self._on_add_failed,
                parent=self,
            )

    def _on_added(self, result: tuple[LibraryEntry, ModelFacts]) -> None:
        self._pending_adds -= 1
        entry, facts = result
        try:
            self.library.record(entry)
        except OSError as exc:
            logger.warning("library not saved: %s", exc)
        self.model.set_facts(str(entry.path), facts)
        self.model.add_entry(entry)
        self.empty_label.setVisible(False)
        self.select_path(entry.path)
        self.status_message.emit(f"Added {entry.name}")
        self.entries_changed.emit(self.model.entries())
        self._busy(False)

    def _on_add_failed(self, exc: BaseException) -> None:
        self._pending_adds -= 1
        self._busy(False)
        errors.show_error(self, exc)

    # ------------------------------------------------------------------ actions
    def remove_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        self.library.remove(entry.path)
        self.model.remove_path(entry.path)
        self.empty_label.setVisible(self.model.rowCount() == 0)
        self.status_message.emit(f"Removed {entry.name} from the library; the file stays on disk")
        self.entries_changed.emit(self.model.entries())
        self._on_selection()

    def _chat_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            self.chat_requested.emit(entry.path)

    def _show_selected_in_folder(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(entry.path.parent)))

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
        if key in self._single_inspects or self._inspect_task is not None:
            return
        self._single_inspects.add(key)
        # Callbacks must be bound methods of this page so they run on the GUI thread.
        start_task(
            inspect_keyed,
            path,
            self._inspect,
            pass_progress=False,
            pass_cancel=False,
            on_finished=self._on_single_inspected,
            parent=self,
        )

    def _on_single_inspected(self, result: tuple[str, ModelFacts | BaseException]) -> None:
        key, value = result
        self._single_inspects.discard(key)
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
        self.details_chips.set_chips(chips)
        self.details_message.setVisible(False)
        rows = fact_rows(entry, f)
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
        has = self.selected_entry() is not None
        for b in (self.chat_button, self.folder_button, self.remove_button):
            b.setEnabled(has)

    def _busy(self, on: bool) -> None:
        if on or not self.is_busy():
            (self.spinner.start if on else self.spinner.stop)()
        self.refresh_button.setEnabled(self._load_task is None)

    def shutdown(self) -> None:
        for task in (self._load_task, self._inspect_task):
            if task is not None:
                task.cancel()
