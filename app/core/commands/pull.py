"""``quantdesk pull REPO``: see which of a hub repo's GGUF files fits, and download one.

Without ``--file`` the repo's GGUF files are listed with their sizes, the
advisor's fit badge and predicted speed on this machine (or the one in
``--hardware``), and the recommended pick. With ``--file NAME`` (or ``--file
best``) the file is downloaded into the Hugging Face cache with a progress bar on
stderr, added to the library, and its path printed on stdout. Ctrl+C keeps the
part downloaded so far; the same command resumes it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from app.core.commands.common import (
    NAME_LIMIT,
    TEXT_LIMIT,
    add_hardware_arg,
    human_bytes,
    load_hardware,
    positive_tokens,
    print_json,
)
from app.core.hub import (
    HubRepo,
    RankedFile,
    best_file,
    repo_files,
    save_token,
)
from app.core.hub_ranking import rank_repo
from quant.errors import HubError, QuantError
from quant.plan.advisor import Task
from quant.progress import Progress
from quant.protocol import JsonLines
from quant.units import format_rate
from quant.untrusted import terminal_text

BEST = "best"
_BAR_WIDTH = 24


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pull",
        help="list a hub repo's GGUF files with fit badges, or download one",
        description="Without --file: list the GGUF files of hub repo REPO with their sizes, "
        "whether each fits this machine, the speed to expect and the recommended pick. "
        "With --file: download that file (every part of a split model) into the Hugging "
        "Face cache, add it to the library and print its path. An interrupted download "
        "resumes when the command is run again.",
    )
    p.add_argument("repo", metavar="REPO", help="a hub repo id, e.g. Qwen/Qwen2.5-7B-Instruct-GGUF")
    p.add_argument(
        "--file",
        metavar="NAME",
        help="the GGUF file to download (any part of a split model), or 'best' for the "
        "recommended file",
    )
    p.add_argument("--revision", metavar="R", help="a branch, tag or commit (default: main)")
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help="an access token for gated repos; it is checked with the hub and saved in "
        "huggingface_hub's token file for later use",
    )
    p.add_argument(
        "--task",
        choices=[t.value for t in Task],
        default=Task.CHAT.value,
        help="what the model is for, which decides the recommended file (default: chat)",
    )
    p.add_argument(
        "--ctx", type=positive_tokens, metavar="N", help="context length in tokens to plan for"
    )
    add_hardware_arg(p)
    p.add_argument("--json", action="store_true", help="print the file list or result as JSON")
    p.add_argument(
        "--json-progress",
        action="store_true",
        help="write download progress and the result as JSON lines on stdout",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.token:
        user = save_token(args.token)
        print(f"Access token saved for {terminal_text(user, NAME_LIMIT)}.", file=sys.stderr)
    if args.file is None:
        return _list(args)
    return _download(args)


# --------------------------------------------------------------------------- listing


def _rank(repo: HubRepo, args: argparse.Namespace) -> tuple[list[RankedFile], str | None]:
    """The files with fit badges, or without them and the reason there are none."""
    ranking = rank_repo(repo, load_hardware(args), task=Task(args.task), ctx=args.ctx)
    return ranking.files, ranking.problem


def _no_gguf(repo: HubRepo) -> HubError:
    return HubError(
        f"{repo.repo_id} has no GGUF model files; look for a GGUF version with "
        f"'quantdesk search', or plan a conversion with 'quantdesk recommend {repo.repo_id}'"
    )


def _list(args: argparse.Namespace) -> int:
    repo = repo_files(args.repo, revision=args.revision)
    if not repo.files:
        raise _no_gguf(repo)
    ranked, problem = _rank(repo, args)
    best = best_file(ranked)
    if args.json:
        print_json(
            {
                "repo": repo.to_dict(),
                "files": [r.to_dict() for r in ranked],
                "best": best.file.filename if best else None,
                "problem": problem,
            }
        )
        return 0
    print(render_files(repo, ranked, problem))
    return 0


def _speed(r: RankedFile) -> str:
    o = r.option
    if o is None:
        return "—"
    return f"{format_rate(o.speed.generation_low)}–{format_rate(o.speed.generation_high)}"


def render_files(repo: HubRepo, ranked: list[RankedFile], problem: str | None) -> str:
    """The file table with badges, the pick, and how to download."""
    best = best_file(ranked)
    gated = " (gated)" if repo.gated else ""
    repo_id = terminal_text(repo.repo_id, NAME_LIMIT)
    lines = [f"{repo_id}{gated}: {len(repo.files)} GGUF model files", ""]
    rows = [("FILE", "TYPE", "SIZE", "FIT", "GEN TOK/S", "RAM", "VRAM")]
    for r in ranked:
        f, o = r.file, r.option
        name = terminal_text(f.name, NAME_LIMIT)
        if f.is_split:
            name += f" ({len(f.parts) + len(f.missing_parts)} parts)"
        if not f.complete:
            name += f" [incomplete: {len(f.missing_parts)} missing]"
        if r.recommended:
            name = "* " + name
        rows.append(
            (
                name,
                terminal_text(f.label, NAME_LIMIT),
                human_bytes(f.size_bytes),
                r.fit_label if o else "—",
                _speed(r),
                human_bytes(o.ram_bytes) if o else "—",
                human_bytes(o.vram_bytes) if o and o.vram_bytes else "—",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    if repo.projectors:
        lines += ["", "Projectors (image input, used with a model file):"]
        lines += [
            f"  {terminal_text(p.name, NAME_LIMIT)}  {human_bytes(p.size_bytes)}"
            for p in repo.projectors
        ]
    lines.append("")
    if problem:
        lines.append(f"No fit badges: {terminal_text(problem, TEXT_LIMIT)}")
    elif best is not None and best.option is not None:
        o = best.option
        lines.append(
            f"* Recommended: {terminal_text(best.file.name, NAME_LIMIT)} ({o.fit.label}, about "
            f"{format_rate(o.speed.generation)} tokens/s)."
        )
    else:
        lines.append("None of these files fits this machine; try a smaller model.")
    lines.append(f"Download: quantdesk pull {repo_id} --file NAME")
    if best is not None:
        lines.append(f"      or: quantdesk pull {repo_id} --file best")
    return "\n".join(lines)


# --------------------------------------------------------------------------- download


def _pick(args: argparse.Namespace) -> tuple[str, int]:
    """The file to download (the first part's name) and its total size (0 when unknown)."""
    from huggingface_hub import constants

    if args.file != BEST and constants.HF_HUB_OFFLINE:
        return args.file, 0  # a cached copy may serve; the download says if not
    repo = repo_files(args.repo, revision=args.revision)
    if args.file != BEST:
        found = repo.file(args.file)
        if found is not None and found.is_projector:
            raise HubError(
                f"{repo.repo_id}: {found.name} is a projector for image input, not a model; "
                "pull one of the repo's model files (run 'quantdesk pull "
                f"{repo.repo_id}' to see them)"
            )
        if found is None:
            names = ", ".join(f.name for f in repo.files[:8]) or "none"
            raise HubError(
                f"{repo.repo_id}: no GGUF model file named {args.file}; its model files are "
                f"{names} (run 'quantdesk pull {repo.repo_id}' to see them all)"
            )
        return found.filename, found.size_bytes
    if not repo.files:
        raise _no_gguf(repo)
    ranked, problem = _rank(repo, args)
    if problem:
        raise HubError(f"{repo.repo_id}: cannot tell which file fits: {problem}")
    best = best_file(ranked)
    if best is None:
        smallest = min(repo.files, key=lambda f: f.size_bytes)
        raise HubError(
            f"none of {repo.repo_id}'s GGUF files fits this machine (the smallest, "
            f"{smallest.name}, is {human_bytes(smallest.size_bytes)}); choose a smaller model"
        )
    print(
        f"Best file for this machine: {terminal_text(best.file.name, NAME_LIMIT)} "
        f"({best.fit_label})",
        file=sys.stderr,
    )
    return best.file.filename, best.file.size_bytes


class ProgressBar:
    """A one-line progress bar on a terminal; one line per tenth on a pipe or file."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.last: Progress | None = None
        self._shown_tenth = -1
        self._note = ""
        self._open = False

    def __call__(self, p: Progress) -> None:
        self.last = p if p.bytes_total else self.last
        if not p.bytes_total:
            if p.message and p.message != self._note:
                self._note = p.message
                self._write(terminal_text(p.message, TEXT_LIMIT), final=not self.tty)
            return
        fraction = min(1.0, p.bytes_done / p.bytes_total)
        filled = round(fraction * _BAR_WIDTH)
        message = terminal_text(p.message, NAME_LIMIT)
        line = f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {100 * fraction:5.1f}%  {message}"
        if self.tty:
            self._write(line, final=False)
            return
        tenth = int(fraction * 10)
        if tenth != self._shown_tenth:
            self._shown_tenth = tenth
            self._write(line, final=True)

    def _write(self, line: str, *, final: bool) -> None:
        if self.tty:
            self.stream.write(f"\r{line}\033[K")
            self._open = True
            if final:
                self.stream.write("\n")
                self._open = False
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _interrupted_sentence(last: Progress | None, name: str) -> str:
    where = ""
    if last is not None and last.bytes_total:
        where = f" at {human_bytes(last.bytes_done)} of {human_bytes(last.bytes_total)}"
    return (
        f"download of {name} interrupted{where}; the part downloaded so far is kept in the "
        "Hugging Face cache, so run the same command again to resume"
    )


def _download(args: argparse.Namespace) -> int:
    from app.core.downloads import download_gguf
    from app.core.library import ModelLibrary

    filename, size = _pick(args)
    name = filename.rsplit("/", 1)[-1]
    bar = ProgressBar(sys.stderr)
    lines = JsonLines()

    def on_progress(p: Progress) -> None:
        if args.json_progress:
            bar.last = p if p.bytes_total else bar.last
            lines.progress(p)
        else:
            bar(p)

    try:
        entry = download_gguf(args.repo, filename, revision=args.revision, on_progress=on_progress)
    except KeyboardInterrupt:
        bar.close()
        sentence = _interrupted_sentence(bar.last, name)
        if args.json_progress:
            lines.cancelled(sentence)
        print(f"quantdesk: {terminal_text(sentence, TEXT_LIMIT)}", file=sys.stderr)
        return 130
    except QuantError as exc:
        bar.close()
        if args.json_progress:
            lines.failure(exc)
        raise
    bar.close()
    added = True
    try:
        ModelLibrary().record(entry)
    except OSError as exc:  # the file is in the cache either way
        added = False
        print(
            f"quantdesk: warning: could not add it to the library "
            f"({terminal_text(exc, TEXT_LIMIT)})",
            file=sys.stderr,
        )
    result = {
        "repo_id": args.repo,
        "filename": filename,
        "path": str(entry.path),
        "size_bytes": size or entry.size_bytes,
        "in_library": added,
        "entry": entry.to_dict(),
    }
    if args.json_progress:
        lines.result(result)
    elif args.json:
        print_json(result)
    else:
        where = "in the Hugging Face cache and the library" if added else "in the cache"
        path = terminal_text(entry.path, None)
        print(
            f"{terminal_text(name, NAME_LIMIT)} is {where}; chat with it: quantdesk chat {path}",
            file=sys.stderr,
        )
        print(path)
    return 0
