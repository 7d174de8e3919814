"""The hardware probe: OS parsers on saved samples, NVML and sysctl stand-ins, the
llama.cpp runtime, the bandwidth cache, the profile's JSON form, and a real probe."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from quant.errors import Cancelled, HardwareProfileError
from quant.hardware import apple as apple_mod
from quant.hardware import bandwidth as bw
from quant.hardware import probe as probe_mod
from quant.hardware.apple import apple_bandwidth_gbps, apple_info_from_sysctl, probe_apple
from quant.hardware.cpu import (
    features_from_sysctl,
    features_from_windows,
    parse_proc_cpuinfo,
    parse_sysctl_output,
    probe_cpu,
)
from quant.hardware.nvidia import memory_bandwidth_gbps, probe_nvidia
from quant.hardware.profile import (
    AppleInfo,
    CpuInfo,
    GpuInfo,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
    default_apple_working_set,
)
from quant.hardware.runtime import backends_from_system_info, probe_runtime
from quant.progress import CancelToken, Progress

FIXTURES = Path(__file__).parent / "data" / "hw_fixtures"
GIB = 1024**3
MIB = 1024**2


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def sysctl_from(name: str) -> Any:
    """A sysctl stand-in that answers from a saved output, only for the keys asked."""
    values = parse_sysctl_output(fixture(name))

    def run(keys: Sequence[str]) -> Mapping[str, str]:
        return {k: values[k] for k in keys if k in values}

    return run


# --------------------------------------------------------------------- CPU parsers
def test_xeon_server_reports_avx512_and_amx() -> None:
    facts = parse_proc_cpuinfo(fixture("cpuinfo_xeon_8480_amx.txt"))
    assert facts.brand == "Intel(R) Xeon(R) Platinum 8480+"
    for feature in (
        "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
        "avx512_vnni", "avx512_bf16", "avx_vnni", "amx", "amx_tile", "amx_int8", "amx_bf16",
    ):  # fmt: skip
        assert feature in facts.features, feature
    assert not {"neon", "dotprod", "sve"} & set(facts.features)
    # Features come out in one stable order: the basics before AVX-512 before AMX.
    assert facts.features.index("avx2") < facts.features.index("avx512f")
    assert facts.features.index("avx512f") < facts.features.index("amx")


def test_laptop_has_avx2_but_no_avx512() -> None:
    facts = parse_proc_cpuinfo(fixture("cpuinfo_laptop_i7_8550u.txt"))
    assert facts.brand == "Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz"
    assert {"avx", "avx2", "fma", "f16c", "sse4.2"} <= set(facts.features)
    assert not any(f.startswith(("avx512", "amx")) for f in facts.features)
    assert "avx_vnni" not in facts.features


def test_graviton_reports_neon_dotprod_i8mm_sve_fp16_and_names_the_core() -> None:
    facts = parse_proc_cpuinfo(fixture("cpuinfo_graviton3.txt"))
    assert facts.brand == "ARM Neoverse-V1"
    assert {"neon", "dotprod", "i8mm", "sve", "fp16", "bf16"} <= set(facts.features)
    assert facts.feature_line == "Features"
    assert not any(f.startswith("avx") for f in facts.features)


def test_raspberry_pi_4_is_neon_only_and_named_by_its_model_line() -> None:
    facts = parse_proc_cpuinfo(fixture("cpuinfo_raspberry_pi4.txt"))
    assert facts.brand == "Raspberry Pi 4 Model B Rev 1.4"
    assert facts.features == ("neon",)


def test_raspberry_pi_5_has_dotprod_and_fp16() -> None:
    facts = parse_proc_cpuinfo(fixture("cpuinfo_raspberry_pi5.txt"))
    assert facts.brand == "Raspberry Pi 5 Model B Rev 1.0"
    assert set(facts.features) == {"neon", "dotprod", "fp16"}


def test_cpuinfo_without_flags_is_reported_as_unknown() -> None:
    cpu, notes = probe_cpu(
        system="Linux", machine="riscv64", read_cpuinfo=lambda: "processor\t: 0\nisa\t: rv64\n"
    )
    assert cpu.features == ()
    assert cpu.features_source == "unknown"
    assert cpu.arch == "riscv64"
    assert any("CPU features unknown" in n for n in notes)


def test_linux_probe_of_a_saved_server_uses_proc_cpuinfo() -> None:
    cpu, notes = probe_cpu(
        system="Linux",
        machine="x86_64",
        read_cpuinfo=lambda: fixture("cpuinfo_xeon_8480_amx.txt"),
    )
    assert cpu.brand == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.features_source == "/proc/cpuinfo"
    assert "amx" in cpu.features
    assert cpu.logical_cores >= cpu.physical_cores >= 1
    assert notes == ()


def test_apple_m2_cpu_features_from_sysctl() -> None:
    cpu, notes = probe_cpu(
        system="Darwin", machine="arm64", sysctl=sysctl_from("sysctl_apple_m2.txt")
    )
    assert cpu.brand == "Apple M2"
    assert cpu.arch == "arm64"
    assert cpu.features_source == "sysctl"
    assert set(cpu.features) == {"neon", "dotprod", "i8mm", "fp16", "bf16"}
    assert "sme" not in cpu.features  # FEAT_SME: 0
    assert notes == ()


def test_intel_mac_cpu_features_from_sysctl() -> None:
    values = parse_sysctl_output(fixture("sysctl_intel_mac_i9.txt"))
    features = features_from_sysctl(values)
    assert {"ssse3", "sse4.2", "avx", "avx2", "fma", "f16c", "bmi2"} <= set(features)
    assert "avx512f" not in features
    cpu, _ = probe_cpu(
        system="Darwin", machine="x86_64", sysctl=sysctl_from("sysctl_intel_mac_i9.txt")
    )
    assert cpu.arch == "x86_64"
    assert cpu.brand.startswith("Intel(R) Core(TM) i9-9880H")


def test_windows_features_from_is_processor_feature_present() -> None:
    # PF_AVX_INSTRUCTIONS_AVAILABLE 39, PF_AVX2 40; not AVX-512F (41).
    x86 = features_from_windows(lambda pf: pf in (38, 39, 40), "x86_64")
    assert x86 == ("sse4.2", "avx", "avx2")
    # PF_ARM_NEON 19, PF_ARM_V82_DP 43, PF_ARM_V82_I8MM 66.
    arm = features_from_windows(lambda pf: pf in (19, 43, 66), "arm64")
    assert arm == ("neon", "dotprod", "i8mm")
    cpu, notes = probe_cpu(
        system="Windows", machine="AMD64", is_feature_present=lambda pf: pf == 40
    )
    assert cpu.arch == "x86_64"
    assert cpu.features == ("avx2",)
    assert cpu.features_source == "IsProcessorFeaturePresent"
    assert any("FMA" in n for n in notes)


def test_unreadable_cpuinfo_degrades_to_a_note() -> None:
    def broken() -> str:
        raise PermissionError("permission denied")

    cpu, notes = probe_cpu(system="Linux", machine="x86_64", read_cpuinfo=broken)
    assert cpu.features == ()
    assert cpu.brand
    assert any("/proc/cpuinfo" in n for n in notes)


# ------------------------------------------------------------------------- NVIDIA
class FakeNvml:
    """pynvml's functions over a list of made-up GPUs."""

    NVML_CLOCK_MEM = 2

    def __init__(
        self,
        gpus: list[dict[str, Any]],
        *,
        init_error: Exception | None = None,
        hang: threading.Event | None = None,
        driver: str = "570.86.15",
        cuda: int = 12080,
    ) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.hang = hang
        self.driver = driver
        self.cuda = cuda
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.hang is not None:
            self.hang.wait(30)
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.gpus[i]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> Any:
        return h["name"]

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        return SimpleNamespace(total=h["total"], free=h["free"], used=h["total"] - h["free"])

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        major, minor = h["cc"]
        return int(major), int(minor)

    def nvmlDeviceGetMemoryBusWidth(self, h: dict[str, Any]) -> int:
        if h.get("bus") is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(h["bus"])

    def nvmlDeviceGetMaxClockInfo(self, h: dict[str, Any], domain: int) -> int:
        assert domain == self.NVML_CLOCK_MEM
        return int(h["mem_clock"])


