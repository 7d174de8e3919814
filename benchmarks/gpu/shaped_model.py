"""A GGUF with a real model's exact header, tensor types and sizes, and random weights.

The device machine used for CUDA measurements accepts at most 64 MiB per call,
so a model file cannot travel. Its header can: ``template`` writes the header
bytes and the tensor table of an existing GGUF (the 6.5 MB of the starter
model); ``config`` writes them for a Llama-family ``config.json`` in one
llama.cpp file type, with the per-tensor types of llama.cpp's mix
(``quant.plan.memory.plan_tensors``) and no vocabulary (``tokenizer.ggml.model
= "none"``: the benchmark feeds token ids). ``build`` lays random but valid
quant blocks (finite f16 scales) behind that header on the other side, tiling a
few MiB of random blocks so an 8B model is written in seconds. Memory, VRAM and
decode speed depend on shapes and types, not on weight values, so the result
stands in for the real model in speed and memory measurements only.

    python benchmarks/gpu/shaped_model.py template MODEL.gguf DIR
    python benchmarks/gpu/shaped_model.py config CONFIG.json TYPE DIR
    python benchmarks/gpu/shaped_model.py build DIR OUT.gguf
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Block layouts from ggml/src/ggml-common.h: (elements per block, bytes per block,
# byte offsets of the f16 scale fields inside a block).
_LAYOUT: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "Q4_0": (32, 18, (0,)),
    "Q5_0": (32, 22, (0,)),
    "Q8_0": (32, 34, (0,)),
    "Q4_K": (256, 144, (0, 2)),
    "Q5_K": (256, 176, (0, 2)),
    "Q6_K": (256, 210, (208,)),
    "Q4_1": (32, 20, (0, 2)),
    "Q2_K": (256, 84, (80, 82)),
    "Q3_K": (256, 110, (108,)),
    "IQ4_XS": (256, 136, (0,)),
}


def template(model: Path, out_dir: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    with model.open("rb") as fh:
        (out_dir / "header.bin").write_bytes(fh.read(reader.data_offset))
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
            "offset": int(t.data_offset - reader.data_offset),
        }
        for t in reader.tensors
    ]
    manifest = {
        "source": model.name,
        "data_offset": reader.data_offset,
        "tensors": tensors,
        "file_size": model.stat().st_size,
    }
    (out_dir / "tensors.json").write_text(json.dumps(manifest))


# Random blocks made once per type and repeated: values do not matter for speed.
_TILE_BLOCKS = 1 << 16


def _random_tensor(kind: str, n_elements: int, n_bytes: int, rng: np.random.Generator) -> bytes:
    if kind == "F32":
        # Norm weights: ones keep activations finite through every layer.
        return np.ones(n_elements, dtype=np.float32).tobytes()
    if kind in ("F16", "BF16"):
        tile = (rng.standard_normal(min(n_elements, 32 * _TILE_BLOCKS)) * 0.02).astype(np.float16)
        if kind == "BF16":  # the top half of each float32
            wide = tile.astype(np.float32).view(np.uint32) >> 16
            tile = wide.astype(np.uint16).view(np.float16)
        data = np.resize(tile, n_elements).tobytes()
    else:
        per_block, block_bytes, scale_offsets = _LAYOUT[kind]
        n_blocks = n_elements // per_block
        raw = rng.integers(0, 256, size=(min(n_blocks, _TILE_BLOCKS), block_bytes), dtype=np.uint8)
        scale = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
        for off in scale_offsets:
            raw[:, off : off + 2] = scale
        data = np.resize(raw, (n_blocks, block_bytes)).tobytes()
    if len(data) != n_bytes:
        raise ValueError(f"{kind}: built {len(data)} bytes, header says {n_bytes}")
    return data


def from_config(config: Path, file_type: str, out_dir: Path) -> None:
    """The header and tensor table of a Llama-family model in ``file_type``, no vocabulary."""
    import gguf

    from quant.facts.config_params import facts_from_config
    from quant.facts.model import SourceKind
    from quant.gguf.types import LlamaFileType
    from quant.plan.memory import plan_tensors, source_tensors

    cfg = json.loads(config.read_text())
    facts = facts_from_config(cfg, source=str(config), kind=SourceKind.CONFIG, name=config.stem)
    ftype = LlamaFileType[file_type.upper()]
    plan = plan_tensors(facts, ftype, source=source_tensors(facts))
    out_dir.mkdir(parents=True, exist_ok=True)
    header = out_dir / "header.bin"
    w = gguf.GGUFWriter(header, arch="llama")
    w.add_name(f"{config.stem} (shaped, random weights)")
    w.add_context_length(int(cfg.get("max_position_embeddings", 8192)))
    w.add_embedding_length(facts.embedding_length)
    w.add_block_count(facts.n_layers)
    w.add_feed_forward_length(facts.feed_forward_length)
    w.add_head_count(facts.n_heads)
    w.add_head_count_kv(facts.n_kv_heads)
    w.add_rope_dimension_count(facts.head_dim)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(facts.vocab_size)
    w.add_tokenizer_model("none")
    w.add_file_type(int(ftype))
    tensors = []
    offset = 0
    align = 32  # GGUF's default alignment
    for t in plan:
        w.add_tensor_info(
            t.name,
            tuple(reversed(t.shape)),
            np.dtype(np.float32),
            t.n_bytes,
            raw_dtype=gguf.GGMLQuantizationType(int(t.type)),
        )
        tensors.append(
            {"name": t.name, "type": t.type.name, "n_elements": t.n_elements,
             "n_bytes": t.n_bytes, "offset": offset}
        )  # fmt: skip
        offset += -(-t.n_bytes // align) * align
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    # Tensor data starts at the next multiple of the alignment after the header.
    size = header.stat().st_size
    data_offset = -(-size // align) * align
    with header.open("ab") as fh:
        fh.write(b"\0" * (data_offset - size))
    manifest = {
        "source": f"{config.name} as {ftype.name}",
        "data_offset": data_offset,
        "tensors": tensors,
        "file_size": data_offset + offset,
    }
    (out_dir / "tensors.json").write_text(json.dumps(manifest))


def build(template_dir: Path, out: Path) -> None:
    manifest = json.loads((template_dir / "tensors.json").read_text())
    header = (template_dir / "header.bin").read_bytes()
    rng = np.random.default_rng(0)
    with out.open("wb") as fh:
        fh.write(header)
        base = manifest["data_offset"]
        for t in sorted(manifest["tensors"], key=lambda t: t["offset"]):
            fh.seek(base + t["offset"])
            fh.write(_random_tensor(t["type"], t["n_elements"], t["n_bytes"], rng))
        fh.truncate(manifest["file_size"])


def main(argv: list[str]) -> int:
    if argv[:1] == ["config"] and len(argv) == 4:
        from_config(Path(argv[1]), argv[2], Path(argv[3]))
        return 0
    if len(argv) != 3 or argv[0] not in ("template", "build"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "template":
        template(Path(argv[1]), Path(argv[2]))
    else:
        build(Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
