"""Starting and stopping the local server: uvicorn in the foreground or on a thread.

``127.0.0.1`` is the default address. Any other address makes the models
reachable from other machines, so it is refused without an API key. The key
is compared in constant time and never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import AppError
from app.core.serve import DEFAULT_HOST, DEFAULT_PORT
from app.core.serve.app import ApiOptions, create_app
from app.core.serve.catalog import Catalog
from app.core.serve.log import RequestLog
from app.core.serve.pool import ModelPool, PoolOptions
from app.core.settings import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0


class ServerError(AppError):
    """The server could not start (address in use, no key for a public address)."""


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    pool: PoolOptions = field(default_factory=PoolOptions)

    def checked(self) -> ServerConfig:
        """This config, or :class:`ServerError` when it would expose the models without a key."""
        if not is_loopback(self.host) and not self.api_key:
            raise ServerError(
                f"binding {self.host} makes the server reachable from other machines; "
                "give an API key (--api-key KEY, or the key field) to bind anything but 127.0.0.1"
            )
        if self.api_key is not None and (not self.api_key.strip() or " " in self.api_key):
            raise ServerError("the API key must be one word without spaces")
        if not 0 <= self.port <= 65535:
            raise ServerError(f"port {self.port} is not between 0 and 65535")
        return self

    def base_url(self, port: int | None = None) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port if port is not None else self.port}/v1"


class LocalServer:
    """The server with its pool, catalog and request log; :meth:`start` runs it on a thread.

    The CLI calls :meth:`serve_forever` instead. :meth:`stop` ends the HTTP
    server and unloads every model.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        catalog: Catalog | None = None,
        settings: Settings | None = None,
        log: RequestLog | None = None,
    ) -> None:
        self.config = config.checked()
        self.catalog = catalog or Catalog()
        self.log = log or RequestLog()
        self.pool = ModelPool(config.pool, settings)
        self.app = create_app(
            self.catalog,
            self.pool,
            self.log,
            ApiOptions(api_key=config.api_key, cors_origins=config.cors_origins),
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return self.config.base_url(self.port)

    def _uvicorn(self) -> Any:
        import uvicorn

        cfg = uvicorn.Config(
            self.app,
            host=self.config.host,
            port=self.config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        return uvicorn.Server(cfg)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as exc:
            sock.close()
            raise ServerError(
                f"cannot listen on {self.config.host}:{self.config.port} ({exc.strerror or exc}); "
                "choose another port (--port) or stop the program using it"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        return sock

    def start(self) -> str:
        """Listen and serve on a background thread; returns the base URL once it answers."""
        if self._thread is not None:
            return self.url
        sock = self._bind()
        self._server = self._uvicorn()
        server = self._server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException:  # the thread must end quietly; the error is logged
                logger.exception("the server stopped with an error")

        self._thread = threading.Thread(target=run, name="quantdesk-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError("the server did not start; see the log for why")
            time.sleep(0.02)
        logger.info("serving at %s", self.url)
        return self.url

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl+C), then unload the models."""
        sock = self._bind()
        self._server = self._uvicorn()
        try:
            self._server.run(sockets=[sock])
        finally:
            self.pool.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving, stop answers in progress and unload every model."""
        server = self._server
        if server is not None:
            server.should_exit = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        self.pool.close(timeout_s)
        self._server = None
