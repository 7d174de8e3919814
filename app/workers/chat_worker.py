"""The chat worker: one long-lived thread that owns the loaded model.

llama.cpp objects are used from one thread only, so a :class:`ChatWorker` lives
in its own ``QThread`` for as long as the chat page does; loads, unloads and
answers are queued calls into it (queued signal delivery keeps them in order).
Its results come back as signals on the GUI thread. The worker also saves the
streaming answer to the history database through its own connection, so the
GUI thread never waits on the model or the disk.

Stop is not queued: :meth:`ChatController.stop` sets the current answer's
cancel token directly, and the session checks it between tokens.

Signals (all delivered on the GUI thread):

``load_progress(Progress)``, ``loaded(ModelInfo)``, ``load_failed(Failure)``,
``load_cancelled()``, ``unloaded()``; ``generation_started(int message_id)``,
``tokens(str)`` (one per decoded piece; the page coalesces them),
``sample(LiveSample)``, ``generation_finished(GenerationResult)``,
``generation_failed(Failure)``. A :class:`~app.workers.failure.Failure` keeps the
exception in ``error``: a :class:`~app.core.chat.session.ChatLoadError` carries a
plan to retry with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from app.core.chat.session import Answer, ChatSession, GenerationError
from app.core.chat.settings import LoadPlan, SamplingSettings
from app.core.chat.templates import ChatMessage, PromptMode
from app.core.errors import AppError
from app.core.history import History, MessageState, StreamingMessage
from app.core.remote import RemoteSession, RemoteStore
from app.workers.failure import Failure
from quant.errors import Cancelled, QuantError
from quant.progress import CancelToken

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadRequest:
    path: Path
    plan: LoadPlan
    mode: PromptMode = PromptMode.CHAT
    cancel: CancelToken = field(default_factory=CancelToken, compare=False)


@dataclass(frozen=True)
class GenerateRequest:
    """One answer to produce. With ``conversation_id`` set, the answer is saved as it
    streams (into ``history_path``, or the app's history database)."""

    messages: tuple[ChatMessage, ...]
    system_prompt: str = ""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    conversation_id: int | None = None
    history_path: Path | None = None
    cancel: CancelToken = field(default_factory=CancelToken, compare=False)


@dataclass(frozen=True)
class GenerationResult:
    answer: Answer
    conversation_id: int | None
    message_id: int | None
    stopped: bool


class ChatWorker(QObject):
    load_progress = Signal(object)
    loaded = Signal(object)
    load_failed = Signal(object)
    load_cancelled = Signal()
    unloaded = Signal()
    generation_started = Signal(int)
    tokens = Signal(str)
    sample = Signal(object)
    generation_finished = Signal(object)
    generation_failed = Signal(object)
    stopped = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._session: ChatSession | RemoteSession | None = None
        self._history: History | None = None
        self._history_path: Path | None = None

    # ------------------------------------------------------------------ slots (worker thread)
    @Slot(object)
    def do_load(self, req: LoadRequest) -> None:
        self._close_session()
        try:
            ref = RemoteStore().parse_ref(str(req.path))
            session: ChatSession | RemoteSession
            if ref is not None:  # NAME:MODEL, a model served elsewhere
                session = RemoteSession.open(ref)
            else:
                session = ChatSession.load(
                    req.path,
                    req.plan,
                    mode=req.mode,
                    on_progress=self.load_progress.emit,
                    cancel=req.cancel,
                )
        except Cancelled:
            self.load_cancelled.emit()
            return
        except Exception as exc:  # worker boundary: log, then report
            logger.info("chat load failed: %s", exc, exc_info=not _expected(exc))
            self.load_failed.emit(Failure.from_exception(exc))
            return
        self._session = session
        self.loaded.emit(session.info)

    @Slot()
    def do_unload(self) -> None:
        had = self._session is not None
        self._close_session()
        if had:
            self.unloaded.emit()

    @Slot(object)
    def do_generate(self, req: GenerateRequest) -> None:
        session = self._session
        if session is None:
            self.generation_failed.emit(
                Failure.from_exception(
                    GenerationError("no model is loaded; load a model before sending a message")
                )
            )
            return
        stream: StreamingMessage | None = None
        try:
            if req.conversation_id is not None:
                history = self._history_for(req.history_path)
                stream = StreamingMessage(
                    history, req.conversation_id, model=str(session.info.path)
                )
            self.generation_started.emit(stream.id if stream is not None else 0)

            def on_token(text: str) -> None:
                self.tokens.emit(text)
                if stream is not None:
                    stream.append(text)

            answer = session.respond(
                req.messages,
                system_prompt=req.system_prompt,
                sampling=req.sampling,
                on_token=on_token,
                on_sample=self.sample.emit,
                cancel=req.cancel,
            )
        except Exception as exc:  # worker boundary: log, then report
            logger.info("chat answer failed: %s", exc, exc_info=not _expected(exc))
            if stream is not None:
                try:
                    stream.finish(MessageState.FAILED)
                except Exception:
                    logger.exception("could not mark the failed answer in the history")
            self.generation_failed.emit(Failure.from_exception(exc))
            return
        stopped = req.cancel.cancelled
        message_id = None
        if stream is not None:
            try:
                state = MessageState.STOPPED if stopped else MessageState.COMPLETE
                stream.finish(state, answer.stats, answer.text)
                message_id = stream.id
            except Exception as exc:
                logger.exception("could not save the answer")
                self.generation_failed.emit(Failure.from_exception(exc))
                return
        self.generation_finished.emit(
            GenerationResult(answer, req.conversation_id, message_id, stopped)
        )

    @Slot()
    def do_shutdown(self) -> None:
        self._close_session()
        if self._history is not None:
            self._history.close()
            self._history = None
        self.stopped.emit()
        # Quit from inside: the GUI thread may be blocked in ChatController.shutdown's wait.
        thread = self.thread()
        if thread is not None:
            thread.quit()

    # ------------------------------------------------------------------ helpers
    def _history_for(self, path: Path | None) -> History:
        if self._history is None or path != self._history_path:
            if self._history is not None:
                self._history.close()
            self._history = History(path)
            self._history_path = path
        return self._history

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, AppError | QuantError)


