"""The Hub tab of the Models page: search the Hugging Face hub, judge files, download.

Search results list repos; picking one reads its file list and the exact facts
of one GGUF header through byte-range requests (nothing is downloaded), and the
advisor ranks every file for this machine: fit badge, memory, speed, quality.
Downloads go through the app's one :class:`~app.workers.download_manager.DownloadManager`
queue, shown at the bottom with progress, pause/resume and remove; a finished
file joins the library and can be opened in chat from here.

Every hub call runs off the GUI thread. Without a network the tab says it is
offline and the rest of the app keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core import hub
from app.core.download_queue import DownloadItem, DownloadState
from app.core.errors import AppError
from app.core.hub_ranking import RepoRanking, fetch_and_rank
from app.core.library import LibraryEntry, ModelLibrary
from app.ui import errors
from app.ui.theme import fit_color
from app.ui.widgets.cards import ChipRow, Spinner, chip, muted
from app.ui.widgets.icons import icon
from app.workers.download_manager import DownloadManager
from app.workers.failure import Failure
from app.workers.tasks import Call, LatestTask, TaskHandle, start_task
from quant.errors import QuantError
from quant.hardware.profile import HardwareProfile
from quant.units import format_ago, format_count, format_params, format_rate, human_bytes

logger = logging.getLogger(__name__)

SORTS = (("Most downloaded", "downloads"), ("Most liked", "likes"), ("Recently updated", "recent"))
RESULT_COLUMNS = ("Repository", "Downloads", "Likes", "Updated")
FILE_COLUMNS = ("File", "Type", "Size", "Fit", "Speed", "Quality")
FILE_COL_NAME, FILE_COL_TYPE, FILE_COL_SIZE, FILE_COL_FIT, FILE_COL_SPEED, FILE_COL_QUALITY = range(
    len(FILE_COLUMNS)
)
ROLE = Qt.ItemDataRole.UserRole + 1


def _when(value: Any) -> str:
    """When a repo was last updated (the hub gives a datetime, naive ones in UTC)."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return format_ago(dt.timestamp())
    return str(value) if value else "—"


def quality_text(r: Any) -> str:
    q = r.option.quality if r is not None and r.option is not None else None
    if q is None or q.kld is None:
        return "—"
    return "no loss" if q.kld < 5e-4 else f"KLD {q.kld:.3g}"


# --------------------------------------------------------------------------- token dialog


