"""Convert a Hugging Face safetensors model folder to GGUF.

Shared by ``quantdesk convert-hf`` and the child-process entry
``python -m quant convert-hf``. With ``--json-progress`` every progress report is
one JSON object per line on stdout (``{"stage", "done", "total", "bytes_done",
"eta_s", …}``), followed by ``{"result": {…}}`` on success or ``{"error": "…"}``
on failure; nothing else is written to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, TextIO

from quant.errors import Cancelled, QuantError
from quant.progress import Progress

logger = logging.getLogger(__name__)

OUTTYPES = ("f16", "bf16", "f32", "q8_0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src_dir",
        metavar="SRC_DIR",
        help="model folder with config.json, *.safetensors and tokenizer files",
    )
    parser.add_argument("out", metavar="OUT.gguf", help="output file (or an existing folder)")
    parser.add_argument(
        "--outtype",
        choices=OUTTYPES,
        default="f16",
        help="precision of the weight matrices (default: f16)",
    )
    parser.add_argument(
        "--json-progress",
        action="store_true",
        help="write progress and the result as JSON lines on stdout",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--force", action="store_true", help="replace OUT.gguf if it exists (never a source file)"
    )


def _emit(stream: TextIO, obj: dict[str, Any]) -> None:
    stream.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    stream.flush()


def run(args: argparse.Namespace) -> int:
    """Run a conversion for parsed ``args``; return the process exit code."""
    from quant.convert.pipeline import convert_hf

    out = sys.stdout
    if args.json_progress:

        def report(p: Progress) -> None:
            _emit(out, p.as_dict())

        try:
            result = convert_hf(
                args.src_dir,
                args.out,
                outtype=args.outtype,
                on_progress=report,
                overwrite=args.force,
            )
        except Cancelled:
            _emit(out, {"error": "cancelled", "cancelled": True})
            return 130
        except QuantError as exc:
            _emit(out, {"error": str(exc), "kind": type(exc).__name__})
            return 2
        except Exception as exc:  # process boundary: log the traceback, report one line
            logger.exception("conversion failed")
            _emit(out, {"error": f"Unexpected error: {exc}", "kind": "internal"})
            return 1
        _emit(out, {"result": result.as_dict()})
        return 0

    tty = sys.stderr.isatty()

    def show(p: Progress) -> None:
        if not tty or p.stage != "convert":
            return
        eta = f"  ETA {p.eta_s:.0f}s" if p.eta_s is not None else ""
        sys.stderr.write(
            f"\r{p.done}/{p.total} tensors  {p.bytes_done / 2**20:.0f}/"
            f"{p.bytes_total / 2**20:.0f} MiB{eta}   "
        )
        sys.stderr.flush()

    result = convert_hf(
        args.src_dir, args.out, outtype=args.outtype, on_progress=show, overwrite=args.force
    )
    if tty:
        sys.stderr.write("\n")
    if args.json:
        json.dump(result.as_dict(), out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    mib = result.file_bytes / 2**20
    out.write(
        f"{result.output}: {result.hf_architecture} → {result.architecture} "
        f"{result.size_label} {result.outtype.value.upper()}, {result.n_tensors} tensors, "
        f"{mib:.1f} MiB in {result.seconds:.1f}s\n"
    )
    tok = result.tokenizer
    out.write(
        f"tokenizer: {tok.get('model')} (pre {tok.get('pre')}), {tok.get('tokens')} tokens, "
        f"chat template {'yes' if tok.get('chat_template') else 'no'}\n"
    )
    for w in result.warnings:
        out.write(f"warning: {w}\n")
    return 0
