"""Constructing ``llama_cpp.Llama`` without letting it compile the file's chat template.

``Llama()`` compiles every ``tokenizer.chat_template*`` string in the GGUF's
metadata with its own Jinja environment while it is constructed, whatever
``chat_format`` or ``chat_handler`` is passed, and before Quantdesk's own
template handling can run: a template with a syntax error raises there, and one
that folds ``'x'|center(1000000000)`` at compile time allocates a gigabyte.
Quantdesk renders templates itself, in its bounded sandbox
(:mod:`quant.prompts.sandbox`), and never uses llama-cpp-python's chat handlers,
so :func:`open_llama` stands a formatter in for the constructor that keeps the
template text and compiles nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_SWAP_LOCK = threading.Lock()


class _UncompiledFormatter:
    """Takes the place of ``Jinja2ChatFormatter`` while a model is constructed."""

    def __init__(self, template: str, *_args: Any, **_kwargs: Any) -> None:
        self.template = template

    def to_chat_handler(self) -> Any:
        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError(
                "llama-cpp-python's chat handler is not used; Quantdesk renders chat templates"
            )

        return refuse


@contextlib.contextmanager
def _templates_not_compiled(llama_lib: Any) -> Iterator[None]:
    chat_format = getattr(llama_lib, "llama_chat_format", None)
    if chat_format is None or not hasattr(chat_format, "Jinja2ChatFormatter"):
        yield
        return
    with _SWAP_LOCK:
        original = chat_format.Jinja2ChatFormatter
        chat_format.Jinja2ChatFormatter = _UncompiledFormatter
        try:
            yield
        finally:
            chat_format.Jinja2ChatFormatter = original


def open_llama(llama_lib: Any, **kwargs: Any) -> Any:
    """``llama_lib.Llama(**kwargs)`` with the file's chat templates left uncompiled.

    Errors of the constructor propagate unchanged. Models load one at a time
    through this function (the swap of the formatter is process-wide).
    """
    with _templates_not_compiled(llama_lib):
        return llama_lib.Llama(**kwargs)
