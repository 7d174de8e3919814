"""``quantdesk convert``: a model to calibrated, quantized and measured GGUF files.

SRC is a Hugging Face model folder, a hub repo id (downloaded with resume), or
an F16/BF16/F32/Q8_0 GGUF. With ``--budget`` the job also searches a Quantdesk
mix — one llama.cpp type per tensor, chosen by measurement — for that size
(``3.2GB``, ``4.25bpw``, or ``fit``: the largest file that runs on this machine,
or the one in ``--hardware``, at the task's context with its KV cache), and
measures it next to the stock types whose sizes bracket the budget.

The job runs the engine's pipeline in this process
(``quant.jobs.pipeline.run_pipeline``); the GUI runs the same pipeline in a
child process (``python -m quant pipeline``), and ``--json-progress`` prints the
same JSON lines that child writes (:mod:`quant.protocol`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from app.core.commands.common import (
    NAME_LIMIT,
    add_hardware_arg,
    positive_tokens,
    print_json,
    resolve_model_arg,
)
from app.core.paths import app_paths
from app.core.quality import keep_report
from quant.errors import Cancelled, QuantError
from quant.plan.advisor import Task
from quant.plan.memory import KvType
from quant.progress import Progress
from quant.protocol import JsonLines
from quant.stopping import stop_on_signals
from quant.units import human_bytes
from quant.untrusted import terminal_text

logger = logging.getLogger(__name__)

DEFAULT_TYPES = "Q4_K_M"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "convert",
        help="quantize a model to GGUF types with an importance matrix and measure the loss",
        description="Turn SRC (an HF folder, a hub repo id, or an F16/BF16/F32/Q8_0 GGUF) into "
        "GGUF files of the requested types using llama.cpp's mixes: convert to F16 if needed, "
        "collect an importance matrix on calibration text, quantize each type, and measure "
        "each file against the full-precision model (KL divergence, perplexity, same top "
        "token). Every stage is reused on a rerun; outputs appear only when complete.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", metavar="SRC", help="HF folder, hub repo id, GGUF file, or 'starter'"
    )
    parser.add_argument(
        "--to",
        default=None,
        metavar="TYPES",
        help=f"comma-separated llama.cpp types (default: {DEFAULT_TYPES}, or none with "
        "--budget), e.g. Q4_K_M,Q5_K_M,IQ4_XS",
    )
    parser.add_argument(
        "--budget",
        default=None,
        metavar="SIZE|Nbpw|fit",
        help="also make a Quantdesk mix: the best file for this size, chosen per tensor by "
        "measurement (3.2GB, 450MiB, a plain number of bytes, 4.25bpw, or 'fit': the "
        "largest file that runs on this machine at the task's context), measured next to "
        "the stock types whose sizes bracket it",
    )
    parser.add_argument(
        "--task",
        choices=[t.value for t in Task],
        default=Task.CHAT.value,
        help="for --budget fit: the task whose default context is planned (default: chat)",
    )
    parser.add_argument(
        "--ctx",
        type=positive_tokens,
        metavar="N",
        help="for --budget fit: context length in tokens (default: the task's)",
    )
    parser.add_argument(
        "--kv",
        choices=[k.value for k in KvType],
        default=KvType.F16.value,
        help="for --budget fit: KV cache type (default: f16)",
    )
    add_hardware_arg(parser)
    parser.add_argument(
        "--search-rows",
        type=int,
        default=None,
        metavar="N",
        help="rows sampled per tensor when the search measures errors (default 256)",
    )
    parser.add_argument(
        "--search-chunks",
        type=int,
        default=None,
        metavar="N",
        help="calibration chunks the search measures KL divergence on (default 2)",
    )
    parser.add_argument(
        "--imatrix",
        default="auto",
        metavar="auto|none|FILE",
        help="collect an importance matrix (auto, the default), use none, "
        "or use FILE (.gguf or legacy .dat)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE|DIR|self",
        help="calibration text: a file, a folder of text files, or 'self' "
        "(the model writes its own); default: the built-in mix",
    )
    parser.add_argument(
        "--eval",
        dest="eval_text",
        default=None,
        metavar="FILE|none",
        help="evaluation text (default: the held-out part of the built-in "
        "mix); 'none' skips evaluation",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: the app's models folder)",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=None,
        metavar="N",
        help="at most N calibration chunks (default 128)",
    )
    parser.add_argument(
        "--eval-chunks",
        type=int,
        default=None,
        metavar="N",
        help="at most N evaluation chunks (default 16)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=512,
        metavar="TOKENS",
        help="tokens per calibration and evaluation chunk (default 512)",
    )
    parser.add_argument(
        "--output-type",
        default=None,
        metavar="TYPE",
        help="ggml type for output.weight (e.g. Q8_0); default: llama.cpp's mix",
    )
    parser.add_argument(
        "--embedding-type",
        default=None,
        metavar="TYPE",
        help="ggml type for token_embd.weight (e.g. Q8_0); default: llama.cpp's mix",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    parser.add_argument(
        "--requantize",
        action="store_true",
        help="accept an already-quantized GGUF (such as the starter model) by expanding it "
        "to F16 first; the new files carry its loss too",
    )
    parser.add_argument(
        "--json-progress",
        action="store_true",
        help="write progress and the result as JSON lines on stdout",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def spec_from_args(args: argparse.Namespace) -> Any:
    """The engine's JobSpec for parsed arguments."""
    from quant.jobs.pipeline import JobSpec
    from quant.jobs.quantize import parse_file_types

    paths = app_paths()
    source = resolve_model_arg(args.src)
    kw: dict[str, Any] = {}
    if args.chunks is not None:
        kw["imatrix_chunks"] = args.chunks
    if args.eval_chunks is not None:
        kw["eval_chunks"] = args.eval_chunks
    if args.search_rows is not None:
        kw["search_rows"] = args.search_rows
    if args.search_chunks is not None:
        kw["search_chunks"] = args.search_chunks
    if args.budget:
        from app.core.convert_preview import resolve_budget

        kw["budget"], kw["budget_repacked"] = resolve_budget(
            source,
            args.budget,
            hardware=getattr(args, "hardware", None),
            task=Task(args.task),
            ctx=args.ctx,
            kv_type=KvType(args.kv),
        )
    to = args.to if args.to is not None else ("" if args.budget else DEFAULT_TYPES)
    return JobSpec(
        source=source,
        types=parse_file_types(to) if to else (),
        imatrix=args.imatrix,
        calibration=args.calibration,
        eval_text=args.eval_text,
        out_dir=str(Path(args.out).expanduser()) if args.out else str(paths.models_dir),
        cache_dir=str(paths.cache_dir),
        threads=args.threads,
        imatrix_chunk_size=args.chunk_size,
        output_tensor_type=args.output_type,
        token_embedding_type=args.embedding_type,
        eval_chunk_size=args.chunk_size,
        requantize=args.requantize,
        **kw,
    )


