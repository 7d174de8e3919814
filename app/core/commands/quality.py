"""``quantdesk quality FILE``: a report card of what a GGUF lost against a more precise file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.core.commands.common import NAME_LIMIT, TEXT_LIMIT, print_json, resolve_model_arg
from app.core.quality import ReportCard, measure_file
from quant.plan.quality import article
from quant.progress import Progress
from quant.untrusted import terminal_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "quality",
        help="measure a GGUF's quality loss against a more precise file of the same model",
        description="Measure what FILE lost against a reference: mean, median and 99th "
        "percentile KL divergence of the next-token distributions, how often both pick the "
        "same top token, and perplexity, on held-out text. The result is kept with the "
        "library entry (the Models page shows it, the Advisor uses it).",
    )
    p.add_argument("file", metavar="FILE", help="the GGUF to measure, or 'starter'")
    p.add_argument(
        "--reference",
        default="auto",
        metavar="FILE|auto",
        help="the reference GGUF; 'auto' (the default) picks the most precise file of the "
        "same model you already have (the library, or the F16 a convert job made)",
    )
    p.add_argument(
        "--text",
        default=None,
        metavar="FILE",
        help="evaluation text (a file or folder); default: the built-in held-out text",
    )
    p.add_argument(
        "--chunks",
        type=int,
        default=16,
        metavar="N",
        help="at most N chunks of text (default 16, as a convert job measures)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=512, metavar="TOKENS", help="tokens per chunk (512)"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not ask the hub which file to get when no reference is here",
    )
    p.add_argument("--json", action="store_true", help="print the report card as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.core.library import ModelLibrary

    tty = sys.stderr.isatty()

    def show(p: Progress) -> None:
        if tty:
            frac = f" {100 * p.fraction:3.0f}%" if p.fraction is not None else ""
            sys.stderr.write(f"\r{p.stage}:{frac} {terminal_text(p.message, 70)}\033[K")
            sys.stderr.flush()

    card = measure_file(
        Path(resolve_model_arg(args.file)),
        reference=args.reference,
        text=args.text,
        library=ModelLibrary(),
        chunk_size=args.chunk_size,
        max_chunks=args.chunks,
        threads=args.threads,
        ask_hub=not args.offline,
        on_progress=show,
    )
    if tty:
        sys.stderr.write("\n")
    if args.json:
        print_json(card.to_dict())
    else:
        print(render(card))
    return 0


def render(card: ReportCard) -> str:
    """The report card as text."""
    m = card.measurement
    name = terminal_text(Path(m.path or "").name, NAME_LIMIT)
    ref = terminal_text(card.reference_path.name, NAME_LIMIT)
    lines = [
        f"{name} ({m.file_type}) against {ref}: {terminal_text(card.reference_why, TEXT_LIMIT)}",
        "",
        f"  mean KLD          {m.kld_mean:.5f}  (median {m.kld_median:.5f}, "
        f"99th percentile {m.kld_p99:.4f})",
        f"  same top token    {100 * m.same_top_token:.1f}%",
        f"  perplexity        {m.perplexity:.3f}  (reference {m.reference_perplexity:.3f}, "
        f"{m.delta_perplexity:+.3f})",
        f"  tokens            {m.tokens:,} of {terminal_text(m.text, NAME_LIMIT)}",
        "",
    ]
    if m.base_type:
        lines.append(
            f"The reference holds the weights of {article(m.base_type)} file, so these numbers are "
            f"the loss added on top of that {m.base_type} file's own loss against the original "
            "weights."
        )
    lines.append("Kept with the library entry: the Models page shows it, the Advisor uses it.")
    return "\n".join(lines)
