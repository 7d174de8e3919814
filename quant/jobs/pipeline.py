"""One job from a model to calibrated, quantized, measured GGUF files.

``run_pipeline(spec)`` takes a source (an HF folder, a hub repo id, or an
F16/BF16/F32/Q8_0 GGUF) and target types, and runs these stages:

1. **prepare**: download (hub id, resumable, into the standard HF cache) and
   convert to F16 GGUF (HF input, through :func:`quant.convert.convert_hf`);
   a GGUF input is used in place. Free disk space is checked for every output
   (sizes from llama.cpp's dry run) before anything is written.
2. **imatrix**: collected on the calibration text, cached under the app cache
   by model fingerprint + calibration hash (skipped for ``imatrix="none"``,
   loaded for a file).
3. **quantize T** for each type, with llama.cpp's mixes.
4. **evaluate T** for each type against the reference model's logits on the
   held-out text (reference computed once, cached).
5. **report**: ``<name>-report.json`` and a Markdown model card.

With a size budget (``spec.budget``) the job also makes a *Quantdesk mix*
(:mod:`quant.jobs.mix`): the stock types whose sizes bracket the budget are
added to the types, a **search** stage measures what each tensor's type would
cost and chooses one per tensor within the budget, **quantize mix** writes it,
and **evaluate mix** measures it on the held-out text next to those stock
types. A mix that does not beat the stock type that fits the same budget is
removed again and the report says so: a worse file is never kept.

Every stage's result is reused on a rerun: the imatrix and reference from the
cache, quantized files when their recorded source and imatrix match, and
evaluations from the cache. Outputs appear whole or not at all; a job that
runs in a child process (``python -m quant pipeline``) is cancelled by ending
that process, and the files it was writing are listed through ``on_event``
("writing") so the parent can remove them if the child is killed outright.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant.atomic import atomic_write_text, partial_of, writing
from quant.errors import HubError, InsufficientResourcesError, QuantError
from quant.facts import SourceKind, detect_source
from quant.gguf.types import GGMLType, LlamaFileType
from quant.jobs.calibration import (
    CalibrationSet,
    Split,
    default_mix,
    from_path,
    self_generated,
)
from quant.jobs.quantize import QuantizeOptions
from quant.progress import CancelToken, Progress, ProgressCallback, check_cancel
from quant.units import human_bytes

if TYPE_CHECKING:
    from quant.gguf.header import GGUFHeader
    from quant.jobs.mix import SearchSettings

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
"""(event name, data): "stages", "writing", "written", "stage_done"."""

REPORT_VERSION = 1
# Types for which an importance matrix changes nothing (llama.cpp ignores it).
_NO_IMATRIX_TYPES = {LlamaFileType.F32, LlamaFileType.F16, LlamaFileType.BF16, LlamaFileType.Q8_0}
_BASE_TYPES = {GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0}
_DISK_MARGIN = 64 * 2**20

# Keys Quantdesk writes into each quantized file, to recognise its own outputs on a rerun.
KEY_SOURCE = "quantdesk.source_fingerprint"
KEY_IMATRIX = "quantdesk.imatrix_key"
KEY_CALIBRATION = "quantdesk.calibration"
KEY_OPTIONS = "quantdesk.options"


def _ggml_type(name: str | None) -> GGMLType | None:
    if not name:
        return None
    try:
        return GGMLType.from_name(name)
    except ValueError:
        raise QuantError(
            f"unknown tensor type {name!r}; use a ggml type such as Q8_0 or F16."
        ) from None


class ImatrixMode(StrEnum):
    AUTO = "auto"
    NONE = "none"
    FILE = "file"


def _quantized_types(info: GGUFHeader) -> list[str]:
    """Matrix tensor types that are neither full precision nor Q8_0."""
    return sorted(
        {t.type.name for t in info.tensors if len(t.shape) > 1 and t.type not in _BASE_TYPES}
    )


@dataclass(frozen=True)
class JobSpec:
    """Everything a conversion job needs; JSON-serialisable for the child process."""

    source: str
    types: tuple[LlamaFileType, ...]
    imatrix: str = "auto"  # "auto" | "none" | path to an imatrix file
    calibration: str | None = None  # None: default mix | "self" | file or folder
    eval_text: str | None = None  # None: held-out mix | file | "none" to skip evaluation
    out_dir: str | None = None
    cache_dir: str | None = None
    imatrix_chunk_size: int = 512
    imatrix_chunks: int | None = 128
    eval_chunk_size: int = 512
    eval_chunks: int | None = 16
    self_tokens: int = 8192
    threads: int | None = None
    revision: str | None = None  # hub revision
    # ggml type names ("Q8_0", "F16") for output.weight / token_embd.weight; None: llama.cpp's mix
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    # Accept an already-quantized GGUF by expanding it to F16 first. The new types
    # then carry the earlier loss too, and the quality measured is against the
    # expanded file, not the original full-precision model.
    requantize: bool = False
    # A size budget ("3.2GB", "4.25bpw", bytes): also search a Quantdesk mix for it.
    budget: str | None = None
    # Types whose bytes count twice against the budget (a memory budget on a CPU
    # that keeps repacked copies of them; see quant.plan.memory.repacked_types).
    budget_repacked: tuple[str, ...] = ()
    # The search's measurements (quant.jobs.mix.SearchSettings).
    search_rows: int = 256
    search_chunks: int = 2
    search_calibrate: bool = True

    def quantize_options(
        self, file_type: LlamaFileType, metadata: dict[str, str | int | float | bool] | None = None
    ) -> QuantizeOptions:
        """The options every output of this job is quantized with."""
        return QuantizeOptions(
            file_type,
            output_tensor_type=_ggml_type(self.output_tensor_type),
            token_embedding_type=_ggml_type(self.token_embedding_type),
            threads=self.threads,
            metadata=dict(metadata or {}),
        )

    @property
    def options_key(self) -> str:
        """What besides the type and imatrix decides an output's content."""
        return f"output={self.output_tensor_type or '-'},embd={self.token_embedding_type or '-'}"

    @property
    def imatrix_mode(self) -> ImatrixMode:
        if self.imatrix == "auto":
            return ImatrixMode.AUTO
        if self.imatrix == "none":
            return ImatrixMode.NONE
        return ImatrixMode.FILE

    @property
    def evaluates(self) -> bool:
        return self.eval_text != "none"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["types"] = [t.name for t in self.types]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        from quant.jobs.quantize import parse_file_type

        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["types"] = tuple(parse_file_type(str(t)) for t in data.get("types", ()))
        fields["budget_repacked"] = tuple(str(t) for t in data.get("budget_repacked", ()))
        return cls(**fields)

    def search_settings(self) -> SearchSettings:
        from quant.jobs.mix import SearchSettings

        return SearchSettings(
            rows=self.search_rows,
            chunk_size=self.imatrix_chunk_size,
            chunks=self.search_chunks,
            threads=self.threads,
            calibrate=self.search_calibrate,
        )


