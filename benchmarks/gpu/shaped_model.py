"""A GGUF with the starter model's exact header, tensor types and sizes, and random weights.

The device machine used for CUDA measurements accepts at most 64 MiB per call,
so the 253 MB starter model cannot travel. Its 6.5 MB header can: ``template``
writes the header bytes and the tensor table; ``build`` lays random but valid
quant blocks (finite f16 scales) behind that header on the other side. Memory,
VRAM and decode speed depend on shapes and types, not on weight values, so the
result stands in for the starter model in speed and memory measurements only.

    python benchmarks/gpu/shaped_model.py template MODEL.gguf DIR
    python benchmarks/gpu/shaped_model.py build DIR OUT.gguf
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Block layouts from ggml/src/ggml-common.h: (elements per block, bytes per block,
# byte offsets of the f16 scale fields inside a block).
_LAYOUT: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "Q4_0": (32, 18, (0,)),
    "Q5_0": (32, 22, (0,)),
    "Q8_0": (32, 34, (0,)),
    "Q4_K": (256, 144, (0, 2)),
    "Q5_K": (256, 176, (0, 2)),
    "Q6_K": (256, 210, (208,)),
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


def _random_tensor(kind: str, n_elements: int, n_bytes: int, rng: np.random.Generator) -> bytes:
    if kind == "F32":
        # Norm weights: ones keep activations finite through every layer.
        return np.ones(n_elements, dtype=np.float32).tobytes()
    if kind == "F16":
        return (rng.standard_normal(n_elements) * 0.02).astype(np.float16).tobytes()
    per_block, block_bytes, scale_offsets = _LAYOUT[kind]
    n_blocks = n_elements // per_block
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
    for off in scale_offsets:
        raw[:, off : off + 2] = scale
    data = raw.tobytes()
    if len(data) != n_bytes:
        raise ValueError(f"{kind}: built {len(data)} bytes, header says {n_bytes}")
    return data


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
