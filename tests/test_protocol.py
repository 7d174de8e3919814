"""The JSON-lines protocol every job writes, and the strict JSON of ``--json`` outputs."""

from __future__ import annotations

import io
import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest

from quant.errors import Cancelled, ModelFormatError
from quant.progress import Progress
from quant.protocol import CANCELLED_LINE, JsonLines, json_text


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_job_writes_progress_stages_events_and_its_result() -> None:
    buf = io.StringIO()
    out = JsonLines(buf)
    progress = Progress("convert", 3, 10, "tensor 3", bytes_done=30, bytes_total=100, eta_s=1.5)

    def job() -> dict[str, Any]:
        out.on_event("stages", {"stages": ["prepare", "convert"]})
        out.progress(progress)
        out.on_event("written", {"path": "/tmp/m.gguf"})
        return {"path": "/tmp/m.gguf"}

    assert out.run(job) == 0
    stages, line, event, last = _lines(buf)
    assert stages == {"stages": ["prepare", "convert"]}
    assert Progress.from_dict(line) == progress
    assert event == {"event": "written", "path": "/tmp/m.gguf"}
    assert last == {"result": {"path": "/tmp/m.gguf"}}


@pytest.mark.parametrize(
    ("exc", "status", "last"),
    [
        (
            ModelFormatError("m.gguf: not a GGUF file"),
            2,
            {"error": "m.gguf: not a GGUF file", "kind": "ModelFormatError"},
        ),
        (Cancelled("cancelled by the user"), 130, {"error": "cancelled", "cancelled": True}),
        (RuntimeError("boom"), 1, {"error": "Unexpected error: boom", "kind": "internal"}),
    ],
)
def test_a_failed_job_ends_with_one_error_line_and_its_status(
    exc: Exception, status: int, last: dict[str, Any]
) -> None:
    buf = io.StringIO()

    def job() -> None:
        raise exc

    assert JsonLines(buf).run(job) == status
    assert _lines(buf)[-1] == last


def test_the_cancelled_line_a_signal_handler_writes_is_the_same_line() -> None:
    buf = io.StringIO()
    JsonLines(buf).failure(Cancelled("stopped"))
    assert buf.getvalue().encode() == CANCELLED_LINE


def test_lines_from_threads_never_interleave() -> None:
    buf = io.StringIO()
    out = JsonLines(buf)
    message = "x" * 5000

    def write(i: int) -> None:
        for j in range(50):
            out.progress(Progress("s", j, 50, f"{i}:{message}"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_lines(buf)) == 200


def test_json_documents_are_strict() -> None:
    data = {"ppl": math.nan, "ratio": [1.0, math.inf, -math.inf], "name": "Modèle\u202e"}
    parsed = _strict(json_text(data))
    assert parsed == {"ppl": None, "ratio": [1.0, None, None], "name": "Modèle\u202e"}


def test_a_stopped_command_exits_130_and_is_no_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cancel is not an error: no handler for the engine's errors reports it as one."""
    import app.core.commands.inspect as inspect_cmd
    from app.core.cli import run_cli
    from quant.errors import QuantError

    assert not isinstance(Cancelled("stopped"), QuantError)

    def stopped(_args: object) -> int:
        raise Cancelled("stopped by the user")

    monkeypatch.setattr(inspect_cmd, "run", stopped)
    assert run_cli(["inspect", "starter"]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == "cancelled"
    assert "quantdesk: error" not in captured.err


def test_quantdesk_convert_reports_a_stop_like_the_child_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from app.core.cli import run_cli
    from quant.jobs import pipeline

    def stopped(*_a: object, **_k: object) -> None:
        raise Cancelled("cancelled by the user")

    monkeypatch.setattr(pipeline, "run_pipeline", stopped)
    rc = run_cli(["convert", "google/gemma-3-270m", "--out", str(tmp_path), "--json-progress"])
    assert rc == 130
    captured = capsys.readouterr()
    assert captured.out.encode() == CANCELLED_LINE
    assert captured.err.strip().splitlines()[-1] == "cancelled"
