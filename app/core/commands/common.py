"""Helpers shared by CLI commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from quant.hardware.profile import HardwareProfile
from quant.units import human_bytes

__all__ = ["add_hardware_arg", "human_bytes", "load_hardware", "print_json"]


def add_hardware_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hardware",
        metavar="FILE",
        help="plan for the machine described in FILE (from 'quantdesk hw --json') "
        "instead of this one",
    )


def load_hardware(args: argparse.Namespace) -> HardwareProfile:
    """The profile named by ``--hardware``, or a probe of this machine."""
    if getattr(args, "hardware", None):
        return HardwareProfile.load(args.hardware)
    from quant.hardware.probe import probe

    return probe()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


STARTER_ALIAS = "starter"


def resolve_model_arg(model: str) -> str:
    """A MODEL argument as given, except the word ``starter``: the bundled starter model."""
    if model == STARTER_ALIAS:
        from app.core.library import starter_model_path

        return str(starter_model_path())
    return model
