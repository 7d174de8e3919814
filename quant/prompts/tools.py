"""Function calling: how a model writes a tool call, how to read one back, how to force one.

Models trained for tools write calls in their own format, which their chat
template teaches them:

* **Hermes** (Qwen 2.5/3, Hermes, many fine-tunes): ``<tool_call>{"name": …,
  "arguments": {…}}</tool_call>``;
* **Mistral**: ``[TOOL_CALLS][{"name": …, "arguments": {…}}]``;
* **Llama 3.1+ and 4**: a bare ``{"name": …, "parameters": {…}}`` object.

A model whose template knows nothing of tools (a built-in template, in-context
examples, a base model) is told the Hermes format in its system message, which
is the most widely trained one.

:func:`call_grammar` turns the tools' JSON schemas into a GBNF grammar in the
model's format, so that a forced call (``tool_choice`` ``required`` or a named
function) always parses and its arguments validate; with ``auto`` the grammar
is lazy and starts only where the model opens a call. :class:`CallParser`
reads calls back out of the text, also piece by piece while it streams.
:func:`split_reasoning` separates a reasoning model's ``<think>`` section from
its answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from quant.prompts.grammar import schema_rules


class ToolFormat(StrEnum):
    HERMES = "hermes"
    MISTRAL = "mistral"
    LLAMA3 = "llama3"


_OPEN = {ToolFormat.HERMES: "<tool_call>", ToolFormat.MISTRAL: "[TOOL_CALLS]"}
_CLOSE = {ToolFormat.HERMES: "</tool_call>"}
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def detect_tool_format(template_text: str) -> ToolFormat:
    """The call format a chat template teaches (Hermes when it teaches none)."""
    if "<tool_call>" in template_text:
        return ToolFormat.HERMES
    if "[TOOL_CALLS]" in template_text:
        return ToolFormat.MISTRAL
    llama = "<|start_header_id|>" in template_text or "<|header_start|>" in template_text
    if llama and "tools" in template_text and "parameters" in template_text:
        return ToolFormat.LLAMA3
    return ToolFormat.HERMES


def template_handles_tools(template_text: str) -> bool:
    """True when a chat template renders ``tools`` and tool turns itself."""
    return "tools" in template_text and "tool_call" in template_text


def _argument_key(fmt: ToolFormat) -> str:
    return "parameters" if fmt is ToolFormat.LLAMA3 else "arguments"


def function_of(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``function`` part of an OpenAI tool (or the tool itself when it is bare)."""
    fn = tool.get("function")
    return fn if isinstance(fn, Mapping) else tool


def parameters_of(tool: Mapping[str, Any]) -> dict[str, Any]:
    params = function_of(tool).get("parameters")
    return dict(params) if isinstance(params, Mapping) else {"type": "object", "properties": {}}


def tools_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """A system message that teaches the Hermes format, for templates without tools."""
    lines = [
        "You can call functions. The functions you may call, as JSON schemas:",
        "<tools>",
    ]
    lines.extend(json.dumps(dict(t), ensure_ascii=False) for t in tools)
    lines += [
        "</tools>",
        "To call a function, reply with nothing but the call, written as:",
        '<tool_call>{"name": "function name", "arguments": {"argument": "value"}}</tool_call>',
        "Function results come back inside <tool_response></tool_response>.",
    ]
    return "\n".join(lines)


def format_call(fmt: ToolFormat, name: str, arguments: Any) -> str:
    """One call as the model writes it (for earlier assistant turns rendered as text)."""
    body = json.dumps({"name": name, _argument_key(fmt): arguments}, ensure_ascii=False)
    if fmt is ToolFormat.HERMES:
        return f"<tool_call>{body}</tool_call>"
    if fmt is ToolFormat.MISTRAL:
        return f"[TOOL_CALLS][{body}]"
    return body


def format_result(content: str) -> str:
    return f"<tool_response>{content}</tool_response>"


# ----------------------------------------------------------------------------- grammar


@dataclass(frozen=True)
class CallGrammar:
    gbnf: str
    # Regular expressions that start the grammar (lazy, for tool_choice auto); empty: at once.
    triggers: tuple[str, ...] = ()


