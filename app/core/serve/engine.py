"""One OpenAI request, from its JSON body to the answer's JSON: rendering, grammar, parsing.

These functions run on the model's own thread (:mod:`.pool`) and know nothing
of HTTP: the web layer passes a ``sink`` that receives each streamed delta.

* The prompt is rendered through the model's chat template with the tools
  passed as ``apply_chat_template`` passes them
  (:func:`quant.prompts.templates.render_request`).
* ``response_format`` and forced tool calls become a llama.cpp grammar
  (:mod:`quant.prompts.grammar`, :mod:`quant.prompts.tools`), so the answer
  always parses and validates; ``tool_choice: auto`` uses a lazy grammar that
  starts where the model opens a call.
* The answer is split into reasoning (``<think>``), content and tool calls as
  it streams (:class:`Shaper`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.core.chat.session import Answer, ChatSession, Constraint, TokenLogprob
from app.core.chat.settings import SamplingSettings
from app.core.chat.stats import AnswerStats, StopReason
from app.core.errors import AppError
from app.core.serve.pool import Ticket
from app.core.serve.schemas import ChatRequest, CompletionRequest
from quant.progress import CancelToken
from quant.prompts.grammar import SchemaError, json_grammar
from quant.prompts.templates import ChatTemplateError, render_request
from quant.prompts.tools import (
    THINK_CLOSE,
    THINK_OPEN,
    CallParser,
    ReasoningSplitter,
    ToolFormat,
    call_grammar,
    detect_tool_format,
    function_of,
)

logger = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]
# Default answer length when a request gives none (OpenAI's /v1/completions uses 16).
DEFAULT_CHAT_TOKENS = 1024
DEFAULT_COMPLETION_TOKENS = 16


class RequestError(AppError):
    """A request the server understands but cannot serve (HTTP 400)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def sampling_for(
    req: ChatRequest | CompletionRequest,
    saved: SamplingSettings,
    *,
    max_tokens: int | None,
    default_max: int,
) -> SamplingSettings:
    """The request's sampling over the model's saved chat settings (OpenAI fields win)."""
    s = saved
    changes: dict[str, Any] = {}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "top_k", "min_p"):
        value = getattr(req, name)
        if value is not None:
            changes[name] = value
    if req.repeat_penalty is not None:
        changes["repeat_penalty"] = req.repeat_penalty
    elif "temperature" in changes or "top_p" in changes:
        # An OpenAI client that sets its own sampling expects no hidden repetition penalty.
        changes["repeat_penalty"] = 1.0
    changes["seed"] = req.seed if req.seed is not None else -1
    changes["max_tokens"] = max_tokens if max_tokens is not None else default_max
    return replace(s, **changes).validated()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# ----------------------------------------------------------------------------- preparing


@dataclass(frozen=True)
class PreparedChat:
    prompt: str
    sampling: SamplingSettings
    stop: tuple[str, ...]
    constraint: Constraint | None
    logprobs: int | None
    tool_format: ToolFormat | None  # None: the answer is not read for tool calls
    forced_call: bool
    reasoning: bool
    think_open: bool


def _tool_choice(req: ChatRequest) -> tuple[str, str | None]:
    """("none" | "auto" | "required" | "named", function name)."""
    choice = req.tool_choice
    if choice is None:
        return ("auto" if req.tools else "none"), None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise RequestError(
                f"tool_choice {choice!r} is not one of none, auto, required, or a named function",
                param="tool_choice",
            )
        return choice, None
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name:
        raise RequestError(
            'a named tool_choice is {"type": "function", "function": {"name": …}}',
            param="tool_choice",
        )
    return "named", name