class TokenDialog(QDialog):
    """Paste a Hugging Face access token for gated repos; it goes to HF's own token file."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hugging Face token")
        lay = QVBoxLayout(self)
        lay.addWidget(
            muted(
                "Gated models (Llama, Gemma, …) need an access token from "
                "huggingface.co/settings/tokens after you accept the model's terms on its "
                "page. The token is kept in Hugging Face's own token file, which other "
                "Hugging Face tools share — never in Quantdesk's settings.",
                wrap=True,
            )
        )
        self.status_label = QLabel("Checking the saved token…")
        lay.addWidget(self.status_label)
        form = QFormLayout()
        self.edit = QLineEdit()
        self.edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.edit.setPlaceholderText("hf_…")
        form.addRow("Token", self.edit)
        lay.addLayout(form)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.forget_button = buttons.addButton(
            "Forget token", QDialogButtonBox.ButtonRole.ResetRole
        )
        self.forget_button.setEnabled(False)
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        self.forget_button.clicked.connect(self._forget)
        lay.addWidget(buttons)
        self._task: TaskHandle[Any] | None = start_task(
            Call(hub.token_status),
            parent=self,
            on_finished=self._on_status,
            on_failed=lambda _failure: self._on_status(None),
        )

    def _on_status(self, status: str | None) -> None:
        self._task = None
        self.status_label.setText(f"Saved: {status}" if status else "No token saved.")
        self.forget_button.setEnabled(bool(status))

    def _save(self) -> None:
        token = self.edit.text().strip()
        if not token:
            self.reject()
            return
        self.save_button.setEnabled(False)
        self.status_label.setText("Checking the token with the hub…")
        self._task = start_task(
            Call(hub.save_token, token),
            parent=self,
            on_finished=lambda _who: self.accept(),
            on_failed=self._on_save_failed,
        )

    def _on_save_failed(self, failure: Failure) -> None:
        self._task = None
        self.save_button.setEnabled(True)
        self.status_label.setText("The token was not saved.")
        errors.show_error(self, failure)

    def _forget(self) -> None:
        try:
            hub.forget_token()
        except (QuantError, AppError, OSError) as exc:
            errors.show_error(self, exc)
            return
        self.accept()


# --------------------------------------------------------------------------- download rows


class DownloadRow(QWidget):
    """One queued download: name, bar, status, Pause/Resume, Remove, and Chat once done."""

    def __init__(
        self, item: DownloadItem, manager: DownloadManager, on_chat: Callable[[Path], None]
    ) -> None:
        super().__init__()
        self.key = item.id
        self._manager = manager
        self._on_chat = on_chat
        self._path: Path | None = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 2, 0, 2)
        row.setSpacing(10)
        self.title = QLabel(Path(item.filename).name)
        self.title.setToolTip(f"{item.filename} from {item.repo_id}")
        self.title.setMinimumWidth(200)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setMinimumWidth(140)
        self.status = muted("", wrap=False)
        self.status.setMinimumWidth(200)
        self.pause_button = QPushButton("Pause")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Take it off the list (a finished file stays in the library)")
        self.chat_button = QPushButton(icon("chat"), "Chat")
        row.addWidget(self.title, 2)
        row.addWidget(self.bar, 2)
        row.addWidget(self.status, 3)
        row.addWidget(self.pause_button)
        row.addWidget(self.chat_button)
        row.addWidget(self.remove_button)
        self.pause_button.clicked.connect(self._toggle)
        self.remove_button.clicked.connect(lambda: self._manager.remove(self.key))
        self.chat_button.clicked.connect(self._chat)
        self.update_item(item)

    def _toggle(self) -> None:
        item = self._manager.queue.get(self.key)
        if item is not None and item.can_pause:
            self._manager.pause(self.key)
        else:
            self._manager.resume(self.key)

    def _chat(self) -> None:
        if self._path is not None:
            self._on_chat(self._path)

    def update_item(self, item: DownloadItem) -> None:
        state = item.state
        total, done = item.bytes_total, item.bytes_done
        fraction = item.fraction
        if fraction is not None:
            self.bar.setValue(round(fraction * 1000))
        sizes = f"{human_bytes(done)} of {human_bytes(total)}" if total else human_bytes(done)
        self._path = Path(item.path) if item.path else None
        self.status.setToolTip("")
        if state is DownloadState.DONE:
            self.bar.setValue(1000)
            self.status.setText(f"Done · {human_bytes(total or done)} · in the library")
        elif state is DownloadState.FAILED:
            self.status.setText(f"Stopped: {item.error or 'unknown error'}")
            self.status.setToolTip(item.error or "")
        elif state is DownloadState.PAUSED:
            self.status.setText(f"Paused · {sizes} · Resume continues from here")
        elif state is DownloadState.RUNNING:
            self.status.setText(item.message or f"Starting · {sizes}")
        else:
            self.status.setText(f"Waiting · {sizes}" if done else "Waiting")
        self.pause_button.setVisible(state is not DownloadState.DONE)
        self.pause_button.setText("Resume" if item.can_resume else "Pause")
        self.chat_button.setVisible(state is DownloadState.DONE and self._path is not None)
        self.bar.setVisible(state is not DownloadState.DONE)


# --------------------------------------------------------------------------- the tab


class HubTab(QWidget):
    status_message = Signal(str)
    #: The user wants to chat with a downloaded model (its path).
    chat_requested = Signal(object)
    #: A file was downloaded and added to the library (its LibraryEntry).
    model_downloaded = Signal(object)

    def __init__(
        self,
        library: ModelLibrary | None,
        manager: DownloadManager,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("hubTab")
        self.library = library
        self.manager = manager
        self._profile: HardwareProfile | None = None
        # A new search, or another repo picked, drops the answer still on its way.
        self._searching: LatestTask[list[Any]] = LatestTask(
            self,
            on_finished=self._on_results,
            on_failed=self._on_search_failed,
            on_cancelled=self._busy,
            cancellable=True,
        )
        self._opening: LatestTask[RepoRanking] = LatestTask(
            self,
            on_finished=self._on_repo,
            on_failed=self._on_repo_failed,
            on_cancelled=self._busy,
            cancellable=True,
        )
        self._status_task: TaskHandle[Any] | None = None
        self._view: RepoRanking | None = None
        self._results: list[Any] = []
        self._rows: dict[str, DownloadRow] = {}
        self.offline: bool | None = None

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 10, 0, 0)
        outer.setSpacing(10)

        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        outer.addWidget(self.banner)

        search_row = QHBoxLayout()
        search_row.setSpacing(8)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText(
            "Search the Hugging Face hub, e.g. “qwen2.5 7b instruct”"
        )
        self.search_edit.setClearButtonEnabled(True)
        self.gguf_only = QCheckBox("GGUF only")
        self.gguf_only.setChecked(True)
        self.gguf_only.setToolTip("Only repos with GGUF files, which llama.cpp runs directly")
        self.sort_combo = QComboBox()
        for label, value in SORTS:
            self.sort_combo.addItem(label, value)
        self.search_button = QPushButton("Search")
        self.search_button.setProperty("primary", True)
        self.token_button = QPushButton("Token…")
        self.token_button.setToolTip("A Hugging Face access token for gated repos")
        self.spinner = Spinner()
        search_row.addWidget(self.search_edit, 1)
        search_row.addWidget(self.gguf_only)
        search_row.addWidget(self.sort_combo)
        search_row.addWidget(self.search_button)
        search_row.addWidget(self.spinner)
        search_row.addWidget(self.token_button)
        outer.addLayout(search_row)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        self.results = QTableWidget(0, len(RESULT_COLUMNS))
        self.results.setObjectName("hubResults")
        self.results.setHorizontalHeaderLabels(RESULT_COLUMNS)
        self._style_table(self.results)
        self.results.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        splitter.addWidget(self.results)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(8)
        self.repo_title = QLabel("Pick a repo")
        self.repo_title.setStyleSheet("font-size: 12pt; font-weight: 600;")
        self.repo_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.repo_chips = ChipRow()
        self.repo_message = muted("Its GGUF files, with fit badges for this machine, appear here.")
        self.files = QTableWidget(0, len(FILE_COLUMNS))
        self.files.setObjectName("hubFiles")
        self.files.setHorizontalHeaderLabels(FILE_COLUMNS)
        self._style_table(self.files)
        self.files.horizontalHeader().setSectionResizeMode(
            FILE_COL_NAME, QHeaderView.ResizeMode.Stretch
        )
        self.reasons = muted("")
        actions = QHBoxLayout()
        self.download_button = QPushButton(icon("save"), "Download")
        self.download_button.setProperty("primary", True)
        self.download_button.setEnabled(False)
        actions.addWidget(self.download_button)
        actions.addStretch(1)
        title_row = QHBoxLayout()
        title_row.addWidget(self.repo_title)
        title_row.addWidget(self.repo_chips, 1)
        rl.addLayout(title_row)
        rl.addWidget(self.repo_message)
        rl.addWidget(self.files, 1)
        rl.addWidget(self.reasons)
        rl.addLayout(actions)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        outer.addWidget(splitter, 3)

        queue_title = QLabel("Downloads")
        queue_title.setObjectName("sectionTitle")
        outer.addWidget(queue_title)
        self.queue_empty = muted(
            "Nothing downloading. Files land in the Hugging Face cache, where other tools "
            "find them too; a stopped download resumes where it stopped, even after a restart."
        )
        outer.addWidget(self.queue_empty)
        self.queue_box = QWidget()
        self.queue_layout = QVBoxLayout(self.queue_box)
        self.queue_layout.setContentsMargins(0, 0, 0, 0)
        self.queue_layout.setSpacing(2)
        self.queue_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.queue_box)
        scroll.setMinimumHeight(70)
        outer.addWidget(scroll, 1)

        self.search_edit.returnPressed.connect(self.search)
        self.search_button.clicked.connect(self.search)
        self.sort_combo.currentIndexChanged.connect(lambda _i: self._research())
        self.gguf_only.toggled.connect(lambda _on: self._research())
        self.token_button.clicked.connect(self._edit_token)
        self.results.itemSelectionChanged.connect(self._on_result_selected)
        self.files.itemSelectionChanged.connect(self._on_file_selected)
        self.files.doubleClicked.connect(lambda _i: self.download_selected())
        self.download_button.clicked.connect(self.download_selected)
        manager.changed.connect(self._sync_queue)
        manager.progress.connect(self._on_queue_progress)
        manager.downloaded.connect(self._on_downloaded)
        manager.failed.connect(self._on_queue_failed)
        self._sync_queue()

    @staticmethod
    def _style_table(table: QTableWidget) -> None:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setShowGrid(False)
        table.setWordWrap(False)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(32)
        hh = table.horizontalHeader()
        hh.setHighlightSections(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    # ------------------------------------------------------------------ state
    def set_profile(self, profile: HardwareProfile) -> None:
        """Fit badges are for this machine; a changed profile re-ranks the open repo."""
        self._profile = profile
        if self._view is not None and not self._opening.is_running():
            self.open_repo(self._view.repo.repo_id)

    def check_status(self, *, force: bool = False) -> None:
        """Find out (off the GUI thread, bounded in time) whether the hub can be reached."""
        if self._status_task is not None or (self.offline is not None and not force):
            return
        self._status_task = start_task(
            Call(hub.hub_status),
            parent=self,
            on_finished=self._on_status,
            on_failed=lambda failure: self._on_status(None, failure),
        )

    def _on_status(self, status: Any, failure: Failure | None = None) -> None:
        self._status_task = None
        online = bool(getattr(status, "online", False)) if failure is None else False
        reason = getattr(status, "reason", None) or (failure.message if failure else "")
        self.set_offline(not online, reason)

    def set_offline(self, offline: bool, reason: str = "") -> None:
        self.offline = offline
        if offline:
            self.banner.setText(
                "Offline: the hub cannot be reached"
                + (f" ({reason})" if reason else "")
                + ". Models on this machine, chat and conversion still work; search and "
                "downloads resume when the network is back."
            )
        self.banner.setVisible(offline)
        self.search_button.setEnabled(not offline)
        self._update_download_button()

    def _busy(self) -> None:
        busy = self._searching.is_running() or self._opening.is_running()
        (self.spinner.start if busy else self.spinner.stop)()

    # ------------------------------------------------------------------ search
    def _research(self) -> None:
        if self.search_edit.text().strip():
            self.search()

    def search(self) -> None:
        text = self.search_edit.text().strip()
        self.status_message.emit(
            f"Searching the hub for “{text}”…" if text else "Listing popular models…"
        )
        self._searching.start(
            Call(
                hub.search_models,
                text,
                gguf_only=self.gguf_only.isChecked(),
                sort=str(self.sort_combo.currentData()),
            )
        )
        self._busy()

    def _on_results(self, models: list[Any]) -> None:
        self._busy()
        if self.offline:
            self.set_offline(False)
        self._results = list(models)
        self.results.setSortingEnabled(False)
        self.results.setRowCount(len(models))
        for row, m in enumerate(models):
            name = QTableWidgetItem(m.repo_id)
            name.setData(ROLE, m.repo_id)
            name.setToolTip(m.repo_id)
            if getattr(m, "gated", False):
                name.setToolTip("Gated: accept the terms on the model's page and add a token")
                name.setText(f"{m.repo_id}  🔒")
            cells = [
                name,
                QTableWidgetItem(format_count(m.downloads)),
                QTableWidgetItem(format_count(m.likes)),
            ]
            cells.append(QTableWidgetItem(_when(getattr(m, "last_modified", None))))
            for col, item in enumerate(cells):
                if col:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.results.setItem(row, col, item)
        self.status_message.emit(
            f"{len(models)} repos found" if models else "No repos matched; try fewer words"
        )

    def _on_search_failed(self, failure: Failure) -> None:
        self._busy()
        self.status_message.emit(failure.message)
        if failure.expected:
            # Shown in the banner when the hub is unreachable, in a box otherwise.
            self.results.setRowCount(0)
            self._results = []
            self.check_status(force=True)
            if not _mentions_network(failure.message):
                errors.show_error(self, failure)
            return
        errors.show_error(self, failure)

    def result_repos(self) -> list[str]:
        return [m.repo_id for m in self._results]

    # ------------------------------------------------------------------ a repo
    def _on_result_selected(self) -> None:
        rows = self.results.selectionModel().selectedRows()
        cell = self.results.item(rows[0].row(), 0) if rows else None
        if cell is not None:
            self.open_repo(str(cell.data(ROLE)))

    def open_repo(self, repo_id: str) -> None:
        self.repo_title.setText(repo_id)
        self.repo_chips.set_chips([])
        self.repo_message.setText("Reading the file list and one GGUF header from the hub…")
        self.repo_message.setVisible(True)
        self.files.setRowCount(0)
        self.reasons.setText("")
        self._view = None
        self._update_download_button()
        self._opening.start(Call(fetch_and_rank, repo_id, self._profile))
        self._busy()

    def _on_repo_failed(self, failure: Failure) -> None:
        self._busy()
        self.repo_message.setText(failure.message)
        self.repo_message.setVisible(True)
        if failure.expected:
            self.check_status(force=True)
        else:
            errors.show_error(self, failure)

    def _on_repo(self, view: RepoRanking) -> None:
        self._busy()
        self._view = view
        repo = view.repo
        chips = []
        if getattr(repo, "gated", False):
            chips.append(
                chip("gated", "warn", "Accept the terms on the model page and add a token")
            )
        if getattr(repo, "license", None):
            chips.append(chip(str(repo.license)))
        f = view.facts
        if f is not None:
            if getattr(f, "architecture", None):
                chips.append(chip(str(f.architecture)))
            if getattr(f, "parameters", None):
                chips.append(chip(format_params(int(f.parameters), short=True) + " params"))
        self.repo_chips.set_chips(chips)
        self.repo_message.setText(errors.as_sentence(view.problem or ""))
        self.repo_message.setVisible(bool(view.problem))
        self.files.setRowCount(len(view.files))
        for row, r in enumerate(view.files):
            hf = r.file
            name = QTableWidgetItem(f"★ {hf.name}" if r.recommended else hf.name)
            name.setData(ROLE, hf.filename)
            parts = len(hf.parts)
            tip = hf.filename + (f" ({parts} parts)" if parts > 1 else "")
            if r.recommended:
                tip += "\nThe advisor's pick for this machine"
            name.setToolTip(tip)
            fit_item = QTableWidgetItem(r.fit_label if r.option else "—")
            fit_item.setForeground(QColor(fit_color(r.fit)))
            speed = r.tokens_per_s
            cells = [
                name,
                QTableWidgetItem(hf.label),
                QTableWidgetItem(human_bytes(hf.size_bytes)),
                fit_item,
                QTableWidgetItem(f"~{format_rate(speed)} tok/s" if speed else "—"),
                QTableWidgetItem(quality_text(r)),
            ]
            for col, item in enumerate(cells):
                self.files.setItem(row, col, item)
        if view.files:
            self.files.selectRow(0)
        if view.problem is None:
            best = view.best
            self.status_message.emit(
                f"{repo.repo_id}: {best.file.label} is the pick for this machine"
                if best
                else f"{repo.repo_id}: none of its files fits this machine"
            )
        self._update_download_button()

    def selected_file(self) -> Any:
        if self._view is None:
            return None
        rows = self.files.selectionModel().selectedRows()
        if not rows:
            return None
        cell = self.files.item(rows[0].row(), FILE_COL_NAME)
        if cell is None:
            return None
        filename = cell.data(ROLE)
        return next((f for f in self._view.repo.files if f.filename == filename), None)

    def _ranked(self, filename: str) -> Any:
        if self._view is None:
            return None
        return next((r for r in self._view.files if r.file.filename == filename), None)

    def _on_file_selected(self) -> None:
        hf = self.selected_file()
        r = self._ranked(hf.filename) if hf is not None else None
        reasons = list(r.option.reasons) if r is not None and r.option is not None else []
        self.reasons.setText("\n".join(f"• {x}" for x in reasons[:4]))
        self._update_download_button()

    def _queued(self, repo_id: str, filename: str) -> DownloadItem | None:
        for item in self.manager.items():
            if item.repo_id == repo_id and item.filename == filename:
                return item
        return None

    def _update_download_button(self) -> None:
        hf = self.selected_file()
        repo_id = self._view.repo.repo_id if self._view is not None else None
        item = self._queued(repo_id, hf.filename) if hf is not None and repo_id else None
        b = self.download_button
        b.setToolTip("")
        local = self._local_copy(hf) if hf is not None and item is None else None
        if local is not None:
            # Already on this machine (an earlier download, or another tool's): nothing to fetch.
            b.setText("Already here")
            b.setEnabled(False)
            b.setToolTip(f"{hf.name} is in the Hugging Face cache: {local}")
        elif item is not None and item.state is DownloadState.DONE:
            b.setText("Downloaded")
            b.setEnabled(False)
        elif item is not None:
            b.setText("In the queue")
            b.setEnabled(False)
        else:
            b.setText(f"Download {human_bytes(hf.size_bytes)}" if hf is not None else "Download")
            b.setEnabled(hf is not None and not self.offline)

    def _local_copy(self, hf: Any) -> Path | None:
        """The selected file's complete copy in the Hugging Face cache, if there is one."""
        from app.core.hub import local_path

        if self._view is None:
            return None
        try:
            return local_path(self._view.repo, hf)
        except (OSError, ValueError) as exc:
            logger.info("cache not checked for %s: %s", hf.filename, exc)
            return None

    def download_selected(self) -> None:
        hf = self.selected_file()
        if hf is None or self._view is None or self.offline:
            return
        if self._queued(self._view.repo.repo_id, hf.filename) is not None:
            return
        if self._local_copy(hf) is not None:
            return
        try:
            self.manager.enqueue(
                self._view.repo.repo_id,
                hf.filename,
                revision=self._view.repo.sha,
                size_bytes=hf.size_bytes,
            )
        except (QuantError, AppError, OSError) as exc:
            errors.show_error(self, exc)
            return
        self.status_message.emit(f"Queued {Path(hf.filename).name}")
        self._update_download_button()

    # ------------------------------------------------------------------ the queue
    def _sync_queue(self) -> None:
        items = self.manager.items()
        keys = {i.id for i in items}
        for key in list(self._rows):
            if key not in keys:
                gone = self._rows.pop(key)
                self.queue_layout.removeWidget(gone)
                gone.deleteLater()
        for item in items:
            row = self._rows.get(item.id)
            if row is None:
                row = DownloadRow(item, self.manager, self.chat_requested.emit)
                self._rows[item.id] = row
                self.queue_layout.insertWidget(self.queue_layout.count() - 1, row)
            else:
                row.update_item(item)
        self.queue_empty.setVisible(not items)
        self._update_download_button()

    def download_rows(self) -> dict[str, DownloadRow]:
        return dict(self._rows)

    def _on_queue_progress(self, item: DownloadItem) -> None:
        row = self._rows.get(item.id)
        if row is not None:
            row.update_item(item)

    def _on_downloaded(self, entry: LibraryEntry) -> None:
        if self.library is not None:
            try:
                self.library.record(entry)
            except OSError as exc:  # the file is in the cache either way
                logger.warning("could not add %s to the library: %s", entry.path, exc)
        self.status_message.emit(f"Downloaded {entry.name}; it is in the library")
        self.model_downloaded.emit(entry)

    def _on_queue_failed(self, key: str, failure: Failure) -> None:
        self.status_message.emit(failure.message)
        # A failure may mean the network went away: the banner says so if it did.
        self.check_status(force=True)

    def _edit_token(self) -> None:
        dialog = TokenDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.status_message.emit("Hugging Face token updated"))
        dialog.open()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self.offline is None:
            QTimer.singleShot(0, self.check_status)
            if not self._results and not self._searching.is_running():
                QTimer.singleShot(0, self.search)

    def shutdown(self) -> None:
        for task in (self._searching, self._opening):
            task.cancel()


def _mentions_network(message: str) -> bool:
    """A hub error about reaching the hub (the banner explains it, no box needed)."""
    text = message.lower()
    return any(w in text for w in ("offline", "network", "reach", "connect", "did not answer"))