H100 = {
    "name": "NVIDIA H100 80GB HBM3",
    "total": 81559 * MIB,
    "free": 81080 * MIB,
    "cc": (9, 0),
    "bus": 5120,
    "mem_clock": 2619,
}
RTX_4090 = {
    "name": b"NVIDIA GeForce RTX 4090",  # older pynvml returns bytes
    "total": 24564 * MIB,
    "free": 23900 * MIB,
    "cc": (8, 9),
    "bus": 384,
    "mem_clock": 10501,
}


def test_bandwidth_formula_matches_published_figures() -> None:
    assert memory_bandwidth_gbps(5120, 2619) == pytest.approx(3352, abs=1)  # H100: 3.35 TB/s
    assert memory_bandwidth_gbps(384, 10501) == pytest.approx(1008, abs=1)  # RTX 4090


def test_fake_h100() -> None:
    nvml = FakeNvml([H100], cuda=12040)
    gpus, notes = probe_nvidia(nvml)
    assert notes == ()
    (gpu,) = gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.vendor == "nvidia"
    assert gpu.compute_capability == "9.0"
    assert gpu.compute_capability_tuple == (9, 0)
    assert gpu.memory_total_bytes == 81559 * MIB
    assert gpu.memory_free_bytes == 81080 * MIB
    assert gpu.memory_bandwidth_gbps == pytest.approx(3352, abs=1)
    assert gpu.driver_version == "570.86.15"
    assert gpu.cuda_version == "12.4"
    assert nvml.shutdowns == 1


