"""The Hugging Face hub as the Hub tab and ``quantdesk search``/``pull`` see it.

- :func:`search_models` finds repos (GGUF ones by default) by text, sorted by
  downloads, likes or recency.
- :func:`repo_files` lists a repo's GGUF files: a split model
  (``NAME-00001-of-00003.gguf``) is one :class:`HubFile` with its parts and their
  total size, and multimodal projectors (``mmproj``) are kept apart.
- :func:`file_facts` reads one file's GGUF header with HTTP range requests (no
  weights are fetched) and :func:`rank_files` gives every file the advisor's fit
  badge, memory, speed and quality on a machine.
- :func:`find_serving_repos` finds pre-quantized FP8/AWQ/GPTQ/NVFP4/INT8 repos of
  a base model, for NVIDIA serving engines, with a ready ``vllm serve`` command.
- :func:`hub_status` says whether the hub can be reached, within a time limit.

Every request goes through huggingface_hub (its endpoint, token, offline switch
and HTTP session) with a timeout, and every failure is a
:class:`~quant.errors.HubError` with one sentence and a next step: offline mode,
no network, a gated repo without access, an unknown repo, a server error.
Searches are made one request per page, without huggingface_hub's automatic
retries (which wait up to half a minute on a failing hub), so a window shows an
offline hub at once. Downloads are in :mod:`app.core.downloads` and
:mod:`app.core.download_queue`; the access token in :mod:`app.core.hub_token`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from app.core.chat.settings import LoadPlan
from app.core.downloads import cached_hub_file
from app.core.hub_token import (
    TOKEN_REJECTED,
    TOKEN_SAVED,
    TokenRejectedError,
    forget_token,
    gated_errors,
    save_token,
    token_status,
)
from quant.errors import HubError, QuantError
from quant.facts import looks_like_repo_id
from quant.facts.hub import pick_gguf
from quant.facts.model import ModelFacts, RemoteFile
from quant.gguf.split import SplitName, is_projector, parse_split_name
from quant.gguf.types import file_type_from_filename
from quant.hardware.profile import HardwareProfile
from quant.hub.errors import hub_errors, is_offline, offline_error, transport_errors
from quant.hub.listing import RepoFile, commit_or_none, license_of, listed_files
from quant.plan.advisor import Fit, Option, OptionSource, Task, recommend
from quant.plan.formats import GpuFormat
from quant.plan.memory import KvType
from quant.progress import CancelToken, check_cancel
from quant.untrusted import (
    hub_revision,
    terminal_text,
)

__all__ = [
    "API_TIMEOUT_S",
    "MAX_SEARCH_LIMIT",
    "TOKEN_REJECTED",
    "TOKEN_SAVED",
    "FoundBy",
    "HubFile",
    "HubModel",
    "HubRepo",
    "HubSort",
    "HubStatus",
    "RankedFile",
    "ServingRepo",
    "TokenRejectedError",
    "best_file",
    "detect_serving_format",
    "file_facts",
    "find_serving_repos",
    "forget_token",
    "hub_status",
    "local_path",
    "rank_files",
    "repo_files",
    "representative_file",
    "save_token",
    "search_models",
    "serving_command",
    "token_status",
]

logger = logging.getLogger(__name__)

# Seconds one hub API request may take (connect, then each read).
API_TIMEOUT_S = 15.0
# Most models one search returns.
MAX_SEARCH_LIMIT = 100
# Candidates asked for per query when looking for pre-quantized repos.
_SERVING_CANDIDATES = 100
# Repos whose file sizes are asked for at once when listing serving repos.
_SIZE_WORKERS = 4
# Fields a search asks the hub for (huggingface_hub's ``expand`` names).
_SEARCH_FIELDS = (
    "downloads",
    "likes",
    "lastModified",
    "tags",
    "gated",
    "pipeline_tag",
    "library_name",
)


class HubSort(StrEnum):
    """How search results are ordered (most first)."""

    DOWNLOADS = "downloads"
    LIKES = "likes"
    RECENT = "recent"

    @property
    def api_key(self) -> str:
        """The hub API's name for this order."""
        return {"downloads": "downloads", "likes": "likes", "recent": "lastModified"}[self.value]


