"""The Chat page with the real starter model: send, stream, stop, regenerate, edit,
switch conversations, restart and find the history, load errors with a retry."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from app.core.chat.settings import ChatSettingsStore, LoadPlan, ModelChatSettings, SamplingSettings
from app.core.chat.templates import Role
from app.core.history import History, MessageState
from app.core.library import ModelLibrary
from app.core.settings import Settings
from app.ui.pages.chat_page import ChatPage
from app.workers.chat_worker import GenerationResult

pytestmark = pytest.mark.slow  # the real starter model, loaded per test

LOAD_MS = 60_000
ANSWER_MS = 60_000


def _configure(settings: Settings, model: Path, *, max_tokens: int = 6) -> None:
    ChatSettingsStore(settings).save_for_model(
        model,
        ModelChatSettings(
            sampling=SamplingSettings(temperature=0.0, max_tokens=max_tokens),
            plan=LoadPlan(n_ctx=2048, n_threads=1),
        ),
    )


@pytest.fixture
def make_page(
    qtbot: Any, settings: Settings, library: ModelLibrary, starter_model: Path
) -> Iterator[Callable[..., ChatPage]]:
    pages: list[ChatPage] = []

    def make(*, max_tokens: int = 6, configure: bool = True) -> ChatPage:
        if configure:
            _configure(settings, starter_model, max_tokens=max_tokens)
        page = ChatPage(settings, library=library)
        qtbot.addWidget(page)
        page.resize(1100, 760)
        page.show()
        qtbot.waitUntil(lambda: page.model_combo.count() > 0, timeout=15_000)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.shutdown()


def _load(qtbot: Any, page: ChatPage) -> None:
    with qtbot.waitSignal(page.model_loaded, timeout=LOAD_MS):
        qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    assert page.info is not None


def _type_and_send(qtbot: Any, page: ChatPage, text: str) -> GenerationResult:
    page.input.setFocus()
    qtbot.keyClicks(page.input, text)
    with qtbot.waitSignal(page.answer_finished, timeout=ANSWER_MS) as blocker:
        qtbot.keyClick(page.input, Qt.Key.Key_Return)
    result: GenerationResult = blocker.args[0]
    return result


def test_send_streams_into_one_bubble_and_shows_stats(
    qtbot: Any, make_page: Any, starter_model: Path
) -> None:
    page = make_page()
    assert page.current_model_path() == starter_model
    _load(qtbot, page)
    assert "Gemma" in page.model_label.text()
    pieces: list[str] = []
    page._controller.worker.tokens.connect(pieces.append)
    # Shift+Enter is a new line, not a send.
    qtbot.keyClicks(page.input, "Name three")
    qtbot.keyClick(page.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert not page.answering
    assert page.input.toPlainText() == "Name three\n"
    page.input.clear()

    result = _type_and_send(qtbot, page, "Name three colors.")
    assert len(pieces) >= 2, "the answer streamed in pieces"
    bubbles = page.transcript.bubbles()
    assert [b.role for b in bubbles] == ["user", "assistant"]
    assert bubbles[0].text == "Name three colors."
    assert bubbles[1].text == result.answer.text == "".join(pieces)
    assert "tok/s" in bubbles[1].footer.text()
    stats = page.stats_bar.text()
    assert "TTFT" in stats and "ms" in stats
    assert "Context" in stats and "/ 2,048" in stats
    assert page.input.toPlainText() == ""
    # Saved, and the conversation is named after the first message.
    assert page.conversation_list.count() == 1
    assert page.conversation_list.item(0).text() == "Name three colors."
    with History() as h:
        user, answer = h.messages(page.conversation_id or 0)
        assert user.content == "Name three colors."
        assert answer.content == result.answer.text
        assert answer.state is MessageState.COMPLETE
        assert answer.stats is not None


def test_stop_mid_answer_keeps_the_partial_answer(qtbot: Any, make_page: Any) -> None:
    page = make_page(max_tokens=0)  # until the context is full: only Stop ends it
    _load(qtbot, page)
    qtbot.keyClicks(page.input, "Tell me a very long story about the sea.")
    with qtbot.waitSignal(page.answer_finished, timeout=ANSWER_MS) as blocker:
        qtbot.keyClick(page.input, Qt.Key.Key_Return)
        assert page.answering
        assert page.stop_button.isVisible()
        last = page.transcript.last()
        assert last is not None
        qtbot.waitUntil(lambda: len(last.text) > 10, timeout=ANSWER_MS)
        qtbot.keyClick(page.input, Qt.Key.Key_Escape)
    result: GenerationResult = blocker.args[0]
    assert result.stopped
    assert result.answer.stats.stop_reason.value == "stopped"
    assert not page.answering
    bubble = page.transcript.last()
    assert bubble is not None and bubble.state_label.text() == "(stopped)"
    assert bubble.text == result.answer.text
    with History() as h:
        answer = h.messages(page.conversation_id or 0)[-1]
        assert answer.state is MessageState.STOPPED
        assert answer.content == result.answer.text


def test_regenerate_replaces_the_last_answer(qtbot: Any, make_page: Any) -> None:
    page = make_page()
    _load(qtbot, page)
    first = _type_and_send(qtbot, page, "Say something.")
    last = page.transcript.last()
    assert last is not None and last.regenerate_button.isVisible()
    with qtbot.waitSignal(page.answer_finished, timeout=ANSWER_MS) as blocker:
        qtbot.mouseClick(last.regenerate_button, Qt.MouseButton.LeftButton)
    second: GenerationResult = blocker.args[0]
    assert second.message_id != first.message_id
    # Greedy decoding on a cached prompt: the same words again, one token evaluated.
    assert second.answer.text == first.answer.text
    assert second.answer.stats.prompt_tokens_evaluated == 1
    assert [b.role for b in page.transcript.bubbles()] == ["user", "assistant"]
    with History() as h:
        msgs = h.messages(page.conversation_id or 0)
        assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT]
        assert msgs[1].id == second.message_id


def test_edit_and_resend_replaces_the_message_and_what_followed(qtbot: Any, make_page: Any) -> None:
    page = make_page()
    _load(qtbot, page)
    _type_and_send(qtbot, page, "What is the color of the sky?")
    _type_and_send(qtbot, page, "And the grass?")
    first_user = page.transcript.bubbles()[0]
    qtbot.mouseClick(first_user.edit_button, Qt.MouseButton.LeftButton)
    assert page.input.toPlainText() == "What is the color of the sky?"
    assert page.edit_label.isVisible()
    page.input.selectAll()
    result = _type_and_send(qtbot, page, "What is the color of snow?")
    assert [b.text for b in page.transcript.bubbles()][:1] == ["What is the color of snow?"]
    assert len(page.transcript.bubbles()) == 2
    with History() as h:
        msgs = h.messages(page.conversation_id or 0)
        assert [m.content for m in msgs] == ["What is the color of snow?", result.answer.text]


def test_switch_conversations_and_restart_finds_the_history(
    qtbot: Any, make_page: Any, settings: Settings, library: ModelLibrary
) -> None:
    page = make_page()
    _load(qtbot, page)
    a = _type_and_send(qtbot, page, "First topic: apples.")
    conv_a = page.conversation_id
    qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
    assert page.transcript.bubbles() == []
    b = _type_and_send(qtbot, page, "Second topic: boats.")
    conv_b = page.conversation_id
    assert conv_a != conv_b
    assert page.conversation_ids() == [conv_b, conv_a]  # newest first

    page.conversation_list.setCurrentRow(1)
    assert page.conversation_id == conv_a
    assert [x.text for x in page.transcript.bubbles()] == ["First topic: apples.", a.answer.text]
    page.conversation_list.setCurrentRow(0)
    assert [x.text for x in page.transcript.bubbles()] == ["Second topic: boats.", b.answer.text]

    # Search filters the list.
    qtbot.keyClicks(page.search_box, "apples")
    qtbot.waitUntil(lambda: page.conversation_ids() == [conv_a], timeout=5_000)
    page.search_box.clear()
    qtbot.waitUntil(lambda: len(page.conversation_ids()) == 2, timeout=5_000)

    # Restart: a new page on the same home finds both conversations and opens the newest.
    page.shutdown()
    again = make_page(configure=False)
    assert again.conversation_ids() == [conv_b, conv_a]
    assert again.conversation_id == conv_b
    assert [x.text for x in again.transcript.bubbles()] == ["Second topic: boats.", b.answer.text]
    assert "tok/s" in again.transcript.bubbles()[1].footer.text()
    again.rename_conversation(conv_a or 0, "Fruit")
    assert again.conversation_list.item(1).text() == "Fruit"
    again.delete_conversation(conv_b or 0, confirm=False)
    assert again.conversation_ids() == [conv_a]
    assert again.transcript.bubbles() == []


def test_code_blocks_have_a_copy_button(qtbot: Any, make_page: Any) -> None:
    with History() as h:
        conv = h.create_conversation("Code")
        h.add_message(conv.id, Role.USER, "Show me hello world in Python.")
        h.add_message(
            conv.id,
            Role.ASSISTANT,
            "Here it is:\n\n```python\nprint('hello')\nprint('world')\n```\n\nDone.",
        )
    page = make_page()
    assert page.conversation_id == conv.id
    answer = page.transcript.bubbles()[1]
    kinds = [type(b).__name__ for b in answer.blocks()]
    assert kinds == ["TextBlock", "CodeBlock", "TextBlock"]
    (code,) = answer.code_blocks()
    assert code.language_label.text() == "python"
    qtbot.mouseClick(code.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "print('hello')\nprint('world')"
    # Streaming into an open fence appends to the same code view.
    answer.set_text("```js\nlet a = 1;")
    view = answer.code_blocks()[0]
    answer.append_text("\nlet b = 2;")
    assert answer.code_blocks()[0] is view
    assert view.view.toPlainText() == "let a = 1;\nlet b = 2;"


def test_settings_drawer_saves_per_model(
    qtbot: Any, make_page: Any, settings: Settings, starter_model: Path
) -> None:
    page = make_page()
    qtbot.mouseClick(page.settings_button, Qt.MouseButton.LeftButton)
    assert page.drawer.isVisible()
    page.drawer.temperature.setValue(1.25)
    page.drawer.system_prompt.setPlainText("Answer like a pirate.")
    qtbot.waitUntil(
        lambda: ChatSettingsStore(settings).for_model(starter_model).sampling.temperature == 1.25,
        timeout=5_000,
    )
    saved = ChatSettingsStore(Settings()).for_model(starter_model)
    assert saved.system_prompt == "Answer like a pirate."
    assert saved.plan.n_ctx == 2048


def test_bad_file_shows_a_plain_error(qtbot: Any, make_page: Any, tmp_path: Path) -> None:
    bad = tmp_path / "noise.gguf"
    bad.write_bytes(os.urandom(2048))
    page = make_page()
    with qtbot.waitSignal(page.model_load_failed, timeout=LOAD_MS):
        page.open_model(bad)
    assert page.info is None
    assert "noise.gguf: not a GGUF file" in page.banner_text()
    assert not page.retry_button.isVisible()
    assert page.load_button.text() == "Load"


def test_plan_that_does_not_fit_offers_a_retry(
    qtbot: Any,
    make_page: Any,
    settings: Settings,
    starter_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app.core.chat.session as session_mod

    ChatSettingsStore(settings).save_for_model(
        starter_model,
        ModelChatSettings(
            sampling=SamplingSettings(temperature=0.0, max_tokens=4),
            plan=LoadPlan(n_ctx=32768, n_threads=1),
        ),
    )
    page = make_page(configure=False)

    monkeypatch.setattr(session_mod, "available_ram_bytes", lambda: 480 * 2**20)
    with qtbot.waitSignal(page.model_load_failed, timeout=LOAD_MS) as blocker:
        qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    exc = blocker.args[0]
    assert "try a context of" in page.banner_text()
    assert page.retry_button.isVisible()
    assert exc.retry is not None and exc.retry.n_ctx < 32768
    with qtbot.waitSignal(page.model_loaded, timeout=LOAD_MS):
        qtbot.mouseClick(page.retry_button, Qt.MouseButton.LeftButton)
    assert page.info is not None and page.info.n_ctx == exc.retry.n_ctx
    # The plan that worked is remembered for this model.
    assert ChatSettingsStore(settings).for_model(starter_model).plan.n_ctx == exc.retry.n_ctx


def test_a_base_model_answers_through_examples_and_switches_mode_in_one_click(
    qtbot: Any, make_page: Any, settings: Settings, starter_model: Path
) -> None:
    from app.core.chat.templates import PromptMode, TemplateSource

    page = make_page(configure=False)
    _load(qtbot, page)
    assert page.info is not None and page.info.template_source is TemplateSource.IN_CONTEXT
    # The banner says why, and offers the other modes.
    assert "in-context examples" in page.banner_text()
    assert page.template_button.isVisible() and page.raw_button.isVisible()
    # Nothing saved for the starter: the drawer shows the model's own sampling.
    assert page.drawer.value().sampling == page.info.sampling
    assert page.info.sampling.temperature < SamplingSettings().temperature
    result = _type_and_send(qtbot, page, "What is the capital of France?")
    assert "Paris" in result.answer.text
    assert "```" not in result.answer.text
    with qtbot.waitSignal(page.model_loaded, timeout=LOAD_MS):
        qtbot.mouseClick(page.template_button, Qt.MouseButton.LeftButton)
    assert page.info.template_source is TemplateSource.BUILTIN
    assert ChatSettingsStore(settings).for_model(starter_model).mode is PromptMode.TEMPLATE
    assert not page.template_button.isVisible()


def test_the_banner_shows_the_loaded_file_s_measured_quality(
    qtbot: Any, make_page: Any, starter_model: Path
) -> None:
    from app.core.quality import QualityStore
    from quant.plan.quality import QualityMeasurement

    card = QualityMeasurement(
        file_type="Q4_K_M", kld_mean=0.0412, kld_median=0.02, kld_p99=0.5,
        same_top_token=0.912, perplexity=21.5, reference_perplexity=20.9, tokens=8160,
        text="default-mix (held-out)", reference="gemma-3-270m-BF16.gguf",
        reference_type="BF16", path=str(starter_model),
    )  # fmt: skip
    QualityStore().record(card, starter_model)
    page = make_page(configure=False)
    _load(qtbot, page)
    qtbot.waitUntil(
        lambda: "Measured quality: mean KLD 0.0412" in page.banner_text(), timeout=10_000
    )
    text = page.banner_text()
    # The base model's note stays, and so do its mode buttons.
    assert "in-context examples" in text and page.template_button.isVisible()
    assert "same top token 91.2%" in text and "8,160 tokens" in text