def test_fake_rtx_4090_and_h100_together() -> None:
    gpus, _ = probe_nvidia(FakeNvml([RTX_4090, H100], cuda=13000))
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"]
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].compute_capability == "8.9"
    assert gpus[0].memory_bandwidth_gbps == pytest.approx(1008, abs=1)
    assert gpus[1].cuda_version == "13.0"


def test_no_driver_gives_no_gpus_and_one_note() -> None:
    nvml = FakeNvml([], init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    gpus, notes = probe_nvidia(nvml)
    assert gpus == ()
    assert len(notes) == 1
    assert "no NVIDIA GPU" in notes[0]
    assert "\n" not in notes[0]


def test_driver_not_loaded_is_named() -> None:
    nvml = FakeNvml([], init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    gpus, notes = probe_nvidia(nvml)
    assert gpus == ()
    assert notes == ("no NVIDIA GPU: the NVIDIA driver is not loaded",)


def test_hanging_driver_returns_within_the_timeout() -> None:
    release = threading.Event()
    try:
        t0 = time.monotonic()
        gpus, notes = probe_nvidia(FakeNvml([H100], hang=release), timeout_s=0.3)
        elapsed = time.monotonic() - t0
    finally:
        release.set()  # let the stuck thread finish
    assert elapsed < 3.0  # a hang check, generous for a loaded machine
    assert gpus == ()
    assert len(notes) == 1
    assert "did not answer" in notes[0]


def test_gpu_without_bus_width_keeps_the_rest() -> None:
    odd = {**H100, "bus": None}
    gpus, notes = probe_nvidia(FakeNvml([odd]))
    assert gpus[0].memory_bandwidth_gbps is None
    assert gpus[0].compute_capability == "9.0"
    assert any("bandwidth unknown" in n for n in notes)


def test_real_nvml_on_this_machine_never_raises() -> None:
    gpus, notes = probe_nvidia(timeout_s=2.0)
    assert all(g.vendor == "nvidia" and g.memory_total_bytes > 0 for g in gpus)
    if not gpus:
        assert notes  # why there is none


# -------------------------------------------------------------------------- Apple
def test_apple_m2_from_saved_sysctl() -> None:
    info, notes = probe_apple(sysctl_from("sysctl_apple_m2.txt"))
    assert info is not None
    assert info.chip == "Apple M2"
    assert info.unified_memory_bytes == 16 * GIB
    assert info.gpu_working_set_bytes == default_apple_working_set(16 * GIB)
    assert info.working_set_estimated is True
    assert info.memory_bandwidth_gbps == 100.0
    assert notes == ()


def test_apple_wired_limit_overrides_the_default() -> None:
    values = {
        **parse_sysctl_output(fixture("sysctl_apple_m2.txt")),
        "iogpu.wired_limit_mb": "14336",
    }
    info, _ = apple_info_from_sysctl(values)
    assert info is not None
    assert info.gpu_working_set_bytes == 14336 * MIB
    assert info.working_set_estimated is False


def test_apple_large_memory_uses_three_quarters() -> None:
    values = {
        "machdep.cpu.brand_string": "Apple M2 Ultra",
        "hw.optional.arm64": "1",
        "hw.memsize": str(192 * GIB),
        "hw.physicalcpu": "24",
    }
    info, _ = apple_info_from_sysctl(values)
    assert info is not None
    assert info.gpu_working_set_bytes == int(192 * GIB * 0.75)
    assert info.memory_bandwidth_gbps == 800.0


@pytest.mark.parametrize(
    ("brand", "cores", "expected", "noted"),
    [
        ("Apple M1", 8, 68.25, False),
        ("Apple M1 Max", 10, 400.0, False),
        ("Apple M3 Pro", 12, 150.0, False),
        ("Apple M3 Max", 14, 300.0, False),
        ("Apple M3 Max", 16, 400.0, False),
        ("Apple M4 Pro", 14, 273.0, False),
        ("Apple M4 Max", 16, 546.0, False),
        ("Apple M4 Max", None, 410.0, True),
        ("Apple M9 Hyper", 32, None, True),
    ],
)
def test_apple_bandwidth_table(
    brand: str, cores: int | None, expected: float | None, noted: bool
) -> None:
    gbps, note = apple_bandwidth_gbps(brand, cores)
    assert gbps == expected
    assert (note is not None) == noted


def test_intel_mac_has_no_apple_silicon_section() -> None:
    info, notes = probe_apple(sysctl_from("sysctl_intel_mac_i9.txt"))
    assert info is None
    assert notes == ()


def test_apple_probe_does_not_run_sysctl_off_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Sequence[str]] = []

    def spy(keys: Sequence[str]) -> Mapping[str, str]:
        calls.append(keys)
        return {}

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(apple_mod, "run_sysctl", spy)
    assert probe_apple() == (None, ())
    assert calls == []


# -------------------------------------------------------------------- the runtime
def test_runtime_reports_the_installed_llama_cpp() -> None:
    import llama_cpp

    runtime, backends, notes = probe_runtime()
    assert runtime.llama_cpp_version == llama_cpp.__version__
    assert backends[0] == "cpu"
    assert runtime.supports_gpu_offload == bool(llama_cpp.llama_supports_gpu_offload())
    assert any(d.startswith("CPU") for d in runtime.devices)
    assert "CPU :" in runtime.system_info
    assert notes == ()
    if not runtime.supports_gpu_offload:
        assert backends == ("cpu",)


def test_runtime_absent_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes the import fail
    runtime, backends, notes = probe_runtime()
    assert runtime == RuntimeInfo()
    assert backends == ("cpu",)
    assert len(notes) == 1
    assert "llama-cpp-python" in notes[0]


def test_backends_from_system_info() -> None:
    cuda = "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : AVX2 = 1"
    assert backends_from_system_info(cuda, gpu_offload=True) == ("cpu", "cuda")
    # A CUDA build on a machine without a usable GPU offloads nothing.
    assert backends_from_system_info(cuda, gpu_offload=False) == ("cpu",)
    metal = "MTL : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | DOTPROD = 1"
    assert backends_from_system_info(metal, gpu_offload=True) == ("cpu", "metal")


# ---------------------------------------------------------------------- bandwidth
class CountingMeasure:
    def __init__(self, gbps: float = 42.5) -> None:
        self.calls = 0
        self.gbps = gbps

    def __call__(self) -> tuple[float, int]:
        self.calls += 1
        return self.gbps, 4


def test_bandwidth_is_cached_for_30_days(tmp_path: Path) -> None:
    measure = CountingMeasure()
    now = 1_700_000_000.0
    first = bw.memory_bandwidth("CPU X", 32 * GIB, cache_dir=tmp_path, now=now, measure=measure)
    assert (first.gbps, first.from_cache, measure.calls) == (42.5, False, 1)
    again = bw.memory_bandwidth(
        "CPU X", 32 * GIB, cache_dir=tmp_path, now=now + 29 * 86400, measure=measure
    )
    assert (again.gbps, again.from_cache, measure.calls) == (42.5, True, 1)
    stale = bw.memory_bandwidth(
        "CPU X", 32 * GIB, cache_dir=tmp_path, now=now + 31 * 86400, measure=measure
    )
    assert (stale.from_cache, measure.calls) == (False, 2)


def test_bandwidth_cache_is_keyed_by_cpu_and_memory(tmp_path: Path) -> None:
    measure = CountingMeasure()
    bw.memory_bandwidth("CPU X", 32 * GIB, cache_dir=tmp_path, measure=measure)
    bw.memory_bandwidth("CPU X", 64 * GIB, cache_dir=tmp_path, measure=measure)  # RAM upgrade
    bw.memory_bandwidth("CPU Y", 32 * GIB, cache_dir=tmp_path, measure=measure)
    assert measure.calls == 3
    data = json.loads((tmp_path / bw.CACHE_FILE).read_text())
    assert len(data["entries"]) == 3
    assert bw.memory_bandwidth("CPU X", 64 * GIB, cache_dir=tmp_path, measure=measure).from_cache


def test_bandwidth_use_cache_false_remeasures(tmp_path: Path) -> None:
    measure = CountingMeasure()
    bw.memory_bandwidth("CPU X", GIB, cache_dir=tmp_path, measure=measure)
    bw.memory_bandwidth("CPU X", GIB, cache_dir=tmp_path, measure=measure, use_cache=False)
    assert measure.calls == 2


def test_garbage_bandwidth_cache_is_replaced(tmp_path: Path) -> None:
    (tmp_path / bw.CACHE_FILE).write_text("{not json")
    measure = CountingMeasure(12.0)
    result = bw.memory_bandwidth("CPU X", GIB, cache_dir=tmp_path, measure=measure)
    assert (result.gbps, measure.calls) == (12.0, 1)
    assert json.loads((tmp_path / bw.CACHE_FILE).read_text())["entries"]


def test_bandwidth_cache_honours_quantdesk_home(quantdesk_home: Path) -> None:
    assert bw.default_cache_dir() == quantdesk_home / "cache"
    bw.memory_bandwidth("CPU X", GIB, measure=CountingMeasure())
    assert (quantdesk_home / "cache" / bw.CACHE_FILE).is_file()


def test_real_measurement_gives_a_plausible_figure() -> None:
    gbps, threads = bw.measure_memory_bandwidth(size_bytes=32 * MIB, passes=2, threads=1)
    assert threads == 1
    assert 0.1 < gbps < 10_000


# ------------------------------------------------------------------ profile JSON
def sample_profile() -> HardwareProfile:
    return HardwareProfile(
        cpu=CpuInfo(
            "Intel(R) Xeon(R) Platinum 8480+", "x86_64", 56, 112, ("avx2", "amx"), "/proc/cpuinfo"
        ),
        memory=MemoryInfo(512 * GIB, 480 * GIB, 8 * GIB, 8 * GIB),
        gpus=(
            GpuInfo(
                "nvidia",
                "NVIDIA H100 80GB HBM3",
                80 * GIB,
                79 * GIB,
                "9.0",
                3352.3,
                "570.86",
                "12.8",
                0,
            ),
        ),
        apple=None,
        backends=("cpu", "cuda"),
        runtime=RuntimeInfo(
            "0.3.36", True, ("CPU (Xeon)", "CUDA0 (NVIDIA H100)"), "CUDA : ARCHS = 900"
        ),
        measured_bandwidth_gbps=210.5,
        notes=("a note",),
    )


def test_profile_round_trips_through_json() -> None:
    original = sample_profile()
    back = HardwareProfile.from_dict(json.loads(original.to_json()))
    assert back == dataclasses.replace(original, source="file")


def test_apple_profile_round_trips() -> None:
    original = dataclasses.replace(
        sample_profile(),
        gpus=(),
        apple=AppleInfo("Apple M2", 16 * GIB, 12 * GIB, 100.0, working_set_estimated=False),
        backends=("cpu", "metal"),
    )
    assert HardwareProfile.from_dict(original.to_dict()) == dataclasses.replace(
        original, source="file"
    )


def test_from_dict_ignores_unknown_and_estimates_missing_fields() -> None:
    data = {
        "cpu": {"brand": "Some CPU", "logical_cores": 16, "future_field": 1},
        "memory": {"total_bytes": 32 * GIB},
        "gpus": [{"name": "NVIDIA GeForce RTX 4090", "memory_total_bytes": 24 * GIB, "x": []}],
        "apple": {"chip": "Apple M3", "unified_memory_bytes": 24 * GIB},
        "something_new": {"nested": True},
    }
    profile = HardwareProfile.from_dict(data)
    assert profile.cpu.physical_cores == 8
    assert profile.memory.available_bytes == int(32 * GIB * 0.75)
    assert profile.gpus[0].memory_free_bytes == int(24 * GIB * 0.95)
    assert profile.apple is not None
    assert profile.apple.gpu_working_set_bytes == default_apple_working_set(24 * GIB)
    assert profile.backends == ("cpu",)
    joined = " ".join(profile.notes)
    for word in ("physical cores", "available memory", "free memory", "working-set"):
        assert word in joined


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(HardwareProfileError, match=r"nowhere\.json"):
        HardwareProfile.load(tmp_path / "nowhere.json")


def test_load_garbage_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.json"
    path.write_bytes(b"\x00\xffnot json at all")
    with pytest.raises(HardwareProfileError, match=r"garbage\.json"):
        HardwareProfile.load(path)


def test_load_non_object_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(HardwareProfileError, match=r"list\.json"):
        HardwareProfile.load(path)


@pytest.mark.parametrize(
    "body",
    [
        '{"cpu": "AMD", "memory": {"total_bytes": 1}}',
        '{"cpu": {}, "memory": 5}',
        '{"cpu": {}}',
        '{"cpu": {}, "memory": {"total_bytes": -1}}',
    ],
)
def test_malformed_sections_name_the_file_and_the_fix(tmp_path: Path, body: str) -> None:
    path = tmp_path / "edited.json"
    path.write_text(body)
    with pytest.raises(HardwareProfileError, match=r"edited\.json.*quantdesk hw --json"):
        HardwareProfile.load(path)


def test_saved_profile_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "box.json"
    path.write_text(sample_profile().to_json())
    loaded = HardwareProfile.load(path)
    assert loaded.best_gpu is not None
    assert loaded.best_gpu.name == "NVIDIA H100 80GB HBM3"
    assert loaded.source == str(path)


# --------------------------------------------------------------- the whole probe
@pytest.fixture
def release_event() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_probe_this_machine(quantdesk_home: Path) -> None:
    seen: list[Progress] = []
    t0 = time.monotonic()
    profile = probe_mod.probe(on_progress=seen.append)
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0  # a hang check, not a speed goal
    assert profile.cpu.brand
    assert profile.cpu.logical_cores >= profile.cpu.physical_cores >= 1
    assert profile.memory.total_bytes > 0
    assert 0 < profile.memory.available_bytes <= profile.memory.total_bytes
    assert profile.backends[0] == "cpu"
    assert profile.runtime.llama_cpp_version
    assert profile.measured_bandwidth_gbps is not None and profile.measured_bandwidth_gbps > 0
    assert [p.done for p in seen] == list(range(1, 7))
    assert all(p.total == 6 for p in seen)
    # The measurement was cached under QUANTDESK_HOME and is reused.
    assert (quantdesk_home / "cache" / bw.CACHE_FILE).is_file()
    again = probe_mod.probe()
    assert again.measured_bandwidth_gbps == profile.measured_bandwidth_gbps
    # And the JSON form reads back.
    assert HardwareProfile.from_dict(profile.to_dict()).cpu == profile.cpu


def test_probe_without_bandwidth_measures_nothing(quantdesk_home: Path) -> None:
    profile = probe_mod.probe(measure_bandwidth=False)
    assert profile.measured_bandwidth_gbps is None
    assert not (quantdesk_home / "cache" / bw.CACHE_FILE).exists()


def test_a_failing_part_becomes_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("runtime exploded")

    monkeypatch.setattr(probe_mod, "probe_runtime", broken)
    profile = probe_mod.probe(measure_bandwidth=False)
    assert profile.cpu.brand and profile.memory.total_bytes > 0
    assert profile.backends == ("cpu",)
    assert any("llama.cpp runtime probe failed (runtime exploded)" in n for n in profile.notes)


def test_a_hanging_part_is_left_out_in_time(
    monkeypatch: pytest.MonkeyPatch, release_event: threading.Event
) -> None:
    def hangs(*, timeout_s: float) -> Any:
        release_event.wait(30)
        return (), ()

    monkeypatch.setattr(probe_mod, "probe_nvidia", hangs)
    t0 = time.monotonic()
    profile = probe_mod.probe(measure_bandwidth=False, timeout_s=0.5)
    assert time.monotonic() - t0 < 4.0  # hang check
    assert profile.gpus == ()
    assert any("NVIDIA probe did not finish within" in n for n in profile.notes)
    assert profile.cpu.brand


def test_probe_honours_cancel() -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        probe_mod.probe(cancel=token)


def test_importing_the_probe_loads_no_native_runtime() -> None:
    code = (
        "import json, sys, quant.hardware.probe, app.core.commands.hw; "
        "print(json.dumps([m for m in ('llama_cpp', 'pynvml', 'numpy') if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == []
