"""The hardware profile value object and its JSON interchange format.

The JSON form is documented in the README ("Hardware profile") and is read back
by every command that plans (``--hardware FILE``), so a user can plan for a
machine other than the one in front of them. Unknown fields are ignored on read;
missing optional fields are estimated and the estimate is noted in ``notes``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from quant.errors import HardwareProfileError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CpuInfo:
    brand: str
    arch: str
    physical_cores: int
    logical_cores: int
    features: tuple[str, ...] = ()
    # Where the feature list came from ("/proc/cpuinfo", "sysctl", "unknown").
    features_source: str = "unknown"


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    swap_total_bytes: int = 0
    swap_free_bytes: int = 0


@dataclass(frozen=True)
class GpuInfo:
    vendor: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    compute_capability: str | None = None
    memory_bandwidth_gbps: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    index: int = 0

    @property
    def compute_capability_tuple(self) -> tuple[int, int] | None:
        if not self.compute_capability:
            return None
        major, _, minor = self.compute_capability.partition(".")
        try:
            return int(major), int(minor or 0)
        except ValueError:
            return None


@dataclass(frozen=True)
class AppleInfo:
    chip: str
    unified_memory_bytes: int
    gpu_working_set_bytes: int
    memory_bandwidth_gbps: float | None = None
    # True when the working-set limit is the default fraction, not a sysctl setting.
    working_set_estimated: bool = True


@dataclass(frozen=True)
class RuntimeInfo:
    """What the installed llama.cpp runtime can do."""

    llama_cpp_version: str | None = None
    supports_gpu_offload: bool = False
    devices: tuple[str, ...] = ()
    system_info: str = ""


@dataclass(frozen=True)
class HardwareProfile:
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple[GpuInfo, ...] = ()
    apple: AppleInfo | None = None
    backends: tuple[str, ...] = ("cpu",)
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)
    # Measured main-memory read bandwidth in GB/s (None: not measured).
    measured_bandwidth_gbps: float | None = None
    # One line per part that could not be probed or was estimated.
    notes: tuple[str, ...] = ()
    source: str = "probe"

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "cpu": {**asdict(self.cpu), "features": list(self.cpu.features)},
            "memory": asdict(self.memory),
            "gpus": [asdict(g) for g in self.gpus],
            "apple": asdict(self.apple) if self.apple else None,
            "backends": list(self.backends),
            "runtime": {**asdict(self.runtime), "devices": list(self.runtime.devices)},
            "measured_bandwidth_gbps": self.measured_bandwidth_gbps,
            "notes": list(self.notes),
        }
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "file") -> HardwareProfile:
        notes: list[str] = list(_as_list(data.get("notes")))
        cpu_d = data.get("cpu")
        mem_d = data.get("memory")
        for key, section in (("cpu", cpu_d), ("memory", mem_d)):
            if not isinstance(section, dict):
                raise HardwareProfileError(
                    f"{source}: the hardware profile's '{key}' section is "
                    f"{'missing' if section is None else 'not an object'}; "
                    "save a new one with 'quantdesk hw --json'"
                )
        assert isinstance(cpu_d, dict) and isinstance(mem_d, dict)
        logical = _int(cpu_d.get("logical_cores"), 0)
        physical = _int(cpu_d.get("physical_cores"), 0)
        if physical <= 0:
            physical = max(1, logical // 2) if logical else 1
            notes.append(f"physical cores not given; assumed {physical}")
        if logical <= 0:
            logical = physical
        cpu = CpuInfo(
            brand=str(cpu_d.get("brand") or "unknown CPU"),
            arch=str(cpu_d.get("arch") or "unknown"),
            physical_cores=physical,
            logical_cores=logical,
            features=tuple(str(f) for f in _as_list(cpu_d.get("features"))),
            features_source=str(cpu_d.get("features_source") or source),
        )
        total = _int(mem_d.get("total_bytes"), 0)
        if total <= 0:
            raise HardwareProfileError(
                f"{source}: memory.total_bytes must be a positive number of bytes; "
                "save a new profile with 'quantdesk hw --json'"
            )
        available = _int(mem_d.get("available_bytes"), 0)
        if available <= 0:
            available = int(total * 0.75)
            notes.append("available memory not given; assumed 75% of total")
        memory = MemoryInfo(
            total_bytes=total,
            available_bytes=available,
            swap_total_bytes=_int(mem_d.get("swap_total_bytes"), 0),
            swap_free_bytes=_int(mem_d.get("swap_free_bytes"), 0),
        )
        gpus = []
        for i, g in enumerate(_as_list(data.get("gpus"))):
            if not isinstance(g, dict):
                continue
            gtotal = _int(g.get("memory_total_bytes"), 0)
            gfree = _int(g.get("memory_free_bytes"), 0)
            if gfree <= 0 and gtotal > 0:
                gfree = int(gtotal * 0.95)
                notes.append(f"GPU {i}: free memory not given; assumed 95% of total")
            bw = g.get("memory_bandwidth_gbps")
            gpus.append(
                GpuInfo(
                    vendor=str(g.get("vendor") or "nvidia"),
                    name=str(g.get("name") or f"GPU {i}"),
                    memory_total_bytes=gtotal,
                    memory_free_bytes=gfree,
                    compute_capability=(
                        str(g["compute_capability"]) if g.get("compute_capability") else None
                    ),
                    memory_bandwidth_gbps=float(bw) if bw is not None else None,
                    driver_version=g.get("driver_version"),
                    cuda_version=g.get("cuda_version"),
                    index=_int(g.get("index"), i),
                )
            )
        apple = None
        a = data.get("apple")
        if isinstance(a, dict):
            unified = _int(a.get("unified_memory_bytes"), total)
            ws = _int(a.get("gpu_working_set_bytes"), 0)
            estimated = bool(a.get("working_set_estimated", ws <= 0))
            if ws <= 0:
                ws = default_apple_working_set(unified)
                notes.append("Apple GPU working-set limit not given; assumed Metal's default")
            bw = a.get("memory_bandwidth_gbps")
            apple = AppleInfo(
                chip=str(a.get("chip") or "Apple Silicon"),
                unified_memory_bytes=unified,
                gpu_working_set_bytes=ws,
                memory_bandwidth_gbps=float(bw) if bw is not None else None,
                working_set_estimated=estimated,
            )
        backends = tuple(str(b) for b in _as_list(data.get("backends"))) or ("cpu",)
        r = data.get("runtime") if isinstance(data.get("runtime"), dict) else {}
        assert isinstance(r, dict)
        runtime = RuntimeInfo(
            llama_cpp_version=r.get("llama_cpp_version"),
            supports_gpu_offload=bool(r.get("supports_gpu_offload", bool(gpus) or bool(apple))),
            devices=tuple(str(d) for d in _as_list(r.get("devices"))),
            system_info=str(r.get("system_info") or ""),
        )
        mbw = data.get("measured_bandwidth_gbps")
        return cls(
            cpu=cpu,
            memory=memory,
            gpus=tuple(gpus),
            apple=apple,
            backends=backends,
            runtime=runtime,
            measured_bandwidth_gbps=float(mbw) if mbw is not None else None,
            notes=tuple(notes),
            source=source,
        )

    @classmethod
    def load(cls, path: str | Path) -> HardwareProfile:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise HardwareProfileError(f"{p}: no such hardware profile file") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HardwareProfileError(f"{p.name}: not a JSON hardware profile ({exc})") from exc
        if not isinstance(data, dict):
            raise HardwareProfileError(f"{p.name}: hardware profile must be a JSON object")
        return cls.from_dict(data, source=str(p))

    def with_notes(self, *more: str) -> HardwareProfile:
        return replace(self, notes=(*self.notes, *more))

    # ------------------------------------------------------------- helpers
    @property
    def best_gpu(self) -> GpuInfo | None:
        if not self.gpus:
            return None
        return max(self.gpus, key=lambda g: g.memory_total_bytes)


def default_apple_working_set(unified_bytes: int) -> int:
    """Metal's default GPU working-set limit when ``iogpu.wired_limit_mb`` is unset.

    macOS lets the GPU wire about two thirds of unified memory on machines with
    up to 36 GiB and about three quarters above that (recommendedMaxWorkingSetSize).
    """
    gib = 1024**3
    fraction = 0.75 if unified_bytes > 36 * gib else 2 / 3
    return int(unified_bytes * fraction)


def _as_list(value: object) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return []


def _int(value: object, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return default
    return default
