"""The transcript is as tall as its messages: no blank screen after a long answer."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from app.ui.widgets.chat_transcript import Transcript


def test_long_streamed_answer_leaves_no_blank_space_below(qtbot: QtBot) -> None:
    t = Transcript()
    qtbot.addWidget(t)
    t.resize(900, 500)
    t.show()
    t.add("user", "Tell me a long story.")
    bubble = t.add("assistant")
    text = " ".join(f"Sentence {i} of a long answer that wraps." for i in range(300))
    text += "\n\n```python\nprint('done')\n```\n"
    for i in range(0, len(text), 37):
        bubble.append_text(text[i : i + 37])
    qtbot.wait(50)
    inner = t.widget()
    content_bottom = t.bubbles()[-1].geometry().bottom()
    # Only the column's margins and spacing may follow the last message.
    assert inner.height() - content_bottom < 40
    # Following the stream, the view ends at the last message, not in blank space.
    bar = t.verticalScrollBar()
    assert bar.value() == bar.maximum()
    assert content_bottom - bar.value() <= t.viewport().height()
