"""Remote models are part of the library: ``quantdesk models`` and the Models page list
them after the files, a remote that does not answer is a note (never a failed listing),
and what a remote says about its models is untrusted text."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.core.cli import run_cli
from app.core.library import ModelLibrary
from app.core.library_listing import list_library
from app.core.remote import MODEL_ID_LIMIT, RemoteStore
from app.core.settings import Settings


@contextlib.contextmanager
def models_server(answer: object) -> Iterator[str]:
    """A server on 127.0.0.1 whose ``GET /v1/models`` answers ``answer`` as JSON."""
    body = json.dumps(answer).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/v1/models" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_models_lists_remote_models_after_the_files_and_notes_one_that_is_down(
    quantdesk_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {"object": "list", "data": [{"id": "qwen3-8b-fp8", "owned_by": "vllm"}]}
    with models_server(answer) as url:
        store = RemoteStore()
        store.add("gpu", url)
        store.add("gone", f"http://127.0.0.1:{_free_port()}/v1")
        assert run_cli(["models", "--json", "--no-fit", "--no-other-apps"]) == 0
        out, err = capsys.readouterr()
        rows = json.loads(out)
        remote = [r for r in rows if r["source"] == "remote"]
        assert remote == [
            {
                "name": "gpu:qwen3-8b-fp8",
                "source": "remote",
                "path": None,
                "remote": "gpu",
                "id": "qwen3-8b-fp8",
                "ref": "gpu:qwen3-8b-fp8",
                "owned_by": "vllm",
                "url": url,
            }
        ]
        assert rows[-1] == remote[0] and rows[0]["source"] == "starter"  # after the files
        assert "remote gone: cannot list the models" in err
        assert "Traceback" not in err

        assert run_cli(["models", "--no-fit", "--no-other-apps"]) == 0
        text = capsys.readouterr().out
        assert "Remote models (chat with: quantdesk chat NAME:MODEL)" in text
        assert f"gpu:qwen3-8b-fp8  remote  {url}" in text


def test_what_a_remote_says_about_its_models_is_untrusted(
    quantdesk_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {
        "data": [
            {"id": "\x1b]0;owned\x07evil\x1b[2J"},
            {"id": "x" * (MODEL_ID_LIMIT + 1)},
            {"id": ""},
            "not an object",
            {"id": "fine", "owned_by": "y" * 10_000},
        ]
    }
    with models_server(answer) as url:
        RemoteStore().add("odd", url)
        assert run_cli(["models", "--no-fit", "--no-other-apps"]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out
        assert "odd:\\x1b]0;owned\\x07evil\\x1b[2J" in out
        assert "x" * (MODEL_ID_LIMIT + 1) not in out  # too long to be asked for again
        listing = list_library(ModelLibrary(Settings(), external_roots=()), None)
        ids = [m.id for m in listing.remote.models]
        assert ids == ["\x1b]0;owned\x07evil\x1b[2J", "fine"]
        assert len(listing.remote.models[1].owned_by) <= MODEL_ID_LIMIT


def test_a_remote_that_does_not_answer_like_openai_is_one_note(
    quantdesk_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with models_server({"data": {"id": "not a list"}}) as url:
        RemoteStore().add("weird", url)
        assert run_cli(["models", "--json", "--no-fit", "--no-other-apps"]) == 0
        out, err = capsys.readouterr()
        assert all(r["source"] != "remote" for r in json.loads(out))
        assert "did not answer like an OpenAI API" in err
        assert err.count("quantdesk: note:") == 1
