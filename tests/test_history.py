"""Conversation history: SQLite in WAL mode, saved while answers stream, survives a kill."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.core.chat.stats import AnswerStats, StopReason
from app.core.chat.templates import Role
from app.core.errors import HistoryError
from app.core.history import (
    DEFAULT_TITLE,
    ExportFormat,
    History,
    MessageState,
    StreamingMessage,
)
from app.core.paths import app_paths

REPO = Path(__file__).resolve().parents[1]


def _stats() -> AnswerStats:
    return AnswerStats(
        ttft_s=0.05,
        prompt_tokens=20,
        prompt_tokens_evaluated=12,
        prompt_s=0.05,
        generated_tokens=30,
        gen_s=0.5,
        stop_reason=StopReason.END_OF_TURN,
        context_used=50,
        context_size=2048,
        rss_bytes=400 * 2**20,
        rss_peak_bytes=410 * 2**20,
    )


def test_database_lives_in_the_app_home_in_wal_mode(quantdesk_home: Path) -> None:
    with History() as h:
        h.create_conversation()
    assert app_paths().history_db.is_file()
    assert str(app_paths().history_db).startswith(str(quantdesk_home))
    con = sqlite3.connect(app_paths().history_db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_conversations_list_rename_delete() -> None:
    with History() as h:
        first = h.create_conversation(model="/models/a.gguf", system_prompt="Be brief.")
        assert first.title == DEFAULT_TITLE
        h.add_message(first.id, Role.USER, "How do tides work?\nExplain simply.")
        h.add_message(first.id, Role.ASSISTANT, "The moon pulls the water.", stats=_stats())
        second = h.create_conversation()
        h.add_message(second.id, Role.USER, "x" * 200)
        # The first user message names an untitled conversation.
        assert h.conversation(first.id).title == "How do tides work?"
        assert len(h.conversation(second.id).title) <= 60
        # Newest activity first.
        assert [c.id for c in h.conversations()] == [second.id, first.id]
        h.rename(first.id, "  Tides  ")
        assert h.conversation(first.id).title == "Tides"
        msgs = h.messages(first.id)
        assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT]
        assert msgs[1].stats is not None and msgs[1].stats.generated_tokens == 30
        assert msgs[1].stats.gen_tokens_per_s == pytest.approx(58.0)
        h.delete(first.id)
        assert [c.id for c in h.conversations()] == [second.id]
        assert h.messages(first.id) == []  # messages go with their conversation
        with pytest.raises(HistoryError, match="not in the history"):
            h.conversation(first.id)


def test_regenerate_and_edit_delete_the_tail() -> None:
    with History() as h:
        c = h.create_conversation()
        u1 = h.add_message(c.id, Role.USER, "one")
        h.add_message(c.id, Role.ASSISTANT, "answer one")
        u2 = h.add_message(c.id, Role.USER, "two")
        h.add_message(c.id, Role.ASSISTANT, "answer two")
        assert h.delete_from(u2.id + 1) == 1  # regenerate: drop the last answer
        assert [m.content for m in h.messages(c.id)] == ["one", "answer one", "two"]
        h.update_message(u1.id, "one, edited")
        assert h.delete_from(u1.id + 1) == 2  # edit-and-resend: drop what followed
        assert [m.content for m in h.messages(c.id)] == ["one, edited"]


def test_search_finds_titles_and_messages() -> None:
    with History() as h:
        a = h.create_conversation("Cooking")
        h.add_message(a.id, Role.USER, "How long do I boil an EGG?")
        b = h.create_conversation("Travel")
        h.add_message(b.id, Role.USER, "Trains from Rome to 100% Milan_center")
        hits = h.search("egg")
        assert [hit.conversation.id for hit in hits] == [a.id]
        assert "EGG" in hits[0].snippet
        assert [hit.conversation.id for hit in h.search("travel")] == [b.id]
        # LIKE wildcards in the query are taken literally.
        assert [hit.conversation.id for hit in h.search("100%")] == [b.id]
        assert h.search("m_R") == []  # "_" would match the space in "from Rome"
        assert h.search("zzz") == []
        assert {hit.conversation.id for hit in h.search("")} == {a.id, b.id}


def test_export_markdown_and_json(tmp_path: Path) -> None:
    with History() as h:
        c = h.create_conversation("Tides", model="/m/gemma.gguf", system_prompt="Be brief.")
        h.add_message(c.id, Role.USER, "Why tides?")
        h.add_message(
            c.id, Role.ASSISTANT, "The moon.\n\n```python\nprint('moon')\n```", stats=_stats()
        )
        h.add_message(c.id, Role.ASSISTANT, "partial", state=MessageState.STREAMING)
        md = h.export(c.id, tmp_path / "tides.md", ExportFormat.MARKDOWN).read_text()
        assert md.startswith("# Tides\n")
        assert "`gemma.gguf`" in md
        assert "**You**\n\nWhy tides?" in md
        assert "```python\nprint('moon')\n```" in md
        assert "TTFT 50 ms" in md
        assert "_(interrupted)_" in md
        data = json.loads(h.export(c.id, tmp_path / "tides.json", ExportFormat.JSON).read_text())
        assert data["conversation"]["title"] == "Tides"
        assert [m["role"] for m in data["messages"]] == ["user", "assistant", "assistant"]
        assert data["messages"][1]["stats"]["generated_tokens"] == 30
        assert data["messages"][2]["state"] == "streaming"


def test_streaming_answer_is_visible_to_other_readers_while_it_streams() -> None:
    with History() as writer, History() as reader:
        c = writer.create_conversation()
        writer.add_message(c.id, Role.USER, "hi")
        stream = StreamingMessage(writer, c.id, interval_s=0.0)
        stream.append("Hel")
        stream.append("lo")
        row = reader.message(stream.id)
        assert row.content == "Hello"
        assert row.state is MessageState.STREAMING
        stream.finish(MessageState.COMPLETE, _stats())
        done = reader.message(stream.id)
        assert done.state is MessageState.COMPLETE
        assert done.stats is not None


def test_streaming_writes_are_throttled() -> None:
    with History() as h:
        c = h.create_conversation()
        stream = StreamingMessage(h, c.id, interval_s=3600)
        for piece in ("a", "b", "c"):
            stream.append(piece)
        assert h.message(stream.id).content == ""  # not yet written
        stream.save()
        assert h.message(stream.id).content == "abc"
        stream.finish(MessageState.STOPPED)
        assert h.message(stream.id).state is MessageState.STOPPED


def test_unreadable_database_is_a_plain_error(tmp_path: Path) -> None:
    bad = tmp_path / "history.sqlite3"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(HistoryError, match="not a readable chat history") as info:
        History(bad)
    assert "move the file aside" in str(info.value)


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    with pytest.raises(HistoryError, match="newer Quantdesk"):
        History(path)


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan, SamplingSettings
    from app.core.chat.templates import ChatMessage, Role
    from app.core.history import History, StreamingMessage

    db, model = Path(sys.argv[1]), sys.argv[2]
    session = ChatSession.load(model, LoadPlan(n_ctx=2048, n_threads=1))
    history = History(db)
    conv = history.create_conversation(model=model)
    question = "Write a very long story about a lighthouse keeper."
    history.add_message(conv.id, Role.USER, question)
    stream = StreamingMessage(history, conv.id, model=model)

    def on_token(text):
        stream.append(text)
        sys.stdout.write(text)
        sys.stdout.flush()

    seed = 7
    while True:  # keep streaming into the same answer until the parent kills us
        session.respond([ChatMessage(Role.USER, question)],
                        sampling=SamplingSettings(max_tokens=0, seed=seed), on_token=on_token)
        seed += 1
    """
)


@pytest.mark.slow
def test_kill_mid_stream_leaves_a_readable_database_with_the_partial_answer(
    tmp_path: Path, starter_model: Path
) -> None:
    db = tmp_path / "history.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(starter_model)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        partial = ""
        while time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
            if not db.exists():
                continue
            try:
                con = sqlite3.connect(db, timeout=5)
                row = con.execute(
                    "SELECT content FROM messages WHERE role = 'assistant'"
                ).fetchone()
                con.close()
            except sqlite3.OperationalError:  # schema not created yet
                continue
            if row and len(row[0]) >= 40:
                partial = row[0]
                break
        assert partial, "the child never streamed into the database"
        assert child.poll() is None, "the answer ended before the kill"
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        printed, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    with History(db) as h:
        assert h.integrity_ok()
        (conv,) = h.conversations()
        user, answer = h.messages(conv.id)
        assert user.content.startswith("Write a very long story")
        assert answer.state is MessageState.STREAMING  # shown as interrupted
        streamed = printed.decode("utf-8", "replace")
        # What was saved is what streamed, up to the last save before the kill.
        assert len(answer.content) >= len(partial)
        assert streamed.startswith(answer.content)
