"""Predicted memory against the starter model loaded by llama.cpp, in fresh processes.

Each context length runs in its own child process so the resident set starts clean:
the child imports llama_cpp, notes its RSS, loads the model (n_threads=2,
verbose=False), answers a short prompt, and reports how much its RSS grew, along
with the KV and compute buffer sizes llama.cpp logs. The prediction includes the
mmapped weights: llama.cpp maps the file with MAP_POPULATE and generation reads
every weight, so all of them are resident.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quant.facts import inspect_model
from quant.hardware.cpu import probe_cpu
from quant.hardware.profile import HardwareProfile, MemoryInfo
from quant.plan.memory import RuntimeOptions, compute_buffer_bytes, estimate_memory, kv_cache

pytestmark = pytest.mark.slow

MIB = 1024**2

CHILD = r"""
import json, re, sys
import llama_cpp
import psutil

path, n_ctx, swa_full = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
lines = []

@llama_cpp.llama_log_callback
def on_log(level, text, user_data):
    lines.append(text.decode("utf-8", "replace"))

llama_cpp.llama_log_set(on_log, None)
proc = psutil.Process()
before = proc.memory_info().rss
llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=2, verbose=False, swa_full=swa_full)
out = llm("The capital of France is", max_tokens=16, temperature=0.0)
after = proc.memory_info().rss
log = "".join(lines)
mib = lambda pattern: [float(x) for x in re.findall(pattern + r"\s*=\s*([\d.]+) MiB", log)]
print(json.dumps({
    "rss_growth": after - before,
    "kv_mib": mib(r"KV buffer size"),
    "compute_mib": mib(r"CPU compute buffer size"),
    "tokens": out["usage"]["completion_tokens"],
}))
"""


BUFFERS_CHILD = r"""
import json, re, sys
import llama_cpp

lines = []

@llama_cpp.llama_log_callback
def on_log(level, text, user_data):
    lines.append(text.decode("utf-8", "replace"))

llama_cpp.llama_log_set(on_log, None)
llama_cpp.llama_backend_init()
model = llama_cpp.llama_model_load_from_file(
    sys.argv[1].encode(), llama_cpp.llama_model_default_params()
)
out = []
for spec in json.loads(sys.argv[2]):
    lines.clear()
    p = llama_cpp.llama_context_default_params()
    p.n_ctx, p.n_batch, p.n_ubatch = spec["n_ctx"], 512, spec["n_ubatch"]
    p.n_threads = p.n_threads_batch = 1
    p.flash_attn_type = 1 if spec["flash_attn"] else 0
    ctx = llama_cpp.llama_init_from_model(model, p)
    log = "".join(lines)
    (compute,) = re.findall(r"CPU compute buffer size\s*=\s*([\d.]+) MiB", log)
    out.append({**spec, "compute_mib": float(compute)})
    llama_cpp.llama_free(ctx)
print(json.dumps(out))
"""


def test_compute_buffer_formula_matches_llama_cpp_when_attention_dominates(
    tmp_path: Path,
) -> None:
    # A small vocabulary and many heads: the attention scores, not the logits, set the
    # size of the compute buffer, the case of most 7B+ models at long contexts.
    from tests.test_memory_model import write_tiny_llama

    path = write_tiny_llama(
        tmp_path / "heads.gguf", n_embd=1024, n_head=16, n_kv=4, n_layer=2, n_ff=1024,
        n_vocab=1024,
    )  # fmt: skip
    specs = [
        {"n_ctx": n_ctx, "n_ubatch": ub, "flash_attn": fa}
        for n_ctx in (512, 4096, 16384)
        for ub in (128, 512)
        for fa in (False, True)
    ]
    proc = subprocess.run(
        [sys.executable, "-c", BUFFERS_CHILD, str(path), json.dumps(specs)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = inspect_model(path)
    for row in json.loads(proc.stdout.strip().splitlines()[-1]):
        opts = RuntimeOptions(n_ubatch=row["n_ubatch"], flash_attn=row["flash_attn"])
        predicted = compute_buffer_bytes(facts, row["n_ctx"], opts)
        assert predicted == pytest.approx(row["compute_mib"] * MIB, rel=0.03, abs=0.5 * MIB), row


def _measure(model: Path, n_ctx: int, swa_full: bool) -> dict[str, float | list[float]]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(n_ctx), "1" if swa_full else "0"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, float | list[float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def this_machine() -> HardwareProfile:
    cpu, _ = probe_cpu()
    # Only the CPU's instruction sets matter here (they decide which weights are repacked).
    return HardwareProfile(cpu=cpu, memory=MemoryInfo(total_bytes=0, available_bytes=0))


@pytest.mark.parametrize(
    ("n_ctx", "swa_full"),
    [(2048, True), (8192, True), (32768, True), (32768, False)],
)
def test_predicted_ram_is_within_5_percent_of_measured(
    starter_model: Path, this_machine: HardwareProfile, n_ctx: int, swa_full: bool
) -> None:
    facts = inspect_model(starter_model)
    # llama-cpp-python's defaults; llama.cpp's own default is the full-size SWA cache.
    options = RuntimeOptions(swa_full=swa_full)
    predicted = estimate_memory(facts, ctx=n_ctx, profile=this_machine, options=options)
    measured = _measure(starter_model, n_ctx, swa_full)
    assert measured["tokens"] > 0

    # The KV cache is llama.cpp's to the byte (it logs MiB with two decimals).
    kv_logged = sum(measured["kv_mib"]) * MIB  # type: ignore[arg-type]
    assert predicted.kv_bytes == pytest.approx(kv_logged, abs=0.01 * MIB)
    assert predicted.kv_bytes == kv_cache(facts, n_ctx, options=options).total_bytes
    # The compute buffer llama.cpp reserves matches the fitted formula within 3%.
    (compute_logged,) = measured["compute_mib"]  # type: ignore[misc]
    assert compute_buffer_bytes(facts, n_ctx, options) == pytest.approx(
        compute_logged * MIB, rel=0.03
    )

    growth = float(measured["rss_growth"])  # type: ignore[arg-type]
    error = (predicted.ram_bytes - growth) / growth
    assert abs(error) < 0.05, (
        f"n_ctx {n_ctx} swa_full {swa_full}: predicted {predicted.ram_bytes / MIB:.1f} MiB, "
        f"measured {growth / MIB:.1f} MiB ({100 * error:+.1f}%)"
    )