class ChatController(QObject):
    """The GUI-side handle of the chat worker; every method returns at once.

    Owns the worker thread. Call :meth:`shutdown` before the owner goes away
    (the chat page does, and so does application quit).
    """

    _load = Signal(object)
    _unload = Signal()
    _generate = Signal(object)
    _shutdown = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = ChatWorker()
        self.worker_thread = QThread()
        self.worker_thread.setObjectName("chat-worker")
        self.worker.moveToThread(self.worker_thread)
        self._load.connect(self.worker.do_load)
        self._unload.connect(self.worker.do_unload)
        self._generate.connect(self.worker.do_generate)
        self._shutdown.connect(self.worker.do_shutdown)
        self._load_cancel: CancelToken | None = None
        self._answer_cancel: CancelToken | None = None
        self._down = False
        self.worker.loaded.connect(self._clear_load)
        self.worker.load_failed.connect(self._clear_load)
        self.worker.load_cancelled.connect(self._clear_load)
        self.worker.generation_finished.connect(self._clear_answer)
        self.worker.generation_failed.connect(self._clear_answer)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self.worker_thread.start()

    def load(self, path: Path, plan: LoadPlan, mode: PromptMode = PromptMode.CHAT) -> None:
        if self._load_cancel is not None:
            self._load_cancel.cancel()
        req = LoadRequest(Path(path), plan, mode)
        self._load_cancel = req.cancel
        self._load.emit(req)

    def cancel_load(self) -> None:
        if self._load_cancel is not None:
            self._load_cancel.cancel()

    def unload(self) -> None:
        self.stop()
        self._unload.emit()

    def generate(self, req: GenerateRequest) -> None:
        self._answer_cancel = req.cancel
        self._generate.emit(req)

    def stop(self) -> None:
        """Stop the answer being produced (thread-safe; takes effect before the next token)."""
        if self._answer_cancel is not None:
            self._answer_cancel.cancel()

    @property
    def answering(self) -> bool:
        return self._answer_cancel is not None

    @property
    def loading(self) -> bool:
        return self._load_cancel is not None

    def _clear_load(self, *_: object) -> None:
        self._load_cancel = None

    def _clear_answer(self, *_: object) -> None:
        self._answer_cancel = None

    def shutdown(self, wait_ms: int = 10_000) -> bool:
        """Stop any answer, free the model, end the thread; True when it ended in time."""
        if self._down:
            return True
        self._down = True
        self.stop()
        self.cancel_load()
        self._shutdown.emit()
        finished = self.worker_thread.wait(wait_ms)
        if not finished:
            logger.warning("chat worker did not stop within %d ms", wait_ms)
        return bool(finished)
