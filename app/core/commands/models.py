"""``quantdesk models``: list the library with facts and fit badges; add and forget models."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.core.commands.common import (
    NAME_LIMIT,
    TEXT_LIMIT,
    add_hardware_arg,
    human_bytes,
    load_hardware,
    print_json,
)
from app.core.library import ModelLibrary
from app.core.library_index import ModelRow
from app.core.library_listing import list_library, remember_starter
from app.core.quality import summarize
from app.core.remote import RemoteModel
from quant.progress import Progress
from quant.units import format_last_used, format_params
from quant.untrusted import terminal_text

logger = logging.getLogger(__name__)

COLUMNS = ("NAME", "SOURCE", "ARCH", "PARAMS", "TYPE", "CTX", "SIZE", "FIT", "LAST USED", "PATH")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list the model library with facts and fit badges; add files and folders",
        description="List the GGUF models Quantdesk knows: the bundled starter model, "
        "files and folders you added, files Quantdesk made, and files other apps "
        "(Hugging Face cache, LM Studio, Ollama, Jan, GPT4All) downloaded, which are used "
        "in place. Each model shows what its header says (architecture, parameters, type, "
        "context) and whether it fits this machine (or the one in --hardware). A file seen "
        "through several apps is listed once; damaged files are listed with the reason.",
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
        "--add-folder",
        metavar="DIR",
        action="append",
        default=[],
        help="list the GGUF files in DIR and its subfolders from now on (repeatable)",
    )
    p.add_argument(
        "--remove-folder",
        metavar="DIR",
        action="append",
        default=[],
        help="stop listing the files in DIR (the files are left in place; repeatable)",
    )
    p.add_argument(
        "--hash",
        action="store_true",
        help="find copies of the same model by content (reads every file whose size "
        "matches another's; digests are cached)",
    )
    p.add_argument(
        "--no-fit",
        action="store_true",
        help="skip the hardware probe and the fit badges",
    )
    p.add_argument(
        "--no-other-apps",
        action="store_true",
        help="leave out other apps' downloads from this listing",
    )
    add_hardware_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    library = ModelLibrary()
    for path in args.add:
        entry = library.add(path)
        logger.info("added %s", entry.path)
    for path in args.remove:
        library.remove(path)
    for folder in args.add_folder:
        added = library.add_folder(folder)
        logger.info("listing the models in %s", added)
    for folder in args.remove_folder:
        if not library.remove_folder(folder):
            print(
                f"quantdesk: note: {folder} was not one of the library's folders; "
                "'quantdesk models --json' lists where each model comes from",
                file=sys.stderr,
            )
    if args.no_other_apps:
        library = ModelLibrary(library.settings, external_roots=())
    profile = None if args.no_fit else load_hardware(args)
    show = _StderrProgress() if args.hash and sys.stderr.isatty() else None
    try:
        listing = list_library(library, profile, hash_duplicates=args.hash, on_progress=show)
    finally:
        if show is not None:
            show.close()
    try:
        remember_starter(library, listing)
    except OSError as exc:
        logger.warning("could not remember the starter model: %s", exc)
    remote = listing.remote.models
    if args.json:
        print_json([r.to_dict() for r in listing.rows] + [remote_dict(m) for m in remote])
    else:
        print(render(listing.rows))
        if remote:
            print()
            print(render_remote(remote))
    for note in (*listing.notes, *listing.remote.notes):
        print(f"quantdesk: note: {terminal_text(note, TEXT_LIMIT)}", file=sys.stderr)
    if listing.starter_problem is not None:
        # The rest of the library is still worth listing.
        text = terminal_text(listing.starter_problem, TEXT_LIMIT)
        print(f"quantdesk: warning: {text}", file=sys.stderr)
    return 0


class _StderrProgress:
    """One self-overwriting line on a terminal's stderr while files are hashed."""

    def __init__(self) -> None:
        self._shown = False

    def __call__(self, p: Progress) -> None:
        if p.stage != "hash" or not p.bytes_total:
            return
        pct = 100 * p.bytes_done / p.bytes_total
        line = f"{terminal_text(p.message, 60)}: {pct:3.0f}% of {human_bytes(p.bytes_total)}"
        sys.stderr.write("\r" + line[:100].ljust(100))
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def _ctx(n: int | None) -> str:
    if not n:
        return "—"
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _cells(r: ModelRow) -> tuple[str, ...]:
    e = r.entry
    fit = "BROKEN" if e.broken else (r.fit_label or "—")
    return (
        terminal_text(e.name, NAME_LIMIT),
        e.source.label,
        terminal_text(r.architecture or "—", NAME_LIMIT),
        format_params(r.parameters),
        terminal_text(r.file_type or "—", NAME_LIMIT),
        _ctx(r.context_length),
        human_bytes(e.size_bytes),
        fit,
        format_last_used(e.last_used),
        terminal_text(e.path, TEXT_LIMIT),
    )


def remote_dict(m: RemoteModel) -> dict[str, object]:
    """A remote model as ``models --json`` lists it after the files (``source`` "remote")."""
    return {"name": str(m.ref), "source": "remote", "path": None, **m.to_dict()}


def render_remote(models: Sequence[RemoteModel]) -> str:
    """Models served elsewhere: what to pass to ``quantdesk chat``, and where they run."""
    refs = [terminal_text(m.ref, NAME_LIMIT * 2) for m in models]
    width = max(len(r) for r in refs)
    lines = ["Remote models (chat with: quantdesk chat NAME:MODEL)"]
    for ref, m in zip(refs, models, strict=True):
        lines.append(f"  {ref.ljust(width)}  remote  {terminal_text(m.url, TEXT_LIMIT)}")
    return "\n".join(lines)


def render(rows: Sequence[ModelRow]) -> str:
    """The library as a table; broken rows and copies get a line of their own below."""
    if not rows:
        return (
            "The library is empty. Add a model with: quantdesk models --add FILE.gguf "
            "(or a folder of them with --add-folder DIR)"
        )
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    last = len(COLUMNS) - 1
    widths = [max(len(c[i]) for c in cells) for i in range(last)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].ljust(widths[j]) for j in range(last)) + "  " + c[last])
        if i == 0:
            continue
        e = rows[i - 1].entry
        if e.broken:
            lines.append(f"    broken: {terminal_text(e.broken, TEXT_LIMIT)}")
        if e.also_at:
            lines.append(
                "    also at: " + ", ".join(terminal_text(p, TEXT_LIMIT) for p in e.also_at)
            )
        m = rows[i - 1].measured_quality
        if m is not None:
            lines.append(f"    quality: {terminal_text(summarize(m), TEXT_LIMIT)}")
    broken = sum(1 for r in rows if r.broken)
    if broken:
        lines.append(
            f"({broken} broken file{'s' if broken != 1 else ''} listed with the reason; "
            "'quantdesk models --remove FILE' forgets one)"
        )
    return "\n".join(lines)
