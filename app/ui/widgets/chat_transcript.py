"""The chat transcript: message bubbles with Markdown prose and code blocks.

Streaming never re-renders the transcript: new text is appended to the last
bubble, which re-parses only its own text and updates only the segments that
changed (normally the last paragraph or code block). Code blocks are plain-text
views with a language tag and a Copy button. The view follows new text while
the user is at the bottom and stays put when they scrolled up to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont, QFontDatabase, QGuiApplication, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.ui.theme import Theme, current_theme

_FENCE = re.compile(r"^\s{0,3}(```+|~~~+)\s*([\w+#.-]*)")
CODE_MAX_VISIBLE_LINES = 24


@dataclass(frozen=True)
class Segment:
    """A run of Markdown prose or one fenced code block (``closed`` False while streaming)."""

    kind: str  # "text" or "code"
    content: str
    language: str = ""
    closed: bool = True


def split_markdown(text: str) -> list[Segment]:
    """Split Markdown into prose and fenced code blocks, tolerating an unclosed fence."""
    segments: list[Segment] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    language = ""
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if not fence:
            if m:
                if prose:
                    segments.append(Segment("text", "\n".join(prose)))
                    prose = []
                fence, language = m.group(1), m.group(2)
                code = []
            else:
                prose.append(line)
        elif (
            m
            and m.group(1).startswith(fence[0])
            and len(m.group(1)) >= len(fence)
            and not m.group(2)
        ):
            segments.append(Segment("code", "\n".join(code), language, True))
            fence = ""
        else:
            code.append(line)
    if fence:
        segments.append(Segment("code", "\n".join(code), language, False))
    elif prose and any(p.strip() for p in prose):
        segments.append(Segment("text", "\n".join(prose)))
    return [s for s in segments if s.kind == "code" or s.content.strip()]


class TextBlock(QLabel):
    """A paragraph run rendered from Markdown, selectable."""

    def __init__(self, segment: Segment, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.MarkdownText)
        self.setWordWrap(True)
        self.setOpenExternalLinks(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        # Height follows the width (Preferred + height-for-width). With a Minimum
        # vertical policy the label's size hint, taken at a narrow guessed width,
        # became its minimum height, and a long answer was followed by a screen of
        # blank space in the transcript.
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.segment = segment
        self.setText(segment.content)

    def update_segment(self, segment: Segment) -> None:
        if segment != self.segment:
            self.segment = segment
            self.setText(segment.content)


class CodeBlock(QFrame):
    """A fenced code block: language tag, Copy button, monospaced text."""

    copied = Signal(str)

    def __init__(self, segment: Segment, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeBlock")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 4, 8, 8)
        lay.setSpacing(2)
        head = QHBoxLayout()
        self.language_label = QLabel()
        self.language_label.setProperty("muted", "true")
        head.addWidget(self.language_label)
        head.addStretch(1)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName("copyCode")
        self.copy_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.copy_button.clicked.connect(self.copy)
        head.addWidget(self.copy_button)
        lay.addLayout(head)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setWordWrapMode(QTextOption.WrapMode.NoWrap)
        self.view.setFrameShape(QFrame.Shape.NoFrame)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.view.setFont(font)
        self.view.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        lay.addWidget(self.view)
        self.segment = Segment("code", "")
        self.update_segment(segment)

    @property
    def code(self) -> str:
        return self.segment.content

    def update_segment(self, segment: Segment) -> None:
        old = self.segment
        self.segment = segment
        self.language_label.setText(segment.language or "code")
        if segment.content.startswith(old.content) and old.content:
            # Streaming: append only what is new.
            tail = segment.content[len(old.content) :]
            if tail:
                cursor = self.view.textCursor()
                cursor.movePosition(cursor.MoveOperation.End)
                cursor.insertText(tail)
        elif segment.content != old.content:
            self.view.setPlainText(segment.content)
        lines = max(1, segment.content.count("\n") + 1)
        metrics = self.view.fontMetrics()
        visible = min(lines, CODE_MAX_VISIBLE_LINES)
        self.view.setFixedHeight(int(visible * metrics.lineSpacing() + 14))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code)
        self.copy_button.setText("Copied")
        QTimer.singleShot(1200, self.copy_button, lambda: self.copy_button.setText("Copy"))
        self.copied.emit(self.code)


class MessageBubble(QFrame):
    """One message: who said it, its Markdown/code body, and actions."""

    copy_requested = Signal()
    edit_requested = Signal(int)
    regenerate_requested = Signal(int)

    def __init__(
        self, role: str, text: str = "", *, message_id: int = 0, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id = message_id
        self._text = ""
        self.setObjectName("userBubble" if role == "user" else "assistantBubble")
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)  # see TextBlock: the height follows the width
        self.setSizePolicy(policy)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 8, 14, 8)
        outer.setSpacing(6)
        head = QHBoxLayout()
        self.who = QLabel("You" if role == "user" else "Assistant")
        self.who.setObjectName("bubbleAuthor")
        head.addWidget(self.who)
        self.state_label = QLabel()
        self.state_label.setProperty("muted", "true")
        head.addWidget(self.state_label)
        head.addStretch(1)
        self.copy_button = _small_button("Copy")
        self.copy_button.clicked.connect(self._copy)
        head.addWidget(self.copy_button)
        self.edit_button = _small_button("Edit")
        self.edit_button.setVisible(role == "user")
        self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message_id))
        head.addWidget(self.edit_button)
        self.regenerate_button = _small_button("Regenerate")
        self.regenerate_button.setVisible(False)
        self.regenerate_button.clicked.connect(
            lambda: self.regenerate_requested.emit(self.message_id)
        )
        head.addWidget(self.regenerate_button)
        outer.addLayout(head)
        self.body = QVBoxLayout()
        self.body.setSpacing(6)
        outer.addLayout(self.body)
        self.footer = QLabel()
        self.footer.setProperty("muted", "true")
        self.footer.setWordWrap(True)
        self.footer.setVisible(False)
        outer.addWidget(self.footer)
        self._blocks: list[TextBlock | CodeBlock] = []
        self.set_text(text)

    @property
    def text(self) -> str:
        return self._text

    def blocks(self) -> list[TextBlock | CodeBlock]:
        return list(self._blocks)

    def code_blocks(self) -> list[CodeBlock]:
        return [b for b in self._blocks if isinstance(b, CodeBlock)]

    def append_text(self, piece: str) -> None:
        if piece:
            self.set_text(self._text + piece)

    def set_text(self, text: str) -> None:
        self._text = text
        segments = split_markdown(text)
        for i, seg in enumerate(segments):
            if i < len(self._blocks):
                block = self._blocks[i]
                if (seg.kind == "code") == isinstance(block, CodeBlock):
                    block.update_segment(seg)
                    continue
                for extra in self._blocks[i:]:
                    self.body.removeWidget(extra)
                    extra.deleteLater()
                del self._blocks[i:]
            new: TextBlock | CodeBlock = CodeBlock(seg) if seg.kind == "code" else TextBlock(seg)
            self._blocks.append(new)
            self.body.addWidget(new)
        for extra in self._blocks[len(segments) :]:
            self.body.removeWidget(extra)
            extra.deleteLater()
        del self._blocks[len(segments) :]

    def set_state(self, text: str) -> None:
        self.state_label.setText(text)

    def set_footer(self, text: str) -> None:
        self.footer.setText(text)
        self.footer.setVisible(bool(text))

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self._text)
        self.copy_requested.emit()


def _small_button(text: str) -> QPushButton:
    b = QPushButton(text)
    b.setObjectName("bubbleAction")
    b.setFlat(True)
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    return b


def transcript_style(t: Theme) -> str:
    """One style sheet for every bubble: set once on the transcript, never per message
    (a style sheet per widget costs milliseconds each time a bubble is added)."""
    return f"""
