"""``quantdesk inspect``: the human summary, the JSON object, and clear failures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.cli import run_cli
from quant.facts import inspect_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "data" / "configs"


def test_json_for_the_starter_model(
    starter_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["inspect", str(starter_model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "gguf" and data["architecture"] == "gemma3"
    assert (data["n_layers"], data["n_heads"], data["n_kv_heads"], data["head_dim"]) == (
        18,
        4,
        1,
        256,
    )
    assert data["vocab_size"] == 262144 and data["context_length"] == 32768
    assert data["sliding_window"] == 512 and data["n_swa_layers"] == 15
    assert data["swa_layers"][:6] == [True, True, True, True, True, False]
    assert data["file_type"] == "Q4_K_M" and data["is_moe"] is False
    assert "tensors" not in data and "chat_template" not in data
    assert {t["type"] for t in data["tensor_types"]} >= {"Q4_K", "Q6_K", "F32"}
    assert data["parameters"] == sum(t["n_elements"] for t in data["tensor_types"])


def test_json_with_tensors(starter_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["inspect", str(starter_model), "--json", "--tensors"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["tensors"]) == 236
    emb = next(t for t in data["tensors"] if t["name"] == "token_embd.weight")
    assert emb == {
        "name": "token_embd.weight",
        "shape": [640, 262144],
        "type": "Q8_0",
        "n_bytes": 178257920,
    }


def test_human_summary(starter_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["inspect", str(starter_model)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "Gemma 3 270m",
        "gemma3",
        "268.1M (268,098,176)",
        "4 heads, 1 KV head, head dim 256",
        "262,144 (llama)",
        "32,768 tokens",
        "512 tokens in 15 of 18 layers",
        "Q4_K_M, 7.36 bits per weight",
        "chat template    no",
    ):
        assert expected in out, expected
    assert "token_embd.weight" not in out
    assert run_cli(["inspect", str(starter_model), "--tensors"]) == 0
    assert re.search(r"token_embd\.weight +Q8_0 +640×262144 +170\.0 MiB", capsys.readouterr().out)


def test_human_summary_for_a_moe_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["inspect", str(CONFIGS / "qwen3-30b-a3b.json")]) == 0
    out = capsys.readouterr().out
    assert "30.5B" in out and "128, 8 used per token; 3.35B active parameters" in out
    assert "derived from the config" in out


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: str(d / "no" / "such" / "model.gguf"), "no such file or folder"),
        (lambda d: _write(d / "notes.gguf", b"just some text, not a model"), "not a GGUF file"),
        (lambda d: _mkdir(d / "empty"), "the folder has no config.json"),
        (
            lambda d: _write(d / "config.json", b'{"model_type": "mamba2"}'),
            "model type 'mamba2' is not supported; supported model types are llama",
        ),
        (lambda d: "acme/some-model", "cannot ask the Hugging Face hub in offline mode"),
    ],
)
def test_bad_input_exits_with_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, fragment: str
) -> None:
    target = make(tmp_path)  # type: ignore[operator]
    assert run_cli(["inspect", target, "--offline"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.strip()
    assert line.startswith("quantdesk: error: ") and fragment in line, line
    assert "\n" not in line and "Traceback" not in line


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _mkdir(path: Path) -> str:
    path.mkdir()
    return str(path)


def test_truncated_download(
    tmp_path: Path, starter_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    with starter_model.open("rb") as src:
        partial.write_bytes(src.read(50_000_000))
    assert run_cli(["inspect", str(partial)]) == 2
    err = capsys.readouterr().err
    assert "gemma-3-270m-q4_k_m.gguf" in err and "truncated" in err


def test_real_entry_point(tmp_path: Path) -> None:
    """``python -m app inspect``: exit status and streams as a shell user sees them."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [sys.executable, "-m", "app", "inspect", str(CONFIGS / "phi-4.json"), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["parameters"] == inspect_model(CONFIGS / "phi-4.json").parameters
    bad = subprocess.run(
        [sys.executable, "-m", "app", "inspect", str(tmp_path / "missing.gguf")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == "" and "missing.gguf: no such file or folder" in bad.stderr


def test_docs_describe_every_json_field(starter_model: Path) -> None:
    doc = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    data = inspect_model(starter_model).to_dict(with_tensors=True)
    fields = set(data) | {f"tensors[].{k}" for k in data["tensors"][0]}
    fields |= {f"tensor_types[].{k}" for k in data["tensor_types"][0]}
    fields |= {"remote_files[].filename", "remote_files[].size_bytes", "remote_files[].file_type"}
    missing = sorted(f for f in fields if f"`{f}`" not in doc)
    assert not missing, f"docs/formats.md does not document {missing}"


# A name that would retitle the terminal, ring its bell, clear it, fake a line and
# reverse the text after it, if printed as it is.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\rfake: ok\u202eevil\u200b"
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\u202e", "\u200b")


def test_metadata_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.ggufs import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "evil\x1b[31m.gguf", name=HOSTILE)
    assert run_cli(["inspect", str(path), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in RAW_CONTROLS), out
    first, second = out.splitlines()[:2]
    assert first == "\\x1b]0;pwned\\x07\\x1b[2J\\x0dfake: ok\\u202eevil\\u200b"
    assert "evil\\x1b[31m.gguf" in second  # the source path, escaped too


def test_json_keeps_the_exact_text_and_is_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.ggufs import write_tiny_gguf

    # An architecture this llama.cpp does not know: its facts are listed as they are (a
    # model of a known one with a NaN base is refused as broken: tests/test_facts_llama_checks).
    path = write_tiny_gguf(
        tmp_path / "m.gguf",
        name=HOSTILE,
        rope_freq_base=float("nan"),
        architecture="madeupformer",
    )
    assert run_cli(["inspect", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in RAW_CONTROLS)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    data = json.loads(out, parse_constant=refuse)
    assert data["name"] == HOSTILE
    assert data["extra"]["rope_freq_base"] is None
