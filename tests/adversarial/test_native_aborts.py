"""Files that pass the header check but abort llama.cpp never take the process down: chat
loads a file it has not seen in a throwaway process first, and refuses it with one sentence."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.chat.probe import known_verdict
from app.core.chat.session import ChatLoadError, ChatSession, LoadFailure
from app.core.chat.settings import LoadPlan
from tests.ggufs import write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]

HOSTILE = {
    # llama.cpp's SentencePiece tokenizer aborts on text it cannot spell without byte tokens.
    "no byte tokens": {},
    "no layers": {"n_layers": 0, "byte_tokens": True},
    "NaN norm epsilon": {"rms_eps": math.nan, "byte_tokens": True},
    "empty vocabulary strings": {"empty_tokens": True, "byte_tokens": True},
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_file_that_aborts_llama_cpp_is_refused_in_one_sentence(name: str, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "hostile.gguf", **HOSTILE[name])  # type: ignore[arg-type]
    with pytest.raises(ChatLoadError) as info:
        ChatSession.load(path, LoadPlan(n_ctx=256), check_fit=False)
    message = str(info.value)
    assert info.value.failure is LoadFailure.CORRUPT
    assert "\n" not in message and len(message) < 600
    # What the header check knows llama.cpp aborts on is refused before any load; the
    # rest is caught by the test load in a throwaway process, whose verdict is kept.
    assert "cannot run this file" in message
    if name == "no byte tokens":
        verdict = known_verdict(path)
        assert verdict is not None and not verdict.ok


def test_the_verdict_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "no-bytes.gguf")
    with pytest.raises(ChatLoadError, match="cannot run this file"):
        ChatSession.load(path, LoadPlan(n_ctx=256), check_fit=False)
    t0 = time.perf_counter()
    with pytest.raises(ChatLoadError, match="cannot run this file"):
        ChatSession.load(path, LoadPlan(n_ctx=256), check_fit=False)
    assert time.perf_counter() - t0 < 5  # no second child process was needed
    write_tiny_gguf(path, byte_tokens=True)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
    assert known_verdict(path) is None


def test_the_cli_survives_and_says_one_sentence(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "no-bytes.gguf")
    env = {**os.environ, "QUANTDESK_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "chat", str(path), "--prompt", "hi", "--max-tokens", "4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot run this file" in lines[0], proc.stderr
    assert "GGML" not in proc.stdout