class FoundBy(StrEnum):
    """How a pre-quantized repo was found: the hub's ``base_model`` metadata, or its name."""

    BASE_MODEL = "base_model"
    NAME = "name"


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class HubModel:
    """One search result."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    last_modified: datetime | None = None
    tags: tuple[str, ...] = ()
    gated: bool = False
    pipeline_tag: str | None = None
    library: str | None = None
    base_model: str | None = None

    @property
    def has_gguf(self) -> bool:
        return "gguf" in self.tags or self.library == "gguf"

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "downloads": self.downloads,
            "likes": self.likes,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "tags": list(self.tags),
            "gated": self.gated,
            "pipeline_tag": self.pipeline_tag,
            "library": self.library,
            "base_model": self.base_model,
            "has_gguf": self.has_gguf,
        }


@dataclass(frozen=True)
class HubFile:
    """One GGUF model (or projector) of a repo, split into ``parts`` or not.

    ``filename`` is what llama.cpp opens and what a download asks for: the file
    itself, or the first part of a split model. ``size_bytes`` counts every part.
    ``missing_parts`` names the parts a split model's name promises but the repo
    lacks; such a file cannot be downloaded whole.
    """

    filename: str
    size_bytes: int
    quant_type: str | None
    parts: tuple[RepoFile, ...]
    sha256: str | None = None
    missing_parts: tuple[str, ...] = ()
    is_projector: bool = False

    @property
    def name(self) -> str:
        """The file name without its folder."""
        return PurePosixPath(self.filename).name

    @property
    def is_split(self) -> bool:
        return len(self.parts) + len(self.missing_parts) > 1

    @property
    def complete(self) -> bool:
        return not self.missing_parts

    @property
    def label(self) -> str:
        """The quantization to group by: llama.cpp's type, else what the name says."""
        if self.quant_type:
            return self.quant_type
        stem = PurePosixPath(self.parts[0].filename if self.parts else self.filename).stem
        split = parse_split_name(stem + ".gguf")
        if split is not None:
            stem = PurePosixPath(split.prefix).name
        m = _LABEL_GUESS.search(stem)
        return m.group(1).upper() if m else "other"

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "name": self.name,
            "size_bytes": self.size_bytes,
            "quant_type": self.quant_type,
            "label": self.label,
            "sha256": self.sha256,
            "parts": [p.to_dict() for p in self.parts],
            "missing_parts": list(self.missing_parts),
            "is_split": self.is_split,
            "is_projector": self.is_projector,
        }


# The quantization at the end of a GGUF name that llama.cpp does not define
# ("…-UD-Q4_K_XL", "…-Q4_K_XXS"), to group such files by.
_LABEL_GUESS = re.compile(r"(?i)[-_.]((?:UD-)?I?Q\d(?:_[A-Z0-9]+)*|B?F(?:P)?\d{2})$")


@dataclass(frozen=True)
class HubRepo:
    """A hub repo's GGUF files and what its metadata says about it."""

    repo_id: str
    sha: str | None
    revision: str | None
    files: tuple[HubFile, ...]
    projectors: tuple[HubFile, ...] = ()
    gated: bool = False
    license: str | None = None
    base_model: str | None = None
    tags: tuple[str, ...] = ()
    downloads: int = 0
    likes: int = 0
    last_modified: datetime | None = None
    pipeline_tag: str | None = None
    library: str | None = None
    safetensors_bytes: int = 0

    def file(self, name: str) -> HubFile | None:
        """The model or projector ``name`` refers to: its file name, a part's, or a bare name."""
        every = self.files + self.projectors
        for f in every:
            if name == f.filename or any(name == p.filename for p in f.parts):
                return f
        bare = [
            f
            for f in every
            if name == f.name or any(name == PurePosixPath(p.filename).name for p in f.parts)
        ]
        return bare[0] if len(bare) == 1 else None

    def by_quant_type(self) -> dict[str, tuple[HubFile, ...]]:
        """Model files grouped by :attr:`HubFile.label`, smallest group first."""
        groups: dict[str, list[HubFile]] = {}
        for f in self.files:
            groups.setdefault(f.label, []).append(f)
        ordered = sorted(groups.items(), key=lambda kv: min(f.size_bytes for f in kv[1]))
        return {label: tuple(files) for label, files in ordered}

    def remote_files(self) -> tuple[RemoteFile, ...]:
        """The complete model files as the advisor lists hub files (one per split model)."""
        return tuple(
            RemoteFile(f.filename, f.size_bytes, f.quant_type) for f in self.files if f.complete
        )

    def part_sizes(self) -> dict[str, int]:
        """Every GGUF file's size by name, parts of split models included."""
        return {p.filename: p.size_bytes for f in self.files + self.projectors for p in f.parts}

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "sha": self.sha,
            "revision": self.revision,
            "gated": self.gated,
            "license": self.license,
            "base_model": self.base_model,
            "tags": list(self.tags),
            "downloads": self.downloads,
            "likes": self.likes,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "pipeline_tag": self.pipeline_tag,
            "library": self.library,
            "safetensors_bytes": self.safetensors_bytes,
            "files": [f.to_dict() for f in self.files],
            "projectors": [f.to_dict() for f in self.projectors],
        }


