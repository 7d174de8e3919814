"""Probe this machine into a :class:`~quant.hardware.profile.HardwareProfile`.

The parts (CPU, memory, NVIDIA, Apple Silicon, llama.cpp runtime) run at the same
time in daemon threads under one deadline. A part that fails or does not answer
in time is left out with a one-line note; the others still report. The memory
bandwidth benchmark runs last, when the other parts are done, so it does not
compete with them for the cores; its result is cached for 30 days, which keeps a
repeated probe well under a second.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import psutil

from quant.hardware.apple import probe_apple
from quant.hardware.bandwidth import memory_bandwidth
from quant.hardware.cpu import normalize_arch, probe_cpu
from quant.hardware.nvidia import probe_nvidia
from quant.hardware.profile import (
    AppleInfo,
    CpuInfo,
    GpuInfo,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
)
from quant.hardware.runtime import probe_runtime
from quant.progress import CancelToken, Progress, ProgressCallback, check_cancel

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0
# The bandwidth benchmark always gets at least this long, even after a slow part.
BANDWIDTH_MIN_S = 1.0

_T = TypeVar("_T")


class _Part(Generic[_T]):
    """One probe part running in a daemon thread (a hung driver call cannot block exit)."""

    def __init__(self, label: str, fn: Callable[[], _T]) -> None:
        self.label = label
        self._fn = fn
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._started = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"quantdesk-probe-{label}", daemon=True
        )

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except Exception as exc:  # a part boundary: the failure becomes a note
            logger.warning("%s probe failed", self.label, exc_info=True)
            self._error = exc

    def start(self) -> _Part[_T]:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def result(self, deadline: float, notes: list[str]) -> _T | None:
        """The part's value, or None with a note when it failed or missed ``deadline``."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            waited = time.monotonic() - self._started
            notes.append(f"{self.label} probe did not finish within {waited:.1f} s; left out")
            return None
        if self._error is not None:
            notes.append(f"{self.label} probe failed ({self._error}); left out")
            return None
        return self._value


def probe(
    *,
    measure_bandwidth: bool = True,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> HardwareProfile:
    """Describe this machine: CPU, memory, GPUs, Apple Silicon, llama.cpp backends.

    Never raises for a part that cannot be probed (it becomes a note); returns
    within about ``timeout_s`` (plus up to :data:`BANDWIDTH_MIN_S` when the
    bandwidth benchmark must run). ``measure_bandwidth=False`` skips the
    benchmark; ``use_cache=False`` re-measures instead of reading the cached
    figure. ``cache_dir`` overrides where that figure is kept.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    check_cancel(cancel)

    cpu_part = _Part("CPU", probe_cpu).start()
    memory_part = _Part("memory", _probe_memory).start()
    # Macs have had no NVIDIA driver since macOS 10.14: nothing to ask, nothing to note.
    nvidia_part = _Part(
        "NVIDIA",
        lambda: (
            ((), ())
            if sys.platform == "darwin"
            else probe_nvidia(timeout_s=max(0.1, timeout_s - 0.25))
        ),
    ).start()
    apple_part = _Part("Apple Silicon", probe_apple).start()
    runtime_part = _Part("llama.cpp runtime", probe_runtime).start()
    total = 6 if measure_bandwidth else 5
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(Progress("hardware", done, total, f"{label} probed"))

    notes: list[str] = []

    cpu_result = cpu_part.result(deadline, notes)
    if cpu_result is not None:
        cpu, cpu_notes = cpu_result
        notes.extend(cpu_notes)
    else:
        cpu = _fallback_cpu()
    step("CPU")

    memory_result = memory_part.result(deadline, notes)
    if memory_result is not None:
        memory = memory_result
    else:
        memory, memory_note = _fallback_memory()
        notes.append(memory_note)
    step("memory")

    gpus: tuple[GpuInfo, ...] = ()
    nvidia_result = nvidia_part.result(deadline, notes)
    if nvidia_result is not None:
        gpus, nvidia_notes = nvidia_result
        notes.extend(nvidia_notes)
    step("NVIDIA")

    apple: AppleInfo | None = None
    apple_result = apple_part.result(deadline, notes)
    if apple_result is not None:
        apple, apple_notes = apple_result
        notes.extend(apple_notes)
    step("Apple Silicon")

    runtime: RuntimeInfo = RuntimeInfo()
    backends: tuple[str, ...] = ("cpu",)
    runtime_result = runtime_part.result(deadline, notes)
    if runtime_result is not None:
        runtime, backends, runtime_notes = runtime_result
        notes.extend(runtime_notes)
    step("llama.cpp runtime")
    check_cancel(cancel)

    bandwidth: float | None = None
    if measure_bandwidth:
        brand, total_bytes, threads = cpu.brand, memory.total_bytes, cpu.physical_cores
        bw_part = _Part(
            "memory bandwidth",
            lambda: memory_bandwidth(
                brand, total_bytes, threads=threads, cache_dir=cache_dir, use_cache=use_cache
            ),
        ).start()
        bw_result = bw_part.result(max(deadline, time.monotonic() + BANDWIDTH_MIN_S), notes)
        if bw_result is not None:
            bandwidth = bw_result.gbps
        step("memory bandwidth")
        check_cancel(cancel)

    logger.debug("hardware probe took %.3f s", time.monotonic() - started)
    return HardwareProfile(
        cpu=cpu,
        memory=memory,
        gpus=gpus,
        apple=apple,
        backends=backends,
        runtime=runtime,
        measured_bandwidth_gbps=bandwidth,
        notes=tuple(notes),
        source="probe",
    )


def _probe_memory() -> MemoryInfo:
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return MemoryInfo(
        total_bytes=int(vm.total),
        available_bytes=int(vm.available),
        swap_total_bytes=int(swap.total),
        swap_free_bytes=int(swap.free),
    )


def _fallback_cpu() -> CpuInfo:
    count = os.cpu_count() or 1
    return CpuInfo(
        brand=platform.processor() or "unknown CPU",
        arch=normalize_arch(platform.machine()),
        physical_cores=count,
        logical_cores=count,
        features=(),
        features_source="unknown",
    )


def _fallback_memory() -> tuple[MemoryInfo, str]:
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        total = 0
    if total > 0:
        note = "memory size read from the OS page count; available memory assumed 75% of it"
    else:
        # A profile needs a positive total; 1 GiB is a deliberately pessimistic stand-in.
        total = 1024**3
        note = "memory size unknown; assumed 1 GiB (plan with --hardware FILE instead)"
    return MemoryInfo(total_bytes=total, available_bytes=int(total * 0.75)), note
