"""Chat templates live in the engine (:mod:`quant.prompts.templates`); this name remains for
the app's modules that import it."""

from quant.prompts.templates import *  # noqa: F403
from quant.prompts.templates import (
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
    PromptMode,
    Role,
    TemplateSource,
    base_model_note,
    builtin_families,
    builtin_template,
    guess_family,
    prepare_messages,
    raw_template,
    render_jinja,
    select_template,
)

__all__ = [
    "ChatMessage",
    "ChatTemplate",
    "ChatTemplateError",
    "PromptMode",
    "Role",
    "TemplateSource",
    "base_model_note",
    "builtin_families",
    "builtin_template",
    "guess_family",
    "prepare_messages",
    "raw_template",
    "render_jinja",
    "select_template",
]
