"""A local stand-in for the Hugging Face hub endpoints huggingface_hub and Quantdesk call.

It serves:

- ``/api/models`` — model search with ``search``, ``filter``, ``author``, ``sort``,
  ``limit`` and ``expand``, paginated with a ``Link: <…>; rel="next"`` header when
  :attr:`FakeHub.page_size` is set;
- ``/api/models/{repo}[/revision/{rev}]`` — model info: the file list with sizes
  and, for LFS files, ``lfs: {sha256, size, pointerSize}``, plus whatever the test
  puts in :attr:`FakeHub.info` (``cardData``, ``config``, ``gated``, ``tags`` …);
- ``/{repo}/resolve/{rev}/{file}`` — HEAD, GET and byte ranges;
- ``/api/whoami-v2`` — who a token belongs to.

It records every request and can misbehave on purpose: answer a path with an HTTP
error, send file bodies slowly, drop the connection at a given byte offset, or
send a body whose bytes differ from the checksum it announces. Its hostile mode
(:attr:`FakeHub.hostile`) is a malicious mirror: it puts any text it is given in
the ``X-Repo-Commit`` and ``ETag`` headers, the listing's commit (``sha``) and
file names, the way an attacker between the user and ``HF_ENDPOINT`` could. Gated repos answer
file requests with 401 without a token and 403 for a user not granted access,
the way the hub does. Start it with :func:`serve_fake_hub`; huggingface_hub and
Quantdesk then talk only to it, and the HF cache and token file live in folders
the test chooses.
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
from urllib.parse import parse_qs, urlencode, urlsplit

import huggingface_hub.constants
import huggingface_hub.hf_api
import pytest

SHA = "0123456789abcdef0123456789abcdef01234567"
DEFAULT_MODIFIED = "2024-01-01T00:00:00.000Z"
# Files the hub stores with Git LFS (their listing carries ``lfs.sha256``).
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class VirtualFile:
    """A large file that exists only as its first bytes followed by zeros.

    Lets a repo list a multi-gigabyte GGUF whose header is real, for tests that read
    headers through byte ranges; never download one whole.
    """

    head: bytes
    size: int

    def __len__(self) -> int:
        return self.size

    def read(self, start: int, stop: int) -> bytes:
        stop = min(stop, self.size)
        if start >= stop:
            return b""
        from_head = self.head[start:stop]
        return from_head + bytes(max(0, stop - max(start, len(self.head))))


FileData = bytes | VirtualFile


def _read(data: FileData, start: int, stop: int) -> bytes:
    return data.read(start, stop) if isinstance(data, VirtualFile) else data[start:stop]


def sha256(data: FileData) -> str:
    if isinstance(data, VirtualFile):
        # Never downloaded whole: a stable stand-in computed from what defines it.
        return hashlib.sha256(data.head + str(data.size).encode()).hexdigest()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Call:
    """One request the fake hub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def token(self) -> str | None:
        """The access token the request carried, if any."""
        return _bearer({"Authorization": self.headers.get("authorization")})


