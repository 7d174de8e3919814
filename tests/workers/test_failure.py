"""Failure: the one shape in which a failure reaches a page, and how show_error reads it."""

from __future__ import annotations

from app.core.errors import ModelLoadError
from app.workers.failure import INTERNAL, Failure
from quant.errors import ModelFormatError


def test_an_error_raised_on_purpose_keeps_its_sentence() -> None:
    exc = ModelFormatError("x.gguf: not a GGUF file (magic b'abcd')")
    f = Failure.from_exception(exc)
    assert f.expected
    assert (f.message, f.kind, f.details) == (
        "x.gguf: not a GGUF file (magic b'abcd')",
        "ModelFormatError",
        "",
    )
    assert f.error is exc
    assert Failure.from_exception(ModelLoadError("not enough memory")).expected


def test_a_bug_keeps_its_traceback() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        f = Failure.from_exception(exc)
    assert not f.expected
    assert f.message == "KeyError: 'missing'"
    assert "Traceback" in f.details and "test_a_bug_keeps_its_traceback" in f.details


def test_a_childs_error_line_is_expected_unless_internal() -> None:
    ok = Failure.from_job_error("no imatrix for IQ2_XS; collect one", "QuantError", "tail")
    assert ok.expected and ok.details == "tail"
    assert not Failure.from_job_error("Unexpected error: boom", INTERNAL).expected
    assert not Failure.from_job_error("the job failed", "").expected


def test_failures_compare_by_what_they_say() -> None:
    a = Failure.from_exception(ModelFormatError("bad file"))
    b = Failure.from_exception(ModelFormatError("bad file"))
    assert a == b  # the exception object itself is not part of the value
