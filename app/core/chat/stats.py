"""Measured speed and memory of one answer.

Everything here is measured, never estimated: time to first token, prompt
tokens evaluated and their rate, generated tokens and their rate, why the
answer stopped, and the process's resident memory and (on NVIDIA) VRAM,
sampled by a helper thread while the answer is produced.

VRAM comes from NVML (``pynvml``): the memory NVML attributes to this process
when the driver reports per-process usage, else the device-wide used memory
(said so by :attr:`MemoryReading.vram_scope`). Without an NVIDIA driver the
reading is None, never an error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import psutil

logger = logging.getLogger(__name__)

# Memory is sampled this often while an answer is produced.
SAMPLE_INTERVAL_S = 0.1


class StopReason(StrEnum):
    END_OF_TURN = "end of turn"
    MAX_TOKENS = "max tokens"
    STOPPED = "stopped"
    CONTEXT_FULL = "context full"
    STOP_STRING = "stop string"

    @property
    def label(self) -> str:
        return {
            StopReason.END_OF_TURN: "the model finished",
            StopReason.MAX_TOKENS: "reached the token limit",
            StopReason.STOPPED: "stopped by you",
            StopReason.CONTEXT_FULL: "the context is full",
            StopReason.STOP_STRING: "hit a stop string",
        }[self]


@dataclass(frozen=True)
class MemoryReading:
    rss_bytes: int
    vram_bytes: int | None = None
    # "process" (NVML per-process usage) or "device" (whole GPU); None without a GPU.
    vram_scope: str | None = None


class _Nvml:
    """Lazily initialised NVML handle; absent driver or library means no readings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: bool | None = None
        self._mod: Any = None
        self._handles: list[Any] = []

    def _init(self) -> bool:
        if self._ready is not None:
            return self._ready
        try:
            import pynvml

            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._mod = pynvml
            self._ready = count > 0
        except Exception as exc:  # no driver, no library, no device: no VRAM readings
            logger.debug("NVML unavailable: %s", exc)
            self._ready = False
        return self._ready

    def read(self, pid: int) -> tuple[int | None, str | None]:
        with self._lock:
            if not self._init():
                return None, None
            nv = self._mod
            own = 0
            seen = False
            device_used = 0
            try:
                for h in self._handles:
                    device_used += int(nv.nvmlDeviceGetMemoryInfo(h).used)
                    for proc in nv.nvmlDeviceGetComputeRunningProcesses(h):
                        if int(proc.pid) == pid and proc.usedGpuMemory is not None:
                            own += int(proc.usedGpuMemory)
                            seen = True
            except Exception as exc:  # a driver hiccup must not stop an answer
                logger.debug("NVML read failed: %s", exc)
                return None, None
            if seen:
                return own, "process"
            return device_used, "device"


_NVML = _Nvml()
_PROCESS = psutil.Process(os.getpid())


def read_memory() -> MemoryReading:
    """This process's RSS and, on NVIDIA, VRAM in use now."""
    rss = int(_PROCESS.memory_info().rss)
    vram, scope = _NVML.read(os.getpid())
    return MemoryReading(rss, vram, scope)


@dataclass(frozen=True)
class LiveSample:
    """One point of the live chart, taken while an answer is produced.

    ``t_s`` counts from the start of the request; ``tokens_per_s`` is the
    generation rate since the previous sample (None before the first token);
    ``context_used`` is the prompt plus the tokens generated so far.
    """

    t_s: float
    generated_tokens: int
    tokens_per_s: float | None
    rss_bytes: int
    vram_bytes: int | None
    context_used: int = 0


@dataclass(frozen=True)
class AnswerStats:
    """What one answer cost, measured.

    ``prompt_tokens`` is the whole prompt; ``prompt_tokens_evaluated`` only the
    part that had to be processed (the rest was reused from the KV cache).
    ``ttft_s`` runs from the request to the first generated token, so it
    includes prompt processing. ``gen_tokens_per_s`` is measured over the
    tokens after the first.
    """

    ttft_s: float | None
    prompt_tokens: int
    prompt_tokens_evaluated: int
    prompt_s: float
    generated_tokens: int
    gen_s: float
    stop_reason: StopReason
    context_used: int
    context_size: int
    rss_bytes: int
    rss_peak_bytes: int
    vram_bytes: int | None = None
    vram_peak_bytes: int | None = None
    vram_scope: str | None = None
    dropped_messages: int = 0
    # Measured by a client of a remote server: its memory is the server's, not ours.
    remote: bool = False

    @property
    def prompt_tokens_cached(self) -> int:
        return self.prompt_tokens - self.prompt_tokens_evaluated

    @property
    def prompt_tokens_per_s(self) -> float | None:
        if self.prompt_tokens_evaluated <= 0 or self.prompt_s <= 0:
            return None
        return self.prompt_tokens_evaluated / self.prompt_s

    @property
    def gen_tokens_per_s(self) -> float | None:
        if self.generated_tokens < 2 or self.gen_s <= 0:
            return None
        return (self.generated_tokens - 1) / self.gen_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop_reason"] = self.stop_reason.value
        d["prompt_tokens_cached"] = self.prompt_tokens_cached
        d["prompt_tokens_per_s"] = _round(self.prompt_tokens_per_s)
        d["gen_tokens_per_s"] = _round(self.gen_tokens_per_s)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerStats:
        names = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["stop_reason"] = StopReason(kwargs.get("stop_reason", StopReason.STOPPED.value))
        return cls(**kwargs)

    def summary(self) -> str:
        """One line for people: the same figures the GUI's stats bar shows."""
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s * 1000:.0f} ms")
        pps = self.prompt_tokens_per_s
        prompt = f"prompt {self.prompt_tokens_evaluated} tok"
        if self.prompt_tokens_cached:
            prompt += f" (+{self.prompt_tokens_cached} cached)"
        if pps is not None:
            prompt += f" at {pps:.1f} tok/s"
        if not (self.remote and self.prompt_tokens == 0):  # a server that reports no usage
            parts.append(prompt)
        gps = self.gen_tokens_per_s
        gen = f"generated {self.generated_tokens} tok"
        if gps is not None:
            gen += f" at {gps:.1f} tok/s"
        parts.append(gen)
        parts.append(f"stop: {self.stop_reason.value}")
        if self.remote:
            parts.append("memory: remote")
            return " · ".join(parts)
        parts.append(f"context {self.context_used:,}/{self.context_size:,}")
        parts.append(f"RSS {self.rss_peak_bytes / 2**20:,.0f} MiB")
        if self.vram_peak_bytes is not None:
            scope = " (device)" if self.vram_scope == "device" else ""
            parts.append(f"VRAM {self.vram_peak_bytes / 2**20:,.0f} MiB{scope}")
        return " · ".join(parts)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