MIX = "MIX"
"""The ``type`` of a Quantdesk mix in a report's outputs."""


def plan_stages(spec: JobSpec, bracket: tuple[LlamaFileType, ...] = ()) -> list[str]:
    """The stage names a job will report, in order (for a stage list in the UI).

    ``bracket`` are stock types a budget job adds once it knows their sizes.
    """
    types = [*spec.types, *(t for t in bracket if t not in spec.types)]
    stages = ["prepare"]
    if uses_imatrix(spec):
        stages.append("imatrix")
    stages += [f"quantize {t.name}" for t in types]
    if spec.budget:
        stages += ["search", "quantize mix"]
    if spec.evaluates:
        stages.append("reference")
        stages += [f"evaluate {t.name}" for t in types]
        if spec.budget:
            stages.append("evaluate mix")
    stages.append("report")
    return stages


def uses_imatrix(spec: JobSpec) -> bool:
    if spec.imatrix_mode is ImatrixMode.NONE:
        return False
    return bool(spec.budget) or any(t not in _NO_IMATRIX_TYPES for t in spec.types)


@dataclass(frozen=True)
class TypeReport:
    type: str
    path: str
    size_bytes: int
    bits_per_weight: float
    imatrix: bool
    reused: bool
    seconds: float
    evaluation: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "imatrix": self.imatrix,
            "reused": self.reused,
            "seconds": round(self.seconds, 2),
            "evaluation": self.evaluation,
        }


@dataclass(frozen=True)
class JobReport:
    source: str
    source_kind: str
    model_name: str
    base_model: str
    base_type: str
    parameters: int
    calibration: dict[str, Any] | None
    imatrix: dict[str, Any] | None
    evaluation_text: dict[str, Any] | None
    reference: dict[str, Any] | None
    outputs: tuple[TypeReport, ...]
    tools: dict[str, str]
    seconds: float
    report_path: str = ""
    card_path: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    # The Quantdesk mix of a budget job (quant.jobs.mix.MixPlan.as_dict() with its
    # evaluation, the stock types it was compared with and the verdict).
    mix: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "source": self.source,
            "source_kind": self.source_kind,
            "model_name": self.model_name,
            "base_model": self.base_model,
            "base_type": self.base_type,
            "parameters": self.parameters,
            "calibration": self.calibration,
            "imatrix": self.imatrix,
            "evaluation_text": self.evaluation_text,
            "reference": self.reference,
            "outputs": [o.as_dict() for o in self.outputs],
            "tools": self.tools,
            "seconds": round(self.seconds, 2),
            "report_path": self.report_path,
            "card_path": self.card_path,
            "created": self.created,
            "mix": self.mix,
        }


# -- in-flight files (removed if the process is told to stop) -------------------


@contextlib.contextmanager
def _producing(partial: Path, on_event: EventCallback | None) -> Iterator[None]:
    """Register ``partial`` as half-written (:func:`quant.atomic.writing`) and tell the
    parent process, which removes it if the job has to be killed."""
    with writing(partial):
        if on_event is not None:
            on_event("writing", {"path": str(partial)})
        yield


# -- helpers ---------------------------------------------------------------------


