"""Remote models: endpoints stored with their keys kept private, and chat with two real
servers on 127.0.0.1 — Quantdesk's own ``serve``, and llama-cpp-python's independent
server (``python -m llama_cpp.server``), which nobody here wrote."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.chat.settings import SamplingSettings
from app.core.chat.templates import ChatMessage, Role
from app.core.cli import run_cli
from app.core.remote import RemoteError, RemoteRef, RemoteSession, RemoteStore, normalize_url
from app.core.settings import Settings
from tests.server.conftest import API_KEY, Running

SECRET = "sk-very-secret-123"


def test_keys_are_kept_out_of_settings_in_a_private_file(
    quantdesk_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = RemoteStore()
    remote = store.add("gpu", "http://gpu-box:8000", SECRET)
    assert remote.url == "http://gpu-box:8000/v1"
    assert remote.has_key
    settings_text = Settings().path.read_text(encoding="utf-8")
    assert "gpu-box" in settings_text and SECRET not in settings_text
    mode = stat.S_IMODE(store.keys.path.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(store.keys.path.parent.stat().st_mode) & 0o077 == 0
    assert store.key("gpu") == SECRET
    assert SECRET not in caplog.text
    # Changing the URL keeps the key; removing the remote removes the key.
    store.add("gpu", "https://gpu-box:9000/v1")
    assert store.key("gpu") == SECRET
    assert store.remove("gpu")
    assert store.key("gpu") is None
    assert SECRET not in store.keys.path.read_text(encoding="utf-8")


def test_bad_names_and_addresses_are_refused(quantdesk_home: Path) -> None:
    store = RemoteStore()
    with pytest.raises(RemoteError):
        store.add("no spaces", "http://x:1")
    with pytest.raises(RemoteError):
        normalize_url("ftp://x/")
    assert store.parse_ref("nobody:model") is None


def test_an_unreachable_remote_says_so(quantdesk_home: Path) -> None:
    port = _free_port()
    store = RemoteStore()
    store.add("gone", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(RemoteError, match="check that the server is running"):
        store.client("gone").models()


@pytest.mark.slow
def test_chat_with_quantdesks_own_server(
    running: Running, quantdesk_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RemoteStore()
    store.add("desk", running.url, API_KEY)
    models = store.client("desk").models()
    assert [m.id for m in models] == [running.model_id]
    ref = store.parse_ref(f"desk:{running.model_id}")
    assert ref == RemoteRef("desk", running.model_id)
    session = RemoteSession.open(ref)
    pieces: list[str] = []
    answer = session.respond(
        [ChatMessage(Role.USER, "Write a long story about a dragon who learns to read.")],
        sampling=SamplingSettings(temperature=0, max_tokens=24),
        on_token=pieces.append,
    )
    assert answer.text and answer.text == "".join(pieces)
    assert len(pieces) > 1  # streamed, not sent whole
    stats = answer.stats
    assert stats.remote and stats.ttft_s is not None and stats.ttft_s > 0
    assert stats.generated_tokens > 0 and stats.gen_tokens_per_s is not None
    assert "memory: remote" in stats.summary()

    # The CLI takes the same NAME:MODEL.
    rc = run_cli(
        [
            "chat",
            f"desk:{running.model_id}",
            "--prompt",
            "Hi",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "--json-stats",
        ]
    )
    assert rc == 0
    _out, err = capsys.readouterr()
    line = json.loads(err.strip().splitlines()[-1])
    assert line["remote"] is True and line["generated_tokens"] > 0
    # A wrong key is a plain error.
    store.add("desk", running.url, "wrong-key")
    with pytest.raises(RemoteError, match="refused the API key"):
        store.client("desk").models()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_cpp_server(
    starter_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server over the starter model."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is a dev extra")
    import httpx2

    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    env = dict(os.environ)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(starter_model),
                "--model_alias",
                "starter-gemma",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "512",
                "--n_threads",
                "1",
                "--chat_format",
                "gemma",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(url + "/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_chat_with_llama_cpp_pythons_server(llama_cpp_server: str, quantdesk_home: Path) -> None:
    store = RemoteStore()
    store.add("lcpp", llama_cpp_server)
    models = store.client("lcpp").models()
    assert "starter-gemma" in [m.id for m in models]
    session = RemoteSession.open(RemoteRef("lcpp", "starter-gemma"))
    pieces: list[str] = []
    answer = session.respond(
        [ChatMessage(Role.USER, "Name a colour.")],
        system_prompt="Answer in one word.",
        sampling=SamplingSettings(temperature=0, max_tokens=8),
        on_token=pieces.append,
    )
    assert answer.text == "".join(pieces) and answer.text
    assert answer.stats.ttft_s is not None and answer.stats.generated_tokens > 0
    assert answer.stats.stop_reason.value in ("max tokens", "end of turn")
    with pytest.raises(RemoteError, match="does not serve"):
        RemoteSession.open(RemoteRef("lcpp", "no-such-model"))
