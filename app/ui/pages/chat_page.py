"""The Chat page: conversations, a streaming transcript, live speed and memory.

Layout: the conversation list (search, new, rename, delete, export) on the
left; in the middle the model picker with Load/Unload and a load progress bar,
the transcript, the stats bar, the live chart and the message box; the
settings drawer on the right.

Threads: the model lives in the chat worker's thread (:mod:`app.workers.chat_worker`),
which also saves streaming answers to the history. Tokens arrive as signals and
are appended to the last bubble at most every :data:`FLUSH_MS`, so a fast model
does not redraw per token. The page's own history connection serves the
conversation list and the user's messages (short SQLite statements).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.chat.session import ChatLoadError, ModelInfo
from app.core.chat.settings import ChatSettingsStore, ModelChatSettings
from app.core.chat.stats import LiveSample
from app.core.chat.templates import ChatMessage, PromptMode, Role, TemplateSource
from app.core.errors import AppError
from app.core.history import (
    ExportFormat,
    History,
    MessageState,
    StoredMessage,
    state_label,
)
from app.core.quality import card_for, summarize
from app.core.settings import Settings
from app.ui import errors
from app.ui.widgets.chat_chart import LiveChart, StatsBar
from app.ui.widgets.chat_input import ChatInput
from app.ui.widgets.chat_settings import ChatSettingsDrawer
from app.ui.widgets.chat_transcript import MessageBubble, Transcript
from app.workers.chat_worker import ChatController, GenerateRequest, GenerationResult
from app.workers.failure import Failure
from app.workers.tasks import Call, LatestTask, start_task
from quant.plan.quality import QualityMeasurement
from quant.progress import Progress

if TYPE_CHECKING:
    from app.core.library import ModelLibrary

logger = logging.getLogger(__name__)

FLUSH_MS = 30
SEARCH_DELAY_MS = 150
ID_ROLE = Qt.ItemDataRole.UserRole


def _list_models(library: Any) -> list[tuple[str, Path]]:
    """(label, path) of every library entry; runs off the GUI thread."""
    if library is None:
        from app.core.library import ModelLibrary

        library = ModelLibrary()
    models = [(f"{e.name}  ·  {e.source.label}", Path(e.path)) for e in library.entries()]
    # Models served elsewhere, as NAME:MODEL (app.core.remote); unreachable ones are skipped.
    from app.core.remote import list_remote_models

    models += [(f"{m.id}  ·  Remote ({m.remote})", Path(str(m.ref))) for m in list_remote_models()]
    return models


class ChatPage(QWidget):
    """Offline chat with live stats. ``open_model(path)`` loads a model from elsewhere."""

    model_loaded = Signal(object)  # ModelInfo
    model_load_failed = Signal(object)  # the exception behind the Failure
    model_unloaded = Signal()
    answer_finished = Signal(object)  # GenerationResult
    answer_failed = Signal(object)  # the exception behind the Failure
    status_message = Signal(str)

    def __init__(
        self, settings: Settings, library: ModelLibrary | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("chatPage")
        self.settings = settings
        self.library = library
        self._store = ChatSettingsStore(settings)
        self._history = History()
        self._controller = ChatController(self)
        self.info: ModelInfo | None = None
        self._loading_path: Path | None = None
        self._conversation_id: int | None = None
        self._edit_message_id: int | None = None
        self._pending_send: str | None = None
        self._answering = False
        self._stream_bubble: MessageBubble | None = None
        self._stream_conversation: int | None = None
        self._pending: list[str] = []
        self._generated_live = 0
        # Listed again when the library changes; a listing under way starts over.
        self._listing: LatestTask[list[tuple[str, Path]]] = LatestTask(
            self, on_finished=self._on_models, on_failed=self._on_models_failed
        )
        self._down = False

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_MS)
        self._flush_timer.timeout.connect(self._flush_tokens)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refresh_conversations)

        self._build()
        self._wire()
        self.refresh_conversations()
        convs = self._history.conversations(limit=1)
        if convs:
            self.open_conversation(convs[0].id)
        self.reload_models()

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        root = QHBoxLayout(self)
        root.setContentsMargins(12, 10, 12, 8)
        root.setSpacing(10)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        root.addWidget(splitter)

        # Conversations.
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search conversations")
        self.search_box.setClearButtonEnabled(True)
        ll.addWidget(self.search_box)
        self.conversation_list = QListWidget()
        self.conversation_list.setObjectName("conversationList")
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        ll.addWidget(self.conversation_list, 1)
        row = QHBoxLayout()
        self.new_button = QPushButton("New")
        self.rename_button = QPushButton("Rename")
        self.delete_button = QPushButton("Delete")
        for b in (self.new_button, self.rename_button, self.delete_button):
            row.addWidget(b)
        ll.addLayout(row)
        left.setMinimumWidth(250)
        splitter.addWidget(left)

        # Chat.
        center = QWidget()
        cl = QVBoxLayout(center)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(8)
        top = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelPicker")
        self.model_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.model_combo.setPlaceholderText("Listing models…")
        top.addWidget(self.model_combo, 1)
        self.browse_button = QPushButton("Open file…")
        top.addWidget(self.browse_button)
        self.load_button = QPushButton("Load")
        self.load_button.setProperty("primary", "true")
        top.addWidget(self.load_button)
        self.cancel_load_button = QPushButton("Cancel")
        self.cancel_load_button.setVisible(False)
        top.addWidget(self.cancel_load_button)
        self.settings_button = QPushButton("Settings")
        self.settings_button.setCheckable(True)
        top.addWidget(self.settings_button)
        cl.addLayout(top)

        self.load_bar = QProgressBar()
        self.load_bar.setObjectName("loadProgress")
        self.load_bar.setRange(0, 100)
        self.load_bar.setTextVisible(True)
        self.load_bar.setVisible(False)
        cl.addWidget(self.load_bar)
        self.model_label = QLabel("No model loaded.")
        self.model_label.setProperty("muted", "true")
        self.model_label.setWordWrap(True)
        cl.addWidget(self.model_label)

        self.banner = QFrame()
        self.banner.setObjectName("chatBanner")
        bl = QHBoxLayout(self.banner)
        bl.setContentsMargins(10, 6, 10, 6)
        self.banner_label = QLabel()
        self.banner_label.setObjectName("banner")
        self.banner_label.setWordWrap(True)
        self.banner_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bl.addWidget(self.banner_label, 1)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setVisible(False)
        bl.addWidget(self.retry_button)
        # For a base model answering through examples: one click to the other modes.
        self.template_button = QPushButton("Use the chat template")
        self.template_button.setToolTip("Reload with the family's chat template")
        self.raw_button = QPushButton("Raw completion")
        self.raw_button.setToolTip("Reload without a template: the model continues your text")
        for b in (self.template_button, self.raw_button):
            b.setVisible(False)
            bl.addWidget(b)
        self.banner_close = QPushButton("Dismiss")
        bl.addWidget(self.banner_close)
        self.banner.setVisible(False)
        cl.addWidget(self.banner)

        self.transcript = Transcript()
        cl.addWidget(self.transcript, 1)
        self.stats_bar = StatsBar()
        cl.addWidget(self.stats_bar)
        self.chart = LiveChart()
        cl.addWidget(self.chart)
        self.edit_label = QLabel()
        self.edit_label.setProperty("muted", "true")
        self.edit_label.setVisible(False)
        cl.addWidget(self.edit_label)
        bottom = QHBoxLayout()
        self.input = ChatInput()
        bottom.addWidget(self.input, 1)
        self.send_button = QPushButton("Send")
        self.send_button.setProperty("primary", "true")
        bottom.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setVisible(False)
        bottom.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignBottom)
        cl.addLayout(bottom)
        splitter.addWidget(center)

        self.drawer = ChatSettingsDrawer()
        self.drawer.setVisible(False)
        splitter.addWidget(self.drawer)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([250, 800, 300])

    def _wire(self) -> None:
        c = self._controller
        w = c.worker
        w.load_progress.connect(self._on_load_progress)
        w.loaded.connect(self._on_loaded)
        w.load_failed.connect(self._on_load_failed)
        w.load_cancelled.connect(self._on_load_cancelled)
        w.unloaded.connect(self._on_unloaded)
        w.generation_started.connect(self._on_generation_started)
        w.tokens.connect(self._on_tokens)
        w.sample.connect(self._on_sample)
        w.generation_finished.connect(self._on_generation_finished)
        w.generation_failed.connect(self._on_generation_failed)

        self.input.send_requested.connect(self.send)
        self.input.stop_requested.connect(self._escape)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.load_button.clicked.connect(self._toggle_load)
        self.cancel_load_button.clicked.connect(self._controller.cancel_load)
        self.browse_button.clicked.connect(self._browse)
        self.settings_button.toggled.connect(self.drawer.setVisible)
        self.model_combo.currentIndexChanged.connect(self._on_model_picked)
        self.drawer.changed.connect(self._on_settings_changed)
        self.banner_close.clicked.connect(self.hide_banner)
        self.template_button.clicked.connect(lambda: self.switch_prompt_mode(PromptMode.TEMPLATE))
        self.raw_button.clicked.connect(lambda: self.switch_prompt_mode(PromptMode.RAW))
        self.retry_button.clicked.connect(self._retry)
        self.transcript.edit_requested.connect(self.edit_message)
        self.transcript.regenerate_requested.connect(lambda _id: self.regenerate())

        self.new_button.clicked.connect(self.new_conversation)
        self.rename_button.clicked.connect(self._rename_selected)
        self.delete_button.clicked.connect(self._delete_selected)
        self.search_box.textChanged.connect(lambda _t: self._search_timer.start())
        self.conversation_list.currentItemChanged.connect(self._on_conversation_picked)
        self.conversation_list.itemChanged.connect(self._on_item_renamed)
        self.conversation_list.customContextMenuRequested.connect(self._conversation_menu)
        self._update_controls()

    # ------------------------------------------------------------------ models
    def reload_models(self) -> None:
        """List the library's models (off the GUI thread)."""
        self._listing.start(Call(_list_models, self.library))

    def _on_models(self, models: list[tuple[str, Path]]) -> None:
        current = self.current_model_path()
        self.model_combo.blockSignals(True)
        known = {self.model_combo.itemData(i) for i in range(self.model_combo.count())}
        for label, path in models:
            if path not in known:
                self.model_combo.addItem(label, path)
        self.model_combo.setPlaceholderText(
            "Pick a model" if self.model_combo.count() else "No models yet: use Open file…"
        )
        self.model_combo.blockSignals(False)
        if current is None:
            last = self._store.last_model()
            index = self._index_of(last) if last is not None else -1
            self.model_combo.setCurrentIndex(index if index >= 0 else 0)
        self._update_controls()

    def _on_models_failed(self, failure: Failure) -> None:
        logger.warning("model list unavailable: %s", failure.message)
        self.model_combo.setPlaceholderText("Use Open file… to pick a model")

    def _index_of(self, path: Path) -> int:
        key = ChatSettingsStore.key(path)
        for i in range(self.model_combo.count()):
            data = self.model_combo.itemData(i)
            if data is not None and ChatSettingsStore.key(data) == key:
                return i
        return -1

    def current_model_path(self) -> Path | None:
        data = self.model_combo.currentData()
        return Path(data) if data is not None else None

    def open_model(self, path: Path) -> None:
        """Pick ``path`` (adding it to the picker if needed) and load it."""
        path = Path(path)
        index = self._index_of(path)
        if index < 0:
            self.model_combo.addItem(path.name, path)
            index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(index)
        if not self._picked_is_loaded():
            self.load_model()

    def _browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Open a GGUF model", "", "GGUF models (*.gguf);;All files (*)"
        )
        if name:
            self.open_model(Path(name))

    def _on_model_picked(self, _index: int) -> None:
        path = self.current_model_path()
        if path is None:
            return
        value = self._store.for_model(path)
        conv_prompt = self._conversation_system_prompt()
        if conv_prompt is not None:
            value = ModelChatSettings(value.sampling, value.plan, conv_prompt, value.mode)
        self.drawer.set_value(value)
        self._update_controls()

    def _on_settings_changed(self, value: ModelChatSettings) -> None:
        path = self.current_model_path()
        if path is not None:
            try:
                self._store.save_for_model(path, value)
            except OSError as exc:
                logger.warning("chat settings not saved: %s", exc)
        if self._conversation_id is not None:
            self._guard(
                lambda: self._history.set_system_prompt(
                    self._conversation_id or 0, value.system_prompt
                )
            )

    def _picked_is_loaded(self) -> bool:
        path = self.current_model_path()
        return (
            self.info is not None
            and path is not None
            and ChatSettingsStore.key(self.info.path) == ChatSettingsStore.key(path)
        )

    def _toggle_load(self) -> None:
        if self._picked_is_loaded() and not self._loading_path:
            self.unload_model()
        else:
            self.load_model()

    def load_model(self, plan_override: Any = None) -> None:
        path = self.current_model_path()
        if path is None or self._down:
            return
        self.drawer.flush()
        value = self.drawer.value()
        plan = plan_override or value.plan
        if plan_override is not None:
            self.drawer.set_value(
                ModelChatSettings(value.sampling, plan, value.system_prompt, value.mode)
            )
            self._store.save_for_model(path, self.drawer.value())
        self.hide_banner()
        self._loading_path = path
        self.load_bar.setRange(0, 0)  # busy until llama.cpp reports progress
        self.load_bar.setVisible(True)
        self.model_label.setText(f"Loading {path.name}…")
        self._controller.load(path, plan, value.mode)
        self._update_controls()

    def unload_model(self) -> None:
        self._controller.unload()

    def _on_load_progress(self, p: Progress) -> None:
        if p.total > 0 and p.done > 0:
            self.load_bar.setRange(0, p.total)
            self.load_bar.setValue(p.done)

    def _on_loaded(self, info: ModelInfo) -> None:
        self._loading_path = None
        self.info = info
        self.load_bar.setVisible(False)
        plan = info.plan
        gpu = "all" if plan.n_gpu_layers < 0 else str(plan.n_gpu_layers)
        if info.architecture == "remote":  # a model served elsewhere (app.core.remote)
            self._on_remote_loaded(info)
            return
        parts = [
            f"{info.name} loaded in {info.load_s:.1f} s",
            f"context {info.n_ctx:,}",
            f"GPU layers {gpu}",
            f"KV {plan.kv_type.value}",
            f"{plan.n_threads} thread{'s' if plan.n_threads != 1 else ''}",
            f"flash attention {'on' if info.flash_attention else 'off'}",
            info.template_note,
        ]
        self.model_label.setText(" · ".join(parts))
        self.chart.set_prediction(info.prediction)
        self.transcript.set_model_ready(True)
        self.stats_bar.labels["context"].setText(f"Context 0 / {info.n_ctx:,}")
        path = self.current_model_path()
        if path is not None and not self._store.has_saved(path):
            # The model's own defaults until the user chooses (a base model wants a low
            # temperature to follow its examples).
            value = self.drawer.value()
            self.drawer.set_value(
                ModelChatSettings(info.sampling, value.plan, value.system_prompt, value.mode)
            )
        if info.notes:
            self.show_banner(
                " ".join(n[:1].upper() + n[1:] + "." for n in info.notes),
                mode_switch=info.template_source is TemplateSource.IN_CONTEXT
                and self.drawer.value().mode is PromptMode.CHAT,
            )
        self._update_controls()
        self.status_message.emit(f"{info.name} is ready")
        if path is not None:
            # The file's report card, when it was measured, joins the banner.
            start_task(
                Call(card_for, path),
                parent=self,
                on_finished=self._show_quality,
                on_failed=lambda f: logger.info("no quality card: %s", f.message),
            )
        self.model_loaded.emit(info)
        if self._pending_send is not None:
            text, self._pending_send = self._pending_send, None
            self.send(text)

    def _on_remote_loaded(self, info: ModelInfo) -> None:
        self.model_label.setText(f"{info.name} · {info.template_note} · memory: remote")
        self.chart.set_prediction(None, loaded=False)
        self.transcript.set_model_ready(True)
        self.stats_bar.labels["context"].setText("Context —")
        self.stats_bar.labels["memory"].setText("Memory: remote")
        self._update_controls()
        self.status_message.emit(f"{info.name} is ready")
        self.model_loaded.emit(info)
        if self._pending_send is not None:
            text, self._pending_send = self._pending_send, None
            self.send(text)

    def _on_load_failed(self, failure: Failure) -> None:
        self._loading_path = None
        self._pending_send = None
        self.info = None
        self.load_bar.setVisible(False)
        self.model_label.setText("No model loaded.")
        retry = failure.error.retry if isinstance(failure.error, ChatLoadError) else None
        if failure.expected:
            self.show_banner(failure.message, retry=retry)
        else:
            errors.show_error(self, failure)
        self._update_controls()
        self.model_load_failed.emit(failure.error)

    def _on_load_cancelled(self) -> None:
        self._loading_path = None
        self._pending_send = None
        self.load_bar.setVisible(False)
        self.model_label.setText("Loading cancelled.")
        self._update_controls()

    def _on_unloaded(self) -> None:
        self.info = None
        self.model_label.setText("No model loaded.")
        self.chart.set_prediction(None, loaded=False)
        self._update_controls()
        self.transcript.set_model_ready(False)
        self.model_unloaded.emit()

    def _retry(self) -> None:
        plan = self.retry_button.property("plan_object")
        self.hide_banner()
        if plan is not None:
            self.load_model(plan_override=plan)

    # ------------------------------------------------------------------ banner
    def switch_prompt_mode(self, mode: PromptMode) -> None:
        """Save ``mode`` for the picked model and load it again with it."""
        path = self.current_model_path()
        if path is None:
            return
        value = self.drawer.value()
        self.drawer.set_value(
            ModelChatSettings(value.sampling, value.plan, value.system_prompt, mode)
        )
        self._store.save_for_model(path, self.drawer.value())
        self.load_model()

    def show_banner(self, text: str, *, retry: Any = None, mode_switch: bool = False) -> None:
        self.banner_label.setText(text)
        self.template_button.setVisible(mode_switch)
        self.raw_button.setVisible(mode_switch)
        self.retry_button.setVisible(retry is not None)
        self.retry_button.setProperty("plan_object", retry)
        if retry is not None:
            self.retry_button.setText(
                f"Retry with context {retry.n_ctx:,}"
                + (f", {retry.n_gpu_layers} GPU layers" if retry.n_gpu_layers >= 0 else "")
            )
        self.banner.setVisible(True)

    def _show_quality(self, found: tuple[Path, QualityMeasurement | None]) -> None:
        path, m = found
        if m is None or self.info is None:
            return
        if ChatSettingsStore.key(self.info.path) != ChatSettingsStore.key(path):
            return  # another model was loaded meanwhile
        line = summarize(m)
        if self.banner.isVisible() and self.banner_label.text():
            if line not in self.banner_label.text():
                self.banner_label.setText(f"{self.banner_label.text()}\n{line}")
        else:
            self.show_banner(line)

    def hide_banner(self) -> None:
        self.banner.setVisible(False)
        self.retry_button.setProperty("plan_object", None)

    def banner_text(self) -> str:
        return self.banner_label.text() if self.banner.isVisible() else ""

    # ------------------------------------------------------------------ conversations
    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except AppError as exc:
            self.show_banner(str(exc))
            return None

    def refresh_conversations(self) -> None:
        query = self.search_box.text()
        hits = self._guard(lambda: self._history.search(query)) or []
        lst = self.conversation_list
        lst.blockSignals(True)
        lst.clear()
        for hit in hits:
            conv = hit.conversation
            item = QListWidgetItem(conv.title)
            item.setData(ID_ROLE, conv.id)
            item.setToolTip(hit.snippet or conv.title)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            lst.addItem(item)
            if conv.id == self._conversation_id:
                lst.setCurrentItem(item)
        lst.blockSignals(False)

    def conversation_ids(self) -> list[int]:
        lst = self.conversation_list
        return [int(lst.item(i).data(ID_ROLE)) for i in range(lst.count())]

    @property
    def conversation_id(self) -> int | None:
        return self._conversation_id

    def _on_conversation_picked(self, item: QListWidgetItem | None, _prev: object) -> None:
        if item is not None:
            self.open_conversation(int(item.data(ID_ROLE)))

    def open_conversation(self, conversation_id: int) -> None:
        """Show a stored conversation (stopping an answer that is still streaming)."""
        if conversation_id == self._conversation_id and self.transcript.bubbles():
            return
        if self._answering:
            self.stop()
        conv = self._guard(lambda: self._history.conversation(conversation_id))
        if conv is None:
            return
        self._conversation_id = conversation_id
        self._cancel_edit()
        self._rebuild_transcript()
        self.drawer.system_prompt.blockSignals(True)
        self.drawer.system_prompt.setPlainText(conv.system_prompt)
        self.drawer.system_prompt.blockSignals(False)
        self._select_in_list(conversation_id)
        self._update_controls()

    def _select_in_list(self, conversation_id: int) -> None:
        lst = self.conversation_list
        lst.blockSignals(True)
        for i in range(lst.count()):
            if lst.item(i).data(ID_ROLE) == conversation_id:
                lst.setCurrentRow(i)
                break
        lst.blockSignals(False)

    def _rebuild_transcript(self) -> None:
        self.transcript.clear()
        if self._conversation_id is None:
            return
        msgs = self._guard(lambda: self._history.messages(self._conversation_id or 0)) or []
        for m in msgs:
            self._add_stored(m)

    def _add_stored(self, m: StoredMessage) -> MessageBubble:
        bubble = self.transcript.add(m.role.value, m.content, message_id=m.id)
        if m.role is Role.ASSISTANT:
            if m.state is not MessageState.COMPLETE:
                bubble.set_state(f"({state_label(m.state)})")
            if m.stats is not None:
                bubble.set_footer(m.stats.summary())
        return bubble

    def _conversation_system_prompt(self) -> str | None:
        if self._conversation_id is None:
            return None
        conv = self._guard(lambda: self._history.conversation(self._conversation_id or 0))
        return conv.system_prompt if conv is not None else None

    def new_conversation(self) -> None:
        """Start an empty conversation (stored when the first message is sent)."""
        if self._answering:
            self.stop()
        self._conversation_id = None
        self._cancel_edit()
        self.transcript.clear()
        self.conversation_list.blockSignals(True)
        self.conversation_list.setCurrentRow(-1)
        self.conversation_list.clearSelection()
        self.conversation_list.blockSignals(False)
        path = self.current_model_path()
        if path is not None:
            self.drawer.system_prompt.blockSignals(True)
            self.drawer.system_prompt.setPlainText(self._store.for_model(path).system_prompt)
            self.drawer.system_prompt.blockSignals(False)
        self.stats_bar.clear()
        self.chart.reset()
        self.input.setFocus()
        self._update_controls()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._guard(lambda: self._history.rename(conversation_id, title))
        self.refresh_conversations()

    def delete_conversation(self, conversation_id: int, *, confirm: bool = True) -> None:
        if confirm:
            conv = self._guard(lambda: self._history.conversation(conversation_id))
            if conv is None:
                return
            box = QMessageBox(
                QMessageBox.Icon.Question,
                "Delete conversation",
                f"Delete “{conv.title}” and all its messages?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                self,
            )
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.accepted.connect(lambda: self.delete_conversation(conversation_id, confirm=False))
            box.open()
            return
        if conversation_id == self._conversation_id:
            if self._answering:
                self.stop()
            self.new_conversation()
        self._guard(lambda: self._history.delete(conversation_id))
        self.refresh_conversations()

    def export_conversation(self, conversation_id: int, path: Path, fmt: ExportFormat) -> None:
        self._guard(lambda: self._history.export(conversation_id, path, fmt))
        self.status_message.emit(f"Exported to {path}")

    def _selected_id(self) -> int | None:
        item = self.conversation_list.currentItem()
        return int(item.data(ID_ROLE)) if item is not None else None

    def _rename_selected(self) -> None:
        item = self.conversation_list.currentItem()
        if item is not None:
            self.conversation_list.editItem(item)

    def _on_item_renamed(self, item: QListWidgetItem) -> None:
        self._guard(lambda: self._history.rename(int(item.data(ID_ROLE)), item.text()))

    def _delete_selected(self) -> None:
        cid = self._selected_id()
        if cid is not None:
            self.delete_conversation(cid)

    def _conversation_menu(self, pos: QPoint) -> None:
        item = self.conversation_list.itemAt(pos)
        if item is None:
            return
        cid = int(item.data(ID_ROLE))
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.conversation_list.editItem(item))
        menu.addAction(
            "Export as Markdown…", lambda: self._export_dialog(cid, ExportFormat.MARKDOWN)
        )
        menu.addAction("Export as JSON…", lambda: self._export_dialog(cid, ExportFormat.JSON))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_conversation(cid))
        menu.popup(self.conversation_list.viewport().mapToGlobal(pos))

    def _export_dialog(self, cid: int, fmt: ExportFormat) -> None:
        suffix = "md" if fmt is ExportFormat.MARKDOWN else "json"
        name, _ = QFileDialog.getSaveFileName(
            self, "Export conversation", f"conversation.{suffix}", f"*.{suffix}"
        )
        if name:
            self.export_conversation(cid, Path(name), fmt)

    # ------------------------------------------------------------------ sending
    @property
    def answering(self) -> bool:
        return self._answering

    def send(self, text: str | None = None) -> None:
        """Send ``text`` (or the message box's text); loads the picked model first if needed."""
        if self._down:
            return
        if not isinstance(text, str):
            text = self.input.toPlainText()
        if not text.strip() or self._answering:
            return
        if self.info is None:
            if self.current_model_path() is None:
                self.show_banner("Pick a model first: choose one above or use Open file….")
                return
            self._pending_send = text
            self.input.clear()
            if self._loading_path is None:
                self.load_model()
            return
        self.drawer.flush()
        if not self._ensure_conversation():
            return
        cid = self._conversation_id or 0
        if self._edit_message_id is not None:
            edited = self._edit_message_id
            self._cancel_edit()
            ok = self._guard(lambda: self._edit_in_history(edited, text))
            if ok is None:
                return
            self._rebuild_transcript()
        else:
            stored = self._guard(lambda: self._history.add_message(cid, Role.USER, text))
            if stored is None:
                return
            self._add_stored(stored)
        self.input.clear()
        self.refresh_conversations()
        self._start_answer()

    def _edit_in_history(self, message_id: int, text: str) -> bool:
        self._history.update_message(message_id, text)
        later = [
            m.id for m in self._history.messages(self._conversation_id or 0) if m.id > message_id
        ]
        if later:
            self._history.delete_from(later[0])
        return True

    def _ensure_conversation(self) -> bool:
        if self._conversation_id is not None:
            return True
        path = self.current_model_path()
        conv = self._guard(
            lambda: self._history.create_conversation(
                model=str(self.info.path if self.info else path or ""),
                system_prompt=self.drawer.value().system_prompt,
            )
        )
        if conv is None:
            return False
        self._conversation_id = conv.id
        return True

    def _prompt_messages(self) -> list[ChatMessage]:
        msgs = self._guard(lambda: self._history.messages(self._conversation_id or 0)) or []
        return [
            m.as_chat()
            for m in msgs
            if m.state is not MessageState.FAILED and (m.content or m.role is Role.USER)
        ]

    def _start_answer(self) -> None:
        assert self.info is not None
        value = self.drawer.value()
        messages = self._prompt_messages()
        self._answering = True
        self._pending = []
        self._generated_live = 0
        self._stream_conversation = self._conversation_id
        self._stream_bubble = self.transcript.add("assistant")
        self._stream_bubble.set_state("…")
        self.chart.reset()
        self.hide_banner()
        self._controller.generate(
            GenerateRequest(
                messages=tuple(messages),
                system_prompt=value.system_prompt,
                sampling=value.sampling,
                conversation_id=self._conversation_id,
                history_path=self._history.path,
            )
        )
        self._update_controls()

    def regenerate(self) -> None:
        """Answer the last user message again, replacing the last answer."""
        if self._answering or self.info is None or self._conversation_id is None:
            return
        msgs = self._guard(lambda: self._history.messages(self._conversation_id or 0)) or []
        if not msgs or msgs[-1].role is not Role.ASSISTANT:
            return
        last = msgs[-1]
        if self._guard(lambda: self._history.delete_from(last.id)) is None:
            return
        bubble = self.transcript.last()
        if bubble is not None and bubble.role == "assistant":
            self.transcript.remove(bubble)
        self._start_answer()

    def edit_message(self, message_id: int) -> None:
        """Put a user message back in the box; sending replaces it and what followed."""
        if self._answering:
            return
        try:
            msg = self._history.message(message_id)
        except AppError as exc:
            self.show_banner(str(exc))
            return
        if msg.role is not Role.USER:
            return
        self._edit_message_id = message_id
        self.input.setPlainText(msg.content)
        self.input.setFocus()
        self.edit_label.setText(
            "Editing a message: sending replaces it and everything after it. Esc cancels."
        )
        self.edit_label.setVisible(True)

    def _cancel_edit(self) -> None:
        self._edit_message_id = None
        self.edit_label.setVisible(False)

    def _escape(self) -> None:
        if self._answering:
            self.stop()
        elif self._edit_message_id is not None:
            self._cancel_edit()
            self.input.clear()

    def stop(self) -> None:
        """Stop the answer now (it keeps what was written)."""
        self._controller.stop()

    # ------------------------------------------------------------------ streaming
    def _on_generation_started(self, message_id: int) -> None:
        if self._stream_bubble is not None:
            self._stream_bubble.message_id = message_id
            self._stream_bubble.set_state("")

    def _on_tokens(self, text: str) -> None:
        self._pending.append(text)
        self._generated_live += 1
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def _flush_tokens(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending = []
        if self._stream_bubble is not None and self._stream_conversation == self._conversation_id:
            self._stream_bubble.append_text(text)

    def _on_sample(self, sample: LiveSample) -> None:
        if self.info is None or self.info.architecture == "remote":
            return
        self.chart.add_sample(sample)
        self.stats_bar.show_live(
            sample, context_used=sample.context_used, context_size=self.info.n_ctx
        )

    def _finish_stream(self) -> MessageBubble | None:
        self._flush_timer.stop()
        self._flush_tokens()
        bubble = self._stream_bubble
        self._stream_bubble = None
        self._answering = False
        return bubble if self._stream_conversation == self._conversation_id else None

    def _on_generation_finished(self, result: GenerationResult) -> None:
        bubble = self._finish_stream()
        answer = result.answer
        if bubble is not None:
            bubble.set_text(answer.text)
            if result.message_id:
                bubble.message_id = result.message_id
            bubble.set_state("(stopped)" if result.stopped else "")
            bubble.set_footer(answer.stats.summary())
        self.stats_bar.show_stats(answer.stats)
        if answer.notice:
            self.show_banner(answer.notice)
        self.refresh_conversations()
        self._update_controls()
        self.answer_finished.emit(result)

    def _on_generation_failed(self, failure: Failure) -> None:
        bubble = self._finish_stream()
        if bubble is not None:
            bubble.set_state("(failed)")
        if failure.expected:
            self.show_banner(failure.message)
        else:
            errors.show_error(self, failure)
        self._update_controls()
        self.answer_failed.emit(failure.error)

    # ------------------------------------------------------------------ state
    def _update_controls(self) -> None:
        loading = self._loading_path is not None
        loaded = self.info is not None
        has_model = self.current_model_path() is not None
        self.load_button.setText("Unload" if self._picked_is_loaded() and not loading else "Load")
        self.load_button.setEnabled(has_model and not loading and not self._answering)
        self.cancel_load_button.setVisible(loading)
        self.model_combo.setEnabled(not loading and not self._answering)
        self.browse_button.setEnabled(not loading and not self._answering)
        self.send_button.setVisible(not self._answering)
        self.send_button.setEnabled(has_model and not loading)
        self.stop_button.setVisible(self._answering)
        self.transcript.set_actions_enabled(not self._answering and loaded)
        self.delete_button.setEnabled(self.conversation_list.count() > 0)
        self.rename_button.setEnabled(self.conversation_list.count() > 0)

    def shutdown(self) -> None:
        """Stop any answer, free the model and end the worker thread (on quit)."""
        if self._down:
            return
        self._down = True
        self._flush_timer.stop()
        self._search_timer.stop()
        self._controller.shutdown()
        self._history.close()