def default_dirs() -> tuple[Path, Path]:
    """(models folder, cache folder) of the app (``QUANTDESK_HOME`` honoured)."""
    import os

    from platformdirs import user_cache_dir, user_data_dir

    home = os.environ.get("QUANTDESK_HOME")
    if home:
        return Path(home) / "data" / "models", Path(home) / "cache"
    return (
        Path(user_data_dir("Quantdesk", appauthor=False)) / "models",
        Path(user_cache_dir("Quantdesk", appauthor=False)),
    )


def tool_versions() -> dict[str, str]:
    import quant

    out = {"quantdesk": quant.__version__}
    for dist in ("llama_cpp_python", "gguf", "numpy", "huggingface_hub"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(Exception):
        import llama_cpp

        raw = llama_cpp.llama_print_system_info()
        if raw:
            out["llama_cpp_system"] = raw.decode(errors="replace").strip()[:200]
    return out


_TYPE_SUFFIX = re.compile(r"[-_.](f16|bf16|f32|fp16|fp32|q8_0)$", re.IGNORECASE)


def model_name_for(source: str, kind: SourceKind) -> str:
    if kind is SourceKind.HUB:
        return source.rsplit("/", maxsplit=1)[-1]
    p = Path(source)
    name = p.stem if kind is SourceKind.GGUF else p.name
    return _TYPE_SUFFIX.sub("", name) or name


class _Stage:
    """Wraps on_progress with a stage name and reports it done."""

    def __init__(
        self, name: str, on_progress: ProgressCallback | None, on_event: EventCallback | None
    ) -> None:
        self.name = name
        self._p = on_progress
        self._e = on_event

    def progress(self, p: Progress) -> None:
        if self._p is not None:
            self._p(replace(p, stage=self.name))

    def note(self, message: str, done: int = 0, total: int = 0) -> None:
        if self._p is not None:
            self._p(Progress(self.name, done, total, message))

    def done(self, message: str, **data: Any) -> None:
        if self._p is not None:
            self._p(Progress(self.name, 1, 1, message, eta_s=0.0))
        if self._e is not None:
            self._e("stage_done", {"stage": self.name, "message": message, **data})


def _download(repo_id: str, revision: str | None) -> Path:
    """Download a hub model's weights, config and tokenizer (resumable, HF cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    from quant.hub.errors import hub_errors, offline_error, transport_errors

    hub_failures: tuple[type[BaseException], ...] = (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        *transport_errors(),
    )

    def offline() -> HubError:
        return offline_error(
            f"download {repo_id}",
            "turn offline mode off, or convert a downloaded copy (pass its folder)",
            repo_id=repo_id,
        )

    with hub_errors(
        repo_id,
        "the model's files",
        offline=offline,
        again="run the job again",
        network_hint="check the connection and run the job again; the download resumes "
        "where it stopped",
    ):
        try:
            folder = snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "*.model",
                    "*.txt",
                    "*.tiktoken",
                    "tokenizer*",
                    "*.md",
                ],
            )
        except LocalEntryNotFoundError:  # offline, and not in the cache
            raise offline() from None
        except hub_failures:
            raise  # told by hub_errors
        except OSError as exc:  # the cache folder, not the hub
            raise QuantError(
                f"{repo_id}: the download cannot be written into the Hugging Face cache "
                f"({exc.strerror or exc}); free disk space or set HF_HUB_CACHE to a writable folder"
            ) from exc
    return Path(folder)


def _convert(
    src: Path, out: Path, on_progress: ProgressCallback | None, cancel: CancelToken | None
) -> Path:
    from quant.convert import convert_hf

    return convert_hf(src, out, outtype="f16", on_progress=on_progress, cancel=cancel).output


def _check_disk(folder: Path, needed: int, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed + _DISK_MARGIN > free:
        raise InsufficientResourcesError(
            f"{folder}: {what} needs {human_bytes(needed)} but only {human_bytes(free)} is free; "
            "free some space or choose another output folder."
        )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


# -- the job ---------------------------------------------------------------------


def run_pipeline(
    spec: JobSpec,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_event: EventCallback | None = None,
) -> JobReport:
    """Run the whole job; see the module docstring. Returns the report (also on disk)."""
    from quant.gguf.header import read_gguf_header
    from quant.jobs.evaluate import model_fingerprint
    from quant.jobs.imatrix import ImatrixData, collect_imatrix, load_imatrix
    from quant.jobs.quantize import (
        ImatrixRequiredError,
        imatrix_refusal,
        plan_quantization,
        quantize,
        requires_imatrix,
    )

    started = time.monotonic()
    if not spec.types and not spec.budget:
        raise QuantError("no target types given; pass e.g. --to Q4_K_M or --budget 4.5bpw.")
    if spec.budget:
        from quant.plan.mix import parse_budget

        parse_budget(spec.budget)  # a budget that cannot be read fails before any work
    default_out, default_cache = default_dirs()
    out_dir = Path(spec.out_dir).expanduser() if spec.out_dir else default_out
    cache_dir = Path(spec.cache_dir).expanduser() if spec.cache_dir else default_cache
    mode = spec.imatrix_mode
    if mode is ImatrixMode.NONE:
        refused = [t for t in spec.types if requires_imatrix(t)]
        if refused:
            raise ImatrixRequiredError(imatrix_refusal(refused[0]))
    if on_event is not None:
        on_event("stages", {"stages": plan_stages(spec)})

    # 1. prepare -----------------------------------------------------------------
    kind = detect_source(spec.source, need_weights=True)
    name = model_name_for(spec.source, kind)
    st = _Stage("prepare", on_progress, on_event)
    if kind is SourceKind.GGUF:
        base = Path(spec.source).expanduser().resolve()
    else:
        folder = Path(spec.source).expanduser()
        if kind is SourceKind.HUB:
            st.note(f"downloading {spec.source}")
            check_cancel(cancel)
            folder = _download(spec.source, spec.revision)
        check_cancel(cancel)
        shards = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        # F16 is at most the checkpoint's size for BF16/F16 checkpoints, half of F32 ones.
        _check_disk(cache_dir, shards, "the F16 conversion")
        key = model_fingerprint_dir(folder)
        base = cache_dir / "f16" / f"{name}-{key}-F16.gguf"
        if not base.exists():
            st.note(f"converting {folder.name} to F16 GGUF")
            with _producing(partial_of(base), on_event):
                _convert(folder, base, st.progress, cancel)
    info = read_gguf_header(base)
    odd = _quantized_types(info)
    if odd and spec.requantize:
        expanded = cache_dir / "f16" / f"{name}-{model_fingerprint(base)}-F16.gguf"
        if not expanded.exists():
            from quant.jobs.dequantize import dequantize_gguf

            st.note(f"expanding {base.name} ({', '.join(odd)}) to F16")
            _check_disk(cache_dir, 2 * info.n_parameters, "the F16 expansion")
            with _producing(partial_of(expanded), on_event):
                dequantize_gguf(base, expanded, on_progress=st.progress, cancel=cancel)
        base = expanded
        info = read_gguf_header(base)
        odd = _quantized_types(info)
    if odd:
        raise QuantError(
            f"{base.name} is already quantized ({', '.join(odd)}); start from an F16, BF16, F32 "
            "or Q8_0 model so the new types are not built on an earlier loss, or allow "
            "requantizing (--requantize) to expand it to F16 first."
        )
    base_type = info.file_type.name if info.file_type is not None else "unknown"
    fingerprint = model_fingerprint(base)

    # Plan every output (exact sizes) and check the disk before writing anything.
    plans = {}
    for t in spec.types:
        check_cancel(cancel)
        st.note(f"planning {t.name}")
        plans[t] = plan_quantization(base, spec.quantize_options(t))
    types = list(spec.types)
    budget_bytes = 0
    bracket: tuple[LlamaFileType | None, LlamaFileType | None] = (None, None)
    if spec.budget:
        from quant.plan.mix import parse_budget

        budget_bytes = parse_budget(spec.budget).resolve(info.n_parameters)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {t: out_dir / f"{name}-{t.name}.gguf" for t in types}
    pending = sum(plans[t].size_bytes for t in types if not outputs[t].exists()) + budget_bytes
    _check_disk(out_dir, pending, f"writing {len(types) + bool(spec.budget)} file(s)")
    if spec.evaluates:
        from quant.jobs.evaluate import DEFAULT_MAX_BYTES

        # Reference log-probabilities are bounded by this budget (see quant.jobs.evaluate).
        _check_disk(cache_dir, DEFAULT_MAX_BYTES, "caching the reference logits")
    st.done(
        f"{base.name}: {base_type}, {info.n_parameters:,} parameters",
        base=str(base),
        base_type=base_type,
    )

    # 2. imatrix -----------------------------------------------------------------
    imatrix: ImatrixData | None = None
    imatrix_key = "none"
    calibration: CalibrationSet | None = None
    if uses_imatrix(spec):
        st = _Stage("imatrix", on_progress, on_event)
        if mode is ImatrixMode.FILE:
            imatrix = load_imatrix(Path(spec.imatrix).expanduser())
            imatrix_key = f"file:{Path(spec.imatrix).name}"
            st.done(
                f"loaded {Path(spec.imatrix).name} ({len(imatrix.entries)} entries)",
                **imatrix.summary(),
            )
        else:
            calibration = _calibration(spec, base, fingerprint, cache_dir, st=st, cancel=cancel)
            imatrix_key = (
                f"{fingerprint[:16]}-{calibration.sha256[:16]}-"
                f"{spec.imatrix_chunk_size}-{spec.imatrix_chunks}"
            )
            im_path = cache_dir / "imatrix" / f"{name}-{imatrix_key}.imatrix.gguf"
            if im_path.exists():
                imatrix = load_imatrix(im_path)
                st.done(f"reused {im_path.name}", reused=True, **imatrix.summary())
            else:
                imatrix = collect_imatrix(
                    base,
                    calibration,
                    chunk_size=spec.imatrix_chunk_size,
                    max_chunks=spec.imatrix_chunks,
                    threads=spec.threads,
                    on_progress=st.progress,
                    cancel=cancel,
                )
                with _producing(partial_of(im_path), on_event):
                    imatrix.save(im_path)
                imatrix = imatrix.with_source(im_path.name)
                st.done(
                    f"{imatrix.chunk_count} chunks, {imatrix.tokens} tokens in "
                    f"{imatrix.seconds:.0f} s",
                    reused=False,
                    **imatrix.summary(),
                )

    def stock_meta(
        t: LlamaFileType,
    ) -> tuple[ImatrixData | None, dict[str, str | int | float | bool]]:
        """The importance matrix a stock type is made with, and the keys written into it."""
        use_im = imatrix if t not in _NO_IMATRIX_TYPES else None
        meta: dict[str, str | int | float | bool] = {
            KEY_SOURCE: fingerprint,
            KEY_IMATRIX: imatrix_key if use_im is not None else "none",
            KEY_OPTIONS: spec.options_key,
        }
        if use_im is not None and calibration is not None:
            meta[KEY_CALIBRATION] = calibration.name
        return use_im, meta

    if spec.budget:
        # The stock types either side of the budget, by the exact size of their files:
        # llama.cpp's dry run with the importance matrix and keys they are made with.
        st = _Stage("quantize", on_progress, on_event)
        st.note(f"finding the stock types either side of {human_bytes(budget_bytes)}")

        def stock_size(t: LlamaFileType) -> int:
            check_cancel(cancel)
            use_im, meta = stock_meta(t)
            plan = plan_quantization(base, spec.quantize_options(t, meta), imatrix=use_im)
            plans[t] = plan
            return plan.size_bytes

        bracket = _bracket(spec, budget_bytes, stock_size)
        extra = tuple(t for t in bracket if t is not None and t not in types)
        if extra:
            types += extra
            outputs.update({t: out_dir / f"{name}-{t.name}.gguf" for t in extra})
            _check_disk(
                out_dir,
                sum(plans[t].size_bytes for t in extra if not outputs[t].exists()),
                f"writing {len(extra)} more file(s)",
            )
            if on_event is not None:
                on_event("stages", {"stages": plan_stages(spec, extra)})

    # 3. quantize ----------------------------------------------------------------
    results: dict[LlamaFileType, TypeReport] = {}
    for t in types:
        st = _Stage(f"quantize {t.name}", on_progress, on_event)
        check_cancel(cancel)
        use_im, meta = stock_meta(t)
        key = str(meta[KEY_IMATRIX])
        dst = outputs[t]
        if _is_our_output(dst, fingerprint, key, spec.options_key):
            size = dst.stat().st_size
            results[t] = TypeReport(
                t.name,
                str(dst),
                size,
                8.0 * size / info.n_parameters,
                use_im is not None,
                True,
                0.0,
            )
            st.done(f"reused {dst.name}", path=str(dst), reused=True)
            continue
        options = spec.quantize_options(t, meta)
        with _producing(partial_of(dst), on_event):
            r = quantize(base, dst, options, imatrix=use_im, on_progress=st.progress, cancel=cancel)
        results[t] = TypeReport(
            t.name, str(dst), r.size_bytes, r.bits_per_weight, use_im is not None, False, r.seconds
        )
        if on_event is not None:
            on_event("written", {"path": str(dst)})
        st.done(
            f"{dst.name}: {human_bytes(r.size_bytes)}, {r.bits_per_weight:.2f} bpw",
            path=str(dst),
            reused=False,
        )

    # 3b. search and make the mix ---------------------------------------------------
    mix: dict[str, Any] | None = None
    mix_report: TypeReport | None = None
    if spec.budget:
        mix, mix_report = _make_mix(
            spec,
            name=name,
            base=base,
            fingerprint=fingerprint,
            imatrix=imatrix,
            imatrix_key=imatrix_key,
            calibration=calibration,
            budget_bytes=budget_bytes,
            out_dir=out_dir,
            cache_dir=cache_dir,
            on_progress=on_progress,
            on_event=on_event,
            cancel=cancel,
        )
        mix["bracket"] = [t.name if t is not None else None for t in bracket]

    # 4. evaluate ----------------------------------------------------------------
    reference_info: dict[str, Any] | None = None
    eval_text_info: dict[str, Any] | None = None
    if spec.evaluates:
        from quant.jobs.evaluate import (
            DEFAULT_MAX_BYTES,
            DEFAULT_TOP_K,
            compute_reference,
            evaluate,
            partial_path,
            reference_cache_path,
        )

        text = default_mix(Split.HELD_OUT) if spec.eval_text is None else from_path(spec.eval_text)
        eval_text_info = text.as_dict()
        st = _Stage("reference", on_progress, on_event)
        ref_dir = cache_dir / "reference"
        ref_path = reference_cache_path(
            ref_dir,
            base,
            text,
            chunk_size=spec.eval_chunk_size,
            max_chunks=spec.eval_chunks,
            top_k=DEFAULT_TOP_K,
            max_bytes=DEFAULT_MAX_BYTES,
        )
        with _producing(partial_path(ref_path), on_event):
            reference = compute_reference(
                base,
                text,
                chunk_size=spec.eval_chunk_size,
                max_chunks=spec.eval_chunks,
                cache_dir=ref_dir,
                threads=spec.threads,
                on_progress=st.progress,
                cancel=cancel,
            )
        reference_info = {
            "model": base.name,
            "perplexity": round(reference.perplexity, 4),
            "tokens": reference.n_scored,
            "chunks": len(reference.tokens),
            "chunk_size": reference.chunk_size,
            "seconds": round(reference.seconds, 2),
        }
        st.done(
            f"reference PPL {reference.perplexity:.3f} on {reference.n_scored} tokens",
            **reference_info,
        )

        def measured(stage: str, dst: Path) -> dict[str, Any]:
            st = _Stage(stage, on_progress, on_event)
            check_cancel(cancel)
            ev_path = cache_dir / "eval" / f"{model_fingerprint(dst)}-{ref_path.name}.json"
            cached = _read_json(ev_path)
            if cached is not None:
                st.done(f"reused evaluation of {dst.name}", reused=True, **cached)
                return cached
            ev = evaluate(
                dst, reference, threads=spec.threads, on_progress=st.progress, cancel=cancel
            ).as_dict()
            atomic_write_text(ev_path, json.dumps(ev, indent=2))
            st.done(
                f"KLD {ev['kld_mean']:.4f}, top-1 {100 * ev['top1_agreement']:.1f}%",
                reused=False,
                **ev,
            )
            return ev

        for t in types:
            results[t] = replace(results[t], evaluation=measured(f"evaluate {t.name}", outputs[t]))
        if mix is not None and mix_report is not None:
            ev = measured("evaluate mix", Path(mix_report.path))
            mix_report = replace(mix_report, evaluation=ev)
            mix.update(_verdict(mix, ev, results, bracket, budget_bytes))
            if not mix["kept"]:
                Path(mix_report.path).unlink(missing_ok=True)

    # 5. report ------------------------------------------------------------------
    st = _Stage("report", on_progress, on_event)
    check_cancel(cancel)
    report = JobReport(
        source=spec.source,
        source_kind=kind.value,
        model_name=name,
        base_model=str(base),
        base_type=base_type,
        parameters=info.n_parameters,
        calibration=calibration.as_dict() if calibration is not None else None,
        imatrix=({**imatrix.summary(), "key": imatrix_key} if imatrix is not None else None),
        evaluation_text=eval_text_info,
        reference=reference_info,
        outputs=(
            *(results[t] for t in types),
            *((mix_report,) if mix_report is not None and mix and mix.get("kept") else ()),
        ),
        tools=tool_versions(),
        seconds=time.monotonic() - started,
        report_path=str(out_dir / f"{name}-report.json"),
        card_path=str(out_dir / f"{name}-README.md"),
        mix=mix,
    )
    atomic_write_text(Path(report.report_path), json.dumps(report.as_dict(), indent=2))
    atomic_write_text(Path(report.card_path), model_card(report))
    st.done(f"report {Path(report.report_path).name}", report=report.report_path)
    return report


# -- the Quantdesk mix ---------------------------------------------------------------


def _bracket(
    spec: JobSpec, budget_bytes: int, stock_size: Callable[[LlamaFileType], int]
) -> tuple[LlamaFileType | None, LlamaFileType | None]:
    """The largest stock type whose file fits the budget and the smallest that does not.

    ``stock_size`` gives a type's exact file size (llama.cpp's dry run). Types
    that need an importance matrix are left out of a job without one.
    """
    from quant.jobs.quantize import requires_imatrix
    from quant.plan.mix import STOCK_TYPES

    usable = [
        t
        for t in STOCK_TYPES
        if spec.imatrix_mode is not ImatrixMode.NONE or not requires_imatrix(t)
    ]
    size = {t: stock_size(t) for t in usable}
    fit = [t for t in size if size[t] <= budget_bytes]
    over = [t for t in size if size[t] > budget_bytes]
    return (
        max(fit, key=size.__getitem__) if fit else None,
        min(over, key=size.__getitem__) if over else None,
    )


def _make_mix(
    spec: JobSpec,
    *,
    name: str,
    base: Path,
    fingerprint: str,
    imatrix: Any,
    imatrix_key: str,
    calibration: CalibrationSet | None,
    budget_bytes: int,
    out_dir: Path,
    cache_dir: Path,
    on_progress: ProgressCallback | None,
    on_event: EventCallback | None,
    cancel: CancelToken | None,
) -> tuple[dict[str, Any], TypeReport]:
    """The search and quantize-mix stages: (the mix's report section, its output row)."""
    from quant.jobs.evaluate import (
        DEFAULT_MAX_BYTES,
        DEFAULT_TOP_K,
        compute_reference,
        partial_path,
        reference_cache_path,
    )
    from quant.jobs.mix import build_mix, measure, peak_rss_bytes, recipe_of, search_mix
    from quant.plan.mix import BudgetError

    st = _Stage("search", on_progress, on_event)
    check_cancel(cancel)
    started = time.monotonic()
    settings = spec.search_settings()
    reference = None
    if settings.calibrate:
        # The search measures on calibration text: the held-out text stays unseen.
        text = calibration or _calibration(spec, base, fingerprint, cache_dir, st=st, cancel=cancel)
        ref_dir = cache_dir / "reference"
        ref_path = reference_cache_path(
            ref_dir,
            base,
            text,
            chunk_size=settings.chunk_size,
            max_chunks=settings.chunks,
            top_k=DEFAULT_TOP_K,
            max_bytes=DEFAULT_MAX_BYTES,
        )
        st.note("running the full-precision model on the search text")
        with _producing(partial_path(ref_path), on_event):
            reference = compute_reference(
                base,
                text,
                chunk_size=settings.chunk_size,
                max_chunks=settings.chunks,
                cache_dir=ref_dir,
                threads=spec.threads,
                cancel=cancel,
            )

    def writing(path: Path) -> contextlib.AbstractContextManager[None]:
        return _producing(partial_of(path), on_event)

    sensitivity = measure(
        base,
        imatrix,
        settings,
        reference=reference,
        cache_dir=cache_dir,
        cache_key=f"{fingerprint}|{imatrix_key}",
        on_write=writing,
        on_progress=st.progress,
        cancel=cancel,
    )
    try:
        repacked = frozenset(GGMLType[t] for t in spec.budget_repacked)
    except KeyError as exc:
        raise QuantError(f"unknown tensor type {exc} in the budget's repacked types.") from None
    meta: dict[str, str | int | float | bool] = {
        KEY_SOURCE: fingerprint,
        KEY_IMATRIX: imatrix_key,
        KEY_OPTIONS: spec.options_key,
    }
    if imatrix is not None and calibration is not None:
        meta[KEY_CALIBRATION] = calibration.name
    try:
        plan = search_mix(
            base, sensitivity, budget_bytes, metadata=meta, imatrix=imatrix, repacked=repacked
        )
    except BudgetError as exc:
        raise BudgetError(f"{name}: {exc}") from None
    seconds = time.monotonic() - started
    search = {
        **plan.search,
        "seconds": round(seconds, 2),
        "peak_rss_bytes": peak_rss_bytes(),
        "rows": settings.rows,
        "chunks": settings.chunks if reference is not None else 0,
        "tokens": reference.n_scored if reference is not None else 0,
        "calibrated": reference is not None,
        "tensors": len(sensitivity.errors),
        "types": [t.name for t in settings.types],
    }
    plan = replace(plan, search=search)
    st.done(
        f"{len(sensitivity.errors)} tensors, predicted KLD {plan.predicted_kld:.4f} at "
        f"{human_bytes(plan.size_bytes)} in {seconds:.0f} s",
        predicted_kld=plan.predicted_kld,
        size_bytes=plan.size_bytes,
        budget_bytes=budget_bytes,
        resumed=sensitivity.resumed,
    )

    st = _Stage("quantize mix", on_progress, on_event)
    check_cancel(cancel)
    dst = out_dir / f"{name}-mix-{plan.bits_per_weight:.2f}bpw.gguf"
    use_im = imatrix
    key = imatrix_key if use_im is not None else "none"
    # The same source, importance matrix and recipe make the same file: reuse it.
    if _is_our_output(dst, fingerprint, key, spec.options_key) and recipe_of(dst) == plan.recipe:
        size = dst.stat().st_size
        row = TypeReport(
            MIX, str(dst), size, 8.0 * size / plan.n_parameters, use_im is not None, True, 0.0
        )
        st.done(f"reused {dst.name}", path=str(dst), reused=True)
    else:
        with _producing(partial_of(dst), on_event):
            r = build_mix(
                base,
                dst,
                plan,
                imatrix=use_im,
                threads=spec.threads,
                on_progress=st.progress,
                cancel=cancel,
            )
        row = TypeReport(
            MIX, str(dst), r.size_bytes, r.bits_per_weight, use_im is not None, False, r.seconds
        )
        if on_event is not None:
            on_event("written", {"path": str(dst)})
        st.done(
            f"{dst.name}: {human_bytes(r.size_bytes)}, {r.bits_per_weight:.2f} bpw",
            path=str(dst),
            reused=False,
        )
    section = {**plan.as_dict(), "path": str(dst), "budget": spec.budget, "kept": True}
    return section, row


def _verdict(
    mix: dict[str, Any],
    ev: dict[str, Any],
    results: dict[LlamaFileType, TypeReport],
    bracket: tuple[LlamaFileType | None, LlamaFileType | None],
    budget_bytes: int,
) -> dict[str, Any]:
    """Whether the mix beats the stock type that fits the same budget, in words.

    The comparison is mean KL divergence on the held-out text; a mix that does
    not beat that stock file is not kept.
    """
    below, above = bracket
    out: dict[str, Any] = {"evaluation": ev}
    kld = float(ev["kld_mean"])
    if below is None:
        out["kept"] = True
        out["verdict"] = (
            f"No stock type fits {human_bytes(budget_bytes)}; the mix is the only file that does."
        )
        return out
    stock = results[below].evaluation or {}
    s_kld = float(stock.get("kld_mean", math.inf))
    ratio = kld / s_kld if s_kld > 0 else math.inf
    out["compared_with"] = below.name
    out["kld_ratio"] = round(ratio, 4) if math.isfinite(ratio) else None
    if kld < s_kld:
        out["kept"] = True
        text = (
            f"The mix has {ratio:.2f}× the KL divergence of {below.name} "
            f"({kld:.4f} vs {s_kld:.4f}) in {human_bytes(mix['size_bytes'])}"
        )
        above_ev = results[above].evaluation if above is not None else None
        if above is not None and above_ev:
            a_kld = float(above_ev["kld_mean"])
            if kld < a_kld:
                text += f", and beats the larger {above.name} ({a_kld:.4f}) too"
        out["verdict"] = text + "."
    else:
        out["kept"] = False
        out["verdict"] = (
            f"The searched mix did not beat {below.name} at the same size (KL divergence "
            f"{kld:.4f} vs {s_kld:.4f}); it was removed — use {below.name}."
        )
    return out


def model_fingerprint_dir(folder: Path) -> str:
    """A cache key for an HF folder: names, sizes and modification times of its files."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            s = p.stat()
            h.update(f"{p.name}|{s.st_size}|{int(s.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def _is_our_output(path: Path, fingerprint: str, imatrix_key: str, options_key: str) -> bool:
    """Whether ``path`` is a finished output of this same source and imatrix."""
    if not path.exists():
        return False
    from quant.gguf.header import read_gguf_header

    try:
        info = read_gguf_header(path)
    except QuantError:
        return False
    return bool(
        info.get(KEY_SOURCE) == fingerprint
        and info.get(KEY_IMATRIX) == imatrix_key
        and info.get(KEY_OPTIONS) == options_key
    )


def _calibration(
    spec: JobSpec,
    base: Path,
    fingerprint: str,
    cache_dir: Path,
    *,
    st: _Stage,
    cancel: CancelToken | None,
) -> CalibrationSet:
    if spec.calibration is None or spec.calibration == "default":
        return default_mix()
    if spec.calibration != "self":
        return from_path(spec.calibration)
    cached = cache_dir / "calibration" / f"self-{fingerprint[:16]}-{spec.self_tokens}.json"
    if cached.exists():
        with contextlib.suppress(QuantError):
            return CalibrationSet.load(cached)
    cal = self_generated(
        base,
        n_tokens=spec.self_tokens,
        threads=spec.threads,
        on_progress=st.progress,
        cancel=cancel,
    )
    cal.save(cached)
    return cal


# -- the model card -------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def model_card(report: JobReport) -> str:
    """A short Markdown model card: what was made, how, and what it cost in quality."""
    lines = [
        f"# {report.model_name} — GGUF quantizations",
        "",
        f"Made by Quantdesk {report.tools.get('quantdesk', '')} from "
        f"`{Path(report.base_model).name}` ({report.base_type}, {report.parameters:,} "
        f"parameters) with llama.cpp (llama-cpp-python "
        f"{report.tools.get('llama_cpp_python', '?')}).",
        "",
        "| type | size | bits/weight | imatrix | KLD mean | KLD p99 | PPL | ΔPPL "
        "| same top token |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in report.outputs:
        ev = o.evaluation or {}
        top1 = ev.get("top1_agreement")
        label = "Quantdesk mix" if o.type == MIX else o.type
        lines.append(
            f"| {label} | {human_bytes(o.size_bytes)} | {o.bits_per_weight:.2f} | "
            f"{'yes' if o.imatrix else 'no'} | {_fmt(ev.get('kld_mean'))} | "
            f"{_fmt(ev.get('kld_p99'))} | {_fmt(ev.get('perplexity'), 3)} | "
            f"{_fmt(ev.get('delta_perplexity'), 3)} | "
            f"{'—' if top1 is None else f'{100 * top1:.1f}%'} |"
        )
    lines.append("")
    mix = report.mix
    if mix is not None:
        counts = ", ".join(f"{n} × {t}" for t, n in mix.get("types", {}).items())
        lines += [
            f"Quantdesk mix for {human_bytes(mix['budget_bytes'])}: one type per tensor, chosen "
            f"by measured sensitivity ({counts}); predicted KLD {mix['predicted_kld']:.4f}. "
            + str(mix.get("verdict", "")),
            "",
        ]
    if report.imatrix is not None:
        cal = report.calibration
        lines.append(
            f"Importance matrix: {report.imatrix.get('chunks')} chunks of "
            f"{report.imatrix.get('chunk_size')} tokens"
            + (
                f" from {cal['name']} ({cal['documents']} documents, "
                f"sha256 {str(cal['sha256'])[:12]}…)"
                if cal
                else f" from {report.imatrix.get('file')}"
            )
            + "."
        )
    else:
        lines.append("No importance matrix was used.")
    if report.reference is not None and report.evaluation_text is not None:
        lines.append(
            f"Quality measured against `{report.reference['model']}` (PPL "
            f"{report.reference['perplexity']:.3f}) on {report.reference['tokens']} tokens of "
            f"{report.evaluation_text['name']}: KL divergence of the next-token "
            "distributions (mean and 99th percentile), perplexity and the share of "
            "positions where both models rank the same token first."
        )
    lines += [
        "",
        "Tools: "
        + ", ".join(f"{k} {v}" for k, v in report.tools.items() if k != "llama_cpp_system"),
        "",
    ]
    return "\n".join(lines)
