"""A local stand-in for the few Hugging Face hub endpoints huggingface_hub calls.

It serves ``/api/models/{repo}[/revision/{rev}]`` (the file list with sizes) and
``/{repo}/resolve/{rev}/{file}`` (HEAD, GET and byte ranges), records every
request, and can misbehave on purpose: send file bodies slowly, or drop the
connection at a given byte offset, the way a flaky network does. Start it with
:func:`serve_fake_hub`; huggingface_hub and Quantdesk then talk only to it, and
the HF cache lives in the folder the test chooses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    #: Extra fields of a repo's /api/models answer (e.g. "config", "gated").
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: File bodies stop at this byte offset of the file: the connection drops there,
    #: and a request that starts at or past it is dropped before any answer.
    drop_at: int | None = None
    #: How many file bodies ``drop_at`` cuts before the hub behaves again (None: all).
    drop_times: int | None = None
    #: Send file bodies in pieces of this many bytes, pausing ``pause_s`` after each.
    piece_bytes: int | None = None
    pause_s: float = 0.0

    def downloads(self, suffix: str) -> list[tuple[str, str, str | None]]:
        """GET requests for files ending with ``suffix`` (method, path, Range header)."""
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith(suffix)]

    def throttle(self, piece_bytes: int, pause_s: float) -> None:
        self.piece_bytes = piece_bytes
        self.pause_s = pause_s


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _drop(self) -> None:
            """Close the connection at once, as a network failure would."""
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

        def _send_file(self, code: int, data: bytes, start: int, headers: dict[str, str]) -> None:
            """Send ``data`` (the file from byte ``start``), slowly or cut short if asked."""
            stop = len(data)
            if hub.drop_at is not None and hub.drop_times != 0:
                if hub.drop_times is not None:
                    hub.drop_times -= 1
                if start >= hub.drop_at:
                    return self._drop()
                stop = min(stop, hub.drop_at - start)
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            piece = hub.piece_bytes or len(data) or 1
            try:
                for at in range(0, stop, piece):
                    self.wfile.write(data[at : min(stop, at + piece)])
                    if hub.pause_s:
                        self.wfile.flush()
                        time.sleep(hub.pause_s)
            except OSError:  # the client went away (a cancelled download)
                self.close_connection = True
                return None
            if stop < len(data):
                self._drop()
            return None

        def _serve(self, head: bool) -> None:
            path = self.path.split("?")[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
            if m:
                repo = m.group(1)
                if repo not in hub.repos:
                    return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, head)
                siblings = [
                    {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                    for name, data in hub.repos[repo].items()
                ]
                body = {"id": repo, "modelId": repo, "sha": SHA, "tags": [], "siblings": siblings}
                body.update(hub.info.get(repo, {}))
                return self._send(200, json.dumps(body).encode(), {}, head)
            m = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
            if m and m.group(1) in hub.repos:
                data = hub.repos[m.group(1)].get(m.group(2))
                if data is None:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                headers = {
                    "X-Repo-Commit": SHA,
                    "ETag": f'"{sha256(data)}"',
                    "Accept-Ranges": "bytes",
                }
                wanted = self.headers.get("Range")
                if head:
                    return self._send(200, data, headers, head=True)
                if wanted:
                    start_s, end_s = wanted.removeprefix("bytes=").split("-")
                    start = int(start_s)
                    end = min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send_file(206, data[start : end + 1], start, headers)
                return self._send_file(200, data, 0, headers)
            return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)

    return Handler


@contextlib.contextmanager
def serve_fake_hub(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[FakeHub]:
    """Run a :class:`FakeHub` on 127.0.0.1 and point huggingface_hub (online) at it."""
    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    server.block_on_close = False
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    # huggingface_hub reads these into constants at import; set both.
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        fake.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
