"""A chat session: one loaded model, its KV cache, and streaming answers.

:class:`ChatSession` wraps ``llama_cpp.Llama`` but drives the token loop
itself, through the public low-level calls (``Llama.eval``, the sampler chain
API, ``llama_token_to_piece``), for three reasons:

* **the KV cache is reused between turns**: before each answer the new prompt is
  compared with the tokens already in the cache; only the differing tail is
  evaluated, and :class:`~app.core.chat.stats.AnswerStats` reports exactly how
  many prompt tokens were evaluated and how many were reused;
* **stop is immediate**: the cancel token is checked between prompt batches and
  between generated tokens, and a stopped answer keeps its text;
* **speed is measured where it happens**: time to first token, prompt and
  generation rates, memory sampled while generating.

The conversation itself is not kept here: every call to :meth:`ChatSession.respond`
gets the messages to answer. Regenerate, edit-and-resend and switching between
conversations are therefore just different message lists; the prefix match
decides what can be reused.

A session belongs to one thread at a time (the chat worker's, or the CLI's main
thread); only the cancel token is touched from other threads.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from app.core.chat.settings import (
    MIN_CONTEXT,
    LoadPlan,
    SamplingSettings,
)
from app.core.chat.stats import (
    AnswerStats,
    LiveSample,
    MemorySampler,
    StatsRecorder,
    StopReason,
    read_memory,
)
from app.core.chat.templates import (
    BASE_MODEL_NOTE,
    BASE_MODEL_TEMPLATE_NOTE,
    ChatMessage,
    ChatTemplate,
    PromptMode,
    Role,
    TemplateSource,
    is_base_model,
    select_template,
)
from app.core.errors import AppError, ModelLoadError
from app.core.runtime import import_llama_first
from quant.errors import (
    Cancelled,
    ModelFileMissingError,
    ModelFormatError,
    NotGGUFError,
    QuantError,
)
from quant.facts.model import ModelFacts
from quant.hardware.profile import HardwareProfile
from quant.native.llama_model import open_llama
from quant.native.llama_session import physical_cores
from quant.plan.memory import (
    KvType,
    MemoryEstimate,
    RuntimeOptions,
    estimate_memory,
    fits_gpus,
    gpu_budgets,
    longest_context,
    max_gpu_layers,
    plan_tensors,
)
from quant.plan.speed import estimate_speed
from quant.progress import CancelToken, Progress, ProgressCallback
from quant.prompts.in_context import BASE_MODEL_SAMPLING

logger = logging.getLogger(__name__)

TokenCallback = Callable[[str], None]
SampleCallback = Callable[[LiveSample], None]

MIB = 1024**2
GIB = 1024**3


# ----------------------------------------------------------------------------- errors


class LoadFailure(StrEnum):
    NOT_FOUND = "not found"
    NOT_GGUF = "not a GGUF file"
    CORRUPT = "damaged file"
    UNKNOWN_ARCHITECTURE = "unknown architecture"
    OUT_OF_MEMORY = "out of memory"
    WONT_FIT = "would not fit"
    NO_RUNTIME = "no runtime"
    OTHER = "other"


class ChatLoadError(ModelLoadError):
    """A model could not be loaded for chat.

    ``retry`` is a plan that is likely to work (shorter context, fewer GPU
    layers) when the failure was about memory; None when retrying cannot help.
    """

    def __init__(
        self, message: str, *, failure: LoadFailure, retry: LoadPlan | None = None
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.retry = retry


class GenerationError(AppError):
    """An answer could not be produced (evaluation failed, prompt too long)."""


class ContextOverflowError(GenerationError):
    """The newest message alone does not fit in the loaded context."""


# ----------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded and how."""

    path: Path
    name: str
    architecture: str
    n_ctx: int
    n_ctx_train: int
    n_layers: int
    n_params: int
    size_bytes: int
    plan: LoadPlan
    flash_attention: bool
    gpu_offload_supported: bool
    template_name: str
    template_note: str
    load_s: float
    rss_after_load_bytes: int
    notes: tuple[str, ...] = ()
    prediction: Prediction | None = None
    # The sampling this model answers best with when the user has chosen none: base
    # models answering through in-context examples want a low temperature.
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    template_source: TemplateSource = TemplateSource.BUILTIN


@dataclass(frozen=True)
class FitReport:
    """Whether a plan fits the memory of this machine, from the model's header."""

    fits: bool
    needed_bytes: int
    available_bytes: int
    where: str  # "RAM" or "VRAM"
    weights_bytes: int
    kv_bytes: int
    message: str = ""
    suggestion: LoadPlan | None = None


@dataclass(frozen=True)
class PreparedPrompt:
    tokens: tuple[int, ...]
    dropped_messages: int
    kept_messages: int


@dataclass(frozen=True)
class Answer:
    """One finished (or stopped) answer and what it cost."""

    text: str
    stats: AnswerStats
    notice: str = ""
    # One entry per generated token when log probabilities were asked for.
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log probability, and the most likely alternatives.

    Log probabilities are of the model's own distribution (a log-softmax of the
    logits), before sampling settings and grammars reshape it, as OpenAI's API
    reports them. ``top`` holds (token text, log probability, UTF-8 bytes).
    """

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Constraint:
    """A GBNF grammar the answer must follow (structured output, tool calls).

    With ``triggers`` (regular expressions) the grammar is lazy: text is free
    until a trigger matches, and from the match on it must follow the grammar
    (a tool call inside an otherwise free answer).
    """

    gbnf: str
    root: str = "root"
    triggers: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- fit check


@dataclass(frozen=True)
class Prediction:
    """The advisor's prediction for a load plan, drawn beside the measurement."""

    gen_tokens_per_s: float
    gen_low: float
    gen_high: float
    prompt_tokens_per_s: float
    ram_bytes: int
    vram_bytes: int | None
    calibrated: bool
    # The process's RSS before the model was loaded: the prediction is growth over it.
    rss_before_load_bytes: int = 0

    @property
    def expected_rss_bytes(self) -> int:
        """What the process's RSS should read once the model is loaded and answering."""
        return self.rss_before_load_bytes + self.ram_bytes


