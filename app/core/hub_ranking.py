"""Which of a hub repo's GGUF files fits a machine: ``quantdesk pull REPO`` and the Hub tab.

The sequence: pick one complete model file of the repo, read its header through
byte-range requests (nothing is downloaded), and let the advisor rank every file
for the machine (:func:`app.core.hub.rank_files`). When there is no header to
read, or no machine yet, the files are still listed, without fit badges, and
``problem`` says why. Uses the network: call it off the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import AppError
from app.core.hub import (
    HubRepo,
    RankedFile,
    best_file,
    file_facts,
    rank_files,
    repo_files,
    representative_file,
)
from quant.errors import Cancelled, QuantError
from quant.facts.model import ModelFacts
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Task
from quant.progress import CancelToken, check_cancel

NO_GGUF = "this repo has no GGUF files that llama.cpp can run"
NO_COMPLETE_FILE = "none of its GGUF files is complete on the hub, so no header can be read"
NO_MACHINE = "fit badges appear once this machine is probed"


@dataclass(frozen=True)
class RepoRanking:
    """A repo's GGUF files, ranked for a machine when its header could be read."""

    repo: HubRepo
    #: Every model file: in the advisor's order with fit badges, or the repo's order
    #: without them (``option`` None) when ``problem`` says why not.
    files: list[RankedFile]
    #: The model's facts, when a header was read.
    facts: ModelFacts | None = None
    #: Why there are no fit badges (a sentence), or None.
    problem: str | None = None

    @property
    def best(self) -> RankedFile | None:
        """The recommended file; None when nothing fits or nothing was ranked."""
        return best_file(self.files)


def _unranked(repo: HubRepo, problem: str, facts: ModelFacts | None = None) -> RepoRanking:
    files = [RankedFile(f, None, i) for i, f in enumerate(repo.files, start=1)]
    return RepoRanking(repo, files, facts, problem)


def rank_repo(
    repo: HubRepo,
    profile: HardwareProfile | None,
    *,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    cancel: CancelToken | None = None,
) -> RepoRanking:
    """``repo``'s files with the advisor's fit badges on ``profile`` for ``task`` at ``ctx``.

    A header that cannot be read (a gated repo without a token, say) is not an
    error: the files come back unranked with the reason. Network failures other
    than the header's are raised.
    """
    if not repo.files:
        return _unranked(repo, NO_GGUF)
    chosen = representative_file(repo)
    if chosen is None:
        return _unranked(repo, NO_COMPLETE_FILE)
    check_cancel(cancel)
    try:
        facts = file_facts(repo.repo_id, chosen.filename, repo=repo)
    except Cancelled:
        raise
    except (QuantError, AppError) as exc:
        return _unranked(repo, str(exc))
    if profile is None:
        return _unranked(repo, NO_MACHINE, facts)
    ranked = rank_files(repo, facts, profile, task=task, ctx=ctx, cancel=cancel)
    return RepoRanking(repo, ranked, facts)


def fetch_and_rank(
    repo_id: str,
    profile: HardwareProfile | None,
    *,
    revision: str | None = None,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    cancel: CancelToken | None = None,
) -> RepoRanking:
    """Read ``repo_id``'s file list from the hub, then :func:`rank_repo`."""
    repo = repo_files(repo_id, revision=revision)
    check_cancel(cancel)
    return rank_repo(repo, profile, task=task, ctx=ctx, cancel=cancel)
