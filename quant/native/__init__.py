"""Process-wide ordering rule for the native runtime (llama.cpp).

On CUDA builds of llama-cpp-python, a process that imports ``sentencepiece`` or
``torch`` before ``llama_cpp`` crashes at its next model load. ``import gguf``
imports ``sentencepiece`` when it is installed, so every entry point that may
chat calls :func:`import_llama_first` before importing anything else of ours.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

logger = logging.getLogger(__name__)

_FORBIDDEN_BEFORE = ("sentencepiece", "torch", "gguf")


def import_llama_first() -> ModuleType | None:
    """Import ``llama_cpp`` now; return it, or None when it is not installed."""
    early = [m for m in _FORBIDDEN_BEFORE if m in sys.modules and "llama_cpp" not in sys.modules]
    if early:
        logger.warning("imported before llama_cpp: %s (CUDA loads may crash)", ", ".join(early))
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:  # the CLI's non-chat commands still work
        logger.warning("llama_cpp is not importable: %s", exc)
        return None
    except OSError as exc:  # shared library present but unloadable
        logger.warning("llama_cpp failed to load its library: %s", exc)
        return None
