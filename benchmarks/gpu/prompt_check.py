"""Predicted vs measured prompt and generation speed of llama.cpp with every layer on the GPU.

Needs a CUDA build of llama-cpp-python and an NVIDIA GPU. For each model a fresh
child process loads it with every layer offloaded, the settings Quantdesk's chat
uses (flash attention on, batches of 512 tokens), and times with llama.cpp's own
decode calls (token ids only, so a model without a vocabulary works):

(``--no-flash-attn`` for a build made without its kernels, to save build time)

* prompts of 128, 512 and 2,048 tokens (a fresh cache each time, the fastest of
  three runs after a warm-up), fed in 512-token batches as chat feeds them;
* generation of 64 tokens one at a time after a 512-token prompt.

The speed model (uncalibrated) predicts the same runs. Printed as predicted ÷
measured; the rows also go to ``--json FILE``.

    python benchmarks/gpu/prompt_check.py MODEL.gguf [MODEL.gguf …] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = (128, 512, 2048)
GENERATED = 64
N_CTX = 4096
BATCH = 512

CHILD = r"""
import ctypes, json, sys, time
import llama_cpp

path, n_ctx, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompts = [int(x) for x in sys.argv[4].split(",")]
n_gen = int(sys.argv[5])
flash = int(sys.argv[6])
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
mp.n_gpu_layers = 999
t0 = time.perf_counter()
model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
assert model, "load failed"
load_s = time.perf_counter() - t0
cp = llama_cpp.llama_context_default_params()
cp.n_ctx = n_ctx
cp.n_batch = batch_size
cp.n_ubatch = batch_size
cp.n_threads = 8
cp.n_threads_batch = 8
cp.flash_attn_type = flash  # 1: enabled, as Quantdesk's chat loads models
ctx = llama_cpp.llama_init_from_model(model, cp)
assert ctx, "context failed"
n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
batch = llama_cpp.llama_batch_init(batch_size, 0, 1)
mem = llama_cpp.llama_get_memory(ctx)

def decode(tokens, pos0):
    batch.n_tokens = len(tokens)
    for i, t in enumerate(tokens):
        batch.token[i] = t
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = i == len(tokens) - 1
    rc = llama_cpp.llama_decode(ctx, batch)
    assert rc == 0, rc
    llama_cpp.llama_get_logits_ith(ctx, len(tokens) - 1)

def prompt(n):
    toks = [(7 * i + 11) % n_vocab for i in range(n)]
    llama_cpp.llama_memory_clear(mem, True)
    llama_cpp.llama_synchronize(ctx)
    t = time.perf_counter()
    for i in range(0, n, batch_size):
        decode(toks[i:i + batch_size], i)
    llama_cpp.llama_synchronize(ctx)
    return time.perf_counter() - t

prompt(batch_size)  # warm-up: kernels, CUDA graphs
out = {"load_s": load_s, "prompt": {}}
for n in prompts:
    out["prompt"][str(n)] = min(prompt(n) for _ in range(3))
prompt(512)
pos = 512
decode([1], pos)  # the first generated token pays for graph changes
pos += 1
llama_cpp.llama_synchronize(ctx)
t = time.perf_counter()
for i in range(n_gen):
    decode([(13 * i + 5) % n_vocab], pos)
    pos += 1
llama_cpp.llama_synchronize(ctx)
out["gen_s"] = time.perf_counter() - t
out["gen_tokens"] = n_gen
out["gen_fill"] = 512 + 1 + n_gen // 2
print(json.dumps(out))
"""


def measure(model: Path, *, flash_attn: bool = True) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(N_CTX), str(BATCH),
         ",".join(str(n) for n in PROMPTS), str(GENERATED), str(int(flash_attn))],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--no-flash-attn", action="store_true",
        help="for a build without flash-attention kernels (GGML_CUDA_FA=OFF)",
    )  # fmt: skip
    args = parser.parse_args()

    from dataclasses import replace

    from quant.facts import inspect_model
    from quant.hardware.probe import probe
    from quant.plan.memory import RuntimeOptions, plan_tensors
    from quant.plan.speed import estimate_speed

    profile = probe(measure_bandwidth=False, use_cache=False)
    gpu = profile.best_gpu
    if gpu is None:
        print("no NVIDIA GPU found: " + "; ".join(profile.notes), file=sys.stderr)
        return 2
    opts = RuntimeOptions(n_ubatch=BATCH, flash_attn=not args.no_flash_attn)
    print(f"gpu    {gpu.name}, CC {gpu.compute_capability}, {gpu.memory_bandwidth_gbps} GB/s")
    header = (f"{'model':<28} {'tokens':>6}  {'pp pred':>8} {'pp meas':>8} {'ratio':>6}   "
              f"{'gen pred':>8} {'gen meas':>8} {'ratio':>6}")  # fmt: skip
    print(header)
    print("-" * len(header))
    rows = []
    for path in args.models:
        facts = inspect_model(path)
        plan = plan_tensors(facts)
        m = measure(path, flash_attn=not args.no_flash_attn)
        prompt_s = m["prompt"]
        assert isinstance(prompt_s, dict)
        gen_meas = float(m["gen_tokens"]) / float(m["gen_s"])  # type: ignore[arg-type]
        gen = estimate_speed(facts, profile, plan=plan, n_gpu_layers=-1,
                             ctx=int(m["gen_fill"]), options=opts,  # type: ignore[call-overload]
                             use_calibration=False)  # fmt: skip
        for n in PROMPTS:
            seconds = float(prompt_s[str(n)])
            spd = estimate_speed(facts, profile, plan=plan, n_gpu_layers=-1, ctx=2 * n,
                                 options=replace(opts, n_ubatch=min(BATCH, n)),
                                 use_calibration=False)  # fmt: skip
            pp_meas = n / seconds
            print(
                f"{path.name[:28]:<28} {n:>6}  {spd.prompt:>8.0f} {pp_meas:>8.0f} "
                f"{spd.prompt / pp_meas:>6.2f}   {gen.generation:>8.1f} {gen_meas:>8.1f} "
                f"{gen.generation / gen_meas:>6.2f}"
            )
            rows.append({"model": path.name, "file_type": facts.file_type,
                         "parameters": facts.parameters, "prompt_tokens": n,
                         "prompt_s": seconds, "pp_pred": spd.prompt, "pp_meas": pp_meas,
                         "gen_pred": gen.generation, "gen_meas": gen_meas,
                         "load_s": m["load_s"], "flash_attn": not args.no_flash_attn})  # fmt: skip
        if args.json:  # after each model, so a run cut short keeps what it measured
            data = {"hardware": profile.to_dict(), "runs": rows}
            args.json.write_text(json.dumps(data, indent=1))
    print()
    print("pp: prompt tokens/s (typical estimate), gen: generation tokens/s at about 550")
    print("tokens of context; ratio = predicted / measured.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