@dataclass
class FakeHub:
    url: str = ""
    repos: dict[str, dict[str, FileData]] = field(default_factory=dict)
    #: Extra fields of a repo's /api/models answers (e.g. "config", "gated", "cardData",
    #: "tags", "downloads", "likes", "lastModified", "library_name", "pipeline_tag").
    #: A repo listed here but not in ``repos`` is found by search, with no files.
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (method, path, Range header) of every request, in order.
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: Every request with its query and headers.
    calls: list[Call] = field(default_factory=list)
    #: File bodies stop at this byte offset of the file: the connection drops there,
    #: and a request that starts at or past it is dropped before any answer.
    drop_at: int | None = None
    #: How many file bodies ``drop_at`` cuts before the hub behaves again (None: all).
    drop_times: int | None = None
    #: Send file bodies in pieces of this many bytes, pausing ``pause_s`` after each.
    piece_bytes: int | None = None
    pause_s: float = 0.0
    #: Access tokens the hub knows, and the user each belongs to.
    tokens: dict[str, str] = field(default_factory=dict)
    #: Users granted access to a gated repo; a gated repo not listed here lets in
    #: every known token.
    granted: dict[str, set[str]] = field(default_factory=dict)
    #: Paths starting with a key are answered with that HTTP status (e.g. 500).
    errors: dict[str, int] = field(default_factory=dict)
    #: Search results per page; None sends every result in one page.
    page_size: int | None = None
    #: File name -> byte offset flipped in the bytes sent (the ETag stays the true one).
    corrupt_at: dict[str, int] = field(default_factory=dict)
    #: A malicious mirror's answers: "commit" replaces the X-Repo-Commit header,
    #: "etag" the ETag header (sent as given, without quotes), "sha" the listing's
    #: commit, and "names" maps a real file name to the name the listing shows.
    hostile: dict[str, Any] = field(default_factory=dict)

    def downloads(self, suffix: str) -> list[tuple[str, str, str | None]]:
        """GET requests for files ending with ``suffix`` (method, path, Range header)."""
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith(suffix)]

    def searches(self) -> list[Call]:
        """The model-search requests, with their query parameters."""
        return [c for c in self.calls if c.path == "/api/models"]

    def throttle(self, piece_bytes: int, pause_s: float) -> None:
        self.piece_bytes = piece_bytes
        self.pause_s = pause_s

    # ------------------------------------------------------------------ what it serves
    def is_gated(self, repo: str) -> bool:
        return bool(self.info.get(repo, {}).get("gated"))

    def model_entry(self, repo: str, *, files_metadata: bool) -> dict[str, Any]:
        """The /api/models object of ``repo``: defaults, then the test's ``info``."""
        files = self.repos.get(repo, {})
        extra = self.info.get(repo, {})
        tags = list(extra.get("tags", []))
        if any(n.lower().endswith(".gguf") for n in files) and "gguf" not in tags:
            tags.append("gguf")
        siblings = []
        shown = self.hostile.get("names", {})
        for name, data in files.items():
            sibling: dict[str, Any] = {"rfilename": shown.get(name, name)}
            if files_metadata:
                sibling["size"] = len(data)
                sibling["blobId"] = hashlib.sha1(_read(data, 0, 4096)).hexdigest()
                if name.lower().endswith(LFS_SUFFIXES):
                    sibling["lfs"] = {"sha256": sha256(data), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        body: dict[str, Any] = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/", maxsplit=1)[0],
            "sha": self.hostile.get("sha", SHA),
            "private": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "lastModified": DEFAULT_MODIFIED,
            "createdAt": DEFAULT_MODIFIED,
            "siblings": siblings,
        }
        body.update(extra)
        body["tags"] = tags
        return body

    def search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The hub's model search, as far as Quantdesk uses it."""
        text = (query.get("search") or [""])[0].lower()
        filters = query.get("filter", [])
        author = (query.get("author") or [None])[0]
        found = []
        for repo in sorted(set(self.repos) | set(self.info)):
            entry = self.model_entry(repo, files_metadata=False)
            labels = set(entry["tags"]) | {entry.get("library_name"), entry.get("pipeline_tag")}
            if text and text not in repo.lower():
                continue
            if author and entry["author"] != author:
                continue
            if any(f not in labels for f in filters):
                continue
            found.append(entry)
        sort = (query.get("sort") or [None])[0]
        if sort:
            found.sort(key=lambda e: e.get(sort) or 0, reverse=True)
        expand = query.get("expand")
        if expand:
            found = [
                {"_id": e["_id"], "id": e["id"], **{k: e.get(k) for k in expand}} for e in found
            ]
        else:
            found = [{k: v for k, v in e.items() if k != "siblings"} for e in found]
        limit = int((query.get("limit") or ["0"])[0] or 0)
        return found[:limit] if limit else found


