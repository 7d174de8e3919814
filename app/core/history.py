"""Conversation history in SQLite (WAL), written while answers stream.

Durability: the database runs in WAL mode with ``synchronous=NORMAL`` and every
change is its own short transaction. A streaming answer is saved by
:class:`StreamingMessage`, which rewrites the assistant row at most every
:data:`STREAM_SAVE_INTERVAL_S`; if the process is killed mid-answer, the file
stays consistent (SQLite's journal guarantees it) and holds the answer up to the
last save, a fraction of a second before the kill. Rows still marked
``streaming`` after such a crash are shown as interrupted.

One :class:`History` object holds one connection and belongs to the thread that
created it; open one per thread (the GUI thread and the chat worker each have
their own). WAL lets readers and the writer work at the same time.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.core.chat.stats import AnswerStats
from app.core.chat.templates import ChatMessage, Role
from app.core.errors import HistoryError
from app.core.paths import app_paths, private_dir
from quant.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# A streaming answer is written to disk at most this often.
STREAM_SAVE_INTERVAL_S = 0.15
DEFAULT_TITLE = "New chat"
_TITLE_CHARS = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    title         TEXT    NOT NULL,
    model         TEXT    NOT NULL DEFAULT '',
    system_prompt TEXT    NOT NULL DEFAULT '',
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role            TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content         TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL DEFAULT 'complete',
    stats           TEXT,
    model           TEXT    NOT NULL DEFAULT '',
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations(updated_at);
"""


class MessageState(StrEnum):
    STREAMING = "streaming"
    COMPLETE = "complete"
    STOPPED = "stopped"
    FAILED = "failed"


