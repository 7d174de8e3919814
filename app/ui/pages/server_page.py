"""The Server page: serve the library to other apps, and add servers whose models chat can use.

Top: the local OpenAI-compatible server — on/off, address and port, the API
key (generated, shown on demand, stored privately), allowed browser origins,
the URL with a Copy button. Then the models it has loaded with their memory,
and a live request log with each request's time to first token and tokens/s.
Bottom: remote endpoints (any OpenAI-compatible server: vLLM on a GPU box,
another Quantdesk, llama.cpp's server) whose models appear in Chat as
``NAME:MODEL``.

Threads: the server runs on its own threads (:mod:`app.workers.server_controller`
starts and stops it off the GUI thread); listing a remote's models runs as a
background task.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.remote import Remote, RemoteModel, RemoteStore
from app.core.secrets import SERVER_KEY, KeyFile
from app.core.serve import DEFAULT_HOST, DEFAULT_PORT
from app.core.serve.log import RequestRecord
from app.core.serve.server import ServerConfig, is_loopback
from app.core.settings import Settings
from app.ui import errors
from app.ui.widgets.cards import Card, PageHeader, muted
from app.workers.failure import Failure
from app.workers.server_controller import ServerController
from app.workers.tasks import Call, TaskHandle, start_task

logger = logging.getLogger(__name__)

SECTION = "server"
REFRESH_MS = 1000
MAX_LOG_ROWS = 200
MIB = 1024**2

LOG_COLUMNS = ("Time", "Model", "Route", "Status", "Tokens in → out", "TTFT", "Gen tok/s", "Took")
MODEL_COLUMNS = ("Model", "State", "Memory", "Context", "Queue")
REMOTE_COLUMNS = ("Name", "URL", "Key", "Models")


def _table(columns: tuple[str, ...], stretch: int = -1) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(list(columns))
    t.verticalHeader().setVisible(False)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setAlternatingRowColors(True)
    header = t.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    if stretch < 0:
        header.setStretchLastSection(True)
    else:
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return t


def _item(text: str, align_right: bool = False) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def _models_of(name: str) -> list[RemoteModel]:
    return RemoteStore().client(name).models()


class RemoteDialog(QDialog):
    """Name, URL and optional key of an OpenAI-compatible endpoint."""

    def __init__(self, parent: QWidget | None = None, *, url: str = "", name: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a remote server")
        form = QFormLayout(self)
        self.name_edit = QLineEdit(name)
        self.name_edit.setPlaceholderText("gpu-box")
        self.url_edit = QLineEdit(url)
        self.url_edit.setPlaceholderText("http://gpu-box:8000/v1")
        self.key_edit = QLineEdit()
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("optional")
        form.addRow("Name", self.name_edit)
        form.addRow("URL", self.url_edit)
        form.addRow("API key", self.key_edit)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class ServerPage(QWidget):
    status_message = Signal(str)
    remotes_changed = Signal()

    def __init__(
        self,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        controller: ServerController | None = None,
        keys: KeyFile | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("serverPage")
        self.settings = settings
        self.keys = keys or KeyFile()
        self.remotes = RemoteStore(settings, self.keys)
        self.controller = controller or ServerController(self)
        self._remote_tasks: dict[str, TaskHandle[list[RemoteModel]]] = {}
        self._remote_counts: dict[str, str] = {}
        self._build()
        self._wire()
        self._load_settings()
        self.refresh_remotes()
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh_models)
        self._update()

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        lay = QVBoxLayout(body)
        lay.setContentsMargins(28, 20, 28, 20)
        lay.setSpacing(14)
        lay.addWidget(
            PageHeader(
                "Server",
                "Serve your models to editors, agents and notebooks over an OpenAI-compatible "
                "API, and chat with models served on other machines.",
            )
        )

        card = Card("Local server", "runtime")
        row = QHBoxLayout()
        self.toggle = QPushButton("Start server")
        self.toggle.setObjectName("serverToggle")
        self.toggle.setProperty("primary", "true")
        row.addWidget(self.toggle)
        self.state_label = QLabel("Off")
        self.state_label.setObjectName("serverState")
        row.addWidget(self.state_label, 1)
        card.body.addLayout(row)

        url_row = QHBoxLayout()
        self.url_edit = QLineEdit()
        self.url_edit.setObjectName("serverUrl")
        self.url_edit.setReadOnly(True)
        url_row.addWidget(QLabel("URL"))
        url_row.addWidget(self.url_edit, 1)
        self.copy_button = QPushButton("Copy")
        url_row.addWidget(self.copy_button)
        card.body.addLayout(url_row)

        form = QFormLayout()
        self.host_combo = QComboBox()
        self.host_combo.setEditable(True)
        self.host_combo.addItems([DEFAULT_HOST, "0.0.0.0"])
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(DEFAULT_PORT)
        where = QHBoxLayout()
        where.addWidget(self.host_combo, 1)
        where.addWidget(QLabel("Port"))
        where.addWidget(self.port_spin)
        form.addRow("Address", where)
        key_row = QHBoxLayout()
        self.key_edit = QLineEdit()
        self.key_edit.setObjectName("serverKey")
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("none (only this machine can connect)")
        key_row.addWidget(self.key_edit, 1)
        self.show_key = QPushButton("Show")
        self.show_key.setCheckable(True)
        key_row.addWidget(self.show_key)
        self.new_key = QPushButton("Generate")
        key_row.addWidget(self.new_key)
        self.copy_key = QPushButton("Copy")
        key_row.addWidget(self.copy_key)
        form.addRow("API key", key_row)
        self.cors_edit = QLineEdit()
        self.cors_edit.setPlaceholderText("off — e.g. http://localhost:3000 for a browser app")
        form.addRow("Browser origins", self.cors_edit)
        card.body.addLayout(form)
        self.hint = muted("")
        self.hint.setObjectName("serverHint")
        card.body.addWidget(self.hint)
        lay.addWidget(card)

        models = Card("Loaded models", "memory")
        self.models_table = _table(MODEL_COLUMNS, stretch=0)
        self.models_table.setObjectName("loadedModels")
        self.models_table.setMinimumHeight(70)
        self.models_table.setMaximumHeight(110)
        models.body.addWidget(muted(
            "Models load when a request names them and unload, least recently used first, "
            "when another needs the memory."
        ))  # fmt: skip
        models.body.addWidget(self.models_table)
        lay.addWidget(models)

        log = Card("Requests", "gauge")
        self.log_table = _table(LOG_COLUMNS, stretch=1)
        self.log_table.setObjectName("requestLog")
        self.log_table.setMinimumHeight(240)
        log.body.addWidget(self.log_table)
        lay.addWidget(log)

        remote = Card("Remote servers", "gpu")
        remote.body.addWidget(muted(
            "OpenAI-compatible servers on other machines (vLLM, another Quantdesk, llama.cpp's "
            "server). Their models appear in Chat as NAME:MODEL."
        ))  # fmt: skip
        self.remote_table = _table(REMOTE_COLUMNS)
        self.remote_table.setObjectName("remoteServers")
        self.remote_table.setMinimumHeight(70)
        self.remote_table.setMaximumHeight(120)
        remote.body.addWidget(self.remote_table)
        buttons = QHBoxLayout()
        self.add_remote_button = QPushButton("Add…")
        self.remove_remote_button = QPushButton("Remove")
        self.refresh_remote_button = QPushButton("Refresh")
        for b in (self.add_remote_button, self.remove_remote_button, self.refresh_remote_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        remote.body.addLayout(buttons)
        lay.addWidget(remote)
        lay.addStretch(1)

    def _wire(self) -> None:
        c = self.controller
        c.started.connect(self._on_started)
        c.stopped.connect(self._on_stopped)
        c.failed.connect(self._on_failed)
        c.request_logged.connect(self.add_record)
        self.toggle.clicked.connect(self.toggle_server)
        self.copy_button.clicked.connect(lambda: self._copy(self.url_edit.text(), "URL"))
        self.copy_key.clicked.connect(lambda: self._copy(self.key_edit.text(), "API key"))
        self.show_key.toggled.connect(
            lambda on: self.key_edit.setEchoMode(
                QLineEdit.EchoMode.Normal if on else QLineEdit.EchoMode.Password
            )
        )
        self.new_key.clicked.connect(self.generate_key)
        self.host_combo.currentTextChanged.connect(lambda _t: self._update())
        self.key_edit.textChanged.connect(lambda _t: self._update())
        self.add_remote_button.clicked.connect(lambda _checked=False: self.ask_remote())
        self.remove_remote_button.clicked.connect(self._remove_selected_remote)
        self.refresh_remote_button.clicked.connect(self.refresh_remotes)

    # ------------------------------------------------------------------ settings
    def _load_settings(self) -> None:
        section = self.settings.get(SECTION)
        if isinstance(section, dict):
            host = section.get("host")
            if isinstance(host, str) and host:
                self.host_combo.setCurrentText(host)
            port = section.get("port")
            if isinstance(port, int) and 0 < port < 65536:
                self.port_spin.setValue(port)
            cors = section.get("cors")
            if isinstance(cors, list):
                self.cors_edit.setText(", ".join(str(x) for x in cors))
        self.key_edit.setText(self.keys.get(SERVER_KEY) or "")

    def config(self) -> ServerConfig:
        key = self.key_edit.text().strip() or None
        cors = tuple(x.strip() for x in self.cors_edit.text().split(",") if x.strip())
        return ServerConfig(
            host=self.host_combo.currentText().strip() or DEFAULT_HOST,
            port=self.port_spin.value(),
            api_key=key,
            cors_origins=cors,
        )

    def _save_settings(self, config: ServerConfig) -> None:
        section = self.settings.section(SECTION)
        section.update(host=config.host, port=config.port, cors=list(config.cors_origins))
        try:
            self.settings.save()
            self.keys.set(SERVER_KEY, config.api_key)
        except OSError as exc:
            logger.warning("server settings not saved: %s", exc)

    def generate_key(self) -> None:
        self.key_edit.setText("qd-" + secrets.token_urlsafe(24))

    def _copy(self, text: str, what: str) -> None:
        if text:
            QApplication.clipboard().setText(text)
            self.status_message.emit(f"{what} copied")

    # ------------------------------------------------------------------ server
    def toggle_server(self) -> None:
        if self.controller.running:
            self.controller.stop()
        else:
            config = self.config()
            self._save_settings(config)
            self.controller.start(config)
        self._update()

    def _on_started(self, url: str) -> None:
        self.url_edit.setText(url)
        self._timer.start()
        self.refresh_models()
        self.status_message.emit(f"Serving at {url}")
        self._update()

    def _on_stopped(self) -> None:
        self._timer.stop()
        self.models_table.setRowCount(0)
        self.status_message.emit("Server stopped")
        self._update()

    def _on_failed(self, failure: Failure) -> None:
        self._update()
        errors.show_error(self, failure)

    def _update(self) -> None:
        c = self.controller
        running = c.running
        busy = c.busy
        self.toggle.setText("Stop server" if running else "Start server")
        self.toggle.setEnabled(not busy)
        for w in (self.host_combo, self.port_spin, self.key_edit, self.cors_edit, self.new_key):
            w.setEnabled(not running and not busy)
        if busy:
            self.state_label.setText("Starting…" if not running else "Stopping…")
        elif running:
            key = " · API key required" if self.key_edit.text().strip() else ""
            self.state_label.setText(f"On{key}")
        else:
            self.state_label.setText("Off")
            self.url_edit.setText(self.config().base_url())
        host = self.host_combo.currentText().strip() or DEFAULT_HOST
        if not is_loopback(host) and not self.key_edit.text().strip():
            self.hint.setText(
                f"{host} makes the server reachable from other machines: it needs an API "
                "key (Generate one). 127.0.0.1 keeps it to this machine."
            )
        elif not is_loopback(host):
            self.hint.setText(
                f"Reachable from other machines at {host}; every request must send the API key."
            )
        else:
            self.hint.setText(
                "Only this machine can connect. Point any OpenAI client at the URL "
                "(base_url) with the API key, or any key when there is none."
            )
        self.copy_button.setEnabled(running)

    def refresh_models(self) -> None:
        rows = self.controller.loaded()
        t = self.models_table
        t.setRowCount(len(rows))
        for i, m in enumerate(rows):
            mem = m.rss_after_load_bytes or m.estimate_bytes
            t.setItem(i, 0, _item(m.id))
            t.setItem(i, 1, _item("answering" if m.busy else m.state))
            t.setItem(i, 2, _item(f"{mem / MIB:,.0f} MiB", True))
            t.setItem(i, 3, _item(f"{m.n_ctx:,}" if m.n_ctx else "—", True))
            t.setItem(i, 4, _item(str(m.queued), True))

    def add_record(self, r: RequestRecord) -> None:
        t = self.log_table
        t.insertRow(0)
        when = _dt.datetime.fromtimestamp(r.time).strftime("%H:%M:%S")
        status = str(r.status) + (f" {r.error}" if r.error else "")
        cells = (
            _item(when),
            _item(r.model),
            _item(("stream " if r.stream else "") + r.route),
            _item(status),
            _item(f"{r.prompt_tokens} → {r.completion_tokens}", True),
            _item(f"{r.ttft_s * 1000:,.0f} ms" if r.ttft_s is not None else "—", True),
            _item(f"{r.gen_tokens_per_s:.1f}" if r.gen_tokens_per_s else "—", True),
            _item(f"{r.duration_s:.2f} s", True),
        )
        for col, cell in enumerate(cells):
            t.setItem(0, col, cell)
        while t.rowCount() > MAX_LOG_ROWS:
            t.removeRow(t.rowCount() - 1)
        self.refresh_models()

    def log_rows(self) -> list[list[str]]:
        t = self.log_table
        rows = []
        for r in range(t.rowCount()):
            cells = [t.item(r, c) for c in range(t.columnCount())]
            rows.append([c.text() if c is not None else "" for c in cells])
        return rows

    # ------------------------------------------------------------------ remotes
    def refresh_remotes(self) -> None:
        remotes = self.remotes.list()
        t = self.remote_table
        t.setRowCount(len(remotes))
        for i, r in enumerate(remotes):
            t.setItem(i, 0, _item(r.name))
            t.setItem(i, 1, _item(r.url))
            t.setItem(i, 2, _item("saved" if r.has_key else "none"))
            t.setItem(i, 3, _item(self._remote_counts.get(r.name, "…")))
            self._list_remote(r)

    def _list_remote(self, r: Remote) -> None:
        if r.name in self._remote_tasks:
            return
        name = r.name

        def finished(models: list[RemoteModel]) -> None:
            self._on_remote_models(name, models)

        def failed(failure: Failure) -> None:
            self._on_remote_failed(name, failure)

        self._remote_tasks[name] = start_task(
            Call(_models_of, name), parent=self, on_finished=finished, on_failed=failed
        )

    def _set_count(self, name: str, text: str) -> None:
        self._remote_counts[name] = text
        t = self.remote_table
        for i in range(t.rowCount()):
            item = t.item(i, 0)
            if item is not None and item.text() == name:
                t.setItem(i, 3, _item(text))

    def _on_remote_models(self, name: str, models: list[RemoteModel]) -> None:
        self._remote_tasks.pop(name, None)
        shown = ", ".join(m.id for m in models[:3]) + (" …" if len(models) > 3 else "")
        self._set_count(name, f"{len(models)}: {shown}" if models else "none")
        self.remotes_changed.emit()

    def _on_remote_failed(self, name: str, failure: Failure) -> None:
        self._remote_tasks.pop(name, None)
        self._set_count(name, f"unreachable ({failure.message[:80]})")

    def add_remote(self, name: str, url: str, key: str | None = None) -> Remote | None:
        try:
            remote = self.remotes.add(name, url, key)
        except Exception as exc:  # a refused name or address is shown as a sentence
            errors.show_error(self, exc)
            return None
        self._remote_counts.pop(remote.name, None)
        self.refresh_remotes()
        self.status_message.emit(f"Added {remote.name} ({remote.url})")
        return remote

    def ask_remote(self, url: str = "", name: str = "") -> None:
        """Ask for a remote server's name, URL and key (modal), then add it."""
        dialog = RemoteDialog(self, url=url, name=name)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            key = dialog.key_edit.text().strip() or None
            self.add_remote(dialog.name_edit.text().strip(), dialog.url_edit.text().strip(), key)

    def _remove_selected_remote(self) -> None:
        row = self.remote_table.currentRow()
        item = self.remote_table.item(row, 0) if row >= 0 else None
        if item is not None and self.remotes.remove(item.text()):
            self.refresh_remotes()
            self.remotes_changed.emit()

    def shutdown(self) -> None:
        """Stop the server and unload its models (application quit)."""
        self._timer.stop()
        self.controller.shutdown()