@dataclass(frozen=True)
class _Advice:
    facts: ModelFacts
    profile: HardwareProfile
    options: RuntimeOptions
    kv: KvType
    n_gpu_layers: int


def _advice_inputs(
    path: Path,
    plan: LoadPlan,
    *,
    gpu_offload: bool,
    profile: HardwareProfile | None = None,
    facts: ModelFacts | None = None,
) -> _Advice:
    """Model facts (header only) and this machine, in the advisor's terms.

    Raises :class:`ModelFormatError` for a file that is not a readable GGUF.
    """
    from quant.facts import inspect_model
    from quant.hardware.probe import probe

    if facts is None:
        facts = inspect_model(path)
    if profile is None:
        profile = probe(measure_bandwidth=False)
    options = plan.runtime_options()
    ngl = plan.n_gpu_layers if gpu_offload else 0
    return _Advice(facts, profile, options, plan.kv_type, ngl)


def available_ram_bytes() -> int:
    """Memory the system can give a new load now (free plus reclaimable cache)."""
    return int(psutil.virtual_memory().available)


def estimate_fit(
    path: Path,
    plan: LoadPlan,
    *,
    gpu_offload: bool = False,
    profile: HardwareProfile | None = None,
    facts: ModelFacts | None = None,
    available_ram: int | None = None,
) -> FitReport:
    """Will ``plan`` fit this machine? The advisor's memory model against free memory.

    RAM is compared with what is available now; offloaded layers with each
    GPU's budget (free VRAM less a margin). A plan that does not fit comes with
    a suggestion: the most GPU layers that fit, or the longest context (a
    multiple of 256 tokens) that fits in RAM, or none when even the weights do
    not fit. Raises :class:`ModelFormatError` for an unreadable file.
    """
    plan = plan.validated()
    adv = _advice_inputs(path, plan, gpu_offload=gpu_offload, profile=profile, facts=facts)
    tensors = plan_tensors(adv.facts)

    def estimate(n_ctx: int, ngl: int) -> MemoryEstimate:
        return estimate_memory(
            adv.facts,
            ctx=n_ctx,
            kv_type=adv.kv,
            n_gpu_layers=ngl,
            profile=adv.profile,
            options=adv.options,
            plan=tensors,
        )

    est = estimate(plan.n_ctx, adv.n_gpu_layers)
    if est.n_gpu_layers > 0:
        budgets = gpu_budgets(adv.profile)
        if not fits_gpus(est, budgets):
            fit_layers = max_gpu_layers(
                adv.facts,
                adv.profile,
                ctx=plan.n_ctx,
                kv_type=adv.kv,
                options=adv.options,
                plan=tensors,
            )
            need = max(est.vram_bytes, default=0)
            return FitReport(
                fits=False,
                needed_bytes=need,
                available_bytes=max(budgets, default=0),
                where="VRAM",
                weights_bytes=est.weights_bytes,
                kv_bytes=est.kv_bytes,
                message=(
                    f"{path.name} with {est.n_gpu_layers} GPU layers needs about {_gib(need)} "
                    f"of VRAM but {_gib(max(budgets, default=0))} can be used; try "
                    f"{fit_layers} GPU layers or a shorter context"
                ),
                suggestion=replace(plan, n_gpu_layers=fit_layers),
            )
    ram = available_ram_bytes() if available_ram is None else available_ram
    if est.ram_required_bytes <= ram:
        return FitReport(True, est.ram_required_bytes, ram, "RAM", est.weights_bytes, est.kv_bytes)
    suggestion: LoadPlan | None = None
    n_ctx = longest_context(
        adv.facts,
        max_ctx=plan.n_ctx,
        ram_budget=ram,
        kv_type=adv.kv,
        n_gpu_layers=adv.n_gpu_layers,
        profile=adv.profile,
        options=adv.options,
        plan=tensors,
        min_ctx=MIN_CONTEXT,
    )
    if n_ctx is not None:
        suggestion = replace(plan, n_ctx=n_ctx)
    if suggestion is not None:
        hint = f"try a context of {suggestion.n_ctx:,} tokens"
        if plan.kv_type is KvType.F16:
            hint += " or a q8_0 KV cache"
    else:
        hint = "choose a smaller quant of this model (for example Q4_K_M) or close other programs"
    return FitReport(
        fits=False,
        needed_bytes=est.ram_required_bytes,
        available_bytes=ram,
        where="RAM",
        weights_bytes=est.weights_bytes,
        kv_bytes=est.kv_bytes,
        message=(
            f"{path.name} with a {plan.n_ctx:,}-token context needs about "
            f"{_gib(est.ram_required_bytes)} of memory but {_gib(ram)} is available; {hint}"
        ),
        suggestion=suggestion,
    )


