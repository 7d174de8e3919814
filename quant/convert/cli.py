"""Convert a Hugging Face safetensors model folder to GGUF.

Shared by ``quantdesk convert-hf`` and the child-process entry
``python -m quant convert-hf``. With ``--json-progress`` stdout carries the
JSON-lines protocol of :mod:`quant.protocol` (progress, then the result or the
error) and nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys

from quant.progress import Progress
from quant.protocol import JsonLines, write_json
from quant.untrusted import terminal_text

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


def run(args: argparse.Namespace) -> int:
    """Run a conversion for parsed ``args``; return the process exit code."""
    from quant.convert.pipeline import convert_hf

    if args.json_progress:
        lines = JsonLines()
        return lines.run(
            lambda: convert_hf(
                args.src_dir,
                args.out,
                outtype=args.outtype,
                on_progress=lines.progress,
                overwrite=args.force,
            ).as_dict()
        )

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
        write_json(result.as_dict())
        return 0
    # Names come from the model folder (config, tokenizer files): shown as terminal text.
    out = sys.stdout
    mib = result.file_bytes / 2**20
    out.write(
        f"{terminal_text(result.output, None)}: {terminal_text(result.hf_architecture)} → "
        f"{result.architecture} {result.size_label} {result.outtype.value.upper()}, "
        f"{result.n_tensors} tensors, {mib:.1f} MiB in {result.seconds:.1f}s\n"
    )
    tok = result.tokenizer
    out.write(
        f"tokenizer: {terminal_text(tok.get('model'))} (pre {terminal_text(tok.get('pre'))}), "
        f"{tok.get('tokens')} tokens, chat template {'yes' if tok.get('chat_template') else 'no'}\n"
    )
    for w in result.warnings:
        out.write(f"warning: {terminal_text(w, 1000)}\n")
    return 0
