"""Progress reports and cooperative cancellation shared by every long job.

The engine takes ``on_progress: ProgressCallback | None`` and
``cancel: CancelToken | None``; it never prints and never knows about Qt.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quant.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One step of a job. ``total`` is 0 when the amount of work is unknown."""

    stage: str
    done: int
    total: int
    message: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    eta_s: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.total <= 0:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "eta_s": self.eta_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Progress:
        """The progress :meth:`as_dict` wrote (a child job's JSON line); bad fields become 0/""."""

        def count(key: str) -> int:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return 0
            return int(value) if math.isfinite(value) else 0

        eta = data.get("eta_s")
        finite_eta = (
            float(eta)
            if isinstance(eta, int | float) and not isinstance(eta, bool) and math.isfinite(eta)
            else None
        )
        return cls(
            stage=str(data.get("stage") or ""),
            done=count("done"),
            total=count("total"),
            message=str(data.get("message") or ""),
            bytes_done=count("bytes_done"),
            bytes_total=count("bytes_total"),
            eta_s=finite_eta,
        )


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Thread-safe flag a job polls between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set; a ``None`` token never cancels."""
    if cancel is not None:
        cancel.raise_if_cancelled()


@dataclass
class EtaEstimator:
    """Estimates the remaining time of a job from its rate so far."""

    started: float = field(default_factory=time.monotonic)

    def eta(self, done: float, total: float) -> float | None:
        if done <= 0 or total <= 0 or done >= total:
            return None if done < total else 0.0
        elapsed = time.monotonic() - self.started
        return elapsed * (total - done) / done