def call_grammar(
    tools: Sequence[Mapping[str, Any]],
    fmt: ToolFormat,
    *,
    forced: bool,
    parallel: bool = True,
) -> CallGrammar:
    """A grammar for calls of ``tools`` in ``fmt``.

    ``forced``: the answer is the call(s) and nothing else (``required`` or a
    named function); otherwise the grammar waits for the model to open a call.
    """
    if not tools:
        raise ValueError("a tool-call grammar needs at least one tool")
    key = _argument_key(fmt)
    alternatives = [
        {
            "type": "object",
            "properties": {
                "name": {"const": str(function_of(t).get("name", ""))},
                key: parameters_of(t),
            },
            "required": ["name", key],
        }
        for t in tools
    ]
    schema: dict[str, Any] = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    rules = schema_rules(schema, "call", prop_order=["name", key])
    if fmt is ToolFormat.HERMES:
        one = '"<tool_call>" ws call ws "</tool_call>"'
        root = f"root ::= {one} (ws {one})*" if parallel else f"root ::= {one}"
        trigger = "<tool_call>"
    elif fmt is ToolFormat.MISTRAL:
        more = ' ("," ws call)*' if parallel else ""
        root = f'root ::= "[TOOL_CALLS]" ws "[" ws call{more} ws "]"'
        trigger = "[TOOL_CALLS]"
    else:
        root = "root ::= call"
        trigger = ""
    gbnf = f"{root}\nws ::= [ \\t\\n]{{0,4}}\n{rules}"
    if forced:
        return CallGrammar(gbnf)
    if fmt is ToolFormat.LLAMA3:
        # A Llama 3 call is a bare object: it counts only at the start of the answer.
        pattern = r'\s*(\{\s*"name"[\s\S]*)'
    else:
        pattern = r"[\s\S]*?(" + re.escape(trigger) + r"[\s\S]*)"
    return CallGrammar(gbnf, (pattern,))


# ----------------------------------------------------------------------------- parsing


@dataclass
class ToolCall:
    """One call read from the model's text; ``arguments`` is JSON text, as OpenAI sends it."""

    index: int
    name: str
    arguments: str


@dataclass
class CallEvent:
    """What a piece of streamed text added: answer text, or a part of a call."""

    content: str = ""
    call_index: int | None = None
    name: str | None = None  # set on the first event of a call
    arguments: str = ""  # a fragment of the call's arguments (JSON text)


class _ValueScanner:
    """Finds where one JSON value ends in text that arrives piece by piece."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False
        self.done = False

    def feed(self, ch: str) -> None:
        if self.done:
            return
        if self.in_string:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.in_string = False
                if self.depth == 0:
                    self.done = True
            return
        if ch in " \t\r\n" and not self.started:
            return
        self.started = True
        if ch == '"':
            self.in_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            if self.depth <= 0:
                self.done = True


_NAME_AND_ARGS = re.compile(
    r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*'
)


@dataclass
class _Call:
    start: int  # where the call's JSON object starts in the text
    name: str | None = None
    args_start: int = -1
    scanner: _ValueScanner = field(default_factory=_ValueScanner)
    emitted: int = 0  # arguments characters already reported
    arguments: str = ""


class CallParser:
    """Reads tool calls in ``fmt`` out of an answer, as a whole or while it streams.

    Text before the first call is answer content; once a call opens, the rest
    belongs to calls (and markup between them). :meth:`feed` returns events as
    soon as they are certain: the name when it is complete, argument text as
    it arrives. ``expect_call``: the answer is calls from its first character
    (a forced call).
    """

    def __init__(self, fmt: ToolFormat, *, expect_call: bool = False) -> None:
        self.fmt = fmt
        self._opener = _OPEN.get(fmt, "{")
        self._text = ""
        self._content_end: int | None = 0 if expect_call else None
        self._never = False  # a Llama 3 answer that did not start with a call
        self._emitted_content = 0
        self._pos = 0  # scanning position inside calls
        self.calls: list[ToolCall] = []
        self._current: _Call | None = None

    @property
    def in_calls(self) -> bool:
        return self._content_end is not None

    def _opening(self) -> int | None:
        """Where the calls start in the text so far; None when they have not (yet)."""
        if self._never:
            return None
        if self.fmt is ToolFormat.LLAMA3:
            stripped = self._text.lstrip()
            lead = len(self._text) - len(stripped)
            if _LLAMA3_CALL.match(stripped):
                return lead
            if stripped and not _could_open_llama3(stripped):
                self._never = True
            return None
        i = self._text.find(self._opener)
        return i if i >= 0 else None

    def _held(self) -> int:
        """Characters at the end that may still become the start of a call."""
        if self._never:
            return 0
        if self.fmt is ToolFormat.LLAMA3:
            return len(self._text)
        return _partial_suffix(self._text, self._opener)

    def feed(self, text: str) -> list[CallEvent]:
        self._text += text
        events: list[CallEvent] = []
        if self._content_end is None:
            start = self._opening()
            if start is None:
                upto = len(self._text) - self._held()
                if upto > self._emitted_content:
                    events.append(CallEvent(content=self._text[self._emitted_content : upto]))
                    self._emitted_content = upto
                return events
            self._content_end = start
            self._pos = start
        if self._content_end > self._emitted_content:
            events.append(CallEvent(content=self._text[self._emitted_content : self._content_end]))
            self._emitted_content = self._content_end
        events.extend(self._scan_calls())
        return events

    def _scan_calls(self) -> list[CallEvent]:
        events: list[CallEvent] = []
        text = self._text
        while True:
            call = self._current
            if call is None:
                j = text.find("{", self._pos)
                if j < 0:
                    return events
                call = _Call(start=j)
                self._current = call
            if call.name is None:
                m = _NAME_AND_ARGS.match(text, call.start)
                if m is None:
                    return events
                try:
                    call.name = str(json.loads(m.group(1)))
                except ValueError:
                    call.name = m.group(1).strip('"')
                call.args_start = m.end()
                self._pos = call.args_start
                events.append(CallEvent(call_index=len(self.calls), name=call.name))
            while self._pos < len(text) and not call.scanner.done:
                call.scanner.feed(text[self._pos])
                self._pos += 1
            args = text[call.args_start : self._pos].strip()
            new = args[call.emitted :]
            if new:
                events.append(CallEvent(call_index=len(self.calls), arguments=new))
                call.emitted = len(args)
            if not call.scanner.done:
                return events
            self.calls.append(ToolCall(len(self.calls), call.name or "", args))
            self._current = None
            # Past the call object's closing brace.
            k = text.find("}", self._pos)
            if k < 0:
                self._pos = len(text)
                return events
            self._pos = k + 1

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The answer's content and every complete call.

        Calls written with their keys in another order (not streamed) are found
        here by reading every JSON object after the opener.
        """
        if self._content_end is None:
            return self._text, []
        content = self._text[: self._content_end]
        if self.calls:
            return content, list(self.calls)
        calls: list[ToolCall] = []
        decoder = json.JSONDecoder()
        i = self._content_end
        text = self._text
        while (i := text.find("{", i)) >= 0:
            try:
                obj, end = decoder.raw_decode(text, i)
            except ValueError:
                i += 1
                continue
            if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                args = obj.get("arguments", obj.get("parameters", {}))
                text_args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                calls.append(ToolCall(len(calls), obj["name"], text_args))
            i = end
        return content, calls

    def flush(self) -> str:
        """Content still held at the end (the start of an opener that never became a call)."""
        if self._content_end is not None:
            return ""
        rest = self._text[self._emitted_content :]
        self._emitted_content = len(self._text)
        return rest


