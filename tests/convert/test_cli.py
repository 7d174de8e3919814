"""``quantdesk convert-hf`` and the child-process entry ``python -m quant convert-hf``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.core.cli import run_cli
from tests.convert import checkpoints as ckpt
from tests.convert.conftest import llama_tokenize

REPO = Path(__file__).resolve().parents[2]

# Runs the real child entry with every block slowed down, like a slow disk, so a
# signal can arrive while tensors are being written.
SLOW_CHILD = """
import runpy, sys, time
import quant.convert.writer as w
_encode = w.encode
def slow(block, ggml_type, name):
    time.sleep(0.05)
    return _encode(block, ggml_type, name)
w.encode = slow
sys.argv = ["quant", *sys.argv[1:]]
runpy.run_module("quant", run_name="__main__", alter_sys=True)
"""


def child(*args: str, script: str | None = None) -> subprocess.Popen[str]:
    cmd = (
        [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "quant", *args]
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_quantdesk_convert_hf_json(
    build: Callable[..., ckpt.Built], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build("qwen2")
    out = tmp_path / "q.gguf"
    rc = run_cli(["convert-hf", str(built.path), str(out), "--outtype", "q8_0", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["output"] == str(out)
    assert result["architecture"] == "qwen2"
    assert result["outtype"] == "q8_0"
    assert result["file_bytes"] == out.stat().st_size
    text = "Hello world"
    assert llama_tokenize(out, text) == built.hf_tokenizer.encode(text).ids


def test_quantdesk_convert_hf_reports_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model").mkdir()
    rc = run_cli(["convert-hf", str(tmp_path / "model"), str(tmp_path / "m.gguf")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("quantdesk: error:") and "config.json" in err
    assert len(err.splitlines()) == 1


def test_child_process_streams_json_progress(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("mixtral")
    out = tmp_path / "m.gguf"
    proc = child("convert-hf", str(built.path), str(out), "--json-progress")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    progress, final = lines[:-1], lines[-1]
    assert progress, "no progress lines"
    for p in progress:
        assert {"stage", "done", "total", "bytes_done", "eta_s"} <= set(p)
    assert progress[-1]["stage"] == "done"
    assert final["result"]["output"] == str(out)
    assert final["result"]["n_tensors"] == progress[-1]["total"]
    assert out.is_file()


def test_child_process_reports_error_as_json(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    proc = child("convert-hf", str(folder), str(tmp_path / "m.gguf"), "--json-progress")
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    last = json.loads(stdout.splitlines()[-1])
    assert "GPT2LMHeadModel" in last["error"]
    assert last["kind"] == "UnsupportedArchitectureError"
    assert not (tmp_path / "m.gguf").exists()


def test_terminating_the_child_midway_leaves_no_file(
    build: Callable[..., ckpt.Built], tmp_path: Path
) -> None:
    built = build("qwen3moe")
    out = tmp_path / "m.gguf"
    proc = child("convert-hf", str(built.path), str(out), "--json-progress", script=SLOW_CHILD)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("stage") == "convert" and event["done"] >= 3:
            proc.send_signal(signal.SIGTERM)
            break
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert json.loads(stdout.splitlines()[-1]) == {"error": "cancelled", "cancelled": True}
    assert list(tmp_path.glob("*.gguf*")) == []
    assert list(tmp_path.glob(".*gguf*")) == []
