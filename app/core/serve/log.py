"""The server's request log and per-model statistics, for the GUI and ``/metrics``.

Each finished request becomes one :class:`RequestRecord` (model, route, status,
tokens, time to first token, generation rate, duration); the log keeps the
latest ones and tells listeners (the GUI's Server page) about each. API keys
and request bodies are never recorded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_RECORDS = 500


@dataclass(frozen=True)
class RequestRecord:
    id: str
    time: float
    route: str
    model: str
    status: int
    stream: bool
    client: str
    duration_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    prompt_tokens_per_s: float | None = None
    gen_tokens_per_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelStats:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_sum_s: float = 0.0
    ttft_n: int = 0
    gen_rate_sum: float = 0.0
    gen_rate_n: int = 0
    prompt_rate_sum: float = 0.0
    prompt_rate_n: int = 0
    last_gen_tokens_per_s: float | None = None

    def add(self, r: RequestRecord) -> None:
        self.requests += 1
        if r.status >= 400 or r.error:
            self.errors += 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        if r.ttft_s is not None:
            self.ttft_sum_s += r.ttft_s
            self.ttft_n += 1
        if r.gen_tokens_per_s is not None:
            self.gen_rate_sum += r.gen_tokens_per_s
            self.gen_rate_n += 1
            self.last_gen_tokens_per_s = r.gen_tokens_per_s
        if r.prompt_tokens_per_s is not None:
            self.prompt_rate_sum += r.prompt_tokens_per_s
            self.prompt_rate_n += 1

    def to_dict(self) -> dict[str, Any]:
        def mean(total: float, n: int) -> float | None:
            return round(total / n, 4) if n else None

        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "mean_ttft_s": mean(self.ttft_sum_s, self.ttft_n),
            "mean_prompt_tokens_per_s": mean(self.prompt_rate_sum, self.prompt_rate_n),
            "mean_gen_tokens_per_s": mean(self.gen_rate_sum, self.gen_rate_n),
            "last_gen_tokens_per_s": self.last_gen_tokens_per_s,
        }


@dataclass
class RequestLog:
    """The latest requests and per-model totals; thread-safe."""

    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
    per_model: dict[str, ModelStats] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    _listeners: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)
            if record.model:
                self.per_model.setdefault(record.model, ModelStats()).add(record)
            listeners = list(self._listeners)
        for fn in listeners:
            fn(record)

    def listen(self, fn: Callable[[RequestRecord], None]) -> Callable[[], None]:
        """Call ``fn(record)`` (on the server's thread) for every new record; returns an
        unsubscribe function."""
        with self._lock:
            self._listeners.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return remove

    def latest(self, n: int = 100) -> list[RequestRecord]:
        with self._lock:
            return list(self.records)[-n:]

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: v.to_dict() for k, v in self.per_model.items()}