def run(args: argparse.Namespace) -> int:
    from app.core.runtime import import_llama_first

    import_llama_first()
    spec = spec_from_args(args)
    # Ctrl-C or SIGTERM stop it at once, even inside llama.cpp, and remove what it was
    # writing; finished stages are reused by the next run.
    with stop_on_signals(json_lines=args.json_progress):
        return _run(args, spec)


def _run(args: argparse.Namespace, spec: Any) -> int:
    from quant.jobs.pipeline import run_pipeline

    if args.json_progress:
        lines = JsonLines()
        try:
            report = run_pipeline(spec, on_progress=lines.progress, on_event=lines.on_event)
        except (QuantError, Cancelled) as exc:
            lines.failure(exc)
            raise
        keep_report(report.as_dict())
        lines.result(report.as_dict())
        return 0

    tty = sys.stderr.isatty()
    last_stage = [""]

    def show(p: Progress) -> None:
        if p.stage != last_stage[0]:
            if tty and last_stage[0]:
                sys.stderr.write("\n")
            last_stage[0] = p.stage
        if tty:
            frac = f" {100 * p.fraction:3.0f}%" if p.fraction is not None else ""
            eta = f" ETA {p.eta_s:.0f}s" if p.eta_s else ""
            message = terminal_text(p.message, 70)
            sys.stderr.write(f"\r{p.stage}:{frac} {message}{eta}\033[K")
            sys.stderr.flush()

    report = run_pipeline(spec, on_progress=show)
    keep_report(report.as_dict())
    if tty:
        sys.stderr.write("\n")
    if args.json:
        print_json(report.as_dict())
        return 0
    out = sys.stdout
    name = terminal_text(report.model_name, NAME_LIMIT)
    base = terminal_text(Path(report.base_model).name, NAME_LIMIT)
    out.write(f"{name}: from {base} ({terminal_text(report.base_type, NAME_LIMIT)})\n")
    out.write(
        f"{'type':<9} {'size':>10} {'bpw':>6} {'imatrix':>7} {'KLD':>9} {'KLD p99':>9} "
        f"{'PPL':>9} {'top-1':>7}\n"
    )
    for o in report.outputs:
        ev = o.evaluation or {}
        kld = f"{ev['kld_mean']:.5f}" if ev else "—"
        p99 = f"{ev['kld_p99']:.4f}" if ev else "—"
        ppl = f"{ev['perplexity']:.3f}" if ev else "—"
        top = f"{100 * ev['top1_agreement']:.1f}%" if ev else "—"
        out.write(
            f"{o.type:<9} {human_bytes(o.size_bytes):>10} {o.bits_per_weight:>6.2f} "
            f"{'yes' if o.imatrix else 'no':>7} {kld:>9} {p99:>9} {ppl:>9} {top:>7}\n"
        )
    mix = report.mix
    if mix is not None:
        ev = mix.get("evaluation") or {}
        kld = f"{ev['kld_mean']:.5f}" if ev else "—"
        p99 = f"{ev['kld_p99']:.4f}" if ev else "—"
        ppl = f"{ev['perplexity']:.3f}" if ev else "—"
        top = f"{100 * ev['top1_agreement']:.1f}%" if ev else "—"
        out.write(
            f"{'mix':<9} {human_bytes(mix['size_bytes']):>10} {mix['bits_per_weight']:>6.2f} "
            f"{'yes' if report.imatrix else 'no':>7} {kld:>9} {p99:>9} {ppl:>9} {top:>7}"
            f"{'' if mix.get('kept', True) else '  (removed)'}\n"
        )
        out.write(
            f"mix for {human_bytes(mix['budget_bytes'])}: predicted KLD "
            f"{mix['predicted_kld']:.4f}; {mix.get('verdict', '')}\n"
        )
    if report.reference:
        out.write(
            f"reference PPL {report.reference['perplexity']:.3f} on "
            f"{report.reference['tokens']} tokens\n"
        )
    out.write(
        f"report: {terminal_text(report.report_path, None)}\n"
        f"model card: {terminal_text(report.card_path, None)}\n"
    )
    return 0
