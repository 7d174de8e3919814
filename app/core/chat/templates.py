"""Chat templates live in the engine (:mod:`quant.prompts.templates`); this name remains for
the app's modules that import it."""

from quant.prompts.templates import (
    BASE_MODEL_NOTE,
    BASE_MODEL_TEMPLATE_NOTE,
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
    PromptMode,
    Role,
    TemplateSource,
    builtin_families,
    builtin_template,
    guess_family,
    in_context_template,
    is_base_model,
    prepare_messages,
    raw_template,
    render_jinja,
    select_template,
)

__all__ = [
    "BASE_MODEL_NOTE",
    "BASE_MODEL_TEMPLATE_NOTE",
    "ChatMessage",
    "ChatTemplate",
    "ChatTemplateError",
    "PromptMode",
    "Role",
    "TemplateSource",
    "builtin_families",
    "builtin_template",
    "guess_family",
    "in_context_template",
    "is_base_model",
    "prepare_messages",
    "raw_template",
    "render_jinja",
    "select_template",
]
