"""The local server for the GUI: started and stopped off the GUI thread, its log as signals.

The server runs its own threads (uvicorn's, and one per loaded model); this
object starts and stops it through :func:`~app.workers.tasks.start_task`, so
binding the port and unloading models never block the window, and re-emits
each finished request (reported on a server thread) as ``request_logged`` on
the GUI thread.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.core.serve.log import RequestRecord
from app.core.serve.pool import LoadedInfo
from app.core.serve.server import LocalServer, ServerConfig
from app.workers.failure import Failure
from app.workers.tasks import Call, TaskHandle, start_task

logger = logging.getLogger(__name__)


def _start(server: LocalServer) -> str:
    return server.start()


def _stop(server: LocalServer) -> None:
    server.stop()


class ServerController(QObject):
    """Owns at most one :class:`LocalServer`. Signals arrive on the GUI thread."""

    started = Signal(str)  # the base URL
    stopped = Signal()
    failed = Signal(object)  # a Failure
    request_logged = Signal(object)  # RequestRecord

    def __init__(self, parent: QObject | None = None, **server_kwargs: Any) -> None:
        super().__init__(parent)
        self.server: LocalServer | None = None
        self._task: TaskHandle[Any] | None = None
        self._unlisten: Any = None
        self._server_kwargs = server_kwargs

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    @property
    def url(self) -> str | None:
        return self.server.url if self.running and self.server is not None else None

    def start(self, config: ServerConfig) -> None:
        """Start serving with ``config`` (a config error arrives through ``failed``)."""
        if self.busy or self.running:
            return
        try:
            server = LocalServer(config, **self._server_kwargs)
        except Exception as exc:  # a refused config is shown, not raised into Qt
            self.failed.emit(Failure.from_exception(exc))
            return
        self.server = server
        # Emitted from the server's threads; Qt queues it to this object's (GUI) thread.
        self._unlisten = server.log.listen(self.request_logged.emit)
        self._task = start_task(
            Call(_start, server),
            parent=self,
            on_finished=self._on_started,
            on_failed=self._on_failed,
        )

    def _on_started(self, url: str) -> None:
        self._task = None
        self.started.emit(url)

    def _on_failed(self, failure: Failure) -> None:
        self._task = None
        self._drop()
        self.failed.emit(failure)

    def stop(self) -> None:
        if self.busy or self.server is None:
            return
        server = self.server
        self._task = start_task(
            Call(_stop, server),
            parent=self,
            on_finished=lambda _r: self._on_stopped(),
            on_failed=lambda _f: self._on_stopped(),
        )

    def _on_stopped(self) -> None:
        self._task = None
        self._drop()
        self.stopped.emit()

    def _drop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self.server = None

    def loaded(self) -> list[LoadedInfo]:
        """The models loaded now (a short lock; fine on the GUI thread)."""
        return self.server.pool.loaded() if self.server is not None else []

    def latest(self, n: int = 200) -> list[RequestRecord]:
        return self.server.log.latest(n) if self.server is not None else []

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop at once, waiting for it (application quit)."""
        server = self.server
        self._drop()
        if server is not None:
            server.stop(timeout_s)
