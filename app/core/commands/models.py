"""``quantdesk models``: list, add and forget the models in the library."""

from __future__ import annotations

import argparse
import logging
import sys

from app.core.commands.common import human_bytes, print_json
from app.core.errors import AppError
from app.core.library import LibraryEntry, ModelLibrary
from quant.errors import QuantError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list the model library (starter model, added files, other apps' downloads)",
        description="List the GGUF models Quantdesk knows: the bundled starter model, "
        "files you added, files Quantdesk made, and files other apps (Hugging Face cache, "
        "LM Studio, Ollama, Jan, GPT4All) downloaded, which are used in place.",
    )
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.add_argument(
        "--add",
        metavar="FILE",
        action="append",
        default=[],
        help="add a GGUF file to the library (repeatable)",
    )
    p.add_argument(
        "--remove",
        metavar="FILE",
        action="append",
        default=[],
        help="forget a file (the file itself is left in place; repeatable)",
    )
    p.add_argument(
        "--no-other-apps",
        action="store_true",
        help="leave out other apps' downloads from this listing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    library = ModelLibrary()
    for path in args.add:
        entry = library.add(path)
        logger.info("added %s", entry.path)
    for path in args.remove:
        library.remove(path)
    starter_problem = None
    try:
        library.starter_model_path()
    except (QuantError, AppError) as exc:
        # The rest of the library is still worth listing.
        starter_problem = str(exc)
    if args.no_other_apps:
        library = ModelLibrary(library.settings, external_roots=())
    entries = library.entries()
    if args.json:
        print_json([e.to_dict() for e in entries])
    else:
        print(_table(entries))
    if starter_problem:
        print(f"quantdesk: warning: {starter_problem}", file=sys.stderr)
    return 0


def _table(entries: list[LibraryEntry]) -> str:
    if not entries:
        return "The library is empty. Add a model with: quantdesk models --add FILE.gguf"
    rows = [("NAME", "SOURCE", "SIZE", "PATH")]
    rows += [(e.name, e.source.label, human_bytes(e.size_bytes), str(e.path)) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    return "\n".join(lines)
