"""Facts from a Hugging Face model folder or a bare ``config.json``.

A folder's ``config.json`` gives the shapes; its safetensors headers (the
8-byte length and the JSON that follows, never the tensor data) give the exact
parameter count, tensor dtypes and sizes. Folders whose weights are only
pickles (``*.bin``, ``*.pt``, ``*.pth``) are described from the config alone:
unpickling can run arbitrary code, so Quantdesk never opens them.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from quant.errors import ModelFormatError
from quant.facts.config_params import facts_from_config
from quant.facts.model import ModelFacts, SourceKind, TensorInfo, TensorTypeSummary
from quant.safetensors.header import PICKLE_SUFFIXES, SafetensorsTensor, read_header
from quant.untrusted import UntrustedValueError, folder_file, read_json_file, terminal_text

logger = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 16 * 1024 * 1024

# Prefixes of tensors that belong to a vision or audio encoder, not the language model.
_ENCODER_PREFIXES = (
    "vision_tower.",
    "vision_model.",
    "multi_modal_projector.",
    "visual.",
    "mm_projector.",
    "audio_tower.",
    "model.vision_tower.",
    "model.vision_model.",
    "model.multi_modal_projector.",
    "model.visual.",
    "model.audio_tower.",
)
# Packed low-bit tensors whose element count is not the parameter count.
_PACKED_SUFFIXES = (".qweight", ".weight_packed", ".qzeros")
_PACKED_METHODS = {"gptq", "awq", "bitsandbytes", "aqlm", "hqq", "exl2", "quanto"}
# Names of expert weights in HF checkpoints (Mixtral, Qwen-MoE): "...experts.<n>...".
_EXPERT_RE = re.compile(r"(^|\.)experts\.")


def read_json(path: Path, what: str) -> Any:
    """A JSON file of a model folder, parsed within :func:`quant.untrusted.load_json`'s bounds."""
    try:
        return read_json_file(path, what=f"{path}: the {what}", max_bytes=MAX_CONFIG_BYTES)
    except UntrustedValueError as exc:
        raise ModelFormatError(str(exc)) from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def inspect_config_file(path: Path) -> ModelFacts:
    """Facts from a bare config.json: shapes only, the parameter count derived."""
    config = read_json(path, "config.json")
    name = str(config.get("_name_or_path") or "") if isinstance(config, dict) else ""
    facts = facts_from_config(
        config,
        source=str(path),
        kind=SourceKind.CONFIG,
        name=name or (path.parent.resolve().name if path.name == "config.json" else path.stem),
    )
    return replace(
        facts,
        notes=(
            *facts.notes,
            "Parameter count derived from the config's layer shapes; no weights were read",
        ),
    )


def _weight_files(folder: Path, notes: list[str]) -> tuple[list[Path], list[Path], bool]:
    """The safetensors shards to read, the pickle weight files, and whether shards are missing."""
    index = folder / "model.safetensors.index.json"
    shards: list[Path] = []
    if index.is_file():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise ModelFormatError(f"{index}: has no weight_map")
        names = sorted({str(v) for v in weight_map.values()})
        try:
            paths = [folder_file(folder, n, what=index.name) for n in names]
        except UntrustedValueError as exc:
            raise ModelFormatError(str(exc)) from None
        missing = [terminal_text(p.relative_to(folder), 100) for p in paths if not p.is_file()]
        if missing:
            notes.append(
                f"{len(missing)} of {len(names)} safetensors shards are missing "
                f"(first: {missing[0]}); the download is incomplete, so the parameter count "
                "is derived from config.json"
            )
            return [], [], True
        shards = paths
    else:
        found = sorted(folder.glob("*.safetensors"))
        # Mistral repos ship both "consolidated.safetensors" and "model-*.safetensors".
        preferred = [p for p in found if p.name.startswith("model")]
        shards = preferred or found
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    return shards, pickles, False


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace")
    for name in ("tokenizer_config.json", "chat_template.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = read_json(path, name)
        except ModelFormatError as exc:
            logger.warning("ignoring %s: %s", path, exc)
            continue
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, str) and template:
            return template
        if isinstance(template, list):  # [{"name": "default", "template": "..."}, ...]
            named = {
                str(t.get("name")): str(t.get("template"))
                for t in template
                if isinstance(t, dict) and t.get("template")
            }
            if named:
                return named.get("default") or next(iter(named.values()))
    return None


def _tokenizer_class(folder: Path) -> str | None:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path, "tokenizer_config.json")
    except ModelFormatError:
        return None
    value = data.get("tokenizer_class") if isinstance(data, dict) else None
    return str(value) if value else None


