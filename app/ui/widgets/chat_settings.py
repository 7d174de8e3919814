"""The chat settings drawer: system prompt, sampling, and how the model is loaded.

Values are per model; the page loads them when a model is picked and saves
them (debounced) when the user changes them. Load settings take effect at the
next load; the drawer says so.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.chat.settings import (
    FlashAttention,
    LoadPlan,
    ModelChatSettings,
    SamplingSettings,
)
from app.core.chat.templates import PromptMode
from quant.plan.memory import KvType

SAVE_DELAY_MS = 400


class ChatSettingsDrawer(QFrame):
    """Emits :attr:`changed` (debounced) with the new :class:`ModelChatSettings`."""

    changed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.setMinimumWidth(260)
        self.setMaximumWidth(340)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 12, 14, 12)
        title = QLabel("Chat settings")
        title.setObjectName("sectionTitle")
        outer.addWidget(title)

        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("System prompt (optional)")
        self.system_prompt.setFixedHeight(84)
        outer.addWidget(QLabel("System prompt"))
        outer.addWidget(self.system_prompt)

        form = QFormLayout()
        self.temperature = _dspin(0.0, 5.0, 0.05, 2)
        self.top_p = _dspin(0.0, 1.0, 0.01, 2)
        self.top_k = _spin(0, 1000)
        self.min_p = _dspin(0.0, 1.0, 0.01, 2)
        self.repeat_penalty = _dspin(0.5, 3.0, 0.01, 2)
        self.seed = _spin(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.max_tokens = _spin(0, 1_000_000)
        self.max_tokens.setSpecialValueText("until the context is full")
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Min-p", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Seed", self.seed)
        form.addRow("Max tokens", self.max_tokens)
        outer.addLayout(form)

        load_title = QLabel("Loading")
        load_title.setObjectName("sectionTitle")
        outer.addWidget(load_title)
        load_note = QLabel("Takes effect at the next load.")
        load_note.setProperty("muted", "true")
        outer.addWidget(load_note)
        load_form = QFormLayout()
        self.n_ctx = _spin(256, 1 << 20)
        self.n_ctx.setSingleStep(1024)
        self.gpu_layers = _spin(-1, 1000)
        self.gpu_layers.setSpecialValueText("all")
        self.kv_type = QComboBox()
        for kv in KvType:
            self.kv_type.addItem(kv.value, kv)
        self.flash = QComboBox()
        for fa in FlashAttention:
            self.flash.addItem(fa.value, fa)
        self.threads = _spin(0, 256)
        self.threads.setSpecialValueText("physical cores")
        self.prompt_mode = QComboBox()
        for label, mode, tip in PROMPT_MODES:
            self.prompt_mode.addItem(label, mode)
            self.prompt_mode.setItemData(
                self.prompt_mode.count() - 1, tip, Qt.ItemDataRole.ToolTipRole
            )
        load_form.addRow("Context", self.n_ctx)
        load_form.addRow("GPU layers", self.gpu_layers)
        load_form.addRow("KV cache", self.kv_type)
        load_form.addRow("Flash attention", self.flash)
        load_form.addRow("Threads", self.threads)
        load_form.addRow("Prompt", self.prompt_mode)
        outer.addLayout(load_form)
        outer.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SAVE_DELAY_MS)
        self._timer.timeout.connect(lambda: self.changed.emit(self.value()))
        self._loading = False
        for w in (self.temperature, self.top_p, self.min_p, self.repeat_penalty):
            w.valueChanged.connect(self._edited)
        for s in (
            self.top_k,
            self.seed,
            self.max_tokens,
            self.n_ctx,
            self.gpu_layers,
            self.threads,
        ):
            s.valueChanged.connect(self._edited)
        self.kv_type.currentIndexChanged.connect(self._edited)
        self.flash.currentIndexChanged.connect(self._edited)
        self.prompt_mode.currentIndexChanged.connect(self._edited)
        self.system_prompt.textChanged.connect(self._edited)
        self.set_value(ModelChatSettings())

    def _edited(self, *_: object) -> None:
        if not self._loading:
            self._timer.start()

    def flush(self) -> None:
        """Emit a pending change now (before a send or a load)."""
        if self._timer.isActive():
            self._timer.stop()
            self.changed.emit(self.value())

    def set_value(self, value: ModelChatSettings) -> None:
        self._loading = True
        try:
            s, p = value.sampling, value.plan
            self.system_prompt.setPlainText(value.system_prompt)
            self.temperature.setValue(s.temperature)
            self.top_p.setValue(s.top_p)
            self.top_k.setValue(s.top_k)
            self.min_p.setValue(s.min_p)
            self.repeat_penalty.setValue(s.repeat_penalty)
            self.seed.setValue(s.seed)
            self.max_tokens.setValue(s.max_tokens)
            self.n_ctx.setValue(p.n_ctx)
            self.gpu_layers.setValue(p.n_gpu_layers)
            self.kv_type.setCurrentIndex(self.kv_type.findData(p.kv_type))
            self.flash.setCurrentIndex(self.flash.findData(p.flash_attention))
            self.threads.setValue(p.n_threads or 0)
            self.prompt_mode.setCurrentIndex(self.prompt_mode.findData(value.mode))
        finally:
            self._loading = False
        self._timer.stop()

    def value(self) -> ModelChatSettings:
        sampling = SamplingSettings(
            temperature=self.temperature.value(),
            top_p=self.top_p.value(),
            top_k=self.top_k.value(),
            min_p=self.min_p.value(),
            repeat_penalty=self.repeat_penalty.value(),
            seed=self.seed.value(),
            max_tokens=self.max_tokens.value(),
        ).validated()
        plan = LoadPlan(
            n_ctx=self.n_ctx.value(),
            n_gpu_layers=self.gpu_layers.value(),
            kv_type=KvType(self.kv_type.currentData()),
            flash_attention=FlashAttention(self.flash.currentData()),
            n_threads=self.threads.value() or None,
        ).validated()
        return ModelChatSettings(
            sampling=sampling,
            plan=plan,
            system_prompt=self.system_prompt.toPlainText(),
            mode=PromptMode(self.prompt_mode.currentData()),
        )


# How messages become the prompt (quant.prompts.templates.PromptMode), as the drawer offers it.
PROMPT_MODES: tuple[tuple[str, PromptMode, str], ...] = (
    (
        "Chat",
        PromptMode.CHAT,
        "The model's chat template; a base model answers through in-context examples",
    ),
    (
        "Chat template",
        PromptMode.TEMPLATE,
        "The chat template, even for a base model (which then tends to ramble)",
    ),
    (
        "In-context examples",
        PromptMode.IN_CONTEXT,
        "A preamble and example answers steer the model, whatever it was trained for",
    ),
    ("Raw completion", PromptMode.RAW, "No template: the model continues the text as written"),
)


def _spin(lo: int, hi: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    return s


def _dspin(lo: float, hi: float, step: float, decimals: int) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(decimals)
    return s
