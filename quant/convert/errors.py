"""Errors specific to reading a Hugging Face checkpoint for conversion.

They derive from the engine's tree (:mod:`quant.errors`) so callers that only
know :class:`~quant.errors.QuantError` still show them as plain sentences.
"""

from __future__ import annotations

from quant.errors import ModelFormatError


class CheckpointError(ModelFormatError):
    """The model folder is incomplete, damaged or disagrees with its own config."""


class UnsupportedDtypeError(CheckpointError):
    """A tensor is stored in a type the converter does not read (int, FP8, packed quants)."""


class TokenizerError(CheckpointError):
    """The tokenizer files are missing or of a kind llama.cpp cannot reproduce."""
