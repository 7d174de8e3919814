"""The fast subset of the attack suite: one test per family, every case must be clean.

Bad input — a truncated or hostile GGUF, a hostile model folder or chat template, a
malicious hub, a full disk, a signal mid-job — gets one clear sentence, never a
traceback, a hang or a death by signal; nothing is left half-written and nothing is
written outside the case's folder. Each test runs a small seeded subset of its family
(tests/adversarial/run_attacks.py runs the long one) and lists every case that was not
clean, with its input, its command and what was observed.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp  # noqa: F401  - before gguf (CUDA builds: see app/core/runtime.py)
import pytest

from tests.adversarial.families import run_families
from tests.adversarial.harness import Result, summary

SEED = 0


def run_family(name: str, tmp_path: Path, starter: Path | None = None) -> list[Result]:
    results = run_families([name], tmp_path / "attacks", seed=SEED, starter=starter)
    assert results, f"the {name} family built no cases"
    return results


def assert_all_clean(name: str, results: list[Result]) -> None:
    bad = [r for r in results if not r.outcome.clean and not r.outcome.skipped]
    if bad:
        pytest.fail(
            f"{len(bad)} of {len(results)} {name} cases were not clean:\n{summary(results)}",
            pytrace=False,
        )


def test_mutated_gguf_headers_are_refused_in_one_sentence(
    tmp_path: Path, starter_model: Path
) -> None:
    results = run_family("gguf", tmp_path, starter_model)
    assert any(r.case.name.startswith("starter:") for r in results)
    assert_all_clean("gguf", results)


def test_terminal_injection_never_reaches_the_terminal(tmp_path: Path) -> None:
    assert_all_clean("terminal", run_family("terminal", tmp_path))


def test_hostile_model_folders_are_refused_in_one_sentence(tmp_path: Path) -> None:
    assert_all_clean("folders", run_family("folders", tmp_path))


def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    results = run_family("disk", tmp_path)
    if all(r.outcome.skipped for r in results):
        pytest.skip(results[0].outcome.reason)
    assert_all_clean("disk", results)


def test_signals_stop_jobs_cleanly_at_every_stage(tmp_path: Path) -> None:
    assert_all_clean("signals", run_family("signals", tmp_path))


def test_a_hostile_hub_writes_nothing_outside_the_cache(tmp_path: Path) -> None:
    assert_all_clean("hub", run_family("hub", tmp_path))


def test_hostile_chat_templates_are_refused_in_one_sentence(tmp_path: Path) -> None:
    assert_all_clean("templates", run_family("templates", tmp_path))
