"""``quantdesk search TEXT``: find models on the Hugging Face hub."""

from __future__ import annotations

import argparse
from datetime import datetime

from app.core.commands.common import NAME_LIMIT, print_json
from app.core.hub import MAX_SEARCH_LIMIT, HubModel, HubSort, search_models
from quant.units import format_count
from quant.untrusted import terminal_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "search",
        help="find models on the Hugging Face hub (GGUF repos by default)",
        description="Search the Hugging Face hub for models whose name contains TEXT. "
        "Only repos with GGUF files are listed unless --all-files is given. "
        "See a repo's files, with fit badges for this machine, with 'quantdesk pull REPO'.",
    )
    p.add_argument("text", metavar="TEXT", help="part of the repo name, e.g. 'qwen2.5 7b'")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--gguf-only",
        dest="gguf_only",
        action="store_true",
        default=True,
        help="only repos with GGUF files (the default)",
    )
    group.add_argument(
        "--all-files",
        dest="gguf_only",
        action="store_false",
        help="every repo, whatever its files (safetensors, GGUF, …)",
    )
    p.add_argument(
        "--sort",
        choices=[s.value for s in HubSort],
        default=HubSort.DOWNLOADS.value,
        help="order of the results (default: downloads)",
    )
    p.add_argument(
        "--limit",
        type=_limit,
        default=20,
        metavar="N",
        help=f"how many models to list, 1 to {MAX_SEARCH_LIMIT} (default: 20)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_SEARCH_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_SEARCH_LIMIT}")
    return value


def run(args: argparse.Namespace) -> int:
    models = search_models(args.text, gguf_only=args.gguf_only, sort=args.sort, limit=args.limit)
    if args.json:
        print_json([m.to_dict() for m in models])
        return 0
    print(render(models, args.text, gguf_only=args.gguf_only))
    return 0


def _date(when: datetime | None) -> str:
    return when.date().isoformat() if when else "—"


def render(models: list[HubModel], text: str, *, gguf_only: bool) -> str:
    if not models:
        hint = "; try fewer words, or --all-files for repos without GGUF files" if gguf_only else ""
        return f"No models on the hub match {terminal_text(repr(text), NAME_LIMIT)}{hint}."
    rows = [("REPO", "DOWNLOADS", "LIKES", "UPDATED")]
    rows += [
        (
            terminal_text(m.repo_id, NAME_LIMIT) + (" (gated)" if m.gated else ""),
            format_count(m.downloads),
            format_count(m.likes),
            _date(m.last_modified),
        )
        for m in models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)
        )
        for r in rows
    ]
    lines.append("")
    lines.append("See a repo's files and which fits this machine: quantdesk pull REPO")
    return "\n".join(lines)
