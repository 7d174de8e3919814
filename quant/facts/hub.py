"""Facts about a Hugging Face hub repo without downloading its weights.

What is fetched: the repo's file list with sizes (``model_info``), its
``config.json`` (into the standard HF cache), the safetensors JSON headers (byte
ranges of each shard), and, for repos that hold only GGUF files, the GGUF header
of one of them through HTTP range requests. GGUF files are listed with their
sizes and the file type their names announce, for the format advisor.

Offline mode (``HF_HUB_OFFLINE=1`` or ``offline=True``) and network failures
raise :class:`~quant.errors.HubError` with a sentence and a next step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from quant.errors import HubError, ModelFormatError, UnsupportedArchitectureError
from quant.facts.config_params import facts_from_config
from quant.facts.gguf import facts_from_gguf
from quant.facts.hf_folder import apply_safetensors, read_json
from quant.facts.model import ModelFacts, RemoteFile, SourceKind
from quant.gguf.header import TensorTable, read_gguf_header_from
from quant.gguf.split import is_first_or_whole, is_projector, parse_split_name
from quant.gguf.types import LlamaFileType, file_type_from_filename
from quant.hub.errors import hub_errors, is_offline, offline_error
from quant.hub.listing import commit_or_none, license_of, listed_files
from quant.safetensors.header import PICKLE_SUFFIXES, SafetensorsTensor, read_header_from
from quant.untrusted import short_text

logger = logging.getLogger(__name__)

# Bytes fetched per range request when reading a remote GGUF header.
_REMOTE_WINDOW = 4 * 1024 * 1024
_TIMEOUT_S = 30.0
# GGUF types most worth describing, in order, when a repo holds several.
PREFERRED_GGUF = (LlamaFileType.Q4_K_M, LlamaFileType.Q8_0, LlamaFileType.F16)


def _cached_folder(repo_id: str) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the HF cache, if config.json is there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a damaged cache must not hide the real error
        logger.debug("HF cache lookup for %s failed", repo_id, exc_info=True)
        return None
    return Path(found).parent if isinstance(found, str) else None


def _offline_error(repo_id: str) -> HubError:
    cached = _cached_folder(repo_id)
    hint = (
        f"a downloaded copy is in {cached}, inspect that folder instead"
        if cached
        else "go online or pass the path of a downloaded copy"
    )
    return offline_error("ask the Hugging Face hub", hint, repo_id=repo_id)


def _hub_errors(repo_id: str, what: str) -> AbstractContextManager[None]:
    return hub_errors(
        repo_id,
        what,
        offline=lambda: _offline_error(repo_id),
        network_hint="check the network connection or pass the path of a downloaded copy",
    )


class _RemoteFile:
    """Just enough of a binary file over HTTP range requests for the GGUF reader."""

    def __init__(self, repo_id: str, filename: str, size: int, revision: str | None) -> None:
        from huggingface_hub import constants, hf_hub_url

        self.repo_id = repo_id
        self.filename = filename
        self.size = size
        self._pos = 0
        self._url = hf_hub_url(repo_id, filename, revision=revision, endpoint=constants.ENDPOINT)

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self.size + pos if whence == 2 else self._pos + pos)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        from huggingface_hub import get_session, hf_raise_for_status
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        end = self.size if n < 0 else min(self.size, self._pos + n)
        if end <= self._pos:
            return b""
        want = end - self._pos
        headers = {**build_hf_headers(), "Range": f"bytes={self._pos}-{end - 1}"}
        chunks: list[bytes] = []
        got = 0
        with (
            _hub_errors(self.repo_id, self.filename),
            get_session().stream("GET", self._url, headers=headers, timeout=_TIMEOUT_S) as r,
        ):
            hf_raise_for_status(r)
            if r.status_code != 206 and self._pos != 0:
                raise HubError(
                    f"{self.repo_id}: the hub ignored a byte-range request for "
                    f"{self.filename}; try again later"
                )
            for chunk in r.iter_bytes():
                chunks.append(chunk)
                got += len(chunk)
                if got >= want:
                    break
        data = b"".join(chunks)[:want]
        self._pos += len(data)
        return data


def _remote_ggufs(files: dict[str, int]) -> tuple[RemoteFile, ...]:
    out = []
    for name, size in sorted(files.items()):
        if name.lower().endswith(".gguf"):
            ftype = file_type_from_filename(name)
            out.append(RemoteFile(name, size, ftype.name if ftype else None))
    return tuple(out)


def pick_gguf(files: Sequence[RemoteFile]) -> RemoteFile | None:
    """The GGUF to describe a repo by: a model (not a projector, not a later split part)
    of a common type (:data:`PREFERRED_GGUF`, in order), else the smallest."""
    candidates = [
        r for r in files if not is_projector(r.filename) and is_first_or_whole(r.filename)
    ]
    for ftype in PREFERRED_GGUF:
        for r in candidates:
            if r.file_type == ftype.name:
                return r
    return min(candidates, key=lambda r: r.size_bytes) if candidates else None


def _gguf_repo_facts(
    repo_id: str, files: dict[str, int], chosen: RemoteFile, revision: str | None
) -> ModelFacts:
    def header_of(filename: str) -> Any:
        remote = _RemoteFile(repo_id, filename, files.get(filename, 0), revision)
        return read_gguf_header_from(remote, remote.size, Path(filename), window=_REMOTE_WINDOW)

    header = header_of(chosen.filename)
    more: list[TensorTable] = []
    size = header.file_size
    notes: list[str] = [f"Header read from {chosen.filename} on the hub"]
    split = parse_split_name(chosen.filename)
    if split is not None and split.index == 1:
        for sibling in split.parts()[1:]:
            if sibling in files:
                other = header_of(sibling)
                more.append(other.table)
                size += other.file_size
    return facts_from_gguf(
        header,
        source=repo_id,
        kind=SourceKind.HUB,
        more=tuple(more),
        notes=tuple(notes),
        file_size=size,
    )


def inspect_hub_gguf(
    repo_id: str,
    filename: str,
    sizes: Mapping[str, int],
    *,
    revision: str | None = None,
    offline: bool | None = None,
) -> ModelFacts:
    """Facts from the header of one GGUF file of hub repo ``repo_id``, by HTTP range requests.

    ``filename`` is the file (the first part of a split model, whose other parts'
    tensors are read too); ``sizes`` maps the repo's file names to their sizes, as
    its file list gives them. No tensor data is fetched. ``remote_files`` lists the
    repo's GGUF files from ``sizes``.
    """
    if offline if offline is not None else is_offline():
        raise _offline_error(repo_id)
    files = dict(sizes)
    if filename not in files:
        raise HubError(f"{repo_id}: {filename} is not in the repo's file list")
    ftype = file_type_from_filename(filename)
    chosen = RemoteFile(filename, files[filename], ftype.name if ftype else None)
    facts = _gguf_repo_facts(repo_id, files, chosen, revision)
    return replace(facts, name=repo_id, remote_files=_remote_ggufs(files))


_INDEX = "model.safetensors.index.json"


def _safetensors_tensors(
    repo_id: str, files: dict[str, int], revision: str | None
) -> list[SafetensorsTensor]:
    """The tensors of the repo's safetensors weights, from each shard's header by byte ranges.

    The shards are ``model.safetensors``, else those the index names, else every
    top-level ``*.safetensors`` file (Mistral's ``consolidated`` copies left out
    when others exist).
    """
    from huggingface_hub import hf_hub_download

    if "model.safetensors" in files:
        names = ["model.safetensors"]
    elif _INDEX in files:
        with _hub_errors(repo_id, _INDEX):
            index = read_json(Path(hf_hub_download(repo_id, _INDEX, revision=revision)), _INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise ModelFormatError(f"{repo_id}: {_INDEX} has no weight_map")
        names = sorted({str(v) for v in weight_map.values()})
        missing = [n for n in names if n not in files]
        if missing:
            raise ModelFormatError(
                f"{repo_id}: {_INDEX} names {short_text(missing[0], 80)!r}, which the repo "
                "does not have"
            )
    else:
        found = [n for n in files if n.endswith(".safetensors") and "/" not in n]
        names = [n for n in found if not n.startswith("consolidated")] or found
    tensors: list[SafetensorsTensor] = []
    for name in names:
        remote = _RemoteFile(repo_id, name, files[name], revision)
        try:
            header = read_header_from(remote, remote.size, Path(name))
        except ModelFormatError as exc:
            raise ModelFormatError(f"{repo_id}: {exc}") from None
        tensors.extend(header.tensors)
    return tensors


def inspect_hub(
    repo_id: str, *, revision: str | None = None, offline: bool | None = None
) -> ModelFacts:
    """Facts about hub repo ``repo_id`` from its file list and headers; no weights are fetched."""
    if offline if offline is not None else is_offline():
        raise _offline_error(repo_id)
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    with _hub_errors(repo_id, "the repo's file list"):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    sha = commit_or_none(info.sha) or revision
    files = {name: f.size_bytes for name, f in listed_files(info).items()}
    remote = _remote_ggufs(files)

    chosen = pick_gguf(remote)

    def from_gguf() -> ModelFacts:
        if chosen is None:
            raise HubError(
                f"{repo_id}: the repo has neither a config.json nor a GGUF model file, so "
                "Quantdesk cannot describe it"
            )
        facts = _gguf_repo_facts(repo_id, files, chosen, sha)
        return replace(
            facts, name=repo_id, remote_files=remote, license=facts.license or license_of(info)
        )

    if "config.json" not in files:
        return from_gguf()

    with _hub_errors(repo_id, "config.json"):
        # The requested revision (default: main), so the cache records it for offline use.
        config_path = Path(hf_hub_download(repo_id, "config.json", revision=revision))
    config = read_json(config_path, "config.json")
    try:
        facts = facts_from_config(config, source=repo_id, kind=SourceKind.HUB, name=repo_id)
    except UnsupportedArchitectureError:
        if chosen is None:
            raise
        return from_gguf()  # llama.cpp may know the architecture even when Quantdesk does not
    notes = list(facts.notes)

    # Weights at the top of the repo; sub-folders hold other components.
    top = [n for n in files if "/" not in n]
    safetensors = [n for n in top if n.endswith(".safetensors")]
    pickles = [n for n in top if n.endswith(PICKLE_SUFFIXES)]
    if safetensors:
        tensors = _safetensors_tensors(repo_id, files, sha)
        facts = apply_safetensors(facts, tensors, config, notes)
        shard_names = {n for n in safetensors if not n.startswith("consolidated")} or set(
            safetensors
        )
        facts = replace(facts, file_size_bytes=sum(files[n] for n in shard_names))
    elif pickles:
        notes.append(
            f"The weights are pickle files ({pickles[0]}), which Quantdesk does not load "
            "because unpickling can run arbitrary code; the parameter count is derived from "
            "config.json"
        )
        facts = replace(facts, file_size_bytes=sum(files[n] for n in pickles))
    else:
        notes.append(
            "The repo holds no safetensors weights; the parameter count is derived from config.json"
        )

    hub_config = info.config if isinstance(info.config, dict) else {}
    tok_config = hub_config.get("tokenizer_config")
    template = tok_config.get("chat_template") if isinstance(tok_config, dict) else None
    has_template = bool(template) or "chat_template.jinja" in files
    return replace(
        facts,
        has_tokenizer="tokenizer.json" in files or "tokenizer.model" in files,
        has_chat_template=has_template,
        chat_template=template if isinstance(template, str) else None,
        license=license_of(info),
        remote_files=remote,
        notes=tuple(notes),
    )
