"""``file_option``: the fit of a GGUF file as it is, the same as ``recommend`` says for it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quant.errors import QuantError
from quant.facts import inspect_model
from quant.facts.model import ModelFacts, SourceKind
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Fit, OptionSource, Task, file_option, recommend

GIB = 1024**3


def machine(
    *, ram_gib: float, gpu_gib: float | None = None, apple: bool = False
) -> HardwareProfile:
    data: dict[str, Any] = {
        "cpu": {
            "brand": "Apple M2" if apple else "Intel Core i7-1260P",
            "arch": "arm64" if apple else "x86_64",
            "physical_cores": 4,
            "logical_cores": 8,
            "features": ["neon", "dotprod"] if apple else ["avx2", "fma", "f16c"],
        },
        "memory": {"total_bytes": int(16 * GIB), "available_bytes": int(ram_gib * GIB)},
        "measured_bandwidth_gbps": 45.0,
    }
    if gpu_gib is not None:
        data["gpus"] = [
            {
                "vendor": "nvidia",
                "name": "NVIDIA GeForce RTX 3060",
                "memory_total_bytes": int(gpu_gib * GIB),
                "memory_free_bytes": int(gpu_gib * GIB),
                "compute_capability": "8.6",
                "memory_bandwidth_gbps": 360.0,
            }
        ]
        data["backends"] = ["cpu", "cuda"]
    if apple:
        data["apple"] = {
            "chip": "Apple M2",
            "unified_memory_bytes": 8 * GIB,
            "gpu_working_set_bytes": int(8 * GIB * 2 / 3),
            "memory_bandwidth_gbps": 100.0,
        }
        data["backends"] = ["cpu", "metal"]
    return HardwareProfile.from_dict(data)


MACHINES = {
    "laptop": (machine(ram_gib=12), Fit.CPU),
    "rtx3060": (machine(ram_gib=24, gpu_gib=12), Fit.GPU),
    "small-gpu": (machine(ram_gib=24, gpu_gib=1.93), Fit.PARTIAL),
    "m2": (machine(ram_gib=6, apple=True), Fit.GPU),
    "no-room": (machine(ram_gib=0.2), Fit.TOO_LARGE),
}


@pytest.fixture(scope="module")
def starter_facts(starter_model: Path) -> ModelFacts:
    return inspect_model(starter_model)


@pytest.mark.parametrize("name", list(MACHINES))
@pytest.mark.parametrize(("task", "ctx"), [(Task.CHAT, None), (Task.CODE, 100_000)])
def test_file_option_is_recommends_this_file_option(
    starter_facts: ModelFacts, name: str, task: Task, ctx: int | None
) -> None:
    profile, fit = MACHINES[name]
    rec = recommend(starter_facts, profile, task=task, ctx=ctx)
    (this,) = [o for o in rec.options if o.source is OptionSource.THIS_FILE]
    got = file_option(starter_facts, profile, task=task, ctx=ctx)
    if task is Task.CHAT:  # a 32k context for code needs more memory
        assert got.fit is fit
    assert got.source is OptionSource.THIS_FILE
    assert got.label == this.label == "Q4_K_M (this file)"
    assert got.filename == this.filename == "gemma-3-270m-q4_k_m.gguf"
    assert got.ctx == this.ctx  # the 100k request is clamped to the trained 32k
    assert (got.fit, got.gpu_layers, got.ram_bytes, got.vram_bytes) == (
        this.fit,
        this.gpu_layers,
        this.ram_bytes,
        this.vram_bytes,
    )
    assert got.speed == this.speed
    assert got.quality == this.quality
    assert got.meets_task == this.meets_task
    assert got.rank == 0
    if this.rank != 1:  # the top option's reasons also compare it with faster ones
        assert got.reasons == this.reasons
    assert got.reasons and got.reasons[0].startswith(
        {
            Fit.CPU: "Runs on the CPU",
            Fit.GPU: "Fits entirely in GPU memory",
            Fit.PARTIAL: "Partial offload",
            Fit.TOO_LARGE: "Needs ",
        }[got.fit]
    )


def test_file_option_needs_a_gguf_with_tensors(starter_facts: ModelFacts) -> None:
    profile = MACHINES["laptop"][0]
    with pytest.raises(QuantError, match=r"needs a GGUF file's facts .*got config"):
        file_option(replace(starter_facts, kind=SourceKind.CONFIG), profile)
    with pytest.raises(QuantError, match="use recommend"):
        file_option(replace(starter_facts, tensors=()), profile)