class MemorySampler:
    """Samples RSS and VRAM on a helper thread while an answer is produced.

    The thread only records the latest reading and the peaks; callers read
    :attr:`latest` from the generating thread, so all callbacks stay there.
    """

    def __init__(
        self,
        interval_s: float = SAMPLE_INTERVAL_S,
        reader: Callable[[], MemoryReading] = read_memory,
    ) -> None:
        self._interval = interval_s
        self._reader = reader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        first = reader()
        self.latest = first
        self.rss_peak = first.rss_bytes
        self.vram_peak = first.vram_bytes

    def _take(self) -> None:
        reading = self._reader()
        self.latest = reading
        self.rss_peak = max(self.rss_peak, reading.rss_bytes)
        if reading.vram_bytes is not None:
            self.vram_peak = max(self.vram_peak or 0, reading.vram_bytes)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._take()
            except Exception:  # sampling must never end an answer
                logger.debug("memory sample failed", exc_info=True)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="chat-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        try:
            self._take()
        except Exception:
            logger.debug("final memory sample failed", exc_info=True)


class StatsRecorder:
    """Collects the timings of one answer as the session produces it."""

    def __init__(
        self,
        *,
        context_size: int,
        on_sample: Callable[[LiveSample], None] | None = None,
        sampler: MemorySampler | None = None,
        sample_every_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.context_size = context_size
        self._on_sample = on_sample
        self._sampler = sampler
        self._sample_every = sample_every_s
        self.t0 = time.perf_counter()
        self.t_prompt_done: float | None = None
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.prompt_tokens = 0
        self.prompt_evaluated = 0
        self.generated = 0
        self._last_sample_t = self.t0
        self._last_sample_tokens = 0

    def prompt_done(self, prompt_tokens: int, evaluated: int) -> None:
        self.t_prompt_done = time.perf_counter()
        self.prompt_tokens = prompt_tokens
        self.prompt_evaluated = evaluated
        self._emit(self.t_prompt_done)

    def first_token_seen(self) -> None:
        """Mark the first sampled token (also when it ends the answer at once)."""
        if self.t_first is None:
            self.t_first = time.perf_counter()

    def token(self) -> None:
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.generated += 1
        if self._on_sample is not None and now - self._last_sample_t >= self._sample_every:
            self._emit(now)

    def _emit(self, now: float) -> None:
        if self._on_sample is None:
            return
        dt = now - self._last_sample_t
        new = self.generated - self._last_sample_tokens
        tps = new / dt if (dt > 0 and new > 0 and self.t_first is not None) else None
        self._last_sample_t = now
        self._last_sample_tokens = self.generated
        reading = self._sampler.latest if self._sampler is not None else read_memory()
        self._on_sample(
            LiveSample(
                now - self.t0,
                self.generated,
                tps,
                reading.rss_bytes,
                reading.vram_bytes,
                self.prompt_tokens + self.generated,
            )
        )

    def finish(
        self, reason: StopReason, *, context_used: int, dropped_messages: int = 0
    ) -> AnswerStats:
        end = time.perf_counter()
        if self._on_sample is not None and self.generated > self._last_sample_tokens:
            self._emit(end)
        prompt_end = self.t_prompt_done if self.t_prompt_done is not None else end
        gen_s = 0.0
        if self.t_first is not None and self.t_last is not None:
            gen_s = self.t_last - self.t_first
        s = self._sampler
        latest = s.latest if s is not None else read_memory()
        return AnswerStats(
            ttft_s=(self.t_first - self.t0) if self.t_first is not None else None,
            prompt_tokens=self.prompt_tokens,
            prompt_tokens_evaluated=self.prompt_evaluated,
            prompt_s=prompt_end - self.t0,
            generated_tokens=self.generated,
            gen_s=gen_s,
            stop_reason=reason,
            context_used=context_used,
            context_size=self.context_size,
            rss_bytes=latest.rss_bytes,
            rss_peak_bytes=s.rss_peak if s is not None else latest.rss_bytes,
            vram_bytes=latest.vram_bytes,
            vram_peak_bytes=s.vram_peak if s is not None else latest.vram_bytes,
            vram_scope=latest.vram_scope,
            dropped_messages=dropped_messages,
        )
