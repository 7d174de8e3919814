"""How long inspecting and listing a GGUF whose header lists a million tensors takes.

Run: ``.venv/bin/python benchmarks/big_header.py [N_TENSORS] [--unique-names]``

Builds, in a temporary folder, a llama GGUF whose header lists N small tensors
(default 1,000,000; ``tests.ggufs.write_many_tensor_gguf``, data left sparse):
500 layers of 2,000 tensors each, or every tensor named apart with
``--unique-names``. Then it times, in one run:

(c) the baseline: reading the header's bytes from the file, the least any
    reader of it must do;
(i) ``quantdesk inspect`` of the file (``inspect_model``: header and facts);
(a) a first listing of a library holding the file (``describe_library``: the
    header is read, the fit badge computed, the index file written);
(b) the next listing by a new ``LibraryIndex`` (as at the next start: from the
    index file alone).

Each time is printed with its ratio to the baseline, and the index file's size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from library_scan import best

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tensors", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--unique-names", action="store_true", help="no two layers alike")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantdesk-big-header-") as tmp:
        os.environ["QUANTDESK_HOME"] = str(Path(tmp) / "home")
        from app.core.library import ModelLibrary
        from app.core.library_index import LibraryIndex, describe_library
        from app.core.settings import Settings
        from quant.facts import inspect_model
        from quant.gguf.header import read_gguf_header
        from quant.hardware.profile import HardwareProfile
        from tests.ggufs import write_many_tensor_gguf

        folder = Path(tmp) / "models"
        t0 = time.perf_counter()
        path = write_many_tensor_gguf(
            folder / "many.gguf",
            args.tensors,
            per_layer=max(1, args.tensors // 500),
            unique_names=args.unique_names,
        )
        made = time.perf_counter() - t0
        header_bytes = read_gguf_header(path).data_offset

        def read_header_bytes() -> None:
            with path.open("rb") as fh:
                fh.read(header_bytes)

        library = ModelLibrary(Settings(Path(tmp) / "settings.json"), external_roots=())
        library.add_folder(folder)
        profile = HardwareProfile.from_dict(
            {
                "cpu": {"brand": "Benchmark CPU", "logical_cores": 16, "physical_cores": 8},
                "memory": {"total_bytes": 32 << 30, "available_bytes": 24 << 30},
                "measured_bandwidth_gbps": 50.0,
            },
            source="benchmark",
        )
        index_file = Path(tmp) / "index.json"

        def first_listing() -> None:
            index_file.unlink(missing_ok=True)
            describe_library(library, profile, index=LibraryIndex(index_file))

        def next_listing() -> None:
            index = LibraryIndex(index_file)
            (row,) = describe_library(library, profile, index=index)
            assert index.header_reads == 0 and row.broken is None, row.broken

        baseline = best(read_header_bytes, args.repeat)
        inspect = best(lambda: inspect_model(path), args.repeat)
        first = best(first_listing, args.repeat)
        later = best(next_listing, args.repeat)

        names = "unique names" if args.unique_names else "500 layers alike"
        print(
            f"file: {args.tensors:,} tensors ({names}), header {header_bytes / 1e6:.1f} MB, "
            f"built in {made:.1f} s; index file {index_file.stat().st_size / 1e6:.3f} MB"
        )
        print(f"(c) read the header's bytes (baseline)   {baseline * 1e3:9.1f} ms")
        for label, value in (
            ("(i) quantdesk inspect                  ", inspect),
            ("(a) first listing (header read)        ", first),
            ("(b) next listing (from the index)      ", later),
        ):
            print(f"{label}   {value * 1e3:9.1f} ms   ratio {value / baseline:7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
