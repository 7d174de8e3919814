"""Which of a hub repo's files fits: the ranking ``quantdesk pull`` and the Hub tab share."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from app.core.runtime import import_llama_first

import_llama_first()

import pytest  # noqa: E402

from app.core.commands import pull  # noqa: E402
from app.core.hub import repo_files  # noqa: E402
from app.core.hub_ranking import (  # noqa: E402
    NO_COMPLETE_FILE,
    NO_GGUF,
    NO_MACHINE,
    fetch_and_rank,
    rank_repo,
)
from app.core.profiles import save_profile  # noqa: E402
from quant.gguf.types import GGMLType  # noqa: E402
from quant.plan.advisor import Fit  # noqa: E402
from tests.fakehub import FakeHub, serve_fake_hub  # noqa: E402
from tests.test_hub_cli import REPO, tiny_gguf  # noqa: E402
from tests.ui.conftest import make_profile  # noqa: E402

LAPTOP = make_profile()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, tmp_path / "hf-cache") as fake:
        fake.repos[REPO] = {
            "Tiny-Q4_K_M.gguf": tiny_gguf(tmp_path / "q4.gguf", GGMLType.Q4_K),
            "Tiny-Q8_0.gguf": tiny_gguf(tmp_path / "q8.gguf", GGMLType.Q8_0),
            "Tiny-F16.gguf": tiny_gguf(tmp_path / "f16.gguf", GGMLType.F16),
            "README.md": b"# tiny",
        }
        yield fake


def test_every_file_is_ranked_for_the_machine(hub: FakeHub) -> None:
    ranking = fetch_and_rank(REPO, LAPTOP)
    assert ranking.problem is None
    assert ranking.facts is not None and ranking.facts.architecture == "llama"
    assert sorted(r.file.name for r in ranking.files) == [
        "Tiny-F16.gguf",
        "Tiny-Q4_K_M.gguf",
        "Tiny-Q8_0.gguf",
    ]
    assert [r.rank for r in ranking.files] == [1, 2, 3]
    assert all(r.option is not None and r.fit is Fit.CPU for r in ranking.files)
    best = ranking.best
    assert best is not None and best.recommended
    assert [r for r in ranking.files if r.recommended] == [best]
    # Only headers were read.
    assert hub.downloads(".gguf") and all(r[2] for r in hub.downloads(".gguf"))


def test_an_unreadable_header_lists_the_files_with_the_reason(hub: FakeHub) -> None:
    hub.info[REPO] = {"gated": "manual"}
    ranking = fetch_and_rank(REPO, LAPTOP)
    assert ranking.problem is not None
    assert ranking.problem.startswith(f"{REPO} is a gated model: request access on its page")
    assert len(ranking.files) == 3 and all(r.option is None for r in ranking.files)
    assert ranking.best is None and ranking.facts is None


def test_without_a_machine_the_facts_are_read_but_not_ranked(hub: FakeHub) -> None:
    ranking = fetch_and_rank(REPO, None)
    assert ranking.problem == NO_MACHINE
    assert ranking.facts is not None and ranking.facts.architecture == "llama"
    assert all(r.option is None for r in ranking.files)


def test_repos_without_a_usable_file(hub: FakeHub, tmp_path: Path) -> None:
    hub.repos["acme/Docs-Only"] = {"README.md": b"# nothing to run"}
    hub.repos["acme/Half-GGUF"] = {
        "Big-Q4_K_M-00001-of-00002.gguf": tiny_gguf(tmp_path / "p1.gguf", GGMLType.Q4_K),
    }
    empty = fetch_and_rank("acme/Docs-Only", LAPTOP)
    assert (empty.files, empty.problem) == ([], NO_GGUF)
    half = fetch_and_rank("acme/Half-GGUF", LAPTOP)
    assert half.problem == NO_COMPLETE_FILE
    assert [r.option for r in half.files] == [None]


def test_the_cli_ranks_the_same_way(hub: FakeHub, tmp_path: Path) -> None:
    laptop = save_profile(LAPTOP, tmp_path / "laptop")
    repo = repo_files(REPO)
    args = argparse.Namespace(hardware=str(laptop), task="chat", ctx=None)
    files, problem = pull._rank(repo, args)
    shared = rank_repo(repo, LAPTOP)
    assert problem is None
    assert [(r.file.filename, r.rank, r.recommended) for r in files] == [
        (r.file.filename, r.rank, r.recommended) for r in shared.files
    ]
