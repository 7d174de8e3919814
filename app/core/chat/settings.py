"""What a user chooses for a chat: sampling, load plan, system prompt — saved per model.

Values live in the ``chat`` section of :class:`app.core.settings.Settings`,
under ``models`` keyed by the model file's absolute path, so each model keeps
its own temperature, context length and system prompt. Everything read back is
validated and clamped: a hand-edited or older settings file can never make a
load or a generation fail.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from app.core.chat.templates import PromptMode
from app.core.settings import Settings
from quant.plan.memory import KvType, RuntimeOptions

logger = logging.getLogger(__name__)

SECTION = "chat"

_E = TypeVar("_E", bound=StrEnum)

# Context lengths offered by the UI and used for suggestions.
MIN_CONTEXT = 256
DEFAULT_CONTEXT = 4096


class FlashAttention(StrEnum):
    """Flash attention: on where the runtime supports it (auto), always, or never."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class SamplingSettings:
    """How the next token is chosen. ``seed`` -1 means a new random seed per answer;
    ``temperature`` 0 means greedy; ``max_tokens`` 0 means until the context is full."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int = -1
    max_tokens: int = 1024
    # OpenAI's penalties (-2 to 2) on tokens already generated: once (presence), per use
    # (frequency). 0 leaves them off.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def validated(self) -> SamplingSettings:
        return SamplingSettings(
            temperature=_clamp_float(self.temperature, 0.0, 5.0, 0.8),
            top_p=_clamp_float(self.top_p, 0.0, 1.0, 0.95),
            top_k=_clamp_int(self.top_k, 0, 100_000, 40),
            min_p=_clamp_float(self.min_p, 0.0, 1.0, 0.05),
            repeat_penalty=_clamp_float(self.repeat_penalty, 0.5, 3.0, 1.1),
            seed=_clamp_int(self.seed, -1, 2**32 - 2, -1),
            max_tokens=_clamp_int(self.max_tokens, 0, 1_000_000, 1024),
            presence_penalty=_clamp_float(self.presence_penalty, -2.0, 2.0, 0.0),
            frequency_penalty=_clamp_float(self.frequency_penalty, -2.0, 2.0, 0.0),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SamplingSettings:
        return cls(**_known(cls, data)).validated()


@dataclass(frozen=True)
class LoadPlan:
    """How to load a model: context length, GPU layers, KV-cache type, threads.

    ``n_gpu_layers`` -1 offloads every layer; ``n_threads`` None uses the
    physical core count; ``flash_attention`` AUTO turns it on where the
    runtime supports it (and always when the V cache is quantized, which
    requires it).
    """

    n_ctx: int = DEFAULT_CONTEXT
    n_gpu_layers: int = 0
    kv_type: KvType = KvType.F16
    n_threads: int | None = None
    flash_attention: FlashAttention = FlashAttention.AUTO
    use_mmap: bool = True
    n_batch: int = 512

    def validated(self) -> LoadPlan:
        threads = None if self.n_threads in (None, 0) else _clamp_int(self.n_threads, 1, 1024, 1)
        return LoadPlan(
            n_ctx=_clamp_int(self.n_ctx, MIN_CONTEXT, 1 << 22, DEFAULT_CONTEXT),
            n_gpu_layers=_clamp_int(self.n_gpu_layers, -1, 100_000, 0),
            kv_type=_enum(KvType, self.kv_type, KvType.F16),
            n_threads=threads,
            flash_attention=_enum(FlashAttention, self.flash_attention, FlashAttention.AUTO),
            use_mmap=bool(self.use_mmap),
            n_batch=_clamp_int(self.n_batch, 32, 8192, 512),
        )

    @property
    def flash_attn(self) -> bool:
        """Whether the load turns flash attention on.

        A quantized V cache needs it; "auto" turns it on because the CPU, CUDA and
        Metal backends of the bundled llama.cpp all implement it, and the
        high-level binding exposes only on/off.
        """
        if self.kv_type.needs_flash_attention:
            return True
        return self.flash_attention is not FlashAttention.OFF

    def runtime_options(self) -> RuntimeOptions:
        """The llama.cpp settings this load runs with, as the memory and speed models take
        them (the advisor plans the Chat page's default load with these)."""
        return RuntimeOptions(n_ubatch=min(self.n_batch, 512), flash_attn=self.flash_attn)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kv_type"] = self.kv_type.value
        d["flash_attention"] = self.flash_attention.value
        return d

    @classmethod
    def from_dict(cls, data: Any) -> LoadPlan:
        return cls(**_known(cls, data)).validated()

    def describe(self) -> str:
        gpu = "all layers" if self.n_gpu_layers < 0 else f"{self.n_gpu_layers} layers"
        return (
            f"context {self.n_ctx:,} tokens, GPU {gpu}, KV cache {self.kv_type.value}, "
            f"flash attention {self.flash_attention.value}"
        )


@dataclass(frozen=True)
class ModelChatSettings:
    """Everything chat remembers for one model file."""

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    plan: LoadPlan = field(default_factory=LoadPlan)
    system_prompt: str = ""
    mode: PromptMode = PromptMode.CHAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampling": self.sampling.to_dict(),
            "plan": self.plan.to_dict(),
            "system_prompt": self.system_prompt,
            "mode": self.mode.value,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelChatSettings:
        if not isinstance(data, dict):
            return cls()
        prompt = data.get("system_prompt", "")
        return cls(
            sampling=SamplingSettings.from_dict(data.get("sampling")),
            plan=LoadPlan.from_dict(data.get("plan")),
            system_prompt=prompt if isinstance(prompt, str) else "",
            mode=_enum(PromptMode, data.get("mode"), PromptMode.CHAT),
        )


class ChatSettingsStore:
    """Reads and writes per-model chat settings through the app's :class:`Settings`.

    Writes save the whole settings file atomically; call from one thread (the
    GUI thread in the app).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @staticmethod
    def key(model: Path | str) -> str:
        return str(Path(model).expanduser().resolve())

    def _models(self) -> dict[str, Any]:
        section = self._settings.section(SECTION)
        models = section.get("models")
        if not isinstance(models, dict):
            models = {}
            section["models"] = models
        return models

    def for_model(self, model: Path | str) -> ModelChatSettings:
        return ModelChatSettings.from_dict(self._models().get(self.key(model)))

    def has_saved(self, model: Path | str) -> bool:
        """Whether the user has chosen settings for ``model`` (else the model's defaults apply)."""
        return isinstance(self._models().get(self.key(model)), dict)

    def save_for_model(self, model: Path | str, value: ModelChatSettings) -> None:
        self._models()[self.key(model)] = value.to_dict()
        self._settings.section(SECTION)["last_model"] = self.key(model)
        self._settings.save()

    def update_sampling(self, model: Path | str, sampling: SamplingSettings) -> None:
        self.save_for_model(model, replace(self.for_model(model), sampling=sampling.validated()))

    def last_model(self) -> Path | None:
        value = self._settings.section(SECTION).get("last_model")
        return Path(value) if isinstance(value, str) and value else None


# ----------------------------------------------------------------------------- helpers


def _known(cls: type[Any], data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _clamp_float(value: Any, lo: float, hi: float, default: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    if math.isnan(v):
        return default
    return min(hi, max(lo, v))


def _clamp_int(value: Any, lo: int, hi: int, default: int) -> int:
    if isinstance(value, bool):
        return default
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return min(hi, max(lo, v))


def _enum(cls: type[_E], value: Any, default: _E) -> _E:
    try:
        return cls(value)
    except ValueError:
        return default
