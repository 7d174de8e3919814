"""Predicted vs measured VRAM and generation speed with layers offloaded to an NVIDIA GPU.

Needs a CUDA build of llama-cpp-python and an NVIDIA GPU. For each setting a
fresh child process reads the device's used memory (NVML) before loading,
loads the model with ``n_gpu_layers``, processes a prompt and generates tokens,
and reads used memory again; the memory model and speed model predict the same
run. Printed as predicted ÷ measured.

    python benchmarks/gpu/offload_check.py MODEL.gguf [--ctx 2048 8192 32768] [--ngl -1 9]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys
import llama_cpp
import pynvml

path, n_ctx, ngl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)
before = pynvml.nvmlDeviceGetMemoryInfo(h).used
llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_gpu_layers=ngl, n_threads=8, verbose=False)
loaded = pynvml.nvmlDeviceGetMemoryInfo(h).used
prompt = "Write a long story about a lighthouse keeper who finds a map. " * 8
llm(prompt, max_tokens=16, temperature=0.0)  # warm-up: CUDA graphs, kernels
llm.reset()
out = llm(prompt, max_tokens=128, temperature=0.0)
after = pynvml.nvmlDeviceGetMemoryInfo(h).used
perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
print(json.dumps({
    "vram_load": loaded - before, "vram_after": after - before,
    "prompt_tokens": perf.n_p_eval, "prompt_ms": perf.t_p_eval_ms,
    "gen_tokens": perf.n_eval, "gen_ms": perf.t_eval_ms,
}))
"""


def measure(model: Path, n_ctx: int, ngl: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(n_ctx), str(ngl)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--ctx", type=int, nargs="*", default=[2048, 8192, 32768])
    parser.add_argument("--ngl", type=int, nargs="*", default=[-1])
    args = parser.parse_args()

    from quant.facts import inspect_model
    from quant.hardware.probe import probe
    from quant.plan.memory import estimate_memory, plan_tensors
    from quant.plan.speed import estimate_speed

    facts = inspect_model(args.model)
    profile = probe(measure_bandwidth=False, use_cache=False)
    gpu = profile.best_gpu
    if gpu is None:
        print("no NVIDIA GPU found: " + "; ".join(profile.notes), file=sys.stderr)
        return 2
    plan = plan_tensors(facts)
    print(f"model  {facts.name}, {facts.file_type}, {args.model.stat().st_size / 2**20:.1f} MiB")
    print(f"gpu    {gpu.name}, CC {gpu.compute_capability}, {gpu.memory_bandwidth_gbps} GB/s")
    header = (f"{'ngl':>4} {'n_ctx':>6}  {'VRAM pred':>10} {'VRAM meas':>10} {'ratio':>6}   "
              f"{'gen pred':>9} {'gen meas':>9} {'ratio':>6}   {'pp meas':>8}")  # fmt: skip
    print(header)
    print("-" * len(header))
    rows = []
    for ngl in args.ngl:
        for n_ctx in args.ctx:
            m = measure(args.model, n_ctx, ngl)
            est = estimate_memory(facts, ctx=n_ctx, n_gpu_layers=ngl, profile=profile, plan=plan)
            fill = int(m["prompt_tokens"] + m["gen_tokens"] / 2)
            spd = estimate_speed(facts, profile, plan=plan, n_gpu_layers=ngl, ctx=fill,
                                 use_calibration=False)  # fmt: skip
            vram_pred = sum(est.vram_bytes)
            gen_meas = m["gen_tokens"] / (m["gen_ms"] / 1000)
            pp_meas = m["prompt_tokens"] / (m["prompt_ms"] / 1000)
            vram_meas = m["vram_after"]
            print(
                f"{ngl:>4} {n_ctx:>6}  {vram_pred / 2**20:>8.1f}Mi {vram_meas / 2**20:>8.1f}Mi "
                f"{vram_pred / vram_meas:>6.3f}   {spd.generation:>9.1f} {gen_meas:>9.1f} "
                f"{spd.generation / gen_meas:>6.2f}   {pp_meas:>8.0f}"
            )
            rows.append({"ngl": ngl, "n_ctx": n_ctx, "measured": m, "vram_pred": vram_pred,
                         "gen_pred": spd.generation, "gen_meas": gen_meas})  # fmt: skip
    print()
    print("VRAM: device memory in use after load and a 128-token run, minus before (NVML);")
    print("it includes the CUDA context. gen: generation tokens/s (typical estimate).")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
