"""Hugging Face safetensors folder → GGUF, checked before a byte is written.

Order of work: read ``config.json`` and identify the architecture; read every
shard's header (refusing pickles, missing or truncated shards); map each tensor
to its GGUF name and check its shape against the config; read the tokenizer;
check free disk; then stream the tensors into a temporary file that is renamed
to the output only when complete. Nothing from the model folder is executed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant.convert.architectures import (
    HParams,
    add_hparams,
    parameter_count,
    plan_tensors,
    read_hparams,
    size_label,
)
from quant.convert.errors import CheckpointError
from quant.convert.safetensors_io import Checkpoint, open_checkpoint
from quant.convert.tokenizer import Vocab, add_vocab, load_vocab, metadata_bytes
from quant.convert.writer import OutType, write_gguf
from quant.errors import QuantError
from quant.progress import CancelToken, Progress, ProgressCallback, check_cancel
from quant.untrusted import UntrustedValueError, read_json_file

logger = logging.getLogger(__name__)

# ggml's GGML_QNT_VERSION (ggml/include/ggml.h).
_QUANTIZATION_VERSION = 2


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion produced; ``as_dict`` is the CLI's ``--json`` form."""

    output: Path
    architecture: str  # llama.cpp architecture
    hf_architecture: str
    outtype: OutType
    n_tensors: int
    parameters: int
    active_parameters: int
    size_label: str
    file_bytes: int
    source_bytes: int
    seconds: float
    tokenizer: dict[str, object] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "output": str(self.output),
            "architecture": self.architecture,
            "hf_architecture": self.hf_architecture,
            "outtype": self.outtype.value,
            "n_tensors": self.n_tensors,
            "parameters": self.parameters,
            "active_parameters": self.active_parameters,
            "size_label": self.size_label,
            "file_bytes": self.file_bytes,
            "source_bytes": self.source_bytes,
            "seconds": round(self.seconds, 3),
            "tokenizer": dict(self.tokenizer),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class SourceInfo:
    """Descriptive metadata about where the checkpoint came from."""

    name: str
    repo_id: str | None
    license: str | None


