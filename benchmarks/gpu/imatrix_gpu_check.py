"""The importance matrix collected with every layer on the GPU equals the CPU one.

The collector reads each matmul input through ggml's backend API, so it must see
the same activations whether the tensors live in RAM or in VRAM. Collects over a
few chunks of the default calibration mix both ways and prints, per weight, the
relative difference of the per-column means, and the collection speed of each.

    python benchmarks/gpu/imatrix_gpu_check.py MODEL.gguf [--chunks 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--chunks", type=int, default=4)
    args = parser.parse_args()

    # llama_cpp before anything that may import gguf (and through it sentencepiece):
    # on CUDA builds the other order crashes the first model load.
    import llama_cpp  # noqa: F401
    import numpy as np

    from quant.jobs.calibration import default_mix
    from quant.jobs.imatrix import collect_imatrix

    calib = default_mix()
    results = {}
    for label, ngl in (("cpu", 0), ("gpu", -1)):
        t0 = time.perf_counter()
        data = collect_imatrix(
            args.model, calib, chunk_size=512, max_chunks=args.chunks, n_gpu_layers=ngl
        )
        dt = time.perf_counter() - t0
        results[label] = data.for_quantize()
        print(f"{label}: {len(data.entries)} weights, {data.tokens} tokens in {dt:.2f} s "
              f"({data.tokens / dt:,.0f} tokens/s)")  # fmt: skip
    cpu, gpu = results["cpu"], results["gpu"]
    assert cpu.keys() == gpu.keys(), sorted(set(cpu) ^ set(gpu))
    worst = 0.0
    for name in sorted(cpu):
        a, b = cpu[name], gpu[name]
        rel = float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))
        worst = max(worst, rel)
    print(f"weights compared: {len(cpu)}; largest relative difference CPU vs GPU: {worst:.2e}")
    return 0 if worst < 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
