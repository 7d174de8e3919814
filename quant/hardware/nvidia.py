"""The NVIDIA part of the hardware probe, through NVML (``pynvml`` from nvidia-ml-py).

A machine without the driver or without the library gets an empty GPU list and a
one-line note, never an exception. NVML can hang on a wedged driver, so the whole
query runs in a daemon thread that the caller waits on for a bounded time; a hung
thread is left behind (it cannot be killed) and later probes do not start another
one while it is still stuck.

The NVML layer is injectable: anything with pynvml's function names works, which
is how the tests stand in an H100, an RTX 4090, a machine with no driver and a
driver that never answers.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from quant.hardware.profile import GpuInfo

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0

# pynvml.NVML_CLOCK_MEM: the memory clock domain of nvmlDeviceGetMaxClockInfo.
_NVML_CLOCK_MEM = 2

_T = TypeVar("_T")

# The thread of a real-driver query that did not answer in time, if any.
_stuck_lock = threading.Lock()
_stuck: list[threading.Thread] = []


def memory_bandwidth_gbps(bus_width_bits: int, max_memory_clock_mhz: int) -> float:
    """Peak memory bandwidth in GB/s from NVML's bus width and maximum memory clock.

    bytes per transfer (width / 8) × clock (MHz) × 2 transfers per clock / 1000.
    An H100 SXM reads 5120 bits and 2619 MHz: 3352 GB/s, its published 3.35 TB/s.
    """
    return round(bus_width_bits / 8 * max_memory_clock_mhz * 2 / 1000, 1)


def cuda_version_string(version: int) -> str:
    """NVML's CUDA driver version integer (12040) as "12.4"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def probe_nvidia(
    nvml: Any | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[tuple[GpuInfo, ...], tuple[str, ...]]:
    """List NVIDIA GPUs; return them with notes on what could not be read.

    ``nvml`` is an object with pynvml's functions (``nvmlInit``,
    ``nvmlDeviceGetCount`` …); ``None`` imports ``pynvml``. Returns within about
    ``timeout_s`` whatever the driver does.
    """
    real = nvml is None
    if real:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return (), ("NVIDIA GPUs not probed: nvidia-ml-py (pynvml) is not installed",)
        with _stuck_lock:
            _stuck[:] = [t for t in _stuck if t.is_alive()]
            if _stuck:
                return (), ("NVIDIA driver is still not answering an earlier query; GPUs left out",)

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = _query(nvml)
        except Exception as exc:  # a native-driver boundary: any failure becomes a note
            logger.debug("NVML query failed", exc_info=True)
            box["error"] = exc

    thread = threading.Thread(target=work, name="quantdesk-nvml", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        if real:
            with _stuck_lock:
                _stuck.append(thread)
        logger.warning("NVML did not answer within %.1f s", timeout_s)
        return (), (
            f"NVIDIA driver did not answer within {timeout_s:g} s; GPUs left out "
            "(check nvidia-smi)",
        )
    if "error" in box:
        return (), (_describe_failure(box["error"]),)
    gpus, notes = box["result"]
    return gpus, notes


def _describe_failure(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    lowered = text.lower()
    if "LibraryNotFound" in kind or "library not found" in lowered:
        return "no NVIDIA GPU: the NVIDIA driver's NVML library was not found"
    if "DriverNotLoaded" in kind or "driver not loaded" in lowered:
        return "no NVIDIA GPU: the NVIDIA driver is not loaded"
    return f"NVIDIA GPUs not probed: NVML failed ({text})"


def _query(nvml: Any) -> tuple[tuple[GpuInfo, ...], tuple[str, ...]]:
    nvml.nvmlInit()
    notes: list[str] = []
    try:
        driver = _optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        cuda_raw = _optional(lambda: int(nvml.nvmlSystemGetCudaDriverVersion()))
        cuda = cuda_version_string(cuda_raw) if cuda_raw else None
        count = int(nvml.nvmlDeviceGetCount())
        if count == 0:
            notes.append("the NVIDIA driver reports no GPUs")
        gpus = [_device(nvml, i, driver, cuda, notes) for i in range(count)]
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # shutting down a driver we are done with
            logger.debug("nvmlShutdown failed", exc_info=True)
    return tuple(gpus), tuple(notes)


def _device(
    nvml: Any, index: int, driver: str | None, cuda: str | None, notes: list[str]
) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    cc = _optional(lambda: tuple(nvml.nvmlDeviceGetCudaComputeCapability(handle)))
    width = _optional(lambda: int(nvml.nvmlDeviceGetMemoryBusWidth(handle)))
    clock_domain = getattr(nvml, "NVML_CLOCK_MEM", _NVML_CLOCK_MEM)
    clock = _optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, clock_domain)))
    bandwidth = memory_bandwidth_gbps(width, clock) if width and clock else None
    if bandwidth is None:
        notes.append(
            f"GPU {index} ({name}): memory bandwidth unknown (NVML gave no bus width or clock)"
        )
    return GpuInfo(
        vendor="nvidia",
        name=name,
        memory_total_bytes=int(mem.total),
        memory_free_bytes=int(mem.free),
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        memory_bandwidth_gbps=bandwidth,
        driver_version=driver,
        cuda_version=cuda,
        index=index,
    )


def _optional(read: Callable[[], _T]) -> _T | None:
    """One NVML field that some GPUs or drivers do not support."""
    try:
        return read()
    except Exception as exc:  # NVMLError_NotSupported and friends
        logger.debug("NVML field unavailable: %s", exc)
        return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
