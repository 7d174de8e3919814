"""Helpers shared by CLI commands.

Text from a file or the network (GGUF metadata, file and repo names, hub listings,
library rows, error messages) is printed through
:func:`quant.untrusted.terminal_text`, cut to :data:`NAME_LIMIT` for a name in a
listing and :data:`TEXT_LIMIT` for a sentence; ``--json`` output is
:func:`print_json`'s strict JSON with every value exact.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.core.profiles import profile_for
from quant.hardware.profile import HardwareProfile
from quant.protocol import write_json
from quant.units import human_bytes

__all__ = [
    "NAME_LIMIT",
    "TEXT_LIMIT",
    "add_hardware_arg",
    "human_bytes",
    "load_hardware",
    "positive_tokens",
    "print_json",
]

# Longest name (file, tensor, repo, type) and longest sentence shown on a terminal;
# longer ones are cut in the middle.
NAME_LIMIT = 120
TEXT_LIMIT = 1000


def positive_tokens(text: str) -> int:
    """An argparse type for a count of tokens (``--ctx``): a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of tokens")
    return value


def add_hardware_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hardware",
        metavar="FILE",
        help="plan for the machine described in FILE (from 'quantdesk hw --json') "
        "instead of this one",
    )


def load_hardware(args: argparse.Namespace) -> HardwareProfile:
    """The profile named by ``--hardware``, or a probe of this machine."""
    return profile_for(getattr(args, "hardware", None) or None)


def print_json(data: Any) -> None:
    """Print a command's ``--json`` output: strict JSON (non-finite numbers as null)."""
    write_json(data)


STARTER_ALIAS = "starter"


def resolve_model_arg(model: str) -> str:
    """A MODEL argument as given, except the word ``starter``: the bundled starter model."""
    if model == STARTER_ALIAS:
        from app.core.library import starter_model_path

        return str(starter_model_path())
    return model
