"""Model facts: what a model is, read from headers only.

:func:`inspect_model` takes a GGUF file, a Hugging Face model folder, a bare
``config.json`` or a hub repo id (``org/name``) and returns one
:class:`ModelFacts`. It never reads tensor data and never downloads weights.
:func:`detect_source` is the one place that tells those four kinds of source
apart; the conversion pipeline and chat use it too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from quant.errors import ModelFileMissingError, ModelFormatError, NotGGUFError, QuantError
from quant.facts.model import (
    ModelFacts,
    RemoteFile,
    SourceKind,
    TensorInfo,
    TensorTypeSummary,
)
from quant.gguf.header import has_gguf_magic
from quant.untrusted import UntrustedValueError, hub_repo_id

logger = logging.getLogger(__name__)

__all__ = [
    "ModelFacts",
    "RemoteFile",
    "SourceKind",
    "TensorInfo",
    "TensorTypeSummary",
    "detect_source",
    "inspect_model",
    "looks_like_repo_id",
]

_FILE_SUFFIXES = (".gguf", ".json", ".safetensors", ".bin", ".pt", ".pth")


def looks_like_repo_id(text: str) -> bool:
    """True for ``org/name`` strings that are not spelled like a file path."""
    try:
        hub_repo_id(text)
    except UntrustedValueError:
        return False
    return not text.lower().endswith(_FILE_SUFFIXES)


def detect_source(source: str | Path, *, need_weights: bool = False) -> SourceKind:
    """What ``source`` names: a GGUF file, an HF model folder, a config.json or a hub repo id.

    Only the file system is looked at (a folder is an HF folder, a ``.json`` file a
    config, any other file a GGUF; a string that names nothing on disk and is spelled
    ``org/name`` a repo id); reading the model is the caller's next step.

    ``need_weights`` is for jobs that convert or quantize, which must start from
    weights: a file must be a GGUF by its name or its magic bytes (else
    :class:`~quant.errors.NotGGUFError`, which also refuses a bare config.json), and
    a folder must hold a config.json. That refusal and a source that names nothing
    are :class:`~quant.errors.QuantError` sentences saying what the job can start from.

    Otherwise raises :class:`~quant.errors.ModelFileMissingError` when ``source``
    names no file, folder or repo id, and :class:`~quant.errors.ModelFormatError`
    for a lone safetensors file (its config is in the folder).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if need_weights and not (path / "config.json").is_file():
            raise QuantError(
                f"{path}: a folder without config.json; pass a Hugging Face model folder."
            )
        return SourceKind.HF_FOLDER
    if path.is_file():
        suffix = path.suffix.lower()
        if need_weights:
            if suffix != ".gguf" and not _has_gguf_magic(path):
                raise NotGGUFError(
                    f"{path.name}: not a GGUF file; pass a .gguf, an HF folder or a repo id."
                )
            return SourceKind.GGUF
        if suffix == ".json":
            return SourceKind.CONFIG
        if suffix == ".safetensors":
            raise ModelFormatError(
                f"{path}: a single safetensors file has no config; inspect the folder that "
                "holds it and its config.json"
            )
        return SourceKind.GGUF
    if isinstance(source, str) and looks_like_repo_id(text):
        return SourceKind.HUB
    if need_weights and text.lower().endswith(".gguf"):
        raise QuantError(f"{text}: no such GGUF file; check the path.")
    message = f"{text}: no such file or folder, and not a hub repo id like 'google/gemma-3-270m'"
    if need_weights:
        raise QuantError(message)
    raise ModelFileMissingError(message)


def _has_gguf_magic(path: Path) -> bool:
    try:
        return has_gguf_magic(path)
    except OSError as exc:
        raise QuantError(f"{path.name}: cannot be read ({exc.strerror or exc})") from exc


def inspect_model(source: str | Path, *, offline: bool | None = None) -> ModelFacts:
    """Facts about ``source``: a GGUF file, an HF folder, a config.json or a hub repo id.

    Only headers are read: the GGUF metadata and tensor infos, config.json and
    the safetensors JSON headers. A hub repo id is looked up online (config.json
    and safetensors headers only); ``offline`` forces or forbids that lookup,
    and ``None`` follows ``HF_HUB_OFFLINE``.

    Raises :class:`~quant.errors.ModelFormatError` for unreadable or malformed
    input (:class:`~quant.errors.ModelFileMissingError` when ``source`` names
    nothing), :class:`~quant.errors.UnsupportedArchitectureError` for a config of
    an unknown family, and :class:`~quant.errors.HubError` when the hub cannot answer.
    """
    kind = detect_source(source)
    path = Path(str(source)).expanduser()
    if kind is SourceKind.HF_FOLDER:
        from quant.facts.hf_folder import inspect_hf_folder

        return inspect_hf_folder(path)
    if kind is SourceKind.CONFIG:
        from quant.facts.hf_folder import inspect_config_file

        return inspect_config_file(path)
    if kind is SourceKind.GGUF:
        from quant.facts.gguf import inspect_gguf

        return inspect_gguf(path)
    from quant.facts.hub import inspect_hub

    return inspect_hub(str(source), offline=offline)