def convert_hf(
    src_dir: str | Path,
    out_path: str | Path,
    *,
    outtype: str | OutType = "f16",
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert the Hugging Face model in ``src_dir`` to a GGUF at ``out_path``.

    An existing file at ``out_path`` is replaced only with ``overwrite=True``, and
    only if it is a ``.gguf`` outside the model folder: a mistyped output path
    must never destroy the user's files.

    ``outtype`` is ``f16``, ``bf16``, ``f32`` or ``q8_0``. ``out_path`` may be an
    existing folder, in which case the file is named after the model and type.
    Raises :class:`~quant.convert.errors.CheckpointError` (and its subclasses),
    :class:`~quant.errors.UnsupportedArchitectureError`,
    :class:`~quant.errors.InsufficientResourcesError` or
    :class:`~quant.errors.Cancelled`; in every case no output file is left.
    """
    started = time.monotonic()
    kind = _outtype(outtype)
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a folder; pass the folder holding config.json")

    def stage(name: str, message: str) -> None:
        check_cancel(cancel)
        if on_progress is not None:
            on_progress(Progress(stage=name, done=0, total=0, message=message))

    stage("check", "reading config.json")
    config = read_config(src)
    hp = read_hparams(config)
    stage("check", "reading safetensors headers")
    checkpoint = open_checkpoint(src)
    plans = plan_tensors(hp, checkpoint)
    stage("check", "reading the tokenizer")
    vocab = load_vocab(src, config, hp.vocab_size)
    source = source_info(src, config)
    name_warning = ""
    if _name_trips_phi3_quirk(source.name, vocab):
        name_warning = (
            f"the model name {source.name!r} was stored as {_spaced(source.name)!r}: llama.cpp "
            "applies Phi-3 token rules to names containing 'phi3'/'phi-3' and fails to load a "
            "vocabulary without Phi-3's </s>, <s>, <unk> and <|endoftext|> tokens"
        )
        source = SourceInfo(_spaced(source.name), source.repo_id, source.license)
    total, active, expert = parameter_count(plans, hp)
    label = size_label(total, expert, hp.n_expert)

    out = Path(out_path).expanduser()
    if out.is_dir():
        out = out / f"{_safe_name(source.name)}-{kind.value.upper()}.gguf"
    if out.resolve() in {p.resolve() for p in checkpoint.shards}:
        raise CheckpointError(f"{out} is one of the model's own shards; choose another output path")
    if out.suffix.lower() != ".gguf":
        raise CheckpointError(
            f"{out.name}: the output must be a .gguf file name (or an existing folder)"
        )
    if out.exists() and (not overwrite or out.resolve().is_relative_to(src.resolve())):
        raise CheckpointError(
            f"{out} already exists; choose another name"
            + ("" if out.resolve().is_relative_to(src.resolve()) else " or pass --force")
        )

    def add_metadata(writer: Any) -> None:
        _add_general(writer, source, kind, label)
        add_hparams(writer, hp)
        add_vocab(writer, vocab)

    logger.info(
        "converting %s (%s → %s, %d tensors, %s) to %s",
        src,
        hp.hf_architecture,
        hp.gguf_arch,
        len(plans),
        kind.value,
        out,
    )
    file_bytes = write_gguf(
        out,
        arch=hp.gguf_arch,
        add_metadata=add_metadata,
        metadata_bytes=metadata_bytes(vocab) + 65536,
        plans=plans,
        outtype=kind,
        on_progress=on_progress,
        cancel=cancel,
    )
    result = ConvertResult(
        output=out,
        architecture=hp.gguf_arch,
        hf_architecture=hp.hf_architecture,
        outtype=kind,
        n_tensors=len(plans),
        parameters=total,
        active_parameters=active,
        size_label=label,
        file_bytes=file_bytes,
        source_bytes=checkpoint.total_bytes,
        seconds=time.monotonic() - started,
        tokenizer=vocab.summary(),
        warnings=hp.warnings + vocab.warnings + ((name_warning,) if name_warning else ()),
    )
    for w in result.warnings:
        logger.warning("%s: %s", src.name, w)
    if on_progress is not None:
        read_bytes = sum(p.source_bytes for p in plans)
        on_progress(
            Progress(
                stage="done",
                done=len(plans),
                total=len(plans),
                message=str(out),
                bytes_done=read_bytes,
                bytes_total=read_bytes,
                eta_s=0.0,
            )
        )
    return result


def _outtype(value: str | OutType) -> OutType:
    try:
        return OutType.parse(value)
    except ValueError as exc:
        raise QuantError(f"{exc}; choose f16, bf16, f32 or q8_0") from None


def read_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{src} has no config.json, so the model's architecture is unknown; point to the "
            "folder of a Hugging Face model (with config.json, *.safetensors and tokenizer files)"
        )
    try:
        config = read_json_file(path, what="config.json")
    except (OSError, UntrustedValueError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); download it again") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object; download it again")
    return config


def source_info(src: Path, config: dict[str, Any]) -> SourceInfo:
    """Model name, hub repo id (from the HF cache layout) and licence (from the README)."""
    repo_id: str | None = None
    for part in src.resolve().parts:
        m = re.fullmatch(r"models--([^/]+?)--(.+)", part)
        if m:
            repo_id = f"{m.group(1)}/{m.group(2)}"
    name_or_path = config.get("_name_or_path")
    if (
        repo_id is None
        and isinstance(name_or_path, str)
        and re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path)
        and not Path(name_or_path).exists()
    ):
        repo_id = name_or_path
    name = repo_id.split("/")[-1] if repo_id else src.resolve().name
    return SourceInfo(name=name, repo_id=repo_id, license=_readme_license(src / "README.md"))


def _readme_license(readme: Path) -> str | None:
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    front = text[3 : end if end > 0 else len(text)]
    m = re.search(r"^license:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front, re.MULTILINE)
    return m.group(1).strip() if m else None


# llama.cpp (src/llama-vocab.cpp) looks the tokens below up by text when the model
# name contains "phi-3" or "phi3", and the load fails if one is missing.
_PHI3_NAME_TOKENS = ("</s>", "<unk>", "<s>", "<|endoftext|>")


def _name_trips_phi3_quirk(name: str, vocab: Vocab) -> bool:
    lowered = name.lower()
    if "phi-3" not in lowered and "phi3" not in lowered:
        return False
    have = set(vocab.tokens)
    return any(t not in have for t in _PHI3_NAME_TOKENS)


def _spaced(name: str) -> str:
    spaced = re.sub(r"[-_]+", " ", name)
    return re.sub(r"(?i)phi(\d)", r"Phi \1", spaced)


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "model"


def _add_general(writer: Any, source: SourceInfo, kind: OutType, label: str) -> None:
    writer.add_type("model")
    writer.add_name(source.name)
    writer.add_size_label(label)
    if source.license:
        writer.add_license(source.license)
    if source.repo_id:
        writer.add_source_repo_url(f"https://huggingface.co/{source.repo_id}")
    writer.add_file_type(kind.file_type)
    writer.add_quantization_version(_QUANTIZATION_VERSION)


__all__ = ["Checkpoint", "ConvertResult", "HParams", "OutType", "Vocab", "convert_hf"]
