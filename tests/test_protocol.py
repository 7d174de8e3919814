"""The JSON-lines protocol every job writes, and the strict JSON of ``--json`` outputs."""

from __future__ import annotations

import io
import json
import math
import threading
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