@dataclass(frozen=True)
class RankedFile:
    """A repo's GGUF file with the advisor's verdict on this machine.

    ``option`` is None for a file the advisor cannot plan (a quantization
    llama.cpp does not name, or a split model with parts missing).
    """

    file: HubFile
    option: Option | None
    rank: int
    recommended: bool = False

    @property
    def fit(self) -> Fit | None:
        return self.option.fit if self.option else None

    @property
    def fits(self) -> bool:
        return self.option is not None and self.option.fits

    @property
    def fit_label(self) -> str:
        return self.option.fit.label if self.option else "unknown"

    @property
    def tokens_per_s(self) -> float | None:
        """Predicted generation speed (tokens per second)."""
        return self.option.speed.generation if self.option else None

    def to_dict(self) -> dict[str, Any]:
        o = self.option
        return {
            "rank": self.rank,
            "recommended": self.recommended,
            "file": self.file.to_dict(),
            "fit": o.fit.value if o else None,
            "fit_label": self.fit_label,
            "ram_bytes": o.ram_bytes if o else None,
            "vram_bytes": o.vram_bytes if o else None,
            "gpu_layers": o.gpu_layers if o else None,
            "tokens_per_s": o.speed.generation if o else None,
            "option": o.to_dict() if o else None,
        }


@dataclass(frozen=True)
class ServingRepo:
    """A pre-quantized repo for an NVIDIA serving engine, and how to serve it."""

    repo_id: str
    format: GpuFormat
    size_bytes: int | None
    found_by: FoundBy
    command: str
    quant_method: str | None = None
    downloads: int = 0
    likes: int = 0
    gated: bool = False
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "format": self.format.value,
            "size_bytes": self.size_bytes,
            "found_by": self.found_by.value,
            "command": self.command,
            "quant_method": self.quant_method,
            "downloads": self.downloads,
            "likes": self.likes,
            "gated": self.gated,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class HubStatus:
    """Whether the hub can be used now, and if not, why (one sentence)."""

    online: bool
    endpoint: str
    reason: str | None = None
    checked_in_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "endpoint": self.endpoint,
            "reason": self.reason,
            "checked_in_s": round(self.checked_in_s, 3),
        }


# --------------------------------------------------------------------------- errors


def _offline_error(what: str) -> HubError:
    return offline_error(
        what,
        "the models on this computer still work, and unsetting HF_HUB_OFFLINE brings the hub back",
    )


def _status_sentence(status: int | None, what: str) -> str:
    if status in (401, 403):
        return (
            f"the Hugging Face hub refused to {what} (HTTP {status}); check the access token "
            "('quantdesk pull --token TOKEN' or the Hub tab)"
        )
    if status == 429:
        return (
            f"the Hugging Face hub is limiting requests (HTTP 429) and did not {what}; "
            "wait a minute and try again"
        )
    if status is not None and status >= 500:
        return (
            f"the Hugging Face hub had a server error (HTTP {status}) when asked to {what}; "
            "try again in a few minutes"
        )
    return f"the Hugging Face hub answered HTTP {status or '?'} when asked to {what}; try again"


@contextlib.contextmanager
def _service_errors(what: str) -> Iterator[None]:
    """Failures of requests about no single repo (searches) as HubErrors."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except QuantError:
        raise
    except OfflineModeIsEnabled:
        raise _offline_error(what) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise HubError(_status_sentence(status, what)) from exc
    except transport_errors() as exc:
        raise HubError(
            f"cannot reach the Hugging Face hub to {what} ({exc}); check the network "
            "connection and try again"
        ) from exc
    except ValueError as exc:  # an answer that is not JSON
        raise HubError(
            f"the Hugging Face hub sent an unreadable answer when asked to {what}; try again later"
        ) from exc


@contextlib.contextmanager
def _repo_errors(repo_id: str, what: str) -> Iterator[None]:
    """Failures of requests about ``repo_id`` as HubErrors (gated: Quantdesk's wording)."""
    with (
        hub_errors(
            repo_id,
            what,
            offline=lambda: _offline_error(f"look up {repo_id} on the Hugging Face hub"),
            network_hint="check the network connection and try again",
        ),
        gated_errors(repo_id),
    ):
        yield


def _check_repo_id(repo_id: str) -> None:
    if not looks_like_repo_id(repo_id):
        raise HubError(
            f"{repo_id!r} is not a hub repo id; expected the form org/name, "
            "for example Qwen/Qwen2.5-7B-Instruct-GGUF"
        )


# --------------------------------------------------------------------------- metadata


def _tags(info: Any) -> tuple[str, ...]:
    return tuple(t for t in (getattr(info, "tags", None) or []) if isinstance(t, str))


def _base_model(info: Any) -> str | None:
    """The model this one derives from: its card's ``base_model``, else its tags."""
    card = getattr(info, "card_data", None)
    value = getattr(card, "base_model", None) if card is not None else None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list):
        found = [v for v in value if isinstance(v, str) and v]
        if found:
            return found[0]
    related: str | None = None
    for tag in _tags(info):
        if not tag.startswith("base_model:"):
            continue
        rest = tag.removeprefix("base_model:")
        relation, _, target = rest.partition(":")
        if not target:
            return rest  # "base_model:org/name"
        if related is None and relation in ("quantized", "finetune", "adapter", "merge"):
            related = target
    return related


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _hub_model(info: Any) -> HubModel:
    modified = getattr(info, "last_modified", None)
    return HubModel(
        repo_id=str(info.id),
        downloads=_int(getattr(info, "downloads", None)),
        likes=_int(getattr(info, "likes", None)),
        last_modified=modified if isinstance(modified, datetime) else None,
        tags=_tags(info),
        gated=bool(getattr(info, "gated", False)),
        pipeline_tag=_str(getattr(info, "pipeline_tag", None)),
        library=_str(getattr(info, "library_name", None)),
        base_model=_base_model(info),
    )


