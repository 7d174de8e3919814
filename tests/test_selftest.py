"""``quantdesk --self-test``: the whole run from the entry point, and how it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import selftest
from app.selftest import SelfTestError, StepResult, run_self_test

ROOT = Path(__file__).resolve().parents[1]
STEP_NAMES = [
    "qt",
    "resources",
    "hardware",
    "runtime",
    "engine job",
    "server",
    "model",
    "generate",
]


def run_entry(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUANTDESK_HOME": str(home), "QT_QPA_PLATFORM": "minimal"}
    return subprocess.run(
        [sys.executable, "-m", "app", "--self-test", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def home_is_untouched(home: Path) -> bool:
    return not any(home.iterdir())


@pytest.mark.slow
def test_self_test_passes_and_reports_every_step(tmp_path: Path) -> None:
    done = run_entry(home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Quantdesk {selftest.__version__} self-test (source)"
    for name in STEP_NAMES:
        assert any(line.startswith(f"  ok  {name} ") for line in lines), name
    # even with QT_QPA_PLATFORM set otherwise, the window is built offscreen
    assert "platform offscreen (installed: " in done.stdout
    assert "6 pages built" in done.stdout  # Machine, Models, Advisor, Chat, Convert, Server
    assert "llama-cpp-python" in done.stdout
    assert "gemma-3-270m-q4_k_m.gguf" in done.stdout
    assert lines[-1].startswith("self-test passed in ")
    assert home_is_untouched(tmp_path)


@pytest.mark.slow
def test_self_test_json_report(tmp_path: Path) -> None:
    done = run_entry("--json", "--tokens", "3", home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["failure"] is None
    assert [s["name"] for s in report["steps"]] == STEP_NAMES
    assert report["steps"][-1]["detail"].startswith("3 tokens")


def test_self_test_fails_with_one_sentence_for_a_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    done = run_entry("--model", str(missing), home=tmp_path / "home")
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("self-test failed: model: ")
    assert str(missing) in err[0]
    assert err[0].endswith(".")
    # the steps before the model ran and passed
    for name in STEP_NAMES[: STEP_NAMES.index("model")]:
        assert f"  ok  {name} " in done.stdout
    assert "  ok  generate" not in done.stdout


def test_a_failing_step_stops_the_run_and_restores_the_home(
    monkeypatch: pytest.MonkeyPatch, quantdesk_home: Path
) -> None:
    ran: list[str] = []
    homes: list[str] = []

    def ok(ctx: object) -> str:
        ran.append("first")
        homes.append(os.environ["QUANTDESK_HOME"])
        return "fine"

    def broken(ctx: object) -> str:
        ran.append("second")
        raise SelfTestError("the widget\n   cannot   be built")

    def never(ctx: object) -> str:
        ran.append("third")
        return "unreachable"

    monkeypatch.setattr(selftest, "STEPS", (("one", ok), ("two", broken), ("three", never)))
    seen: list[StepResult] = []
    report = run_self_test(on_step=seen.append)
    assert ran == ["first", "second"]
    assert [s.name for s in seen] == ["one"]
    assert not report.passed
    assert report.failed_step == "two"
    assert report.failure == "the widget cannot be built."
    assert report.footer() == "self-test failed: two: the widget cannot be built."
    # the run used a private home, removed afterwards, and put the user's back
    assert homes[0] != str(quantdesk_home)
    assert not Path(homes[0]).exists()
    assert os.environ["QUANTDESK_HOME"] == str(quantdesk_home)


def test_an_unexpected_error_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(ctx: object) -> str:
        raise KeyError("x" * 1000)

    monkeypatch.setattr(selftest, "STEPS", (("crash", crash),))
    report = run_self_test()
    assert report.failed_step == "crash"
    assert report.failure is not None
    assert report.failure.startswith("unexpected KeyError: ")
    assert len(report.failure) <= selftest.MAX_REASON_CHARS


def test_a_bundle_without_the_starter_asks_for_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == selftest.STARTER_PACKAGE else real(name, *a),
    )
    with pytest.raises(SelfTestError, match=r"built without it.*--model FILE\.gguf"):
        selftest._starter_path()


def test_the_engine_job_command_matches_how_the_gui_starts_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core.engine_jobs import JOB_FLAG, job_command

    assert selftest._job_command() == [*job_command(sys.executable), "quantize", "--help"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert job_command(sys.executable) == [sys.executable, JOB_FLAG]
    assert selftest._job_command() == [sys.executable, JOB_FLAG, "quantize", "--help"]


def test_a_bundle_without_the_desktop_platform_plugins_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    needed = selftest.DESKTOP_PLATFORMS.get(sys.platform)
    if not needed:
        pytest.skip(f"no desktop platform plugins listed for {sys.platform}")
    assert needed <= selftest.platform_plugins()  # this environment has them
    monkeypatch.setattr(selftest, "platform_plugins", lambda: {"offscreen", "minimal"})
    ctx = selftest._Context(model=None, tokens=1)
    with pytest.raises(SelfTestError, match="platform plugin for the desktop is missing"):
        selftest._step_qt(ctx)
