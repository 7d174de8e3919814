"""``quantdesk chat``: one-shot and interactive, streaming to stdout, stats to stderr."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.cli import run_cli
from app.core.history import History

# Every test here but the last loads the real starter model.
REPO = Path(__file__).resolve().parents[1]
FAST = ["--ctx", "2048", "--threads", "1", "--temperature", "0"]


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


@pytest.mark.slow
def test_one_shot_prompt_through_the_real_entry_point(quantdesk_home: Path) -> None:
    env = {**os.environ, "QUANTDESK_HOME": str(quantdesk_home), "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "chat",
            "starter",
            "--prompt",
            "Name a fruit.",
            "--max-tokens",
            "6",
            "--json-stats",
            *FAST,
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the answer goes to stdout"
    (stats,) = _json_lines(proc.stderr)
    # The base starter answers through in-context examples and ends at their fence.
    assert stats["stop_reason"] in ("max tokens", "end of turn", "stop string")
    assert 1 <= int(stats["generated_tokens"]) <= 6  # type: ignore[call-overload]
    assert float(stats["ttft_s"]) > 0  # type: ignore[arg-type]
    assert stats["context_size"] == 2048
    assert str(stats["model"]).endswith(".gguf")
    assert "{" not in proc.stdout


@pytest.mark.slow
def test_interactive_reads_lines_until_exit_and_reuses_the_cache(
    starter_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there.\nAnd again?\n/exit\nignored\n"))
    rc = run_cli(
        [
            "chat",
            str(starter_model),
            "--max-tokens",
            "5",
            "--json-stats",
            "--system",
            "Be brief.",
            *FAST,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0
    first, second = _json_lines(err)
    assert out.count("\n") >= 2  # one line per answer
    # The second turn was answered on top of the cached first one.
    assert int(second["prompt_tokens_cached"]) >= int(first["prompt_tokens"])  # type: ignore[call-overload]
    assert int(second["prompt_tokens_evaluated"]) < int(second["prompt_tokens"])  # type: ignore[call-overload]


@pytest.mark.slow
def test_human_stats_line_and_saved_history(
    starter_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_cli(
        ["chat", str(starter_model), "--prompt", "Say hi.", "--max-tokens", "4", "--save", *FAST]
    )
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.strip()
    assert "TTFT" in err and "tok/s" in err and "context" in err and "RSS" in err
    with History() as h:
        (conv,) = h.conversations()
        user, answer = h.messages(conv.id)
        assert user.content == "Say hi."
        assert answer.content == out.rstrip("\n")
        assert answer.stats is not None and answer.stats.generated_tokens >= 1


def test_not_a_model_is_one_sentence_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("just some notes\n" * 50)
    rc = run_cli(["chat", str(bad), "--prompt", "hi"])
    _out, err = capsys.readouterr()
    assert rc == 2
    line = [ln for ln in err.splitlines() if ln.startswith("quantdesk: error:")]
    assert len(line) == 1
    assert "notes.gguf: not a GGUF file" in line[0]
