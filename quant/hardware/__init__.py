"""Hardware probe: what this machine can run, as a :class:`HardwareProfile`."""

from quant.hardware.profile import (
    AppleInfo,
    CpuInfo,
    GpuInfo,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
)

__all__ = ["AppleInfo", "CpuInfo", "GpuInfo", "HardwareProfile", "MemoryInfo", "RuntimeInfo"]
