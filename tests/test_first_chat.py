"""A new user's first chat: the bundled base model answers plain questions through
in-context examples, ends by itself, and never shows the format's markup."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.core.chat.session import ChatSession
from app.core.chat.settings import LoadPlan, SamplingSettings
from app.core.chat.stats import StopReason
from app.core.chat.templates import ChatMessage, PromptMode, Role
from quant.prompts.in_context import BASE_MODEL_SAMPLING, FENCE, QUERY

pytestmark = pytest.mark.slow

U, A = Role.USER, Role.ASSISTANT
SAMPLING = replace(SamplingSettings(), **BASE_MODEL_SAMPLING, seed=7, max_tokens=64)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def session(starter_model: Path) -> Iterator[ChatSession]:
    with ChatSession.load(starter_model, LoadPlan(n_ctx=2048, n_threads=2)) as s:
        yield s


def test_the_base_starter_chats_through_examples_and_says_so(session: ChatSession) -> None:
    assert session.template.is_in_context
    assert any("in-context examples" in n for n in session.info.notes)


@pytest.mark.parametrize(
    ("question", "word"),
    [
        ("What is the capital of France?", "paris"),
        ("What is the capital of Japan?", "tokyo"),
        ("Who wrote Romeo and Juliet?", "shakespeare"),
        ("What do bees make?", "honey"),
        ("What is the tallest animal in the world?", "giraffe"),
    ],
)
def test_plain_questions_get_short_right_answers(
    session: ChatSession, question: str, word: str
) -> None:
    answer = session.respond([ChatMessage(U, question)], sampling=SAMPLING)
    assert word in answer.text.lower()
    # The answer ended by itself, long before the token limit, with no markup shown.
    assert answer.stats.stop_reason in (StopReason.STOP_STRING, StopReason.END_OF_TURN)
    assert answer.stats.generated_tokens < 40
    assert FENCE not in answer.text and QUERY not in answer.text
    assert answer.text == answer.text.strip()


def test_a_conversation_continues_and_reuses_the_cache(session: ChatSession) -> None:
    first = [ChatMessage(U, "What is the capital of Italy?")]
    a1 = session.respond(first, sampling=SAMPLING)
    assert "rome" in a1.text.lower()
    second = [*first, ChatMessage(A, a1.text), ChatMessage(U, "And the capital of Germany?")]
    a2 = session.respond(second, sampling=SAMPLING)
    assert "berlin" in a2.text.lower()
    # The preamble, the examples and the first exchange came from the KV cache.
    assert a2.stats.prompt_tokens_cached > a1.stats.prompt_tokens - 2
    assert a2.stats.prompt_tokens_evaluated < 40
    third = [*second, ChatMessage(A, a2.text), ChatMessage(U, "What language do they speak there?")]
    a3 = session.respond(third, sampling=SAMPLING)
    assert a3.stats.stop_reason in (StopReason.STOP_STRING, StopReason.END_OF_TURN)
    assert FENCE not in a3.text


def test_the_template_and_raw_modes_are_one_switch_away(starter_model: Path) -> None:
    with ChatSession.load(
        starter_model, LoadPlan(n_ctx=512, n_threads=2), mode=PromptMode.TEMPLATE
    ) as plain:
        assert plain.template.name == "gemma"
        assert any("base model" in n for n in plain.info.notes)
    with ChatSession.load(
        starter_model, LoadPlan(n_ctx=512, n_threads=2), mode=PromptMode.RAW
    ) as raw:
        assert raw.template.is_raw