_LLAMA3_CALL = re.compile(r'\{\s*"name"')


def _could_open_llama3(text: str) -> bool:
    """True while ``text`` may still grow into ``{"name"``."""
    compact = re.sub(r"\s+", "", text)
    return '{"name"'.startswith(compact) or compact.startswith('{"name"')


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def parse_calls(
    text: str, fmt: ToolFormat, *, expect_call: bool = False
) -> tuple[str, list[ToolCall]]:
    """Content and tool calls of a whole answer."""
    parser = CallParser(fmt, expect_call=expect_call)
    parser.feed(text)
    return parser.finish()


# ----------------------------------------------------------------------------- reasoning


class ReasoningSplitter:
    """Separates a ``<think>…</think>`` section from the answer, also while streaming.

    ``open_at_start``: the prompt already opened the section (templates that end
    the generation prompt with ``<think>``), so the answer begins inside it.
    """

    def __init__(self, *, open_at_start: bool = False) -> None:
        self._state = "thinking" if open_at_start else "start"
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) that ``text`` adds."""
        self._held += text
        reasoning = content = ""
        while self._held:
            if self._state == "start":
                stripped = self._held.lstrip()
                if not stripped:
                    return reasoning, content
                if stripped.startswith(THINK_OPEN):
                    self._held = stripped[len(THINK_OPEN) :]
                    self._state = "thinking"
                    continue
                if THINK_OPEN.startswith(stripped):
                    return reasoning, content
                self._state = "answer"
                continue
            if self._state == "thinking":
                i = self._held.find(THINK_CLOSE)
                if i >= 0:
                    reasoning += self._held[:i]
                    self._held = self._held[i + len(THINK_CLOSE) :]
                    self._state = "closed"
                    continue
                keep = _partial_suffix(self._held, THINK_CLOSE)
                reasoning += self._held[: len(self._held) - keep]
                self._held = self._held[len(self._held) - keep :]
                return reasoning, content
            if self._state == "closed":
                # The blank lines between the section and the answer belong to neither.
                self._held = self._held.lstrip()
                if not self._held:
                    return reasoning, content
                self._state = "answer"
                continue
            content += self._held
            self._held = ""
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        if self._state == "thinking":
            return held, ""
        return "", held


def split_reasoning(text: str, *, open_at_start: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a whole answer."""
    splitter = ReasoningSplitter(open_at_start=open_at_start)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.flush()
    return (r1 + r2).strip(), c1 + c2
