"""Loaded models: on demand, within a memory budget, one ordered queue each.

Each loaded model has its own thread, which owns its :class:`ChatSession`
(llama.cpp objects are used from one thread only), and a bounded FIFO queue of
jobs: requests to one model run one at a time in the order they arrived; a
full queue refuses at once (:class:`QueueFullError`, HTTP 429). Different
models run side by side.

Before a model is loaded the memory model (:func:`~app.core.chat.session.estimate_fit`)
prices it; it fits when its estimate and those of the models already loaded
stay within the budget (the memory available when the server started, unless
set). The least recently used idle models are unloaded to make room. A model
that cannot fit even alone is refused with the advisor's sentence: a shorter
context, a smaller KV cache, or the quantization type that would fit.

Nothing here lets an exception escape a model's thread: a failed load or a
failed job becomes that job's exception, and the pool goes on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from app.core.chat.session import ChatSession, available_ram_bytes, estimate_fit
from app.core.chat.settings import (
    ChatSettingsStore,
    LoadPlan,
    ModelChatSettings,
    SamplingSettings,
)
from app.core.errors import AppError
from app.core.serve.catalog import ServedModel
from app.core.settings import Settings
from quant.errors import QuantError
from quant.progress import CancelToken

logger = logging.getLogger(__name__)

T = TypeVar("T")
GIB = 1024**3


class PoolError(AppError):
    """A request could not be given to a model."""


class QueueFullError(PoolError):
    """The model's queue is full; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WontFitError(PoolError):
    """The model does not fit the memory budget, even alone."""


class BusyError(PoolError):
    """The model would fit, but the memory is held by models that are answering now."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PoolOptions:
    """How the server loads models. None fields come from the model's chat settings."""

    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    max_queue: int = 32
    # Bytes the loaded models may take together; None: what is available at start.
    memory_budget: int | None = None


@dataclass(frozen=True)
class Ticket:
    """Where a job stood in its model's queue: the order it arrived and started in."""

    received: int
    started: int
    queued_s: float


@dataclass
class _Job:
    fn: Callable[[ChatSession, Ticket], Any]
    future: concurrent.futures.Future[Any]
    cancel: CancelToken
    received: int
    queued_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class LoadedInfo:
    """A loaded (or loading) model, for the GUI and ``/metrics``."""

    id: str
    path: str
    state: str  # "loading", "ready", "failed"
    estimate_bytes: int
    rss_after_load_bytes: int | None
    n_ctx: int | None
    queued: int
    busy: bool
    last_used: float


class _Slot:
    """One model: its session, thread and queue."""

    def __init__(self, pool: ModelPool, model: ServedModel, plan: LoadPlan, estimate: int) -> None:
        self.pool = pool
        self.model = model
        self.plan = plan
        self.estimate = estimate
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=pool.options.max_queue)
        self.session: ChatSession | None = None
        self.state = "loading"
        self.busy = False
        self.last_used = time.monotonic()
        self.received = 0
        self.started = 0
        self.thread = threading.Thread(target=self._run, name=f"serve-{model.id}", daemon=True)
        self.thread.start()

    @property
    def idle(self) -> bool:
        return not self.busy and self.jobs.empty()

    def _run(self) -> None:
        try:
            settings = self.pool.chat_settings(self.model)
            self.session = ChatSession.load(self.model.path, self.plan, mode=settings.mode)
            self.state = "ready"
            logger.info("serving %s (%s)", self.model.id, self.session.info.plan.describe())
        except Exception as exc:  # a failed load fails its jobs; the server stays up
            logger.warning("could not load %s: %s", self.model.id, exc, exc_info=not _known(exc))
            self.state = "failed"
            self.pool._forget(self)
            self._fail_all(exc)
            return
        while True:
            job = self.jobs.get()
            if job is None:
                break
            if job.future.cancelled() or job.cancel.cancelled:
                job.future.cancel()
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            self.busy = True
            self.started += 1
            ticket = Ticket(job.received, self.started, time.monotonic() - job.queued_at)
            try:
                result = job.fn(self.session, ticket)
            except BaseException as exc:  # every failure is the job's, never the thread's
                if not _known(exc):
                    logger.exception("request to %s failed", self.model.id)
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                self.busy = False
                self.last_used = time.monotonic()
        session, self.session = self.session, None
        if session is not None:
            session.close()
        logger.info("unloaded %s", self.model.id)

    def _fail_all(self, exc: BaseException) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and not job.future.done():
                job.future.set_exception(exc)

    def stop(self) -> None:
        """End the thread once the queued jobs are done (frees the model)."""
        threading.Thread(target=self.jobs.put, args=(None,), daemon=True).start()


