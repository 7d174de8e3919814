"""Tool calls and reasoning read back from model text, and the grammars that force them."""

from __future__ import annotations

import json

import pytest

from quant.prompts.grammar import SchemaError, json_grammar
from quant.prompts.templates import builtin_template, render_request
from quant.prompts.tools import (
    CallParser,
    ToolFormat,
    call_grammar,
    parse_calls,
    split_reasoning,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_hermes_calls_stream_name_first_then_arguments() -> None:
    text = (
        'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        "\n</tool_call>"
    )
    parser = CallParser(ToolFormat.HERMES)
    events = [e for ch in text for e in parser.feed(ch)]
    content = "".join(e.content for e in events)
    assert content == "Let me check. "
    names = [e.name for e in events if e.name]
    assert names == ["get_weather"]
    args = "".join(e.arguments for e in events)
    assert json.loads(args) == {"city": "Paris"}
    assert parser.finish()[1][0].arguments == args


def test_mistral_and_llama3_calls_are_read() -> None:
    _, calls = parse_calls(
        '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]',
        ToolFormat.MISTRAL,
    )
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("a", {"x": 1}), ("b", {})]
    content, calls = parse_calls('{"name": "f", "parameters": {"q": "x"}}', ToolFormat.LLAMA3)
    assert content == "" and calls[0].name == "f"
    content, calls = parse_calls("The answer is {not a call}", ToolFormat.LLAMA3)
    assert content == "The answer is {not a call}" and calls == []


def test_keys_in_another_order_are_found_at_the_end() -> None:
    _, calls = parse_calls(
        '<tool_call>{"arguments": {"city": "Rome"}, "name": "get_weather"}</tool_call>',
        ToolFormat.HERMES,
    )
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Rome"}


def test_reasoning_is_split_from_the_answer() -> None:
    assert split_reasoning("<think>Paris is in France.</think>\n\nParis.") == (
        "Paris is in France.",
        "Paris.",
    )
    assert split_reasoning("weighing it</think>Yes.", open_at_start=True) == ("weighing it", "Yes.")
    assert split_reasoning("No thinking here.") == ("", "No thinking here.")


def test_grammars_name_the_format_and_the_tools() -> None:
    forced = call_grammar([TOOL], ToolFormat.HERMES, forced=True)
    assert forced.triggers == ()
    assert forced.gbnf.startswith('root ::= "<tool_call>"')
    assert '\\"get_weather\\"' in forced.gbnf
    lazy = call_grammar([TOOL], ToolFormat.MISTRAL, forced=False)
    assert lazy.triggers and "TOOL_CALLS" in lazy.triggers[0]
    with pytest.raises(SchemaError):
        json_grammar({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}})


def test_templates_without_tools_learn_them_from_the_system_message() -> None:
    template = builtin_template("chatml")
    text = render_request(
        template,
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": "21 C"},
        ],
        tools=[TOOL],
    )
    assert text.startswith("<|im_start|>system\nYou can call functions.")
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>21 C</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_the_server_streams_reasoning_apart_from_the_answer() -> None:
    from app.core.chat.settings import SamplingSettings
    from app.core.serve.engine import PreparedChat, Shaper

    prepared = PreparedChat(
        prompt="",
        sampling=SamplingSettings(),
        stop=(),
        constraint=None,
        logprobs=None,
        tool_format=ToolFormat.HERMES,
        forced_call=False,
        reasoning=True,
        think_open=False,
    )
    deltas: list[dict[str, object]] = []
    shaper = Shaper(prepared, deltas.append)
    text = (
        "<think>The user wants the weather.</think>\n"
        'Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    for i in range(0, len(text), 3):
        shaper.feed(text[i : i + 3])
    shaper.flush()
    reasoning = "".join(str(d.get("reasoning_content", "")) for d in deltas)
    content = "".join(str(d.get("content", "")) for d in deltas)
    assert reasoning == "The user wants the weather."
    assert content == "Checking. "
    assert [c["function"]["name"] for c in shaper.calls] == ["get_weather"]
    assert json.loads(shaper.calls[0]["function"]["arguments"]) == {"city": "Oslo"}