# --------------------------------------------------------------------------- search


def _list_models(
    params: list[tuple[str, str]], limit: int, what: str, cancel: CancelToken | None
) -> list[Any]:
    """``/api/models`` pages (huggingface_hub's ``ModelInfo`` each) up to ``limit`` models."""
    from huggingface_hub import constants, get_session, hf_raise_for_status
    from huggingface_hub.hf_api import ModelInfo
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    if is_offline():
        raise _offline_error(what)
    url: str | None = f"{constants.ENDPOINT}/api/models"
    query: Any = params
    found: list[Any] = []
    with _service_errors(what):
        while url is not None and len(found) < limit:
            check_cancel(cancel)
            r = get_session().get(
                url, params=query, headers=build_hf_headers(), timeout=API_TIMEOUT_S
            )
            hf_raise_for_status(r)
            page = r.json()
            if not isinstance(page, list):
                raise HubError(
                    f"the Hugging Face hub sent an unexpected answer when asked to {what}; "
                    "try again later"
                )
            for item in page:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    continue
                try:
                    found.append(ModelInfo(**item))  # type: ignore[no-untyped-call]
                except (TypeError, KeyError, ValueError):
                    logger.warning("skipping an unreadable search result: %r", item.get("id"))
            url = r.links.get("next", {}).get("url")
            query = None  # the next link carries the query
    return found[:limit]


def search_models(
    text: str,
    *,
    gguf_only: bool = True,
    sort: HubSort | str = HubSort.DOWNLOADS,
    limit: int = 30,
    cancel: CancelToken | None = None,
) -> list[HubModel]:
    """Hub models whose id contains ``text`` (all models when empty), most popular first.

    ``gguf_only`` keeps repos with GGUF files (the hub's ``gguf`` tag); ``sort`` is
    ``downloads``, ``likes`` or ``recent`` (last modified). Raises
    :class:`HubError` in offline mode (at once, without a request), and for network
    and server failures.
    """
    try:
        order = HubSort(sort)
    except ValueError:
        choices = ", ".join(s.value for s in HubSort)
        raise HubError(f"cannot sort search results by {sort!r}; choose {choices}") from None
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise HubError(f"a search lists 1 to {MAX_SEARCH_LIMIT} models, not {limit}")
    params: list[tuple[str, str]] = []
    if text.strip():
        params.append(("search", text.strip()))
    if gguf_only:
        params.append(("filter", "gguf"))
    params += [("sort", order.api_key), ("limit", str(limit))]
    params += [("expand", name) for name in _SEARCH_FIELDS]
    infos = _list_models(params, limit, "search for models", cancel)
    return [_hub_model(i) for i in infos]


# --------------------------------------------------------------------------- repo files


def _quant_type(filename: str) -> str | None:
    ftype = file_type_from_filename(filename)
    return ftype.name if ftype else None


def _group_gguf(table: dict[str, RepoFile]) -> list[HubFile]:
    """GGUF files as models: single files, and split parts joined into one."""
    singles: list[HubFile] = []
    splits: dict[SplitName, dict[int, RepoFile]] = {}
    for name, part in table.items():
        if not name.lower().endswith(".gguf"):
            continue
        split = parse_split_name(name)
        if split is None:
            singles.append(
                HubFile(
                    filename=name,
                    size_bytes=part.size_bytes,
                    quant_type=_quant_type(name),
                    parts=(part,),
                    sha256=part.sha256,
                    is_projector=is_projector(name),
                )
            )
            continue
        # Parts are grouped under the name of their first part, which stands for the model.
        splits.setdefault(replace(split, index=1), {})[split.index] = part
    for split, found in splits.items():
        expected = split.parts()
        parts = tuple(found[i] for i in range(1, split.count + 1) if i in found)
        missing = tuple(name for i, name in enumerate(expected, start=1) if i not in found)
        first = found.get(1)
        singles.append(
            HubFile(
                filename=expected[0],
                size_bytes=sum(p.size_bytes for p in parts),
                quant_type=_quant_type(expected[0]),
                parts=parts,
                sha256=first.sha256 if first else None,
                missing_parts=missing,
                is_projector=is_projector(expected[0]),
            )
        )
    return sorted(singles, key=lambda f: (f.size_bytes, f.filename))


