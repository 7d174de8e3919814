"""``quantdesk convert-hf``: a Hugging Face safetensors folder to a GGUF file.

The arguments and output are those of the engine's child-process entry
(``python -m quant convert-hf``), so the GUI, which runs conversion in a child
process, and the CLI behave the same.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from quant.convert import cli
from quant.stopping import stop_on_signals

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "convert-hf",
        help="convert a Hugging Face safetensors model folder to GGUF",
        description="Convert a Hugging Face model folder (config.json, *.safetensors, "
        "tokenizer files) to a GGUF file that llama.cpp runs: F16, BF16, F32 or Q8_0. "
        "Pickle checkpoints (*.bin, *.pt) are refused and no code from the folder is run. "
        "The output appears only when complete.",
    )
    cli.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Ctrl-C or SIGTERM stop it at once and remove the half-written output.
    with stop_on_signals(json_lines=args.json_progress):
        return cli.run(args)