QFrame#userBubble {{ background: {t.accent_soft}; border: 1px solid {t.border};
    border-radius: 12px; }}
QFrame#assistantBubble {{ background: {t.surface}; border: 1px solid {t.border};
    border-radius: 12px; }}
QFrame#codeBlock {{ background: {t.surface_alt}; border: 1px solid {t.border};
    border-radius: 8px; }}
QLabel#bubbleAuthor {{ font-weight: 600; }}
QPushButton#bubbleAction {{ padding: 1px 8px; min-height: 14px; font-size: 9pt; }}
"""


class Transcript(QScrollArea):
    """A scrolling column of :class:`MessageBubble`; follows the end while at the bottom."""

    edit_requested = Signal(int)
    regenerate_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._inner.setObjectName("pageBody")
        self._inner.setStyleSheet(transcript_style(current_theme()))
        self._column = QVBoxLayout(self._inner)
        self._column.setContentsMargins(12, 12, 12, 12)
        self._column.setSpacing(10)
        self._column.addStretch(1)
        self.setWidget(self._inner)
        self._bubbles: list[MessageBubble] = []
        self._follow = True
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range)
        bar.valueChanged.connect(self._on_scroll)
        self.empty_label = QLabel("Pick a model, load it, and type a message below.")
        self.empty_label.setProperty("muted", "true")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._column.insertWidget(0, self.empty_label)

    def set_model_ready(self, ready: bool) -> None:
        """The hint of an empty conversation says what to do next."""
        self.empty_label.setText(
            "Type a message below to start."
            if ready
            else "Pick a model, load it, and type a message below."
        )

    def bubbles(self) -> list[MessageBubble]:
        return list(self._bubbles)

    def last(self) -> MessageBubble | None:
        return self._bubbles[-1] if self._bubbles else None

    def clear(self) -> None:
        for b in self._bubbles:
            self._column.removeWidget(b)
            b.deleteLater()
        self._bubbles = []
        self.empty_label.setVisible(True)
        self._follow = True

    def add(self, role: str, text: str = "", *, message_id: int = 0) -> MessageBubble:
        bubble = MessageBubble(role, text, message_id=message_id)
        bubble.edit_requested.connect(self.edit_requested)
        bubble.regenerate_requested.connect(self.regenerate_requested)
        self._column.insertWidget(self._column.count() - 1, bubble)
        self._bubbles.append(bubble)
        self.empty_label.setVisible(False)
        self._mark_last_assistant()
        self._follow = True
        return bubble

    def remove(self, bubble: MessageBubble) -> None:
        if bubble in self._bubbles:
            self._bubbles.remove(bubble)
            self._column.removeWidget(bubble)
            bubble.deleteLater()
        self.empty_label.setVisible(not self._bubbles)
        self._mark_last_assistant()

    def _mark_last_assistant(self) -> None:
        last_assistant = next((b for b in reversed(self._bubbles) if b.role == "assistant"), None)
        for b in self._bubbles:
            b.regenerate_button.setVisible(b is last_assistant and b is self._bubbles[-1])

    def set_actions_enabled(self, enabled: bool) -> None:
        for b in self._bubbles:
            b.edit_button.setEnabled(enabled)
            b.regenerate_button.setEnabled(enabled)

    def _on_scroll(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 4

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(hi)
