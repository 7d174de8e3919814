"""Process-wide ordering rules for the native runtime; see :mod:`quant.native`."""

from __future__ import annotations

from quant.native import import_llama_first

__all__ = ["import_llama_first"]
