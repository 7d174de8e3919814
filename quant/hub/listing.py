"""What a hub repo's listing says, read once for the engine and the app.

``HfApi.model_info`` answers with values from the network: file names, sizes,
checksums, the commit, the card's licence. :func:`listed_files` keeps the file
names that can become paths in the cache (:func:`quant.untrusted.repo_file_name`)
with their sizes and LFS checksums, :func:`commit_or_none` keeps a commit id only
when it has the shape of one, and :func:`license_of` reads the licence from the
model card or, failing that, the ``license:`` tag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeGuard

from quant.untrusted import UntrustedValueError, hub_commit, repo_file_name, terminal_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepoFile:
    """One file of a hub repo: its path in the repo, size and LFS SHA-256 (when listed)."""

    filename: str
    size_bytes: int
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "size_bytes": self.size_bytes, "sha256": self.sha256}


def usable_name(name: object) -> TypeGuard[str]:
    """A listed file name that can become a path in the cache; others are left out."""
    try:
        repo_file_name(name)
    except UntrustedValueError:
        logger.warning("the hub listed an unusable file name %s; left out", terminal_text(name))
        return False
    return True


def commit_or_none(value: object) -> str | None:
    """The repo's commit from a listing, when it is one (40 hex digits); else None."""
    try:
        return hub_commit(value)
    except UntrustedValueError:
        if value:
            logger.warning("the hub sent an invalid commit id %s; ignored", terminal_text(value))
        return None


def listed_files(info: Any) -> dict[str, RepoFile]:
    """The files of a ``model_info`` answer (``files_metadata=True``) by name, usable names only."""
    table: dict[str, RepoFile] = {}
    for s in getattr(info, "siblings", None) or []:
        name = getattr(s, "rfilename", None)
        if not usable_name(name):
            continue
        lfs = getattr(s, "lfs", None)
        size = getattr(s, "size", None)
        if not isinstance(size, int):
            size = getattr(lfs, "size", None) if lfs is not None else None
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        table[name] = RepoFile(
            name,
            size if isinstance(size, int) and not isinstance(size, bool) else 0,
            sha if isinstance(sha, str) else None,
        )
    return table


def license_of(info: Any) -> str | None:
    """The model card's licence, else the repo's ``license:`` tag; None when neither names one."""
    card = getattr(info, "card_data", None)
    value = getattr(card, "license", None) if card is not None else None
    if isinstance(value, str) and value:
        return value
    for tag in getattr(info, "tags", None) or []:
        if isinstance(tag, str) and tag.startswith("license:"):
            return tag.removeprefix("license:")
    return None
