"""The command-line interface: one subcommand per engine capability.

Each command lives in ``app.core.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Expected failures (:class:`quant.errors.QuantError`, :class:`app.core.errors.AppError`,
and a write the system refuses, :func:`quant.errors.refused_write`) print one sentence
on stderr and exit 2; Ctrl+C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from app.core.commands.common import TEXT_LIMIT
from app.core.errors import AppError
from app.core.logging_setup import setup_logging
from quant.errors import Cancelled, QuantError, refused_write
from quant.untrusted import terminal_text

logger = logging.getLogger(__name__)

# Order is the order in --help.
COMMANDS = (
    "hw",
    "inspect",
    "recommend",
    "convert",
    "convert_hf",
    "quality",
    "chat",
    "models",
    "search",
    "pull",
    "serve",
    "remote",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantdesk",
        description="Local-model manager: probe hardware, inspect and plan models, "
        "convert Hugging Face checkpoints to GGUF, chat offline. "
        "Run without arguments for the GUI.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"app.core.commands.{name}")
        except ImportError as exc:  # a command whose optional engine part is absent
            logger.debug("command %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def run_cli(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    setup_logging(verbose=args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc: int = args.func(args)
        return rc
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (QuantError, AppError) as exc:
        # Messages name files, models and hub values: one escaped line on the terminal.
        print(f"quantdesk: error: {terminal_text(exc, TEXT_LIMIT)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:
        said = refused_write(exc)  # a full disk or a read-only folder: one sentence
        if said is None:
            raise
        print(f"quantdesk: error: {terminal_text(said, TEXT_LIMIT)}", file=sys.stderr)
        return 2
