"""How long a library listing of a 1,000-file tree takes, against a bare walk of the same tree.

Run: ``.venv/bin/python benchmarks/library_scan.py [N_FILES]``

Builds, in a temporary folder, N small but valid GGUF files (default 1,000) laid
out like the Hugging Face cache (blobs named by SHA-256, snapshot links), LM
Studio (publisher/repo/file) and Ollama (manifests naming blobs), plus a few
broken files (not GGUF, truncated, empty, a manifest whose blob is missing).
Then it times, in one run:

(c) the baseline: ``os.walk`` and a ``stat`` of every file in the tree;
(s) the library scan alone (``ModelLibrary.entries``: walk, stat, manifests);
(a) a cold ``describe_library`` (no index file: every header is read and every
    fit badge computed);
(b) a warm rescan from the index file by a new ``LibraryIndex`` (as at the next
    start: no header is read, fit badges are recomputed from the cached facts);
(b') a warm rescan by the same ``LibraryIndex`` (as after a folder change in the
    running app: fit badges come from memory too).

Each time is printed with its ratio to the baseline. The fit badges use a fixed
simulated machine, so the figures do not depend on a hardware probe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIB = 1024**3


def gguf_bytes(scratch: Path, name: str, seed: int) -> bytes:
    """A complete one-layer llama GGUF of a few kB, different for each seed."""
    import gguf
    import numpy as np

    emb, ff, vocab = 32, 64, 16
    w = gguf.GGUFWriter(str(scratch), "llama")
    w.add_name(name)
    w.add_context_length(4096)
    w.add_embedding_length(emb)
    w.add_block_count(1)
    w.add_feed_forward_length(ff)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    rng = np.random.default_rng(seed)

    def t(*shape: int) -> Any:
        return rng.standard_normal(shape).astype(np.float32)

    w.add_tensor("token_embd.weight", t(vocab, emb))
    w.add_tensor("output_norm.weight", np.ones(emb, dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(emb, dtype=np.float32))
    for n in ("attn_q", "attn_output"):
        w.add_tensor(f"blk.0.{n}.weight", t(emb, emb))
    for n in ("attn_k", "attn_v"):
        w.add_tensor(f"blk.0.{n}.weight", t(16, emb))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(emb, dtype=np.float32))
    for n in ("ffn_gate", "ffn_up"):
        w.add_tensor(f"blk.0.{n}.weight", t(ff, emb))
    w.add_tensor("blk.0.ffn_down.weight", t(emb, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return scratch.read_bytes()


def build(root: Path, n_files: int) -> dict[str, Path]:
    """The tree: 40% Hugging Face cache, 30% LM Studio, 25% Ollama, the rest broken."""
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / "scratch.gguf"
    hf = root / "hf-hub"
    lms = root / "lmstudio"
    ollama = root / "ollama"
    n_hf = n_files * 40 // 100
    n_lms = n_files * 30 // 100
    n_ollama = n_files * 25 // 100
    n_broken = n_files - n_hf - n_lms - n_ollama
    seed = 0
    for i in range(n_hf):
        seed += 1
        data = gguf_bytes(scratch, f"hf-model-{i}", seed)
        digest = hashlib.sha256(data).hexdigest()
        repo = hf / f"models--org{i // 40}--Model{i // 4}-GGUF"
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / digest).write_bytes(data)
        snap = repo / "snapshots" / "0123abcd"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / f"model{i}.Q4_K_M.gguf").symlink_to(Path("..") / ".." / "blobs" / digest)
    for i in range(n_lms):
        seed += 1
        folder = lms / f"publisher{i // 50}" / f"Repo{i // 3}-GGUF"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"model{i}.Q8_0.gguf").write_bytes(gguf_bytes(scratch, f"lms-{i}", seed))
    (ollama / "blobs").mkdir(parents=True)
    for i in range(n_ollama):
        seed += 1
        data = gguf_bytes(scratch, f"ollama-{i}", seed)
        digest = hashlib.sha256(data).hexdigest()
        (ollama / "blobs" / f"sha256-{digest}").write_bytes(data)
        _manifest(ollama, f"model{i // 5}", f"tag{i}", digest, len(data))
    broken = lms / "broken" / "Files"
    broken.mkdir(parents=True)
    good = gguf_bytes(scratch, "whole", 0)
    for i in range(n_broken - 1):
        kind = i % 3
        payload = b"PK\x03\x04 zip" if kind == 0 else good[: len(good) // 2] if kind == 1 else b""
        (broken / f"broken{i}.gguf").write_bytes(payload)
    _manifest(ollama, "gone", "latest", "d" * 64, 1234)
    scratch.unlink()
    return {"hf": hf, "lms": lms, "ollama": ollama}


def _manifest(models: Path, model: str, tag: str, digest: str, size: int) -> None:
    path = models / "manifests" / "registry.ollama.ai" / "library" / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    path.write_text(json.dumps({"schemaVersion": 2, "layers": [{**layer, "size": size}]}))


def walk_and_stat(root: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                Path(dirpath, name).stat()
            except OSError:
                continue
            n += 1
    return n


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if repeat > 2 else statistics.mean(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="?", type=int, default=1000, help="files in the tree")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantdesk-library-bench-") as tmp:
        os.environ["QUANTDESK_HOME"] = str(Path(tmp) / "home")
        from app.core.library import ExternalRoot, ModelLibrary, ModelSource
        from app.core.library_index import LibraryIndex, describe_library
        from app.core.settings import Settings
        from quant.hardware.profile import CpuInfo, HardwareProfile, MemoryInfo, RuntimeInfo

        tree = Path(tmp) / "tree"
        t0 = time.perf_counter()
        roots = build(tree, args.files)
        made = time.perf_counter() - t0
        library = ModelLibrary(
            Settings(Path(tmp) / "settings.json"),
            external_roots=[
                ExternalRoot(ModelSource.HUGGINGFACE, roots["hf"]),
                ExternalRoot(ModelSource.LM_STUDIO, roots["lms"]),
                ExternalRoot(ModelSource.OLLAMA, roots["ollama"]),
            ],
            models_dir=Path(tmp) / "made",
        )
        profile = HardwareProfile(
            cpu=CpuInfo("Benchmark CPU", "x86_64", 8, 16, ("avx2", "fma", "f16c"), "fixed"),
            memory=MemoryInfo(32 * GIB, 24 * GIB, 0, 0),
            gpus=(),
            backends=("cpu",),
            runtime=RuntimeInfo("0.3.36", False, ("CPU",), ""),
            measured_bandwidth_gbps=50.0,
            source="benchmark",
        )
        index_file = Path(tmp) / "index.json"

        files = walk_and_stat(tree)
        baseline = best(lambda: walk_and_stat(tree), 5)
        scan = best(library.entries, 5)

        colds = []
        rows: list[Any] = []
        for _ in range(3):
            index_file.unlink(missing_ok=True)
            cold_index = LibraryIndex(index_file)
            t0 = time.perf_counter()
            rows = describe_library(library, profile, index=cold_index)
            colds.append(time.perf_counter() - t0)
        cold = min(colds)
        assert cold_index.header_reads > 0

        restarts: list[LibraryIndex] = []

        def restart() -> None:
            index = LibraryIndex(index_file)
            restarts.append(index)
            describe_library(library, profile, index=index)

        warm_new = best(restart, 5)
        assert all(i.header_reads == 0 for i in restarts)
        same = LibraryIndex(index_file)
        describe_library(library, profile, index=same)
        warm_same = best(lambda: describe_library(library, profile, index=same), 5)
        assert same.header_reads == 0

        broken = sum(1 for r in rows if r.entry.broken)
        print(
            f"tree: {files:,} files on disk (blobs, links, manifests), "
            f"{len(rows):,} models listed ({broken} broken)"
        )
        print(f"      built in {made:.1f} s; index file {index_file.stat().st_size / 1e6:.2f} MB")
        print(f"(c) os.walk + stat (baseline)       {baseline * 1e3:8.1f} ms")
        lines = [
            ("(s) library scan (entries)       ", scan),
            ("(a) cold describe_library        ", cold),
            ("(b) warm rescan, new index       ", warm_new),
            ("(b') warm rescan, same index     ", warm_same),
        ]
        for label, value in lines:
            print(f"{label}   {value * 1e3:8.1f} ms   ratio {value / baseline:6.1f}x")
        print(f"cold / warm (new index): {cold / warm_new:.1f}x")
        shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
