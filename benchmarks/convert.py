"""Converter throughput and peak memory on a generated ~1 GB checkpoint.

Generates a Llama-shaped BF16 checkpoint (about 1.1 GB in 3 shards) into a
temporary folder, streaming it to disk, then converts it in a child process for
each output type and reports:

- throughput in MB/s of checkpoint read, and as a ratio to a plain file copy of
  the same shards measured in the same run (the baseline);
- the child's peak RSS, the part above a child that only imports the converter
  (the baseline), and that part as a multiple of the largest tensor.

Everything generated is deleted at the end. Usage::

    .venv/bin/python benchmarks/convert.py [--outtypes f16,q8_0] [--keep-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.convert import checkpoints as ckpt  # noqa: E402

# Llama-2-7B-like widths, fewer layers: about 580M parameters.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 10,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
SHARDS = 3
CHUNK = 1 << 22  # values per generated block


def tensor_shapes(cfg: dict[str, int]) -> dict[str, tuple[int, ...]]:
    e, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = e // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, e)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (e,),
            p + "self_attn.q_proj.weight": (e, e),
            p + "self_attn.k_proj.weight": (kv, e),
            p + "self_attn.v_proj.weight": (kv, e),
            p + "self_attn.o_proj.weight": (e, e),
            p + "post_attention_layernorm.weight": (e,),
            p + "mlp.gate_proj.weight": (ff, e),
            p + "mlp.up_proj.weight": (ff, e),
            p + "mlp.down_proj.weight": (e, ff),
        }
    shapes |= {"model.norm.weight": (e,), "lm_head.weight": (v, e)}
    return shapes


def write_checkpoint(folder: Path) -> tuple[int, int]:
    """Stream the checkpoint to disk; return (total bytes, largest tensor bytes)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    tok = ckpt.with_bos(
        ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
    )
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    )

    rng = np.random.default_rng(0)
    block = ckpt.to_bf16_bits(rng.standard_normal(CHUNK).astype(np.float32) * 0.02).tobytes()
    shapes = tensor_shapes(CONFIG)
    names = list(shapes)
    groups = [names[i::SHARDS] for i in range(SHARDS)]
    weight_map: dict[str, str] = {}
    total = largest = 0
    for s, group in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        header: dict[str, object] = {}
        offset = 0
        for n in group:
            nbytes = int(np.prod(shapes[n])) * 2
            header[n] = {
                "dtype": "BF16",
                "shape": list(shapes[n]),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
            weight_map[n] = fname
            largest = max(largest, nbytes)
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with (folder / fname).open("wb") as fh:
            fh.write(len(blob).to_bytes(8, "little") + blob)
            for n in group:
                remaining = int(np.prod(shapes[n])) * 2
                while remaining:
                    piece = block[: min(len(block), remaining)]
                    fh.write(piece)
                    remaining -= len(piece)
        total += offset
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total, largest


_HWM = (
    "\nimport json as _j\n"
    "_h = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "print(_j.dumps({'peak_rss_kib': int(_h.split()[1])}))\n"
)


def run_child(code: str) -> tuple[float, int, str]:
    """Run ``code`` in a fresh interpreter; return (seconds, peak RSS bytes, stdout).

    The peak is the child's own high-water mark (VmHWM), read in the child after
    the work: a forked child's rusage would also count the parent's pages it
    shared before exec.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code + _HWM],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr}")
    lines = proc.stdout.strip().splitlines()
    peak = json.loads(lines[-1])["peak_rss_kib"] * 1024
    return elapsed, peak, "\n".join(lines[:-1])


def drop_cache_hint(paths: list[Path]) -> None:
    # Ask the kernel to forget the files' pages so each run reads comparably.
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outtypes", default="f16,bf16,q8_0")
    ap.add_argument("--keep-dir", help="work in this folder instead of a temporary one")
    args = ap.parse_args()

    work = Path(args.keep_dir) if args.keep_dir else Path(tempfile.mkdtemp(prefix="qd-bench-"))
    try:
        src = work / "model"
        t0 = time.perf_counter()
        total, largest = write_checkpoint(src)
        print(
            f"checkpoint: {total / 1e6:.0f} MB in {SHARDS} shards, largest tensor "
            f"{largest / 1e6:.0f} MB, generated in {time.perf_counter() - t0:.1f}s"
        )
        shards = sorted(src.glob("*.safetensors"))

        # Baseline 1: copying the shards (read + write of the same bytes).
        drop_cache_hint(shards)
        t0 = time.perf_counter()
        for p in shards:
            shutil.copyfile(p, work / f"copy-{p.name}")
        copy_s = time.perf_counter() - t0
        for p in work.glob("copy-*"):
            p.unlink()
        copy_mbps = total / 1e6 / copy_s
        print(f"baseline copy: {copy_mbps:.0f} MB/s")

        # Baseline 2: a child that only imports the converter.
        _s, import_rss, _ = run_child("import numpy, gguf, quant.convert.pipeline")
        print(f"baseline child RSS (imports only): {import_rss / 2**20:.0f} MiB")

        for outtype in args.outtypes.split(","):
            out = work / f"out-{outtype}.gguf"
            drop_cache_hint(shards)
            code = (
                "import json; from quant.convert import convert_hf; "
                f"r = convert_hf({str(src)!r}, {str(out)!r}, outtype={outtype!r}); "
                "print(json.dumps(r.as_dict()))"
            )
            elapsed, rss, stdout = run_child(code)
            result = json.loads(stdout.strip().splitlines()[-1])
            mbps = total / 1e6 / result["seconds"]
            extra = rss - import_rss
            print(
                f"{outtype:>5}: {result['seconds']:.1f}s convert ({elapsed:.1f}s with start-up), "
                f"{mbps:.0f} MB/s = {mbps / copy_mbps:.2f}x copy; "
                f"output {result['file_bytes'] / 1e6:.0f} MB; peak RSS {rss / 2**20:.0f} MiB "
                f"(+{extra / 2**20:.0f} MiB over imports = {extra / largest:.2f}x the largest "
                f"tensor, {rss / largest:.2f}x in total)"
            )
            out.unlink()
    finally:
        if not args.keep_dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