def predict(
    path: Path,
    plan: LoadPlan,
    *,
    gpu_offload: bool = False,
    profile: HardwareProfile | None = None,
    facts: ModelFacts | None = None,
) -> Prediction | None:
    """The advisor's speed and memory prediction for ``plan`` (None when it cannot tell)."""
    try:
        adv = _advice_inputs(path, plan, gpu_offload=gpu_offload, profile=profile, facts=facts)
        tensors = plan_tensors(adv.facts)
        speed = estimate_speed(
            adv.facts,
            adv.profile,
            plan=tensors,
            n_gpu_layers=adv.n_gpu_layers,
            ctx=plan.n_ctx,
            kv_type=adv.kv,
            options=adv.options,
        )
        mem = estimate_memory(
            adv.facts,
            ctx=plan.n_ctx,
            kv_type=adv.kv,
            n_gpu_layers=adv.n_gpu_layers,
            profile=adv.profile,
            options=adv.options,
            plan=tensors,
        )
    except (QuantError, ValueError, ArithmeticError) as exc:
        logger.info("no advisor prediction for %s: %s", path.name, exc)
        return None
    return Prediction(
        gen_tokens_per_s=speed.generation,
        gen_low=speed.generation_low,
        gen_high=speed.generation_high,
        prompt_tokens_per_s=speed.prompt,
        ram_bytes=mem.ram_bytes,
        vram_bytes=sum(mem.vram_bytes) if any(mem.vram_bytes) else None,
        calibrated=speed.calibrated,
    )


def _with_baseline(prediction: Prediction | None, rss_before_load: int) -> Prediction | None:
    if prediction is None:
        return None
    return replace(prediction, rss_before_load_bytes=rss_before_load)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


# ----------------------------------------------------------------------------- loading


_hook_local = threading.local()
_hook_lock = threading.Lock()
_hooked_libs: set[int] = set()


def _install_progress_hook() -> None:
    """Let a load on this thread pass llama.cpp a progress callback.

    ``llama_cpp.Llama`` builds its model parameters from
    ``llama_cpp.llama_cpp.llama_model_default_params()`` and offers no way to
    set ``progress_callback``. The wrapper below adds the callback that the
    calling thread registered (and only that thread: other loads are untouched).
    """
    import importlib

    low_level: Any = importlib.import_module("llama_cpp.llama_cpp")
    with _hook_lock:
        if id(low_level) in _hooked_libs:
            return
        original = low_level.llama_model_default_params

        def with_progress() -> Any:
            params = original()
            cb = getattr(_hook_local, "callback", None)
            if cb is not None:
                params.progress_callback = cb
            return params

        low_level.llama_model_default_params = with_progress
        _hooked_libs.add(id(low_level))


@contextlib.contextmanager
def _load_progress(
    llama_lib: Any, on_progress: ProgressCallback | None, cancel: CancelToken | None
) -> Iterator[None]:
    _install_progress_hook()

    last = [-1]

    def report(fraction: float, _user_data: object) -> bool:
        # Never raise into C; returning False aborts the load (used for cancel).
        try:
            if cancel is not None and cancel.cancelled:
                return False
            done = int(max(0.0, min(1.0, fraction)) * 100)
            if on_progress is not None and done != last[0]:
                last[0] = done
                on_progress(Progress("load", done, 100, "Loading model weights"))
        except Exception:
            logger.debug("load progress callback failed", exc_info=True)
        return True

    callback = llama_lib.llama_progress_callback(report)
    _hook_local.callback = callback
    try:
        yield
    finally:
        _hook_local.callback = None


def classify_load_failure(
    path: Path, lines: Sequence[str], exc: BaseException, plan: LoadPlan, n_layers: int = 0
) -> ChatLoadError:
    """A plain-language error from what llama.cpp logged while a load failed."""
    text = "\n".join(lines).lower()
    reason = next(
        (
            ln.split("error loading model:", 1)[1].strip()
            for ln in lines
            if "error loading model:" in ln
        ),
        "",
    )
    if "unknown model architecture" in text:
        arch = reason.split("'")[1] if reason.count("'") >= 2 else "this"
        return ChatLoadError(
            f"{path.name}: the installed llama.cpp does not know the {arch!r} architecture; "
            "update Quantdesk's llama-cpp-python or choose a model of a supported family",
            failure=LoadFailure.UNKNOWN_ARCHITECTURE,
        )
    if any(
        k in text
        for k in (
            "not within the file bounds",
            "corrupted",
            "incomplete",
            "failed to read",
            "invalid magic",
            "unexpectedly reached end",
            "wrong shape",
            "missing tensor",
            "wrong number of tensors",
            "key not found",
            "unknown type",
            "invalid type",
            "has invalid",
        )
    ):
        return ChatLoadError(
            f"{path.name}: the file is damaged or incomplete "
            f"({reason or 'llama.cpp could not read it'}); download or convert it again",
            failure=LoadFailure.CORRUPT,
        )
    if any(
        k in text
        for k in (
            "allocate",
            "out of memory",
            "cudamalloc",
            "outofdevicememory",
            "failed to create llama_context",
        )
    ) or isinstance(exc, MemoryError):
        retry = _smaller_plan(plan, n_layers)
        hint = f"retry with {retry.describe()}" if retry else "close other programs and retry"
        return ChatLoadError(
            f"{path.name}: not enough memory to load with {plan.describe()}; {hint}",
            failure=LoadFailure.OUT_OF_MEMORY,
            retry=retry,
        )
    detail = reason or (lines[-1].strip() if lines else str(exc))
    return ChatLoadError(
        f"{path.name}: llama.cpp could not load the model ({detail}); check that the file is "
        "a complete GGUF model of an architecture this llama.cpp supports",
        failure=LoadFailure.OTHER,
    )


