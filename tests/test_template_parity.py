"""The server's prompt renderer against Hugging Face transformers' own, on real templates.

The templates are real instruct models' chat templates that installed packages
ship: Llama 4's (tools, tool calls, tool results, ``strftime_now``,
``raise_exception``), from transformers' Llama 4 processor; Llama 3's, Mistral
Instruct's (``raise_exception`` on roles that do not alternate) and ChatML,
from llama-cpp-python. The same OpenAI-shaped conversation must render to the
same text through :func:`quant.prompts.templates.render_request` (in the
bounded sandbox) and through transformers' ``render_jinja_template``.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from quant.prompts.sandbox import TemplateRaisedError
from quant.prompts.templates import (
    ChatTemplate,
    TemplateSource,
    render_request,
    template_messages,
)
from quant.prompts.tools import ToolFormat, detect_tool_format, template_handles_tools

chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

TOOL_CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": json.dumps({"city": "Paris", "unit": "celsius"}),
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "It is 21 °C in Paris."},
    {"role": "user", "content": "And in Berlin?"},
]

PLAIN_CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]


def _llama4() -> str:
    module = importlib.import_module("transformers.models.llama4.processing_llama4")
    return str(module.chat_template)


def _llama_cpp(name: str) -> str:
    module = importlib.import_module("llama_cpp.llama_chat_format")
    return str(getattr(module, name))


def _transformers(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    rendered = chat_template_utils.render_jinja_template(
        conversations=[template_messages(messages)],
        chat_template=template,
        add_generation_prompt=True,
        bos_token="<s>",
        eos_token="</s>",
        **kwargs,
    )
    # Newer versions return (prompts, generation indices).
    prompts = rendered[0] if isinstance(rendered, tuple) else rendered
    return str(prompts[0])


def _ours(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    t = ChatTemplate("file", TemplateSource.GGUF, template, bos_token="<s>", eos_token="</s>")
    return render_request(t, messages, **kwargs)


def test_llama4_with_tools_calls_and_results_renders_as_transformers_does() -> None:
    template = _llama4()
    assert template_handles_tools(template)
    ours = _ours(template, TOOL_CONVERSATION, tools=TOOLS)
    assert ours == _transformers(template, TOOL_CONVERSATION, tools=TOOLS)
    # The model sees its own format: the tool's schema, its call, the result turn.
    assert '"name": "get_weather"' in ours
    assert '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}' in ours
    assert "<|header_start|>ipython<|header_end|>" in ours


def test_llama4_without_tools_renders_as_transformers_does() -> None:
    template = _llama4()
    assert _ours(template, PLAIN_CONVERSATION) == _transformers(template, PLAIN_CONVERSATION)


@pytest.mark.parametrize(
    "name",
    [
        "LLAMA3_INSTRUCT_CHAT_TEMPLATE",
        "MISTRAL_INSTRUCT_CHAT_TEMPLATE",
        "MIXTRAL_INSTRUCT_CHAT_TEMPLATE",
        "CHATML_CHAT_TEMPLATE",
    ],
)
def test_other_real_templates_render_as_transformers_does(name: str) -> None:
    template = _llama_cpp(name)
    assert _ours(template, PLAIN_CONVERSATION) == _transformers(template, PLAIN_CONVERSATION)


def test_a_template_that_refuses_a_conversation_raises_in_both() -> None:
    template = _llama_cpp("MISTRAL_INSTRUCT_CHAT_TEMPLATE")
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateRaisedError, match="alternate"):
        _ours(template, bad)
    with pytest.raises(Exception, match="alternate"):
        _transformers(template, bad)


def test_generation_blocks_render_their_body_as_transformers_does() -> None:
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}"
        "{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}[{{ m.role }}] {{ m.content }}\n{% endif %}{% endfor %}"
    )
    assert _ours(template, PLAIN_CONVERSATION) == _transformers(template, PLAIN_CONVERSATION)


def test_call_formats_are_read_from_templates() -> None:
    assert detect_tool_format(_llama4()) is ToolFormat.LLAMA3
    assert detect_tool_format("{{ '<tool_call>' }}") is ToolFormat.HERMES
    assert detect_tool_format("{{ '[TOOL_CALLS]' }}") is ToolFormat.MISTRAL
    assert detect_tool_format(_llama_cpp("LLAMA3_INSTRUCT_CHAT_TEMPLATE")) is ToolFormat.HERMES
