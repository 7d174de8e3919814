"""The hand-declared ggml struct and the llama.cpp log routing."""

from __future__ import annotations

import ctypes
import logging

import pytest

from quant.native import llama_log
from quant.native.ggml_ctypes import GgmlTensor, ggml


def test_ggml_tensor_layout_matches_the_installed_library() -> None:
    g = ggml()  # raises GgmlLayoutError when the declared struct is off
    assert ctypes.sizeof(GgmlTensor) == g._lib.ggml_tensor_overhead() - 32
    assert g.op_name(g.op_mul_mat) == "MUL_MAT"
    assert g.op_name(g.op_mul_mat_id) == "MUL_MAT_ID"
    assert g.type_name(0) == "f32"


def test_log_pieces_are_joined_into_lines_for_observers() -> None:
    seen: list[tuple[int, str]] = []
    with llama_log.observe(lambda level, line: seen.append((level, line))):
        # llama.cpp prints one tensor line in several INFO calls (level 2), then a warning (3).
        llama_log._on_log(2, b"[   1/ 236] blk.0.attn_q.weight - [640, 1024], type = f16, ", None)
        llama_log._on_log(2, b"size = 1.25 MiB\n", None)
        llama_log._on_log(3, b"warning: something odd\n", None)
        llama_log._on_log(5, b"  continued\n", None)
    assert seen[0] == (
        logging.DEBUG,
        "[   1/ 236] blk.0.attn_q.weight - [640, 1024], type = f16, size = 1.25 MiB",
    )
    assert seen[1] == (logging.WARNING, "warning: something odd")
    assert seen[2] == (logging.WARNING, "  continued")


def test_a_failing_observer_never_reaches_native_code(caplog: pytest.LogCaptureFixture) -> None:
    def broken(level: int, line: str) -> None:
        raise RuntimeError("observer bug")

    got: list[str] = []
    with llama_log.observe(broken), llama_log.observe(lambda lv, line: got.append(line)):
        llama_log._on_log(3, b"still delivered\n", None)
    assert got == ["still delivered"]
    assert "observer failed" in caplog.text


def test_collector_reports_llama_cpp_failure_reason() -> None:
    c = llama_log.LineCollector()
    c(logging.ERROR, "llama_model_quantize: failed to quantize: imatrix size 640 is different")
    c(logging.DEBUG, "noise")
    assert c.reason() == "imatrix size 640 is different"