def prepare_chat(
    session: ChatSession, req: ChatRequest, saved: SamplingSettings | None
) -> PreparedChat:
    """Render ``req`` for ``session``'s model and choose its grammar and stops.

    ``saved`` is the sampling the user chose for the model in Chat; None uses the
    model's own defaults (:attr:`ModelInfo.sampling`), under the request's fields.
    """
    base = saved if saved is not None else session.info.sampling
    tools = [t.model_dump(exclude_none=True) for t in req.tools or ()]
    mode, name = _tool_choice(req)
    if mode in ("required", "named") and not tools:
        raise RequestError(f"tool_choice {mode} needs tools", param="tool_choice")
    if mode == "named":
        tools = [t for t in tools if function_of(t).get("name") == name]
        if not tools:
            raise RequestError(
                f"tool_choice names {name!r}, which is not in tools", param="tool_choice"
            )
    offered = tools if mode != "none" else []
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    try:
        prompt = render_request(
            session.template, messages, tools=offered or None, **(req.chat_template_kwargs or {})
        )
    except ChatTemplateError as exc:
        raise RequestError(str(exc), param="messages") from exc
    text = session.template.text
    reasoning = THINK_CLOSE in text or THINK_OPEN in text
    think_open = reasoning and prompt.rstrip().endswith(THINK_OPEN)
    constraint: Constraint | None = None
    tool_format: ToolFormat | None = None
    forced = False
    try:
        if offered:
            tool_format = detect_tool_format(
                text if session.template.source.value == "gguf" else ""
            )
            forced = mode in ("required", "named")
            g = call_grammar(offered, tool_format, forced=forced, parallel=req.parallel_tool_calls)
            constraint = Constraint(g.gbnf, triggers=g.triggers)
        elif req.response_format is not None and req.response_format.type != "text":
            schema = None
            if req.response_format.type == "json_schema":
                js = req.response_format.json_schema
                if js is None or js.schema_ is None:
                    raise RequestError(
                        "response_format json_schema needs json_schema.schema",
                        param="response_format",
                    )
                schema = js.schema_
            constraint = Constraint(json_grammar(schema))
    except SchemaError as exc:
        raise RequestError(str(exc), param="response_format" if not offered else "tools") from exc
    max_tokens = req.max_completion_tokens or req.max_tokens
    top = None
    if req.logprobs:
        top = req.top_logprobs or 0
    return PreparedChat(
        prompt=prompt,
        sampling=sampling_for(req, base, max_tokens=max_tokens, default_max=DEFAULT_CHAT_TOKENS),
        stop=tuple(req.stop_list()),
        constraint=constraint,
        logprobs=top,
        tool_format=tool_format,
        forced_call=forced,
        reasoning=reasoning,
        think_open=think_open,
    )


# ----------------------------------------------------------------------------- shaping


def logprob_json(lp: TokenLogprob) -> dict[str, Any]:
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.bytes),
        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(b)} for t, v, b in lp.top],
    }


@dataclass
class Shaper:
    """Turns streamed text into OpenAI deltas: reasoning, content, tool calls."""

    prepared: PreparedChat
    sink: Sink | None = None
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    all_logprobs: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = self.prepared
        self._splitter = ReasoningSplitter(open_at_start=p.think_open) if p.reasoning else None
        self._parser = (
            CallParser(p.tool_format, expect_call=p.forced_call)
            if p.tool_format is not None
            else None
        )

    def logprob(self, lp: TokenLogprob) -> None:
        self._pending_logprobs.append(lp)
        self.all_logprobs.append(lp)

    def feed(self, text: str) -> None:
        if self._splitter is not None:
            thought, text = self._splitter.feed(text)
            if thought:
                self._emit({"reasoning_content": thought})
        self._content(text)

    def _content(self, text: str) -> None:
        if not text:
            return
        if self._parser is None:
            self._emit({"content": text})
            return
        for ev in self._parser.feed(text):
            if ev.content:
                self._emit({"content": ev.content})
            if ev.name is not None and ev.call_index is not None:
                call_id = f"call_{uuid.uuid4().hex[:24]}"
                self.calls.append(
                    {
                        "index": ev.call_index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": ev.name, "arguments": ""},
                    }
                )
                head = {
                    "index": ev.call_index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": ev.name, "arguments": ""},
                }
                self._emit({"tool_calls": [head]})
            if ev.arguments and ev.call_index is not None and ev.call_index < len(self.calls):
                self.calls[ev.call_index]["function"]["arguments"] += ev.arguments
                part = {"index": ev.call_index, "function": {"arguments": ev.arguments}}
                self._emit({"tool_calls": [part]})

    def flush(self) -> None:
        if self._splitter is not None:
            thought, text = self._splitter.flush()
            if thought:
                self._emit({"reasoning_content": thought})
            self._content(text)
        if self._parser is not None:
            rest = self._parser.flush()
            if rest:
                self._emit({"content": rest})
            _, parsed = self._parser.finish()
            # A call cut short (the token limit) is not a call: keep the complete ones.
            self.calls = self.calls[: len(parsed)] if self.calls else []
            if not self.calls and parsed:  # calls only found at the end (keys in another order)
                for c in parsed:
                    call = {
                        "index": c.index,
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    self.calls.append(call)
                    self._emit({"tool_calls": [call]})

    def _emit(self, delta: dict[str, Any]) -> None:
        if "content" in delta:
            self.content.append(delta["content"])
        if "reasoning_content" in delta:
            self.reasoning.append(delta["reasoning_content"])
        if self.sink is not None:
            if self._pending_logprobs and "content" in delta:
                delta = dict(delta)
                delta["_logprobs"] = [logprob_json(lp) for lp in self._pending_logprobs]
                self._pending_logprobs = []
            self.sink(delta)


def finish_reason(stats: AnswerStats, calls: Sequence[Any]) -> str:
    if calls:
        return "tool_calls"
    if stats.stop_reason in (StopReason.MAX_TOKENS, StopReason.CONTEXT_FULL):
        return "length"
    return "stop"


def usage(stats: AnswerStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.prompt_tokens_cached},
    }


