"""A job told to stop — SIGTERM from the GUI's Cancel, Ctrl-C in a terminal — stops at once,
even inside llama.cpp, says so, and leaves nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STOP_WITHIN_S = 20.0


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "QUANTDESK_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def _wait_for(proc: subprocess.Popen[str], want: str, deadline_s: float = 300.0) -> list[str]:
    """Read stdout lines until one contains ``want``."""
    seen: list[str] = []
    t0 = time.monotonic()
    assert proc.stdout is not None
    while time.monotonic() - t0 < deadline_s:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if want in line:
            return seen
    raise AssertionError(f"never saw {want!r}: {''.join(seen)[-2000:]}")


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_quantize_job_stops_inside_llama_cpp(f16_model: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "out" / "model-Q4_K_M.gguf"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quant",
            "quantize",
            str(f16_model),
            str(out),
            "Q4_K_M",
            "--json-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(tmp_path / "home"),
    )
    _wait_for(proc, '"stage": "quantize"')
    time.sleep(0.5)  # well inside llama_model_quantize
    proc.send_signal(sig)
    try:
        rest, _err = proc.communicate(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the job did not stop") from None
    assert proc.returncode == 130
    last = json.loads(rest.strip().splitlines()[-1])
    assert last == {"error": "cancelled", "cancelled": True}
    assert not out.exists()
    assert _leftovers(out.parent) == []


def test_the_convert_command_stops_on_sigterm_with_a_sentence(
    f16_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "convert",
            str(f16_model),
            "--to",
            "Q4_K_M",
            "--imatrix",
            "none",
            "--eval",
            "none",
            "--out",
            str(out),
            "--json-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(tmp_path / "home"),
    )
    # The pipeline announces the file it starts writing, then quantizes into it.
    _wait_for(proc, "-Q4_K_M.gguf.partial")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _err = proc.communicate(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the command did not stop") from None
    assert proc.returncode == 130
    assert json.loads(rest.strip().splitlines()[-1])["cancelled"] is True
    assert _leftovers(out) == []
    assert not list(out.rglob("*.gguf"))


def test_ctrl_c_in_a_terminal_says_what_happened(f16_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "model-Q8_0.gguf"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "quant", "quantize", str(f16_model), str(out), "Q8_0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(tmp_path / "home"),
    )
    # No progress protocol here: wait until llama.cpp has started writing.
    partial = out.with_name(f".{out.name}.partial")
    t0 = time.monotonic()
    while not partial.exists() and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    assert partial.exists()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=STOP_WITHIN_S)
    assert proc.returncode == 130
    assert "stopped" in err and "Traceback" not in err and "Exception ignored" not in err
    assert not out.exists() and not partial.exists()