def _safetensors_bytes(table: dict[str, RepoFile]) -> int:
    """Bytes of the top-level safetensors weights (``consolidated`` copies left out)."""
    top = [n for n in table if n.endswith(".safetensors") and "/" not in n]
    weights = [n for n in top if not n.startswith("consolidated")] or top
    return sum(table[n].size_bytes for n in weights)


def _hub_repo(info: Any, revision: str | None, repo_id: str) -> HubRepo:
    table = listed_files(info)
    grouped = _group_gguf(table)
    modified = getattr(info, "last_modified", None)
    return HubRepo(
        repo_id=repo_id,
        sha=commit_or_none(getattr(info, "sha", None)),
        revision=revision,
        files=tuple(f for f in grouped if not f.is_projector),
        projectors=tuple(f for f in grouped if f.is_projector),
        gated=bool(getattr(info, "gated", False)),
        license=license_of(info),
        base_model=_base_model(info),
        tags=_tags(info),
        downloads=_int(getattr(info, "downloads", None)),
        likes=_int(getattr(info, "likes", None)),
        last_modified=modified if isinstance(modified, datetime) else None,
        pipeline_tag=_str(getattr(info, "pipeline_tag", None)),
        library=_str(getattr(info, "library_name", None)),
        safetensors_bytes=_safetensors_bytes(table),
    )


