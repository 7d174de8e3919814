"""Two lanes on NVIDIA machines: the serving engine on datacenter GPUs, llama.cpp here beside it.

Rule 14 of docs/advice-rules.md on simulated machines: on an H100 or an A100 the
overall pick is a serving format chosen by rules 1, 3 and 4 (FP8 for code, math
and long context on compute capability ≥ 8.9, BF16 when it fits otherwise, AWQ
INT4 on older cards when memory is tight), and the best option that runs in
Quantdesk's own chat is always named next to it. CPUs, Apple Silicon and
consumer GeForce cards keep GGUF picks.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from app.core.advice import serving_commands
from app.core.cli import run_cli
from quant.facts.model import SourceKind
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Engine, Fit, Recommendation, Task, recommend, serving_class
from quant.plan.formats import FormatFamily
from tests.test_advisor_rules import LLAMA_8B, MACHINES, _nvidia, model

LANE_MACHINES = {**MACHINES, "a100": _nvidia("NVIDIA A100-SXM4-80GB", 80, "8.0", 2039.0, 256)}


@functools.cache
def machine(name: str) -> HardwareProfile:
    return HardwareProfile.from_dict(LANE_MACHINES[name], source=name)


@functools.cache
def advise(machine_name: str, model_name: str, task: Task) -> Recommendation:
    return recommend(model(model_name), machine(machine_name), task=task, use_calibration=False)


SENSITIVE = (Task.CODE, Task.MATH, Task.LONG_CONTEXT)
ALL_TASKS = (*SENSITIVE, Task.CHAT)


def _option(rec: Recommendation, key: str):  # type: ignore[no-untyped-def]
    return next(o for o in rec.options if o.key == key)


def _check_both_lanes(rec: Recommendation) -> None:
    top, here = rec.top, rec.best_here
    assert top is not None and top.engine is Engine.SERVING, rec.summary
    assert here is not None and here.engine is Engine.HERE and here.fits
    assert rec.two_lanes
    assert rec.summary.startswith("Serve ") and "with vLLM or SGLang" in rec.summary
    assert f"To chat in Quantdesk now: {here.label}" in rec.summary
    assert any(r.startswith("Runs in a serving engine") for r in top.reasons)
    assert any(r.startswith("Runs here") for r in here.reasons)
    assert rec.to_dict()["best_here"] == here.key


@pytest.mark.parametrize("size", ["8b", "70b"])
@pytest.mark.parametrize("task", ALL_TASKS)
def test_an_h100_serves_by_the_rules_and_names_the_best_file_to_chat_with(
    size: str, task: Task
) -> None:
    rec = advise("h100", size, task)
    _check_both_lanes(rec)
    top = rec.top
    assert top is not None
    fp8 = _option(rec, "gpu:FP8")
    bf16 = _option(rec, "gpu:BF16")
    if task in SENSITIVE:
        # Rule 3: FP8 on compute capability 9.0; when even FP8 does not fit with its KV
        # cache, memory is tight and a 4-bit format serves (AWQ first, rule 4).
        if fp8.fits:
            assert top.file_type == "FP8"
            assert any("runs best in FP8" in r for r in top.reasons)
        else:
            assert top.file_type == "AWQ"
    elif bf16.fits:
        assert top.file_type == "BF16"  # rule 1: the quality ceiling fits
    else:
        assert top.file_type in ("FP8", "INT8")
    here = rec.best_here
    assert here is not None and here.family is FormatFamily.GGUF
    if task in SENSITIVE and _option(rec, "gguf:Q8_0").fit is Fit.GPU:
        # llama.cpp's side of rule 3: near-lossless Q8_0 fully on the GPU, not BF16.
        assert here.file_type == "Q8_0" and here.fit is Fit.GPU


@pytest.mark.parametrize("size", ["8b", "70b"])
@pytest.mark.parametrize("task", ALL_TASKS)
def test_an_a100_serves_without_fp8_and_with_awq_when_memory_is_tight(
    size: str, task: Task
) -> None:
    rec = advise("a100", size, task)
    _check_both_lanes(rec)
    top = rec.top
    assert top is not None
    assert "gpu:FP8" not in {o.key for o in rec.options}  # compute capability 8.0
    bf16, int8 = _option(rec, "gpu:BF16"), _option(rec, "gpu:INT8")
    if bf16.fits:
        assert top.file_type == "BF16"
    elif int8.fits:
        assert top.file_type == "INT8"
    else:
        assert top.file_type == "AWQ"  # rule 4: 4 bits on an older card, AWQ before GPTQ
        assert top.precision_bits == 4


@pytest.mark.parametrize("machine_name", ["laptop", "m2", "rtx3060", "rtx4090"])
@pytest.mark.parametrize("task", ALL_TASKS)
def test_cpus_apple_and_geforce_cards_keep_gguf_picks(machine_name: str, task: Task) -> None:
    assert not serving_class(machine(machine_name))
    rec = advise(machine_name, "8b", task)
    assert not rec.two_lanes
    if rec.top is not None:
        assert rec.top.engine is Engine.HERE, (machine_name, task, rec.top.key)
        assert rec.best_here is rec.top
        assert not rec.summary.startswith("Serve ")


def test_datacenter_cards_are_told_apart_from_workstation_and_consumer_ones() -> None:
    from quant.hardware.profile import HardwareProfile

    def one(name: str, vram: int, cc: str = "8.6") -> bool:
        return serving_class(HardwareProfile.from_dict(_nvidia(name, vram, cc, 900.0, 64)))

    assert one("NVIDIA H100 80GB HBM3", 80, "9.0")
    assert one("NVIDIA L40S", 48, "8.9")
    assert one("NVIDIA A10G", 24)
    assert one("NVIDIA RTX A6000", 48)  # a 48 GB workstation card serves too
    assert not one("NVIDIA RTX A4000", 16)  # not an A40
    assert not one("NVIDIA GeForce RTX 4090", 24, "8.9")


def test_the_serving_option_comes_with_the_command_that_serves_it(tmp_path: Path) -> None:
    facts = model("8b")
    rec = advise("h100", "8b", Task.CODE)
    hub = type(facts)(**{**facts.__dict__, "kind": SourceKind.HUB, "source": "meta-llama/x-8B"})
    commands = serving_commands(rec, hub)
    assert commands["gpu:FP8"] == (
        "vllm serve meta-llama/x-8B --max-model-len 4096 --quantization fp8"
    )
    assert commands["gpu:BF16"].startswith("vllm serve meta-llama/x-8B --dtype bfloat16")
    # AWQ and the other pre-quantized formats need a checkpoint made in them.
    assert "gpu:AWQ" not in commands


def test_the_cli_prints_both_lanes_and_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    hw = tmp_path / "h100.json"
    hw.write_text(json.dumps(MACHINES["h100"]))
    assert run_cli(["recommend", str(folder), "--hardware", str(hw), "--task", "code"]) == 0
    out = capsys.readouterr().out
    assert "RUNS" in out and "vLLM/SGLang" in out and "here" in out
    assert "Why FP8 W8A8 (fits on GPU):" in out
    assert f"vllm serve {folder} --max-model-len 4096 --quantization fp8" in out
    assert "To chat in Quantdesk now: Q8_0 (fits on GPU)" in out
    assert run_cli(["recommend", str(folder), "--hardware", str(hw), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["two_lanes"] is True and data["best_here"].startswith("gguf:")
    engines = {o["engine"] for o in data["options"]}
    assert engines == {"here", "serving"}
    bf16 = next(o for o in data["options"] if o["file_type"] == "BF16" and o["format"] == "gpu")
    assert bf16["serving_command"].startswith("vllm serve ")


def test_on_an_h100_a_serving_engine_reads_prompts_at_least_as_fast_as_llama_cpp() -> None:
    """Both run 16-bit matrices through cuBLAS: the serving lane's prompt speed is never
    below llama.cpp's measured 16-bit speed, and llama.cpp's quantized files read prompts
    at about half of it (measured on an H100, docs/llama-cpp.md#measured)."""
    rec = advise("h100", "8b", Task.CHAT)
    served = _option(rec, "gpu:BF16").speed
    here = _option(rec, "gguf:BF16").speed
    q4 = _option(rec, "gguf:Q4_K_M").speed
    assert served is not None and here is not None and q4 is not None
    assert served.prompt >= here.prompt
    assert 0.35 < q4.prompt / here.prompt < 0.65