class ModelPool:
    """Loads served models on demand and runs jobs on them in order."""

    def __init__(
        self, options: PoolOptions | None = None, settings: Settings | None = None
    ) -> None:
        self.options = options or PoolOptions()
        self._settings = settings
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self.budget = (
            self.options.memory_budget
            if self.options.memory_budget is not None
            else available_ram_bytes()
        )

    # ------------------------------------------------------------------ settings
    def chat_settings(self, model: ServedModel) -> ModelChatSettings:
        """The user's chat settings for ``model`` (context, mode), as the Chat page saved them."""
        try:
            store = ChatSettingsStore(self._settings or Settings())
            return store.for_model(model.path)
        except Exception as exc:  # unreadable settings must not stop serving
            logger.info("chat settings unavailable for %s: %s", model.id, exc)
            return ModelChatSettings()

    def saved_sampling(self, model: ServedModel) -> SamplingSettings | None:
        """The sampling the user chose for ``model`` in Chat; None when they chose none
        (the loaded model's own defaults then apply, as in Chat)."""
        try:
            store = ChatSettingsStore(self._settings or Settings())
            return store.for_model(model.path).sampling if store.has_saved(model.path) else None
        except Exception as exc:  # unreadable settings must not stop serving
            logger.info("chat settings unavailable for %s: %s", model.id, exc)
            return None

    def plan_for(self, model: ServedModel) -> LoadPlan:
        plan = self.chat_settings(model).plan
        o = self.options
        if o.n_ctx is not None:
            plan = replace(plan, n_ctx=o.n_ctx)
        if o.n_gpu_layers is not None:
            plan = replace(plan, n_gpu_layers=o.n_gpu_layers)
        if o.n_threads is not None:
            plan = replace(plan, n_threads=o.n_threads)
        if model.context_length and plan.n_ctx > model.context_length:
            plan = replace(plan, n_ctx=model.context_length)
        return plan.validated()

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        model: ServedModel,
        fn: Callable[[ChatSession, Ticket], T],
        *,
        cancel: CancelToken | None = None,
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(session, ticket)`` on ``model``'s thread, loading the model first if needed.

        Raises :class:`QueueFullError`, :class:`WontFitError` or :class:`BusyError`
        at once; load and job failures arrive through the future.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            slot = self._slots.get(model.id)
            if slot is None:
                slot = self._load(model)
            slot.received += 1
            job = _Job(fn, future, cancel or CancelToken(), slot.received)
            try:
                slot.jobs.put_nowait(job)
            except queue.Full:
                raise QueueFullError(
                    f"{model.id} has {self.options.max_queue} requests waiting; "
                    "try again in a few seconds",
                    retry_after_s=max(1, self.options.max_queue // 4),
                ) from None
            slot.last_used = time.monotonic()
        return future

    def _load(self, model: ServedModel) -> _Slot:
        """A new slot for ``model`` once it fits (called with the lock held)."""
        plan = self.plan_for(model)
        try:
            report = estimate_fit(model.path, plan, available_ram=self.budget)
        except (QuantError, ValueError) as exc:
            raise WontFitError(f"{model.id}: {exc}") from exc
        need = report.needed_bytes
        if not report.fits:
            raise WontFitError(advice_sentence(model, plan, report.message, self.budget))
        held = sum(s.estimate for s in self._slots.values())
        if held + need > self.budget:
            for slot in sorted(self._slots.values(), key=lambda s: s.last_used):
                if held + need <= self.budget:
                    break
                if slot.idle and slot.state != "loading":
                    logger.info("unloading %s to make room for %s", slot.model.id, model.id)
                    self._slots.pop(slot.model.id, None)
                    slot.stop()
                    held -= slot.estimate
            if held + need > self.budget:
                raise BusyError(
                    f"{model.id} needs about {need / GIB:.1f} GiB and the models answering now "
                    f"hold {held / GIB:.1f} GiB of the {self.budget / GIB:.1f} GiB budget; "
                    "try again when they finish"
                )
        slot = _Slot(self, model, plan, need)
        self._slots[model.id] = slot
        return slot

    def _forget(self, slot: _Slot) -> None:
        with self._lock:
            if self._slots.get(slot.model.id) is slot:
                del self._slots[slot.model.id]

    def unload(self, model_id: str) -> bool:
        with self._lock:
            slot = self._slots.pop(model_id, None)
        if slot is None:
            return False
        slot.stop()
        return True

    def loaded(self) -> list[LoadedInfo]:
        with self._lock:
            slots = list(self._slots.values())
        out = []
        for s in slots:
            session = s.session
            out.append(
                LoadedInfo(
                    id=s.model.id,
                    path=str(s.model.path),
                    state=s.state,
                    estimate_bytes=s.estimate,
                    rss_after_load_bytes=session.info.rss_after_load_bytes if session else None,
                    n_ctx=session.info.n_ctx if session else None,
                    queued=s.jobs.qsize(),
                    busy=s.busy,
                    last_used=s.last_used,
                )
            )
        return out

    def close(self, timeout_s: float = 10.0) -> None:
        """Unload every model (waits up to ``timeout_s`` for answers in progress)."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for s in slots:
            s.stop()
        deadline = time.monotonic() + timeout_s
        for s in slots:
            s.thread.join(max(0.0, deadline - time.monotonic()))


def advice_sentence(model: ServedModel, plan: LoadPlan, fit_message: str, budget: int) -> str:
    """Why ``model`` cannot be served here and what would fit, in the advisor's words."""
    sentence = f"{model.id} does not fit the server's memory budget: {fit_message}"
    try:
        better = _smaller_type(model, plan, budget)
    except Exception as exc:  # the first sentence stands on its own
        logger.info("no advisor option for %s: %s", model.id, exc)
        better = None
    if better:
        sentence += f"; {better}"
    return sentence


def _smaller_type(model: ServedModel, plan: LoadPlan, budget: int) -> str | None:
    """The advisor's best GGUF type of this model that fits ``budget`` bytes of RAM."""
    from dataclasses import replace as dc_replace

    from quant.facts import inspect_model
    from quant.hardware.probe import probe
    from quant.plan.advisor import recommend
    from quant.plan.formats import FormatFamily

    facts = inspect_model(model.path)
    profile = probe(measure_bandwidth=False)
    profile = dc_replace(
        profile, gpus=(), memory=dc_replace(profile.memory, available_bytes=budget)
    )
    rec = recommend(
        facts, profile, ctx=plan.n_ctx, include_gpu_formats=False,
        options=plan.runtime_options(),
    )  # fmt: skip
    for o in rec.options:
        if o.fits and o.family is FormatFamily.GGUF:
            return (
                f"the advisor says {o.file_type} of this model (about "
                f"{o.ram_bytes / GIB:.1f} GiB at a {o.ctx:,}-token context) would fit; "
                f"make it with 'quantdesk convert' or download it"
            )
    if rec.suggestions:  # no type fits as asked: what would (a shorter context, a q8_0 cache)
        return "the advisor says: " + " ".join(rec.suggestions[:2])
    return None


def _known(exc: BaseException) -> bool:
    return isinstance(exc, AppError | QuantError)