def _model_info(repo_id: str, revision: str | None = None) -> Any:
    from huggingface_hub import HfApi

    if is_offline():
        raise _offline_error(f"look up {repo_id} on the Hugging Face hub")
    with _repo_errors(repo_id, "the repo's file list"):
        try:
            return HfApi().model_info(
                repo_id, revision=revision, files_metadata=True, timeout=API_TIMEOUT_S
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # huggingface_hub parses the answer (dates, file entries) as it builds it.
            raise HubError(
                f"{repo_id}: the hub's answer about the repo cannot be read "
                f"({terminal_text(exc, 120)}); check HF_ENDPOINT and try again later"
            ) from None


def repo_files(repo_id: str, *, revision: str | None = None) -> HubRepo:
    """The GGUF files of hub repo ``repo_id`` (one request), grouped, with sizes and checksums.

    Model files come smallest first; projector files (``mmproj``) are in
    :attr:`HubRepo.projectors`. Raises :class:`HubError` as every hub call does.
    """
    _check_repo_id(repo_id)
    if revision is not None:
        hub_revision(revision)
    return _hub_repo(_model_info(repo_id, revision), revision, repo_id)


def _require_file(repo: HubRepo, filename: str) -> HubFile:
    found = repo.file(filename)
    if found is not None:
        return found
    names = ", ".join(f.name for f in repo.files[:8]) or "none"
    more = f" and {len(repo.files) - 8} more" if len(repo.files) > 8 else ""
    raise HubError(
        f"{repo.repo_id}: no GGUF file named {filename}; its model files are {names}{more}"
    )


def local_path(repo: HubRepo, file: HubFile) -> Path | None:
    """The local copy of ``file`` in the HF cache when every part is there, else None.

    Asks nothing of the hub: it looks for the listed commit, then the revision.
    """
    for revision in dict.fromkeys([repo.sha, repo.revision]):
        paths = [cached_hub_file(repo.repo_id, p.filename, revision=revision) for p in file.parts]
        if file.complete and paths and all(p is not None for p in paths):
            return paths[0]
    return None


def representative_file(repo: HubRepo) -> HubFile | None:
    """A complete model file to read a header from: a common type, else the smallest."""
    chosen = pick_gguf(repo.remote_files())
    return repo.file(chosen.filename) if chosen is not None else None


def _check_access(repo: HubRepo, file: HubFile) -> None:
    """One HEAD request, so a gated repo's refusal is told in Quantdesk's words."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    rev = repo.sha or repo.revision or constants.DEFAULT_REVISION
    url = hf_hub_url(repo.repo_id, file.filename, revision=rev, endpoint=constants.ENDPOINT)
    with _repo_errors(repo.repo_id, file.filename):
        get_hf_file_metadata(url, timeout=API_TIMEOUT_S)


def file_facts(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    repo: HubRepo | None = None,
) -> ModelFacts:
    """Exact model facts from the GGUF header of ``filename`` on the hub; no weights fetched.

    The header is read with HTTP range requests (every part's, for a split
    model). ``repo`` (from :func:`repo_files`) saves listing the repo again. The
    facts' ``remote_files`` are the repo's complete model files, one per split
    model, ready for :func:`rank_files` or the advisor.
    """
    from quant.facts.hub import inspect_hub_gguf

    if repo is None:
        repo = repo_files(repo_id, revision=revision)
    file = _require_file(repo, filename)
    if not file.complete:
        raise HubError(
            f"{repo.repo_id}: {file.name} is a split model with parts missing from the repo "
            f"({', '.join(PurePosixPath(m).name for m in file.missing_parts)}); choose "
            "another file"
        )
    if is_offline():
        raise _offline_error(f"read {file.name} on the Hugging Face hub")
    if repo.gated:
        _check_access(repo, file)
    facts = inspect_hub_gguf(
        repo.repo_id, file.filename, repo.part_sizes(), revision=repo.sha or revision
    )
    return replace(facts, remote_files=repo.remote_files(), license=facts.license or repo.license)


# --------------------------------------------------------------------------- fit badges


def rank_files(
    repo: HubRepo,
    facts: ModelFacts,
    profile: HardwareProfile,
    *,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    cancel: CancelToken | None = None,
) -> list[RankedFile]:
    """Every model file of ``repo`` with the advisor's fit badge, memory, speed and quality.

    ``facts`` describe the model (from :func:`file_facts` on any of its files).
    The files come in the advisor's order for ``task`` at ``ctx`` tokens on
    ``profile``; the first one that fits is ``recommended``. Files the advisor
    cannot plan come last, without an option.
    """
    planned = replace(facts, remote_files=repo.remote_files())
    rec = recommend(
        planned, profile, task=task, ctx=ctx, kv_type=kv_type, include_gpu_formats=False,
        options=LoadPlan(kv_type=kv_type).runtime_options(), cancel=cancel,
    )  # fmt: skip
    options = {
        o.filename: o for o in rec.options if o.source is OptionSource.HUB_FILE and o.filename
    }
    planned_files = sorted(
        (f for f in repo.files if f.filename in options), key=lambda f: options[f.filename].rank
    )
    rest = [f for f in repo.files if f.filename not in options]
    best = next((f for f in planned_files if options[f.filename].fits), None)
    ranked = [
        RankedFile(f, options[f.filename], i, recommended=f is best)
        for i, f in enumerate(planned_files, start=1)
    ]
    ranked += [
        RankedFile(f, None, i, recommended=False) for i, f in enumerate(rest, start=len(ranked) + 1)
    ]
    return ranked


def best_file(ranked: Sequence[RankedFile]) -> RankedFile | None:
    """The recommended file of :func:`rank_files`' list; None when nothing fits."""
    return next((r for r in ranked if r.recommended), None)


# --------------------------------------------------------------------------- serving repos

# A format named in a repo's name or tags; NVFP4 before FP8 so "nvfp4" is not read as FP4/FP8.
_NAME_FORMATS: tuple[tuple[re.Pattern[str], GpuFormat], ...] = (
    (re.compile(r"nvfp4|(?<![a-z0-9])fp4(?![0-9])", re.I), GpuFormat.NVFP4),
    (re.compile(r"fp8|float8|f8[-_]?e4m3", re.I), GpuFormat.FP8),
    (re.compile(r"awq", re.I), GpuFormat.AWQ),
    (re.compile(r"gptq|w4a16|(?<![a-z0-9])int4(?![0-9])", re.I), GpuFormat.GPTQ),
    (re.compile(r"w8a8|(?<![a-z0-9])int8(?![0-9])", re.I), GpuFormat.INT8),
)
# Words a pre-quantized repo's name may add to its base model's name.
_QUANT_WORDS = frozenset({
    "fp8", "fp4", "nvfp4", "awq", "gptq", "int4", "int8", "w4a16", "w8a8", "w8a16",
    "dynamic", "static", "quantized", "quant", "marlin", "block", "e4m3", "float8",
    "compressed", "tensors", "channelwise", "perchannel", "sym", "asym",
})  # fmt: skip
# Words allowed before the base model's name in a pre-quantized repo's name.
_PREFIX_WORDS = 2
_QUANT_TOKEN = re.compile(r"\d+|g\d+|\d+g|v\d+(?:\.\d+)?|\d+bits?|w\d+a\d+|int\d+|fp\d+")


def _format_from_quant_config(qc: dict[str, Any]) -> GpuFormat | None:
    method = str(qc.get("quant_method") or "").lower()
    if method in ("fp8", "fbgemm_fp8"):
        return GpuFormat.FP8
    if method == "awq":
        return GpuFormat.AWQ
    if method == "gptq":
        return GpuFormat.GPTQ
    if method == "modelopt":
        algo = str(qc.get("quant_algo") or "").upper()
        return GpuFormat.NVFP4 if "FP4" in algo else GpuFormat.FP8 if "FP8" in algo else None
    if method == "compressed-tensors":
        fmt = str(qc.get("format") or "").lower()
        if "nvfp4" in fmt:
            return GpuFormat.NVFP4
        if fmt == "float-quantized":
            return GpuFormat.FP8
        if fmt == "int-quantized":
            return GpuFormat.INT8
        groups = qc.get("config_groups")
        for group in groups.values() if isinstance(groups, dict) else []:
            weights = group.get("weights") if isinstance(group, dict) else None
            if not isinstance(weights, dict):
                continue
            bits, kind = weights.get("num_bits"), str(weights.get("type") or "").lower()
            if bits == 8:
                return GpuFormat.FP8 if kind == "float" else GpuFormat.INT8
            if bits == 4:
                return GpuFormat.NVFP4 if kind == "float" else GpuFormat.GPTQ
        if fmt == "pack-quantized":
            return GpuFormat.GPTQ
    return None


def detect_serving_format(
    repo_id: str, tags: Sequence[str] = (), config: dict[str, Any] | None = None
) -> tuple[GpuFormat | None, str | None]:
    """The serving format of a repo and its ``quant_method``, from config, name or tags.

    ``config`` is the hub's summary of the repo's ``config.json``; its
    ``quantization_config`` is trusted first, then the repo's name, then its tags.
    """
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    method: str | None = None
    if isinstance(qc, dict):
        method = _str(qc.get("quant_method"))
        fmt = _format_from_quant_config(qc)
        if fmt is not None:
            return fmt, method
    name = repo_id.rsplit("/", 1)[-1]
    for text in (name, " ".join(tags)):
        for pattern, fmt in _NAME_FORMATS:
            if pattern.search(text):
                return fmt, method
    return None, method


def _named_after(base_name: str, repo_id: str) -> bool:
    """True when ``repo_id``'s name is ``base_name`` followed by quantization words only.

    A short prefix is allowed ("Meta-" in "Meta-Llama-3.1-8B-Instruct-AWQ-INT4"); a
    word after the base name that is not about quantization means another model
    (a fine-tune such as "…-abliterated-GPTQ").
    """
    name = repo_id.rsplit("/", 1)[-1].lower()
    base = base_name.lower()
    at = name.find(base)
    if at < 0:
        return False
    prefix = [w for w in re.split(r"[-_.\s]+", name[:at]) if w]
    suffix = [w for w in re.split(r"[-_.\s]+", name[at + len(base) :]) if w]
    return (
        len(prefix) <= _PREFIX_WORDS
        and bool(suffix)
        and all(w in _QUANT_WORDS or _QUANT_TOKEN.fullmatch(w) for w in suffix)
    )


def serving_command(
    repo_id: str, fmt: GpuFormat, *, ctx: int | None = None, tensor_parallel: int = 1
) -> str:
    """A ``vllm serve`` command line for a repo in ``fmt``.

    vLLM reads a pre-quantized checkpoint's scheme (FP8, AWQ, GPTQ, NVFP4,
    INT8) from its config and picks its kernels itself, so no ``--quantization``
    flag is given; a 16-bit checkpoint is served in BF16. ``tensor_parallel``
    above 1 splits the model over that many GPUs of the machine.
    """
    args = ["vllm", "serve", repo_id]
    if fmt is GpuFormat.BF16:
        args += ["--dtype", "bfloat16"]
    if ctx:
        args += ["--max-model-len", str(ctx)]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    return shlex.join(args)


def _serving_notes(fmt: GpuFormat, gated: bool) -> tuple[str, ...]:
    spec = fmt.spec
    notes: list[str] = []
    if spec.min_compute_capability is not None:
        major, minor = spec.min_compute_capability
        what = spec.description[:1].upper() + spec.description[1:]
        notes.append(f"{what}; needs an NVIDIA GPU of compute capability {major}.{minor} or newer.")
    if gated:
        notes.append("Gated: request access on its page and add an access token first.")
    return tuple(notes)


def _sizes(repo_ids: list[str], cancel: CancelToken | None) -> dict[str, tuple[int | None, bool]]:
    """Safetensors bytes and gated flag of each repo, asked in parallel; None when unknown."""

    def one(repo_id: str) -> tuple[int | None, bool]:
        check_cancel(cancel)
        try:
            info = _model_info(repo_id)
        except HubError as exc:
            logger.info("no size for %s: %s", repo_id, exc)
            return None, False
        table = listed_files(info)
        return _safetensors_bytes(table) or None, bool(getattr(info, "gated", False))

    if not repo_ids:
        return {}
    with ThreadPoolExecutor(max_workers=_SIZE_WORKERS, thread_name_prefix="hub-size") as pool:
        return dict(zip(repo_ids, pool.map(one, repo_ids), strict=True))


def find_serving_repos(
    base_repo_id: str,
    fmt: GpuFormat | None = None,
    *,
    limit: int = 20,
    ctx: int | None = None,
    tensor_parallel: int = 1,
    cancel: CancelToken | None = None,
) -> list[ServingRepo]:
    """Pre-quantized repos of ``base_repo_id`` for NVIDIA serving engines, most downloaded first.

    Found by the hub's metadata (repos whose ``base_model`` is a quantization of
    it) and by naming (``<base name>-FP8``, ``…-AWQ``, ``…-GPTQ-Int4``,
    ``…-NVFP4``, ``…-W8A8``). ``fmt`` keeps one format; GGUF repos are left out
    (:func:`repo_files` covers those). Each comes with its safetensors size and a
    ``vllm serve`` command (with ``--max-model-len ctx`` when ``ctx`` is given, and
    ``--tensor-parallel-size`` when ``tensor_parallel`` GPUs share the model).
    """
    _check_repo_id(base_repo_id)
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise HubError(f"a search lists 1 to {MAX_SEARCH_LIMIT} repos, not {limit}")
    what = f"look for pre-quantized versions of {base_repo_id}"
    fields = [("expand", f) for f in (*_SEARCH_FIELDS, "config")]
    common = [("sort", "downloads"), ("limit", str(_SERVING_CANDIDATES)), *fields]
    by_meta = _list_models(
        [("filter", f"base_model:quantized:{base_repo_id}"), *common],
        _SERVING_CANDIDATES,
        what,
        cancel,
    )
    base_name = base_repo_id.rsplit("/", 1)[-1]
    by_name = _list_models([("search", base_name), *common], _SERVING_CANDIDATES, what, cancel)

    found: dict[str, tuple[Any, FoundBy, GpuFormat, str | None]] = {}
    for infos, how in ((by_meta, FoundBy.BASE_MODEL), (by_name, FoundBy.NAME)):
        for info in infos:
            repo_id = str(info.id)
            if repo_id in found or repo_id.lower() == base_repo_id.lower():
                continue
            model = _hub_model(info)
            if model.has_gguf:
                continue
            if how is FoundBy.NAME and not _named_after(base_name, repo_id):
                continue
            config = getattr(info, "config", None)
            detected, method = detect_serving_format(
                repo_id, model.tags, config if isinstance(config, dict) else None
            )
            if detected is None or detected is GpuFormat.BF16:
                continue
            if fmt is not None and detected is not fmt:
                continue
            found[repo_id] = (info, how, detected, method)
    chosen = sorted(found.values(), key=lambda v: -_int(getattr(v[0], "downloads", None)))[:limit]
    sizes = _sizes([str(v[0].id) for v in chosen], cancel)
    out: list[ServingRepo] = []
    for info, how, detected, method in chosen:
        repo_id = str(info.id)
        size, gated_now = sizes.get(repo_id, (None, False))
        gated = gated_now or bool(getattr(info, "gated", False))
        out.append(
            ServingRepo(
                repo_id=repo_id,
                format=detected,
                size_bytes=size,
                found_by=how,
                command=serving_command(
                    repo_id, detected, ctx=ctx, tensor_parallel=tensor_parallel
                ),
                quant_method=method,
                downloads=_int(getattr(info, "downloads", None)),
                likes=_int(getattr(info, "likes", None)),
                gated=gated,
                notes=_serving_notes(detected, gated),
            )
        )
    return out


# --------------------------------------------------------------------------- status


def _is_timeout(exc: object) -> bool:
    """True for a timeout of the HTTP client huggingface_hub uses (or of the OS)."""
    if isinstance(exc, TimeoutError):
        return True
    for module in ("httpx2", "httpx"):
        cls = getattr(sys.modules.get(module), "TimeoutException", None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def hub_status(timeout_s: float = 3.0) -> HubStatus:
    """Whether the hub answers now; returns within about ``timeout_s`` seconds, never raises.

    Offline mode is reported without a request. Otherwise one small search
    request is made on a helper thread, so even a name lookup that hangs cannot
    hold the caller longer than ``timeout_s``.
    """
    from huggingface_hub import constants

    endpoint = str(constants.ENDPOINT)
    if constants.HF_HUB_OFFLINE:
        return HubStatus(
            False,
            endpoint,
            "Offline mode is on (HF_HUB_OFFLINE is set): the hub is not asked, and the "
            "models on this computer still work.",
        )
    started = time.monotonic()
    outcome: dict[str, Any] = {}

    def probe() -> None:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        try:
            r = get_session().get(
                f"{endpoint}/api/models",
                params={"limit": "1"},
                headers=build_hf_headers(),
                timeout=timeout_s,
            )
            outcome["status"] = r.status_code
        except Exception as exc:  # the probe's only job is to report what went wrong
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="hub-status", daemon=True)
    thread.start()
    thread.join(timeout_s)
    took = time.monotonic() - started
    error = outcome.get("error")
    if thread.is_alive() or _is_timeout(error):
        return HubStatus(
            False,
            endpoint,
            f"The Hugging Face hub ({endpoint}) did not answer within {timeout_s:g} s; "
            "check the network connection.",
            took,
        )
    if error is not None:
        return HubStatus(
            False,
            endpoint,
            f"Cannot reach the Hugging Face hub at {endpoint} ({error}); check the network "
            "connection.",
            took,
        )
    status = int(outcome.get("status", 0))
    if status >= 500:
        return HubStatus(
            False,
            endpoint,
            f"The Hugging Face hub answers with server errors (HTTP {status}); try again in "
            "a few minutes.",
            took,
        )
    return HubStatus(True, endpoint, None, took)
