"""``quantdesk hw``: the table, ``--json``, ``--no-bandwidth``, ``--hardware FILE``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.cli import run_cli
from app.core.commands.hw import format_profile
from quant.hardware.profile import (
    AppleInfo,
    CpuInfo,
    GpuInfo,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
)

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


def h100_box() -> HardwareProfile:
    return HardwareProfile(
        cpu=CpuInfo(
            "Intel(R) Xeon(R) Platinum 8480+",
            "x86_64",
            56,
            112,
            ("avx2", "avx512f", "amx"),
            "/proc/cpuinfo",
        ),
        memory=MemoryInfo(512 * GIB, 480 * GIB, 8 * GIB, 6 * GIB),
        gpus=(
            GpuInfo(
                "nvidia",
                "NVIDIA H100 80GB HBM3",
                80 * GIB,
                79 * GIB,
                "9.0",
                3352.3,
                "570.86.15",
                "12.8",
                0,
            ),
        ),
        backends=("cpu", "cuda"),
        runtime=RuntimeInfo("0.3.36", True, ("CPU (Xeon)", "CUDA0 (NVIDIA H100 80GB HBM3)"), ""),
        measured_bandwidth_gbps=210.5,
        notes=("example note",),
    )


def test_hw_json_parses_and_has_cpu_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["hw", "--json", "--no-bandwidth"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cpu"]["brand"]
    assert data["cpu"]["logical_cores"] >= 1
    assert data["memory"]["total_bytes"] > 0
    assert data["backends"][0] == "cpu"
    assert data["measured_bandwidth_gbps"] is None
    # It is the --hardware format: it loads back.
    assert HardwareProfile.from_dict(data).memory.total_bytes == data["memory"]["total_bytes"]


def test_hw_table_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["hw", "--no-bandwidth"]) == 0
    out = capsys.readouterr().out
    for label in ("CPU", "features", "RAM", "Swap", "Runtime", "backends", "Bandwidth"):
        assert label in out
    assert "not measured" in out


def test_hw_shows_a_saved_gpu_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h100.json"
    path.write_text(h100_box().to_json())
    assert run_cli(["hw", "--hardware", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GPU 0      NVIDIA H100 80GB HBM3: 80.0 GiB VRAM (79.0 GiB free)" in out
    assert "compute capability 9.0" in out
    assert "3352.3 GB/s" in out
    assert "CUDA 12.8" in out
    assert "cpu, cuda" in out
    assert "GPU offload: yes" in out
    assert "210.5 GB/s measured" in out
    assert "  - example note" in out
    assert str(path) in out  # where the profile came from


def test_hw_json_of_a_saved_profile_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h100.json"
    path.write_text(h100_box().to_json())
    assert run_cli(["hw", "--json", "--hardware", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == h100_box().to_dict()


def test_hw_with_a_bad_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{")
    assert run_cli(["hw", "--hardware", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err
    assert err.count("\n") == 1


def test_table_shows_apple_silicon_working_set() -> None:
    profile = HardwareProfile(
        cpu=CpuInfo("Apple M2", "arm64", 8, 8, ("neon", "dotprod", "i8mm"), "sysctl"),
        memory=MemoryInfo(16 * GIB, 9 * GIB),
        apple=AppleInfo("Apple M2", 16 * GIB, 12 * GIB, 100.0, working_set_estimated=False),
        backends=("cpu", "metal"),
    )
    text = format_profile(profile)
    assert "Apple      Apple M2: 16.0 GiB unified, GPU working set 12.0 GiB" in text
    assert "iogpu.wired_limit_mb" in text
    assert "100 GB/s" in text
    assert "GPU        none found" in text
    assert "cpu, metal" in text


def test_python_m_app_hw_json_in_a_subprocess(quantdesk_home: Path) -> None:
    env = {**os.environ, "QUANTDESK_HOME": str(quantdesk_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "hw", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["cpu"]["brand"]
    assert data["memory"]["total_bytes"] > 0
    assert data["measured_bandwidth_gbps"] > 0
    assert (quantdesk_home / "cache" / "memory_bandwidth.json").is_file()


def test_hw_uses_the_cached_bandwidth_until_remeasure(
    quantdesk_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quant.hardware.bandwidth import CACHE_FILE, cache_key
    from quant.hardware.probe import probe

    here = probe(measure_bandwidth=False)
    cache = quantdesk_home / "cache" / CACHE_FILE
    cache.parent.mkdir(parents=True, exist_ok=True)
    entry = {"gbps": 0.5, "measured_at": time.time(), "threads": 1}
    key = cache_key(here.cpu.brand, here.memory.total_bytes)
    cache.write_text(json.dumps({"schema": 1, "entries": {key: entry}}))

    assert run_cli(["hw", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["measured_bandwidth_gbps"] == 0.5

    assert run_cli(["hw", "--json", "--remeasure"]) == 0
    fresh = json.loads(capsys.readouterr().out)["measured_bandwidth_gbps"]
    assert fresh != 0.5 and fresh > 0
    assert json.loads(cache.read_text())["entries"][key]["gbps"] == fresh


def test_a_saved_profile_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = h100_box().to_dict()
    data["cpu"]["brand"] = "Fast CPU\x1b]0;pwned\x07\r\u202e"
    data["gpus"][0]["name"] = "GPU\x1b[2J"
    saved = tmp_path / "hostile.json"
    saved.write_text(json.dumps(data))
    assert run_cli(["hw", "--hardware", str(saved)]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in ("\x1b", "\x07", "\r", "\u202e")), out
    assert "Fast CPU\\x1b]0;pwned\\x07\\x0d\\u202e" in out and "GPU\\x1b[2J" in out
    assert run_cli(["hw", "--hardware", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cpu"]["brand"] == data["cpu"]["brand"]