def _smaller_plan(plan: LoadPlan, n_layers: int = 0) -> LoadPlan | None:
    """A plan that needs clearly less memory: half the GPU layers and half the context."""
    n_ctx = max(MIN_CONTEXT, plan.n_ctx // 2)
    if plan.n_gpu_layers < 0:
        gpu = max(1, n_layers // 2) if n_layers else 16
    elif plan.n_gpu_layers > 0:
        gpu = plan.n_gpu_layers // 2
    else:
        gpu = 0
    smaller = replace(plan, n_ctx=n_ctx, n_gpu_layers=gpu)
    return None if smaller == plan else smaller


def _require_gguf_source(source: Path | str, path: Path) -> None:
    """Refuse, with a next step, a source that is not a GGUF file chat could load."""
    from quant.facts import SourceKind, detect_source

    convert = "convert the model folder first (quantdesk convert-hf, or the Convert page)"
    try:
        kind = detect_source(source)
    except ModelFileMissingError:
        raise ChatLoadError(
            f"{path}: no such model file; check the path or pick the model again",
            failure=LoadFailure.NOT_FOUND,
        ) from None
    except ModelFormatError:  # a lone safetensors file
        raise ChatLoadError(
            f"{path.name}: a safetensors file, not a GGUF; chat runs GGUF files, so {convert}",
            failure=LoadFailure.NOT_GGUF,
        ) from None
    if kind is SourceKind.HF_FOLDER:
        raise ChatLoadError(
            f"{path} is a folder, not a model file; chat runs GGUF files — convert a Hugging "
            "Face folder first (quantdesk convert-hf, or the Convert page)",
            failure=LoadFailure.NOT_FOUND,
        )
    if kind is SourceKind.HUB:
        raise ChatLoadError(
            f"{path}: no such model file; to chat with a model from the hub, download one of "
            f"its GGUF files first (quantdesk pull {source})",
            failure=LoadFailure.NOT_FOUND,
        )
    if kind is SourceKind.CONFIG:
        raise ChatLoadError(
            f"{path.name}: a config.json holds no weights; chat runs GGUF files, so {convert}",
            failure=LoadFailure.NOT_GGUF,
        )


# ----------------------------------------------------------------------------- session


def _refuse_if_it_crashes(path: Path, on_progress: ProgressCallback | None) -> None:
    """Load a file not seen before in a throwaway process first (app.core.chat.probe)."""
    from app.core.chat.probe import known_verdict, probe
    from quant.gguf.header import read_gguf_header
    from quant.gguf.validate import validate_for_llama

    verdict = known_verdict(path)
    if verdict is None:
        try:
            # The whole vocabulary too (repeated or overlong tokens abort llama.cpp); the
            # rest of the file was checked with the model's facts.
            validate_for_llama(read_gguf_header(path), complete=False, vocabulary=True)
        except ModelFormatError as exc:
            raise ChatLoadError(
                f"{str(exc).rstrip('. ')}; download or convert the model again",
                failure=LoadFailure.CORRUPT,
            ) from exc
        if on_progress is not None:
            on_progress(Progress("load", 0, 100, f"Checking {path.name} in a test load…"))
        verdict = probe(path)
    if not verdict.ok:
        raise ChatLoadError(
            f"{path.name}: llama.cpp cannot run this file ({verdict.reason}); it is damaged, "
            "hostile or made for another llama.cpp version — download or convert it again",
            failure=LoadFailure.CORRUPT,
        )


def default_sampling(template: ChatTemplate) -> SamplingSettings:
    """The sampling a model answers best with under ``template`` when the user chose none."""
    if template.is_in_context:
        return replace(SamplingSettings(), **BASE_MODEL_SAMPLING).validated()  # type: ignore[arg-type]
    return SamplingSettings()


class _StopScanner:
    """Holds back text that might be the start of a stop string.

    Whitespace right before a stop marker is formatting, not answer: it is held
    too, and dropped when the marker (or the end of the answer) follows. A
    partial marker left at the end of the answer is dropped as well, so the
    format's markup never reaches the user.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        self._pending += text
        hits = [i for s in self._stops if (i := self._pending.find(s)) >= 0]
        if hits:
            out = self._pending[: min(hits)].rstrip()
            self._pending = ""
            return out, True
        keep = self._partial(self._pending)
        head = self._pending[: len(self._pending) - keep]
        keep += len(head) - len(head.rstrip())
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return out, False

    def _partial(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins a stop string."""
        keep = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        return keep

    def flush(self) -> str:
        """What is held at the end of an answer, less a partial marker and whitespace."""
        pending, self._pending = self._pending, ""
        if not self._stops:
            return pending
        return pending[: len(pending) - self._partial(pending)].rstrip()


class ChatSession:
    """A loaded model ready to answer. Create with :meth:`load`; end with :meth:`close`."""

    def __init__(self, llm: Any, llama_lib: Any, info: ModelInfo, template: ChatTemplate) -> None:
        self._llm = llm
        self._lib = llama_lib
        self.info = info
        self.template = template
        self._vocab = llama_lib.llama_model_get_vocab(llm.model)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._n_batch = max(1, int(llm.n_batch))
        self._add_bos = bool(llama_lib.llama_vocab_get_add_bos(self._vocab))
        self._n_swa = int(llama_lib.llama_model_n_swa(llm.model))
        # The cache may hold tokens of a failed or interrupted evaluation: start clean.
        self._cache_valid = True

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: Path | str,
        plan: LoadPlan | None = None,
        *,
        mode: PromptMode = PromptMode.CHAT,
        template_family: str | None = None,
        check_fit: bool = True,
        probe_first: bool = True,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> ChatSession:
        """Load ``path`` with ``plan`` (validated; context clamped to the trained length).

        Raises :class:`ChatLoadError` (a :class:`ModelLoadError`) with a plain
        sentence and, where a smaller plan would help, ``retry``; raises
        :class:`~quant.errors.Cancelled` when ``cancel`` is set during the load.
        """
        llama_lib = import_llama_first()
        if llama_lib is None:
            raise ChatLoadError(
                "llama-cpp-python is not installed or cannot load its library; "
                "reinstall Quantdesk to chat with models",
                failure=LoadFailure.NO_RUNTIME,
            )
        p = Path(path).expanduser()
        _require_gguf_source(path, p)
        plan = (plan or LoadPlan()).validated()
        notes: list[str] = []
        from quant.facts import inspect_model
        from quant.hardware.probe import probe

        facts: ModelFacts | None
        try:
            facts = inspect_model(p)
        except NotGGUFError as exc:
            raise ChatLoadError(
                f"{str(exc).rstrip('. ')}; chat needs a GGUF model file, so pick another file "
                "or convert this model to GGUF first",
                failure=LoadFailure.NOT_GGUF,
            ) from exc
        except ModelFormatError as exc:
            text = str(exc).rstrip(". ")
            if ";" not in text:
                text += "; the file is damaged or incomplete, download or convert it again"
            raise ChatLoadError(text, failure=LoadFailure.CORRUPT) from exc
        except QuantError as exc:  # llama.cpp may still know the file: let it try
            logger.warning("model facts of %s unavailable: %s", p.name, exc)
            notes.append(f"no memory check before loading ({exc})")
            facts = None
        if facts is not None and facts.context_length and plan.n_ctx > facts.context_length:
            notes.append(
                f"context shortened from {plan.n_ctx:,} to the {facts.context_length:,} tokens "
                "the model was trained for"
            )
            plan = replace(plan, n_ctx=facts.context_length)
        gpu_ok = bool(llama_lib.llama_supports_gpu_offload())
        if plan.n_gpu_layers != 0 and not gpu_ok:
            notes.append("this llama.cpp build has no GPU support; every layer runs on the CPU")
        profile = probe(measure_bandwidth=False)
        if check_fit and facts is not None:
            report = estimate_fit(p, plan, gpu_offload=gpu_ok, profile=profile, facts=facts)
            if not report.fits:
                raise ChatLoadError(
                    report.message, failure=LoadFailure.WONT_FIT, retry=report.suggestion
                )
        if cancel is not None:
            cancel.raise_if_cancelled()
        if probe_first:
            _refuse_if_it_crashes(p, on_progress)
        if on_progress is not None:
            on_progress(Progress("load", 0, 100, f"Loading {p.name}"))

        from quant.native import llama_log

        lines: list[str] = []

        def collect(_level: int, line: str) -> None:
            lines.append(line)
            del lines[:-200]

        threads = plan.n_threads or physical_cores()
        flash = plan.flash_attn
        rss_before_load = read_memory().rss_bytes
        t0 = time.perf_counter()
        with llama_log.observe(collect), _load_progress(llama_lib, on_progress, cancel):
            try:
                llm = open_llama(
                    llama_lib,
                    model_path=str(p),
                    n_ctx=plan.n_ctx,
                    n_batch=plan.n_batch,
                    n_ubatch=min(plan.n_batch, 512),
                    n_gpu_layers=plan.n_gpu_layers,
                    n_threads=threads,
                    n_threads_batch=threads,
                    use_mmap=plan.use_mmap,
                    flash_attn=flash,
                    type_k=plan.kv_type.ggml_type,
                    type_v=plan.kv_type.ggml_type,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError, MemoryError) as exc:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("model load cancelled") from exc
                error = classify_load_failure(
                    p, lines, exc, plan, facts.n_layers if facts is not None else 0
                )
                # The sentence reaches the user through the error itself; the log keeps it.
                logger.info("load of %s failed: %s (%s)", p, error, exc)
                raise error from exc
        load_s = time.perf_counter() - t0

        vocab = llama_lib.llama_model_get_vocab(llm.model)

        def token_text(tok: int) -> str:
            if tok < 0:
                return ""
            raw = llama_lib.llama_vocab_get_text(vocab, tok)
            return raw.decode("utf-8", "replace") if raw else ""

        def has_token(text: str) -> bool:
            toks = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            return len(toks) == 1

        try:
            template = select_template(
                llm.metadata,
                has_token=has_token,
                bos_token=token_text(llama_lib.llama_vocab_bos(vocab)),
                eos_token=token_text(llama_lib.llama_vocab_eos(vocab)),
                mode=mode,
                prefer_builtin=template_family,
                filename=p.name,
            )
        except Exception:
            llm.close()
            raise
        if mode is PromptMode.CHAT and template.is_in_context:
            notes.append(BASE_MODEL_NOTE)
        elif mode is PromptMode.TEMPLATE and is_base_model(llm.metadata, p.name):
            notes.append(BASE_MODEL_TEMPLATE_NOTE)
        info = ModelInfo(
            path=p,
            name=facts.name if facts is not None else p.stem,
            architecture=str(llm.metadata.get("general.architecture", "")),
            n_ctx=int(llm.n_ctx()),
            n_ctx_train=int(llama_lib.llama_model_n_ctx_train(llm.model)),
            n_layers=int(llama_lib.llama_model_n_layer(llm.model)),
            n_params=int(llama_lib.llama_model_n_params(llm.model)),
            size_bytes=int(llama_lib.llama_model_size(llm.model)),
            plan=replace(plan, n_threads=threads),
            flash_attention=flash,
            gpu_offload_supported=gpu_ok,
            template_name=template.name,
            template_note=template.note,
            template_source=template.source,
            load_s=load_s,
            rss_after_load_bytes=read_memory().rss_bytes,
            notes=tuple(notes),
            sampling=default_sampling(template),
            prediction=_with_baseline(
                predict(p, plan, gpu_offload=gpu_ok, profile=profile, facts=facts)
                if facts is not None
                else None,
                rss_before_load,
            ),
        )
        logger.info(
            "loaded %s in %.2fs (%s; %s)", p.name, load_s, info.plan.describe(), template.note
        )
        if on_progress is not None:
            on_progress(Progress("load", 100, 100, f"Loaded {p.name}"))
        return cls(llm, llama_lib, info, template)

    def close(self) -> None:
        """Free the model and its context (idempotent)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    @property
    def closed(self) -> bool:
        return self._llm is None

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ facts
    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx

    @property
    def tokens_in_cache(self) -> int:
        """Tokens currently held in the KV cache (the previous prompt and answer)."""
        return int(self._require().n_tokens)

    def _require(self) -> Any:
        if self._llm is None:
            raise GenerationError("no model is loaded; load a model before sending a message")
        return self._llm

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokens of rendered prompt text, with BOS added only when the text lacks it."""
        llm = self._require()
        bos = self.template.bos_token
        add_bos = self._add_bos and not (bos and text.startswith(bos))
        toks: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return toks

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``, special tokens included (for checks and debugging)."""
        self._require()
        raw = b"".join(self._piece(t, special=True) for t in tokens)
        return raw.decode("utf-8", "replace")

    def count_tokens(
        self,
        messages: Sequence[ChatMessage],
        *,
        system_prompt: str = "",
        add_generation_prompt: bool = True,
    ) -> int:
        """Tokens the prompt for ``messages`` takes (for "context used" displays)."""
        text = self.template.render(
            messages, system_prompt=system_prompt, add_generation_prompt=add_generation_prompt
        )
        return len(self.tokenize_prompt(text))

    # ------------------------------------------------------------------ prompt
    def prepare_prompt(
        self, messages: Sequence[ChatMessage], *, system_prompt: str = "", reserve: int = 0
    ) -> PreparedPrompt:
        """Render and tokenize, dropping the oldest turns until ``reserve`` tokens are free.

        System messages and the system prompt are always kept, and so is the
        newest message. Raises :class:`ContextOverflowError` when the newest
        message alone does not fit.
        """
        n_ctx = self.n_ctx
        system = [m for m in messages if m.role is Role.SYSTEM]
        turns = [m for m in messages if m.role is not Role.SYSTEM]
        dropped = 0
        while True:
            kept = system + turns
            text = self.template.render(kept, system_prompt=system_prompt)
            toks = self.tokenize_prompt(text)
            if len(toks) + reserve <= n_ctx or len(turns) <= 1:
                break
            # Drop a whole exchange when the oldest turn is a user message with its answer.
            n = (
                2
                if (
                    len(turns) > 2
                    and turns[0].role is Role.USER
                    and turns[1].role is Role.ASSISTANT
                )
                else 1
            )
            turns = turns[n:]
            dropped += n
        if len(toks) >= n_ctx:
            raise ContextOverflowError(
                f"the message needs {len(toks):,} tokens but the model is loaded with a "
                f"{n_ctx:,}-token context; shorten the message or reload with a longer context"
            )
        return PreparedPrompt(tuple(toks), dropped, len(kept))

    # ------------------------------------------------------------------ generation
    def _reuse_prefix(self, tokens: Sequence[int]) -> int:
        """Keep the longest cached prefix of ``tokens``; return how many tokens it holds."""
        llm = self._llm
        cached = int(llm.n_tokens)
        if not self._cache_valid or cached == 0:
            llm.reset()
            return 0
        ids = llm.input_ids
        limit = min(cached, len(tokens) - 1)  # always evaluate at least one token for fresh logits
        n = 0
        while n < limit and int(ids[n]) == tokens[n]:
            n += 1
        if n == 0:
            llm.reset()
            return 0
        mem = self._lib.llama_get_memory(llm.ctx)
        if self._n_swa > 0:
            # With a sliding-window cache, positions older than the window may be gone.
            pos_min = int(self._lib.llama_memory_seq_pos_min(mem, 0))
            if pos_min < 0 or pos_min > max(0, n - self._n_swa):
                llm.reset()
                return 0
        if not self._lib.llama_memory_seq_rm(mem, 0, n, -1):
            llm.reset()
            return 0
        llm.n_tokens = n
        return n

    def _make_sampler(self, s: SamplingSettings) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lib.llama_sampler_chain_add
        n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        add(
            chain,
            lib.llama_sampler_init_penalties(
                n_vocab, 64, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            ),
        )
        if s.temperature <= 0:
            add(chain, lib.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            add(chain, lib.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            add(chain, lib.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0.0:
            add(chain, lib.llama_sampler_init_min_p(s.min_p, 1))
        add(chain, lib.llama_sampler_init_temp(s.temperature))
        seed = lib.LLAMA_DEFAULT_SEED if s.seed < 0 else s.seed
        add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def _make_grammar(self, constraint: Constraint) -> Any:
        """llama.cpp's grammar sampler for ``constraint``; GenerationError when it is invalid."""
        lib = self._lib
        gbnf = constraint.gbnf.encode("utf-8")
        root = constraint.root.encode("utf-8")
        if constraint.triggers:
            patterns = (ctypes.c_char_p * len(constraint.triggers))(
                *(t.encode("utf-8") for t in constraint.triggers)
            )
            sampler = lib.llama_sampler_init_grammar_lazy_patterns(
                self._vocab, gbnf, root, patterns, len(constraint.triggers), None, 0
            )
        else:
            sampler = lib.llama_sampler_init_grammar(self._vocab, gbnf, root)
        if not sampler:
            raise GenerationError(
                "llama.cpp could not parse the grammar for this request; check the JSON schema"
            )
        return sampler

    def _piece(self, token: int, special: bool = False) -> bytes:
        buf = self._piece_buf
        n = int(self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special))
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = int(self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special))
        return bytes(buf.raw[:n])

    def respond(
        self,
        messages: Sequence[ChatMessage],
        *,
        system_prompt: str = "",
        sampling: SamplingSettings | None = None,
        on_token: TokenCallback | None = None,
        on_sample: SampleCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Answer:
        """Answer the conversation ``messages`` (ending with the user's turn), streaming.

        ``on_token`` gets each new piece of text as soon as it is decoded;
        ``on_sample`` gets a :class:`LiveSample` about ten times a second.
        Setting ``cancel`` stops the answer between tokens: the text so far is
        returned with stop reason ``stopped`` (not an exception). When the
        conversation outgrows the context, the oldest turns are left out of the
        prompt and :attr:`Answer.notice` says so.
        """
        self._require()
        s = (sampling or SamplingSettings()).validated()
        n_ctx = self.n_ctx
        quarter = max(16, n_ctx // 4)
        reserve = min(s.max_tokens, quarter) if s.max_tokens > 0 else quarter
        prepared = self.prepare_prompt(messages, system_prompt=system_prompt, reserve=reserve)
        notice = ""
        if prepared.dropped_messages:
            notice = (
                f"The oldest {prepared.dropped_messages} message"
                f"{'s' if prepared.dropped_messages != 1 else ''} no longer fit in the "
                f"{n_ctx:,}-token context and were left out of the prompt."
            )
        return self._answer(
            list(prepared.tokens),
            s,
            stops=self.template.stop_strings,
            dropped_messages=prepared.dropped_messages,
            notice=notice,
            on_token=on_token,
            on_sample=on_sample,
            cancel=cancel,
        )

    def complete(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingSettings | None = None,
        stop: Sequence[str] = (),
        constraint: Constraint | None = None,
        logprobs: int | None = None,
        on_token: TokenCallback | None = None,
        on_logprob: Callable[[TokenLogprob], None] | None = None,
        on_sample: SampleCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Answer:
        """Continue ``prompt`` (rendered text, or tokens) as it is: no template, no trimming.

        This is what the local server calls after rendering a request itself.
        ``stop`` adds stop strings to the template's; ``constraint`` makes the
        answer follow a grammar; ``logprobs`` (0-20) fills :attr:`Answer.logprobs`
        with that many alternatives per token (and ``on_logprob`` gets each as it
        is sampled, before its text reaches ``on_token``). Raises :class:`ContextOverflowError`
        when the prompt leaves no room to answer.
        """
        self._require()
        s = (sampling or SamplingSettings()).validated()
        tokens = self.tokenize_prompt(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise GenerationError("the prompt is empty; send some text to continue")
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(
                f"the prompt needs {len(tokens):,} tokens but the model is loaded with a "
                f"{self.n_ctx:,}-token context; shorten the prompt or reload with a longer context"
            )
        stops = tuple(dict.fromkeys((*self.template.stop_strings, *(x for x in stop if x))))
        return self._answer(
            tokens,
            s,
            stops=stops,
            constraint=constraint,
            logprobs=logprobs,
            on_token=on_token,
            on_logprob=on_logprob,
            on_sample=on_sample,
            cancel=cancel,
        )

    def _answer(
        self,
        tokens: list[int],
        s: SamplingSettings,
        *,
        stops: Sequence[str],
        dropped_messages: int = 0,
        notice: str = "",
        constraint: Constraint | None = None,
        logprobs: int | None = None,
        on_token: TokenCallback | None,
        on_logprob: Callable[[TokenLogprob], None] | None = None,
        on_sample: SampleCallback | None,
        cancel: CancelToken | None,
    ) -> Answer:
        """Evaluate ``tokens`` (reusing the cached prefix) and generate the answer."""
        llm = self._llm
        n_ctx = self.n_ctx
        scanner = _StopScanner(stops)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        parts: list[str] = []
        probs: list[TokenLogprob] = []

        def emit(text: str) -> None:
            if text:
                parts.append(text)
                if on_token is not None:
                    on_token(text)

        with MemorySampler() as sampler:
            rec = StatsRecorder(context_size=n_ctx, on_sample=on_sample, sampler=sampler)
            reused = self._reuse_prefix(tokens)
            suffix = tokens[reused:]
            self._cache_valid = False
            reason = StopReason.STOPPED
            chain = None
            grammar = None
            try:
                for i in range(0, len(suffix), self._n_batch):
                    if cancel is not None and cancel.cancelled:
                        break
                    llm.eval(suffix[i : i + self._n_batch])
                else:
                    rec.prompt_done(len(tokens), len(suffix))
                    chain = self._make_sampler(s)
                    if constraint is not None:
                        grammar = self._make_grammar(constraint)
                    picker = _Picker(self, chain, grammar, logprobs, probs, on_logprob=on_logprob)
                    reason = self._generate(
                        picker,
                        rec,
                        s,
                        stops=stops,
                        scanner=scanner,
                        decoder=decoder,
                        emit=emit,
                        cancel=cancel,
                    )
                self._cache_valid = True
            except RuntimeError as exc:
                llm.reset()
                raise GenerationError(
                    f"llama.cpp failed while answering ({exc}); the conversation is kept — "
                    "send again, or reload the model with a longer context"
                ) from exc
            finally:
                if chain is not None:
                    self._lib.llama_sampler_free(chain)
                if grammar is not None:
                    self._lib.llama_sampler_free(grammar)
            if rec.t_prompt_done is None:
                rec.prompt_done(len(tokens), int(llm.n_tokens) - reused)
            emit(scanner.flush() if reason is not StopReason.STOP_STRING else "")
            tail = decoder.decode(b"", final=True)
            if tail and reason is not StopReason.STOP_STRING:
                emit(tail)
        stats = rec.finish(
            reason,
            context_used=len(tokens) + rec.generated,
            dropped_messages=dropped_messages,
        )
        return Answer("".join(parts), stats, notice, tuple(probs))

    def _generate(
        self,
        picker: _Picker,
        rec: StatsRecorder,
        s: SamplingSettings,
        *,
        stops: Sequence[str],
        scanner: _StopScanner,
        decoder: codecs.IncrementalDecoder,
        emit: TokenCallback,
        cancel: CancelToken | None,
    ) -> StopReason:
        llm = self._llm
        lib = self._lib
        vocab = self._vocab
        n_ctx = self.n_ctx
        max_tokens = s.max_tokens if s.max_tokens > 0 else math.inf
        is_eog = lib.llama_vocab_is_eog
        n = 0
        while True:
            token = picker.pick()
            if is_eog(vocab, token):
                rec.first_token_seen()
                return StopReason.END_OF_TURN
            piece = self._piece(token)
            if (
                not piece
                and stops
                and self._piece(token, special=True).decode("utf-8", "replace") in stops
            ):
                rec.first_token_seen()
                return StopReason.STOP_STRING
            picker.record(token, piece)
            out, hit = scanner.feed(decoder.decode(piece))
            emit(out)
            rec.token()
            n += 1
            if hit:
                return StopReason.STOP_STRING
            if n >= max_tokens:
                return StopReason.MAX_TOKENS
            if cancel is not None and cancel.cancelled:
                return StopReason.STOPPED
            if int(llm.n_tokens) >= n_ctx:
                return StopReason.CONTEXT_FULL
            llm.eval([token])

    def reset_cache(self) -> None:
        """Forget the KV cache (the next answer evaluates its whole prompt)."""
        self._require().reset()


class _Picker:
    """Chooses each next token: the sampler chain, a grammar, log probabilities.

    Without a grammar or log probabilities this is one call into llama.cpp's
    chain. With a grammar it samples as llama.cpp's own tools do: the chain
    picks a token, the grammar checks only that token, and only when it refuses
    is the grammar applied to the whole vocabulary (checking every token of a
    large vocabulary costs tens of milliseconds) and the chain run again.
    """

    def __init__(
        self,
        session: ChatSession,
        chain: Any,
        grammar: Any,
        logprobs: int | None,
        out: list[TokenLogprob],
        *,
        on_logprob: Callable[[TokenLogprob], None] | None = None,
    ) -> None:
        self._s = session
        self._on_logprob = on_logprob
        self._lib = session._lib
        self._ctx = session._llm.ctx
        self._chain = chain
        self._grammar = grammar
        self._top = None if logprobs is None else max(0, min(20, int(logprobs)))
        self._out = out
        self._n_vocab = int(self._lib.llama_vocab_n_tokens(session._vocab))
        self._full = grammar is not None or self._top is not None
        self._logits: Any = None
        if self._full:
            import numpy as np

            self._np = np
            row = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
            self._data = np.zeros(self._n_vocab, dtype=row)
            self._ids = np.arange(self._n_vocab, dtype=np.intc)
            self._array = self._lib.llama_token_data_array(
                data=self._data.ctypes.data_as(self._lib.llama_token_data_p),
                size=self._n_vocab,
                selected=-1,
                sorted=False,
            )
            self._one = (self._lib.llama_token_data * 1)()
            self._one_array = self._lib.llama_token_data_array(
                data=ctypes.cast(self._one, self._lib.llama_token_data_p),
                size=1,
                selected=-1,
                sorted=False,
            )

    def pick(self) -> int:
        lib = self._lib
        if not self._full:
            return int(lib.llama_sampler_sample(self._chain, self._ctx, -1))
        np = self._np
        logits = np.ctypeslib.as_array(
            lib.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,)
        ).copy()
        self._logits = logits
        token = self._apply(logits, with_grammar=False)
        if self._grammar is not None:
            one = self._one[0]
            one.id, one.logit, one.p = token, 0.0, 0.0
            self._one_array.size, self._one_array.selected = 1, -1
            lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
            if not math.isfinite(self._one[0].logit):
                token = self._apply(logits, with_grammar=True)
            lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._chain, token)
        return token

    def _apply(self, logits: Any, *, with_grammar: bool) -> int:
        lib = self._lib
        self._data["id"] = self._ids
        self._data["logit"] = logits
        self._data["p"] = 0.0
        arr = self._array
        arr.size, arr.selected, arr.sorted = self._n_vocab, -1, False
        if with_grammar:
            lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        lib.llama_sampler_apply(self._chain, ctypes.byref(arr))
        if arr.selected < 0:
            raise RuntimeError("the sampler chain chose no token")
        return int(self._data["id"][arr.selected])

    def record(self, token: int, piece: bytes) -> None:
        """Note the log probabilities of ``token`` (a no-op unless they were asked for)."""
        if self._top is None or self._logits is None:
            return
        np = self._np
        logits = self._logits.astype(np.float64)
        peak = float(logits.max())
        logsum = peak + math.log(float(np.exp(logits - peak).sum()))
        top: list[tuple[str, float, tuple[int, ...]]] = []
        if self._top > 0:
            best = np.argpartition(-logits, self._top)[: self._top]
            best = best[np.argsort(-logits[best])]
            for t in best:
                raw = self._s._piece(int(t))
                top.append((raw.decode("utf-8", "replace"), float(logits[t]) - logsum, tuple(raw)))
        entry = TokenLogprob(
            piece.decode("utf-8", "replace"),
            float(logits[token]) - logsum,
            tuple(piece),
            tuple(top),
        )
        self._out.append(entry)
        if self._on_logprob is not None:
            self._on_logprob(entry)