def _license(folder: Path) -> str | None:
    """The ``license:`` of the model card's front matter, if it has one."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    try:
        with readme.open(encoding="utf-8", errors="replace") as fh:
            head = fh.read(16384)
    except OSError:
        return None
    if not head.startswith("---"):
        return None
    front = head[3:].split("\n---", 1)[0]
    for line in front.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "license" and value.strip():
            return value.strip().strip("'\"")
    return None


def display_name(folder: Path) -> str:
    """``org/name`` for a folder in the HF cache (…/models--org--name/snapshots/<rev>)."""
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--") :].replace("--", "/")
    return folder.name


def summarize_tensors(
    tensors: Iterable[SafetensorsTensor], n_experts: int, n_used: int
) -> tuple[int, int, int, int, Counter[str]]:
    """Language-model and active parameters, their bytes, encoder parameters, bytes per dtype."""
    total = 0
    expert = 0
    n_bytes = 0
    encoder = 0
    dtype_bytes: Counter[str] = Counter()
    for t in tensors:
        n = t.n_elements
        if t.name.startswith(_ENCODER_PREFIXES):
            encoder += n
            continue
        total += n
        n_bytes += t.n_bytes
        dtype_bytes[t.dtype] += t.n_bytes
        if _EXPERT_RE.search(t.name):
            expert += n
    active = total
    if n_experts > 1 and expert:
        active = total - expert + expert * n_used // n_experts
    return total, active, n_bytes, encoder, dtype_bytes


def apply_safetensors(
    facts: ModelFacts,
    tensors: list[SafetensorsTensor],
    config: Mapping[str, Any],
    notes: list[str],
) -> ModelFacts:
    """Replace the config-derived counts in ``facts`` with exact ones from the headers."""
    quant = config.get("quantization_config")
    method = str(quant.get("quant_method", "")).lower() if isinstance(quant, Mapping) else ""
    packed = method in _PACKED_METHODS or any(t.name.endswith(_PACKED_SUFFIXES) for t in tensors)
    total, active, n_bytes, encoder, dtype_bytes = summarize_tensors(
        tensors, facts.n_experts, facts.n_experts_used
    )
    extra = dict(facts.extra)
    if encoder:
        extra["encoder_parameters"] = encoder
        notes.append(
            f"{encoder:,} parameters of the vision/audio encoder are not counted; llama.cpp "
            "keeps them in a separate projector file"
        )
    file_type = dtype_bytes.most_common(1)[0][0] if dtype_bytes else facts.file_type
    if method:
        file_type = method.upper()
        extra["quant_method"] = method
    tensor_infos = tuple(TensorInfo(t.name, t.shape, t.dtype, t.n_bytes) for t in tensors)
    groups: dict[str, list[int]] = {}
    for t in tensors:
        row = groups.setdefault(t.dtype, [0, 0, 0])
        row[0] += 1
        row[1] += t.n_elements
        row[2] += t.n_bytes
    type_summary = tuple(
        TensorTypeSummary(dtype, n, elems, size)
        for dtype, (n, elems, size) in sorted(groups.items(), key=lambda kv: -kv[1][2])
    )
    if packed:
        notes.append(
            f"The weights are packed {method or 'low-bit'} tensors; the parameter count is "
            "derived from config.json, not from the tensor shapes"
        )
        total, active = facts.parameters, facts.active_parameters or facts.parameters
    elif total == 0:
        notes.append("The safetensors files hold no tensors; counts are derived from config.json")
        total, active = facts.parameters, facts.active_parameters or facts.parameters
    else:
        derived = facts.parameters
        if derived and abs(derived - total) > 0.02 * total:
            notes.append(
                f"config.json implies {derived:,} parameters but the weights hold {total:,}; "
                "the weights' count is used"
            )
    return replace(
        facts,
        parameters=total,
        active_parameters=active if facts.is_moe else None,
        bits_per_weight=(8.0 * n_bytes / total) if total and not packed else None,
        file_type=file_type,
        tensors=tensor_infos,
        tensor_types=type_summary,
        extra=extra,
    )


def inspect_hf_folder(folder: Path) -> ModelFacts:
    """Facts from a Hugging Face model folder: config.json plus safetensors headers."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = (
            f"; it holds GGUF files, inspect one of them (e.g. {folder / ggufs[0]})"
            if ggufs
            else "; pass a Hugging Face model folder, a config.json or a .gguf file"
        )
        raise ModelFormatError(f"{folder}: the folder has no config.json{hint}")
    config = read_json(config_path, "config.json")
    facts = facts_from_config(
        config, source=str(folder), kind=SourceKind.HF_FOLDER, name=display_name(folder)
    )
    notes = list(facts.notes)
    shards, pickles, incomplete = _weight_files(folder, notes)
    headers = [read_header(p) for p in shards]
    tensors = [t for h in headers for t in h.tensors]
    if headers:
        facts = apply_safetensors(facts, tensors, config, notes)
        facts = replace(facts, file_size_bytes=sum(h.file_size for h in headers))
    elif pickles:
        notes.append(
            f"The weights are pickle files ({pickles[0].name}), which Quantdesk does not load "
            "because unpickling can run arbitrary code; the parameter count is derived from "
            "config.json. Use a safetensors copy of the model to convert it"
        )
        facts = replace(facts, file_size_bytes=sum(p.stat().st_size for p in pickles))
    elif not incomplete:
        notes.append("The folder holds no weights; the parameter count is derived from config.json")

    template = _chat_template(folder)
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
    return replace(
        facts,
        has_tokenizer=has_tokenizer,
        tokenizer_model=_tokenizer_class(folder) if has_tokenizer else None,
        has_chat_template=template is not None,
        chat_template=template,
        license=_license(folder),
        notes=tuple(notes),
    )