def timings(stats: AnswerStats, ticket: Ticket) -> dict[str, Any]:
    """The measured figures every response carries in its ``timings`` field."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return {
        "ttft_s": r(stats.ttft_s),
        "prompt_tokens": stats.prompt_tokens,
        "prompt_tokens_cached": stats.prompt_tokens_cached,
        "prompt_s": r(stats.prompt_s),
        "prompt_tokens_per_s": r(stats.prompt_tokens_per_s),
        "generated_tokens": stats.generated_tokens,
        "gen_s": r(stats.gen_s),
        "gen_tokens_per_s": r(stats.gen_tokens_per_s),
        "stop_reason": stats.stop_reason.value,
        "queued_s": round(ticket.queued_s, 4),
        "received": ticket.received,
        "started": ticket.started,
        "rss_peak_bytes": stats.rss_peak_bytes,
    }


# ----------------------------------------------------------------------------- running


def _same_start_for_a_seed(session: ChatSession, seed: int | None) -> None:
    """A seeded request evaluates its whole prompt, so that it repeats exactly.

    Reusing the KV cache evaluates a different batch of tokens, whose logits can
    differ in the last bits, and a sampled answer can then take another turn.
    """
    if seed is not None:
        session.reset_cache()


@dataclass
class ChatResult:
    message: dict[str, Any]
    finish_reason: str
    stats: AnswerStats
    ticket: Ticket
    logprobs: list[TokenLogprob]
    created: int


def run_chat(
    session: ChatSession,
    ticket: Ticket,
    req: ChatRequest,
    saved: SamplingSettings | None,
    *,
    sink: Sink | None,
    cancel: CancelToken,
) -> ChatResult:
    """Answer ``req`` on ``session``, streaming deltas to ``sink`` when given."""
    prepared = prepare_chat(session, req, saved)
    shaper = Shaper(prepared, sink)
    _same_start_for_a_seed(session, req.seed)
    answer: Answer = session.complete(
        prepared.prompt,
        sampling=prepared.sampling,
        stop=prepared.stop,
        constraint=prepared.constraint,
        logprobs=prepared.logprobs,
        on_token=shaper.feed,
        on_logprob=shaper.logprob if prepared.logprobs is not None else None,
        cancel=cancel,
    )
    shaper.flush()
    content = "".join(shaper.content)
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if shaper.reasoning:
        message["reasoning_content"] = "".join(shaper.reasoning).strip()
    if shaper.calls:
        message["tool_calls"] = shaper.calls
    elif message["content"] is None:
        message["content"] = ""
    return ChatResult(
        message=message,
        finish_reason=finish_reason(answer.stats, shaper.calls),
        stats=answer.stats,
        ticket=ticket,
        logprobs=shaper.all_logprobs,
        created=int(time.time()),
    )


@dataclass
class CompletionResult:
    text: str
    finish_reason: str
    stats: AnswerStats
    ticket: Ticket
    logprobs: list[TokenLogprob]


def run_completion(
    session: ChatSession,
    ticket: Ticket,
    req: CompletionRequest,
    saved: SamplingSettings | None,
    *,
    sink: Callable[[str], None] | None,
    cancel: CancelToken,
) -> CompletionResult:
    """Continue ``req.prompt`` as it is (no chat template)."""
    prompt = req.prompt if isinstance(req.prompt, str) else "".join(req.prompt[:1])
    if isinstance(req.prompt, list) and len(req.prompt) > 1:
        raise RequestError("one prompt per request is supported", param="prompt")
    if req.suffix:
        raise RequestError("suffix (fill in the middle) is not supported", param="suffix")
    base = saved if saved is not None else session.info.sampling
    sampling = sampling_for(
        req, base, max_tokens=req.max_tokens, default_max=DEFAULT_COMPLETION_TOKENS
    )
    probs: list[TokenLogprob] = []
    _same_start_for_a_seed(session, req.seed)
    answer = session.complete(
        prompt or (session.template.bos_token or " "),
        sampling=sampling,
        stop=req.stop_list(),
        logprobs=req.logprobs,
        on_token=sink,
        on_logprob=probs.append if req.logprobs is not None else None,
        cancel=cancel,
    )
    text = (prompt + answer.text) if req.echo else answer.text
    return CompletionResult(text, finish_reason(answer.stats, ()), answer.stats, ticket, probs)