def _bearer(headers: Any) -> str | None:
    auth = headers.get("Authorization") or ""
    return auth.removeprefix("Bearer ").strip() or None if auth.startswith("Bearer ") else None


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

        def _json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self._send(code, data, {"Content-Type": "application/json", **(headers or {})}, False)

        def _drop(self) -> None:
            """Close the connection at once, as a network failure would."""
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

        def _send_file(
            self,
            code: int,
            data: FileData,
            name: str,
            *,
            span: tuple[int, int],
            headers: dict[str, str],
        ) -> None:
            """Send bytes ``span`` (start, end) of the file, slowly or cut short if asked."""
            start, end = span
            length = end - start
            stop = end
            if hub.drop_at is not None and hub.drop_times != 0:
                if hub.drop_times is not None:
                    hub.drop_times -= 1
                if start >= hub.drop_at:
                    return self._drop()
                stop = min(stop, hub.drop_at)
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            piece = hub.piece_bytes or 1024 * 1024
            flip = hub.corrupt_at.get(name)
            try:
                for at in range(start, stop, piece):
                    chunk = _read(data, at, min(stop, at + piece))
                    if flip is not None and at <= flip < at + len(chunk):
                        i = flip - at
                        chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                    self.wfile.write(chunk)
                    if hub.pause_s:
                        self.wfile.flush()
                        time.sleep(hub.pause_s)
            except OSError:  # the client went away (a cancelled download)
                self.close_connection = True
                return None
            if stop < end:
                self._drop()
            return None

        def _serve(self, head: bool) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            query = parse_qs(parts.query)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            hub.calls.append(
                Call(self.command, path, query, {k.lower(): v for k, v in self.headers.items()})
            )
            for prefix, status in hub.errors.items():
                if path.startswith(prefix):
                    return self._send(status, b"{}", {}, head)
            if path == "/api/whoami-v2":
                return self._whoami()
            if path == "/api/models":
                return self._search(query)
            m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
            if m:
                repo = m.group(1)
                if repo not in hub.repos and repo not in hub.info:
                    return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, head)
                return self._json(200, hub.model_entry(repo, files_metadata=True))
            m = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
            if m and m.group(1) in hub.repos:
                return self._resolve(m.group(1), m.group(2), head)
            return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)

        def _whoami(self) -> None:
            user = hub.tokens.get(_bearer(self.headers) or "")
            if user is None:
                headers = {"X-Error-Message": "Invalid credentials in Authorization header"}
                return self._send(401, b"{}", headers, False)
            token = {"displayName": "quantdesk-test", "role": "read"}
            return self._json(200, {"type": "user", "name": user, "auth": {"accessToken": token}})

        def _search(self, query: dict[str, list[str]]) -> None:
            found = hub.search(query)
            headers: dict[str, str] = {}
            if hub.page_size:
                cursor = int((query.get("cursor") or ["0"])[0])
                page = found[cursor : cursor + hub.page_size]
                if cursor + hub.page_size < len(found):
                    more = {k: v for k, v in query.items() if k != "cursor"}
                    more["cursor"] = [str(cursor + hub.page_size)]
                    link = f"{hub.url}/api/models?{urlencode(more, doseq=True)}"
                    headers["Link"] = f'<{link}>; rel="next"'
                found = page
            return self._json(200, found, headers)

        def _resolve(self, repo: str, name: str, head: bool) -> None:
            if hub.is_gated(repo):
                token = _bearer(self.headers)
                user = hub.tokens.get(token or "")
                allowed = hub.granted.get(repo)
                if user is None:
                    headers = {"X-Error-Code": "GatedRepo", "X-Error-Message": "restricted"}
                    return self._send(401, b"", headers, head)
                if allowed is not None and user not in allowed:
                    headers = {"X-Error-Code": "GatedRepo", "X-Error-Message": "not granted"}
                    return self._send(403, b"", headers, head)
            data = hub.repos[repo].get(name)
            if data is None:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            headers = {
                "X-Repo-Commit": hub.hostile.get("commit", SHA),
                "ETag": hub.hostile.get("etag", f'"{sha256(data)}"'),
                "Accept-Ranges": "bytes",
            }
            size = len(data)
            if head:
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                return None
            wanted = self.headers.get("Range")
            if wanted:
                start_s, end_s = wanted.removeprefix("bytes=").split("-")
                start = int(start_s)
                end = min(int(end_s) if end_s else size - 1, size - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                return self._send_file(206, data, name, span=(start, end + 1), headers=headers)
            return self._send_file(200, data, name, span=(0, size), headers=headers)

    return Handler


@contextlib.contextmanager
def serve_fake_hub(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[FakeHub]:
    """Run a :class:`FakeHub` on 127.0.0.1 and point huggingface_hub (online) at it.

    The token file lives in ``hf-home`` beside ``cache_dir``, and ``HF_TOKEN`` is
    cleared, so no real token reaches the fake hub and no test touches the user's.
    """
    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    server.block_on_close = False
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    home = cache_dir.parent / "hf-home"
    # huggingface_hub reads these into constants at import; set both.
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        fake.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    # huggingface_hub's module-level client (behind ``login`` and ``whoami``) took the
    # endpoint when it was imported.
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", fake.url)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