class ExportFormat(StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str
    system_prompt: str
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "system_prompt": self.system_prompt,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    role: Role
    content: str
    state: MessageState
    stats: AnswerStats | None
    model: str
    created_at: float
    updated_at: float

    def as_chat(self) -> ChatMessage:
        return ChatMessage(self.role, self.content)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role.value,
            "content": self.content,
            "state": self.state.value,
            "stats": self.stats.to_dict() if self.stats else None,
            "model": self.model,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class SearchHit:
    conversation: Conversation
    message_id: int | None
    snippet: str


def _title_from(text: str) -> str:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(first) > _TITLE_CHARS:
        first = first[: _TITLE_CHARS - 1].rstrip() + "…"
    return first or DEFAULT_TITLE


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class History:
    """The conversation store. Open with ``History()`` (the app's database) or a path."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or app_paths().history_db
        try:
            private_dir(self.path.parent)
            # Autocommit: every statement outside an explicit transaction commits at once.
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
            # Conversations are private; SQLite gives its -wal and -shm files this mode too.
            self.path.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(
                f"{self.path}: the chat history cannot be opened ({exc}); "
                "check that the folder is writable"
            ) from exc
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("history %s: journal mode is %s, not WAL", self.path, mode)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: the chat history was written by a newer Quantdesk "
                    f"(schema {version}); update Quantdesk to open it"
                )
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise HistoryError(
                    f"cannot write in {self.path.parent}: the disk is full, so the chat history "
                    "cannot be saved; free some space or choose another folder, then try again"
                ) from exc
            raise HistoryError(
                f"{self.path}: is not a readable chat history ({exc}); move the file aside "
                "and Quantdesk will start a new history"
            ) from exc

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, et: type[BaseException] | None, *_: object) -> None:
            self.db.execute("COMMIT" if et is None else "ROLLBACK")

    def _transaction(self) -> History._Tx:
        return History._Tx(self._db)

    def _run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise HistoryError(
                f"{self.path}: the chat history could not be updated ({exc}); "
                "check free disk space and retry"
            ) from exc

    # ------------------------------------------------------------------ conversations
    @staticmethod
    def _conversation(row: sqlite3.Row) -> Conversation:
        return Conversation(
            id=int(row["id"]),
            title=str(row["title"]),
            model=str(row["model"]),
            system_prompt=str(row["system_prompt"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )

    def create_conversation(
        self, title: str = DEFAULT_TITLE, *, model: str = "", system_prompt: str = ""
    ) -> Conversation:
        now = time.time()
        cur = self._run(
            "INSERT INTO conversations (title, model, system_prompt, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (title.strip() or DEFAULT_TITLE, model, system_prompt, now, now),
        )
        return self.conversation(int(cur.lastrowid or 0))

    def conversation(self, conversation_id: int) -> Conversation:
        row = self._run("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise HistoryError(
                f"conversation {conversation_id} is not in the history; it may have been deleted"
            )
        return self._conversation(row)

    def conversations(self, limit: int | None = None) -> list[Conversation]:
        """Newest activity first."""
        sql = "SELECT * FROM conversations ORDER BY updated_at DESC, id DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [self._conversation(r) for r in self._run(sql, params).fetchall()]

    def rename(self, conversation_id: int, title: str) -> Conversation:
        self._run(
            "UPDATE conversations SET title = ? WHERE id = ?",
            (title.strip() or DEFAULT_TITLE, conversation_id),
        )
        return self.conversation(conversation_id)

    def set_system_prompt(self, conversation_id: int, text: str) -> None:
        self._run(
            "UPDATE conversations SET system_prompt = ? WHERE id = ?", (text, conversation_id)
        )

    def set_model(self, conversation_id: int, model: str) -> None:
        self._run("UPDATE conversations SET model = ? WHERE id = ?", (model, conversation_id))

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        self._run("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ------------------------------------------------------------------ messages
    @staticmethod
    def _message(row: sqlite3.Row) -> StoredMessage:
        stats = None
        if row["stats"]:
            try:
                stats = AnswerStats.from_dict(json.loads(row["stats"]))
            except (ValueError, TypeError, KeyError):
                logger.debug("unreadable stats on message %s", row["id"])
        try:
            state = MessageState(row["state"])
        except ValueError:
            state = MessageState.COMPLETE
        return StoredMessage(
            id=int(row["id"]),
            conversation_id=int(row["conversation_id"]),
            role=Role(row["role"]),
            content=str(row["content"]),
            state=state,
            stats=stats,
            model=str(row["model"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._run(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [self._message(r) for r in rows]

    def message(self, message_id: int) -> StoredMessage:
        row = self._run("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise HistoryError(
                f"message {message_id} is not in the history; it may have been "
                "deleted with its conversation"
            )
        return self._message(row)

    def add_message(
        self,
        conversation_id: int,
        role: Role,
        content: str,
        *,
        state: MessageState = MessageState.COMPLETE,
        model: str = "",
        stats: AnswerStats | None = None,
    ) -> StoredMessage:
        """Append a message; the first user message also names an untitled conversation."""
        now = time.time()
        try:
            with self._transaction() as db:
                conv = db.execute(
                    "SELECT title FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                if conv is None:
                    raise HistoryError(
                        f"conversation {conversation_id} is not in the history; "
                        "it may have been deleted"
                    )
                cur = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, state, stats, model, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id,
                        role.value,
                        content,
                        state.value,
                        json.dumps(stats.to_dict()) if stats else None,
                        model,
                        now,
                        now,
                    ),
                )
                title = str(conv["title"])
                if role is Role.USER and title == DEFAULT_TITLE:
                    title = _title_from(content)
                db.execute(
                    "UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
                    (now, title, conversation_id),
                )
        except sqlite3.Error as exc:
            raise HistoryError(
                f"{self.path}: the message could not be saved ({exc}); "
                "check free disk space and retry"
            ) from exc
        return self.message(int(cur.lastrowid or 0))

    def update_message(
        self,
        message_id: int,
        content: str,
        *,
        state: MessageState | None = None,
        stats: AnswerStats | None = None,
    ) -> None:
        """Rewrite a message's text (and optionally its state and stats) in one statement."""
        now = time.time()
        sets = ["content = ?", "updated_at = ?"]
        params: list[Any] = [content, now]
        if state is not None:
            sets.append("state = ?")
            params.append(state.value)
        if stats is not None:
            sets.append("stats = ?")
            params.append(json.dumps(stats.to_dict()))
        params.append(message_id)
        self._run(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", params)

    def delete_from(self, message_id: int) -> int:
        """Delete ``message_id`` and every later message of its conversation (regenerate,
        edit-and-resend); returns how many were deleted."""
        msg = self.message(message_id)
        cur = self._run(
            "DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
            (msg.conversation_id, message_id),
        )
        return int(cur.rowcount)

    def touch(self, conversation_id: int) -> None:
        self._run(
            "UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id)
        )

    # ------------------------------------------------------------------ search
    def search(self, query: str, limit: int = 100) -> list[SearchHit]:
        """Conversations whose title or messages contain ``query`` (case-insensitive)."""
        q = query.strip()
        if not q:
            return [SearchHit(c, None, "") for c in self.conversations(limit)]
        pattern = f"%{_like_escape(q)}%"
        rows = self._run(
            "SELECT c.*, m.id AS mid, m.content AS mcontent FROM conversations c "
            "LEFT JOIN messages m ON m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\' "
            "WHERE c.title LIKE ? ESCAPE '\\' OR m.id IS NOT NULL "
            "ORDER BY c.updated_at DESC, c.id DESC, m.id",
            (pattern, pattern),
        ).fetchall()
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for r in rows:
            cid = int(r["id"])
            if cid in seen:
                continue
            seen.add(cid)
            content = r["mcontent"]
            hits.append(
                SearchHit(
                    self._conversation(r),
                    r["mid"],
                    _snippet(str(content), q) if content else str(r["title"]),
                )
            )
            if len(hits) >= limit:
                break
        return hits

    # ------------------------------------------------------------------ export
    def export_dict(self, conversation_id: int) -> dict[str, Any]:
        conv = self.conversation(conversation_id)
        return {
            "format": "quantdesk-conversation",
            "version": 1,
            "conversation": conv.to_dict(),
            "messages": [m.to_dict() for m in self.messages(conversation_id)],
        }

    def export_markdown(self, conversation_id: int) -> str:
        conv = self.conversation(conversation_id)
        lines = [f"# {conv.title}", ""]
        if conv.model:
            lines += [f"Model: `{Path(conv.model).name}`", ""]
        if conv.system_prompt:
            lines += ["**System**", "", conv.system_prompt, ""]
        for m in self.messages(conversation_id):
            heading = {"user": "**You**", "assistant": "**Assistant**", "system": "**System**"}[
                m.role.value
            ]
            if m.state is not MessageState.COMPLETE and m.role is Role.ASSISTANT:
                heading += f" _({state_label(m.state)})_"
            lines += [heading, "", m.content, ""]
            if m.stats is not None:
                lines += [f"<sub>{m.stats.summary()}</sub>", ""]
        return "\n".join(lines).rstrip() + "\n"

    def export(self, conversation_id: int, path: Path, fmt: ExportFormat) -> Path:
        """Write the conversation to ``path`` (whole or not at all)."""
        if fmt is ExportFormat.JSON:
            text = json.dumps(self.export_dict(conversation_id), indent=2, ensure_ascii=False)
        else:
            text = self.export_markdown(conversation_id)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise HistoryError(
                f"{path}: the export could not be written ({exc.strerror}); choose another folder"
            ) from exc
        return path

    def integrity_ok(self) -> bool:
        row = self._run("PRAGMA integrity_check").fetchone()
        return bool(row) and str(row[0]) == "ok"

    def iter_all_messages(self) -> Iterator[StoredMessage]:
        for r in self._run("SELECT * FROM messages ORDER BY id"):
            yield self._message(r)


def state_label(state: MessageState) -> str:
    """How a message's state is named to people (a crash leaves 'streaming' rows)."""
    return {
        MessageState.STREAMING: "interrupted",
        MessageState.COMPLETE: "complete",
        MessageState.STOPPED: "stopped",
        MessageState.FAILED: "failed",
    }[state]


def _snippet(text: str, query: str, width: int = 80) -> str:
    i = text.lower().find(query.lower())
    if i < 0:
        return text[:width]
    start = max(0, i - width // 3)
    end = min(len(text), start + width)
    out = text[start:end].replace("\n", " ")
    return ("…" if start > 0 else "") + out + ("…" if end < len(text) else "")


class StreamingMessage:
    """An assistant message saved while it streams.

    :meth:`append` accumulates text and rewrites the row when at least
    ``interval_s`` passed since the last save; :meth:`finish` writes the final
    text with its state and stats. Use from the thread that owns ``history``.
    """

    def __init__(
        self,
        history: History,
        conversation_id: int,
        *,
        model: str = "",
        interval_s: float = STREAM_SAVE_INTERVAL_S,
    ) -> None:
        self._history = history
        self._interval = interval_s
        self._parts: list[str] = []
        self._last_save = time.monotonic()
        self._dirty = False
        self.message = history.add_message(
            conversation_id, Role.ASSISTANT, "", state=MessageState.STREAMING, model=model
        )

    @property
    def id(self) -> int:
        return self.message.id

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def append(self, piece: str) -> None:
        if not piece:
            return
        self._parts.append(piece)
        self._dirty = True
        now = time.monotonic()
        if now - self._last_save >= self._interval:
            self.save()

    def save(self) -> None:
        if not self._dirty:
            return
        text = self.text
        self._parts = [text]
        self._history.update_message(self.id, text)
        self._last_save = time.monotonic()
        self._dirty = False

    def finish(
        self, state: MessageState, stats: AnswerStats | None = None, text: str | None = None
    ) -> None:
        final = self.text if text is None else text
        self._history.update_message(self.id, final, state=state, stats=stats)
        self._history.touch(self.message.conversation_id)
        self._dirty = False
