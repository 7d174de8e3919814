"""Model facts: what a model is, read from headers only.

:func:`inspect_model` takes a GGUF file, a Hugging Face model folder, a bare
``config.json`` or a hub repo id (``org/name``) and returns one
:class:`ModelFacts`. It never reads tensor data and never downloads weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from quant.errors import ModelFormatError
from quant.facts.model import (
    ModelFacts,
    RemoteFile,
    SourceKind,
    TensorInfo,
    TensorTypeSummary,
)
from quant.untrusted import UntrustedValueError, hub_repo_id

logger = logging.getLogger(__name__)

__all__ = [
    "ModelFacts",
    "RemoteFile",
    "SourceKind",
    "TensorInfo",
    "TensorTypeSummary",
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


def inspect_model(source: str | Path, *, offline: bool | None = None) -> ModelFacts:
    """Facts about ``source``: a GGUF file, an HF folder, a config.json or a hub repo id.

    Only headers are read: the GGUF metadata and tensor infos, config.json and
    the safetensors JSON headers. A hub repo id is looked up online (config.json
    and safetensors headers only); ``offline`` forces or forbids that lookup,
    and ``None`` follows ``HF_HUB_OFFLINE``.

    Raises :class:`~quant.errors.ModelFormatError` for unreadable or malformed
    input, :class:`~quant.errors.UnsupportedArchitectureError` for a config of an
    unknown family, and :class:`~quant.errors.HubError` when the hub cannot answer.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        from quant.facts.hf_folder import inspect_hf_folder

        return inspect_hf_folder(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            from quant.facts.hf_folder import inspect_config_file

            return inspect_config_file(path)
        if path.suffix.lower() == ".safetensors":
            raise ModelFormatError(
                f"{path}: a single safetensors file has no config; inspect the folder that "
                "holds it and its config.json"
            )
        from quant.facts.gguf import inspect_gguf

        return inspect_gguf(path)
    if isinstance(source, str) and looks_like_repo_id(text):
        from quant.facts.hub import inspect_hub

        return inspect_hub(text, offline=offline)
    raise ModelFormatError(
        f"{text}: no such file or folder, and not a hub repo id like 'google/gemma-3-270m'"
    )
