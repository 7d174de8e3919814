"""The Apple Silicon part of the hardware probe: chip, unified memory, GPU working set.

On Apple Silicon the GPU shares main memory, but Metal lets it wire only part of
it: the ``iogpu.wired_limit_mb`` sysctl when a user has raised it, else Metal's
default (:func:`quant.hardware.profile.default_apple_working_set`). That limit,
not the RAM size, decides which models fit on the GPU. Bandwidth is not
measurable through a public API, so it comes from Apple's published figures.

``sysctl`` is injectable so saved outputs from other Macs can be replayed.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping

from quant.hardware.cpu import SysctlRunner, run_sysctl
from quant.hardware.profile import AppleInfo, default_apple_working_set

logger = logging.getLogger(__name__)

MIB = 1024**2

APPLE_SYSCTL_KEYS: tuple[str, ...] = (
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.optional.arm64",
    "iogpu.wired_limit_mb",
)

# Unified-memory bandwidth in GB/s by chip, from Apple product specifications
# (apple.com tech specs and newsroom announcements of each chip). Chips sold in two
# bins map CPU core count -> bandwidth.
_BANDWIDTH_GBPS: dict[str, float | dict[int, float]] = {
    "M1": 68.25,
    "M1 Pro": 200.0,
    "M1 Max": 400.0,
    "M1 Ultra": 800.0,
    "M2": 100.0,
    "M2 Pro": 200.0,
    "M2 Max": 400.0,
    "M2 Ultra": 800.0,
    "M3": 100.0,
    "M3 Pro": 150.0,
    # 14-core CPU / 30-core GPU: 300 GB/s; 16-core CPU / 40-core GPU: 400 GB/s.
    "M3 Max": {14: 300.0, 16: 400.0},
    "M3 Ultra": 819.0,
    "M4": 120.0,
    "M4 Pro": 273.0,
    # 14-core CPU / 32-core GPU: 410 GB/s; 16-core CPU / 40-core GPU: 546 GB/s.
    "M4 Max": {14: 410.0, 16: 546.0},
    "M5": 153.0,
}

_CHIP_RE = re.compile(r"\bM(\d+)(?:\s+(Pro|Max|Ultra))?\b")


def chip_family(brand: str) -> str | None:
    """ "Apple M3 Max" -> "M3 Max"; None when the brand names no M-series chip."""
    match = _CHIP_RE.search(brand)
    if not match:
        return None
    tier = f" {match.group(2)}" if match.group(2) else ""
    return f"M{match.group(1)}{tier}"


def apple_bandwidth_gbps(brand: str, cpu_cores: int | None) -> tuple[float | None, str | None]:
    """Published bandwidth of the chip in ``brand``; with a note when it is a guess.

    ``cpu_cores`` (``hw.physicalcpu``) tells the two bins of M3 Max and M4 Max apart.
    """
    family = chip_family(brand)
    entry = _BANDWIDTH_GBPS.get(family) if family else None
    if entry is None:
        return None, f"memory bandwidth of {brand!r} is not in Quantdesk's chip table"
    if isinstance(entry, float):
        return entry, None
    if cpu_cores in entry:
        return entry[cpu_cores], None
    low = min(entry.values())
    return low, (
        f"{family} comes with {' or '.join(f'{v:g}' for v in sorted(entry.values()))} GB/s "
        f"depending on the model; assumed {low:g} GB/s"
    )


def apple_info_from_sysctl(
    values: Mapping[str, str], *, fallback_memory_bytes: int | None = None
) -> tuple[AppleInfo | None, tuple[str, ...]]:
    """Build :class:`AppleInfo` from ``sysctl`` values; None on an Intel Mac."""
    brand = values.get("machdep.cpu.brand_string", "").strip()
    if values.get("hw.optional.arm64", "").strip() != "1" and not brand.startswith("Apple"):
        return None, ()
    notes: list[str] = []
    unified = _int(values.get("hw.memsize"))
    if unified is None:
        if not fallback_memory_bytes:
            return None, ("Apple Silicon detected but its memory size could not be read",)
        unified = fallback_memory_bytes
        notes.append("hw.memsize unavailable; unified memory taken from the OS memory total")
    wired_mb = _int(values.get("iogpu.wired_limit_mb"))
    if wired_mb and wired_mb > 0:
        working_set, estimated = wired_mb * MIB, False
    else:
        working_set, estimated = default_apple_working_set(unified), True
    bandwidth, note = apple_bandwidth_gbps(
        brand or "Apple Silicon", _int(values.get("hw.physicalcpu"))
    )
    if note:
        notes.append(note)
    info = AppleInfo(
        chip=brand or "Apple Silicon",
        unified_memory_bytes=unified,
        gpu_working_set_bytes=working_set,
        memory_bandwidth_gbps=bandwidth,
        working_set_estimated=estimated,
    )
    return info, tuple(notes)


def probe_apple(
    sysctl: SysctlRunner | None = None, *, fallback_memory_bytes: int | None = None
) -> tuple[AppleInfo | None, tuple[str, ...]]:
    """Describe this Mac's Apple Silicon; ``(None, ())`` on other machines.

    ``sysctl`` defaults to the real command and is only called on macOS unless
    one is passed in.
    """
    if sysctl is None:
        if sys.platform != "darwin":
            return None, ()
        sysctl = run_sysctl
    values = sysctl(APPLE_SYSCTL_KEYS)
    return apple_info_from_sysctl(values, fallback_memory_bytes=fallback_memory_bytes)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
