"""The local server driven by the official ``openai`` package, on the starter model.

Every answer is greedy (temperature 0) and short, so the tests are
deterministic and take a few minutes on two cores.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import openai
import pytest

from tests.server.conftest import API_KEY, Running

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "country": {"enum": ["FR", "DE", "IT"]},
            },
            "required": ["city", "country"],
        },
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "address", "tags"],
}

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TIME = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a city",
            "parameters": TIME,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_models_are_listed_with_their_path(client: openai.OpenAI, running: Running) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [running.model_id]
    extra = models[0].model_extra or {}
    assert extra["quantdesk"]["path"].endswith(".gguf")
    assert client.models.retrieve(running.model_id).id == running.model_id


def test_chat_answers_and_streams_the_same_text(client: openai.OpenAI, running: Running) -> None:
    kwargs: dict[str, Any] = {
        "model": running.model_id,
        "messages": ask("Name a colour."),
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**kwargs)
    text = whole.choices[0].message.content
    assert text
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    timings = (whole.model_extra or {})["timings"]
    assert timings["ttft_s"] > 0 and timings["gen_tokens_per_s"] > 0

    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [whole.choices[0].finish_reason]


def test_json_schema_output_parses_and_validates(client: openai.OpenAI, running: Running) -> None:
    reply = client.chat.completions.create(
        model=running.model_id,
        messages=ask("Describe a person who lives in Paris as JSON."),
        max_tokens=150,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    assert reply.choices[0].finish_reason == "stop"
    data = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(data, PERSON)


def test_json_object_mode_gives_an_object(client: openai.OpenAI, running: Running) -> None:
    reply = client.chat.completions.create(
        model=running.model_id,
        messages=ask("Reply with an empty JSON object."),
        max_tokens=150,
        temperature=0,
        response_format={"type": "json_object"},
    )
    text = reply.choices[0].message.content or ""
    assert text.lstrip().startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def _check_calls(calls: Any, allowed: set[str]) -> None:
    assert calls
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_")
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_tool_call_validates(client: openai.OpenAI, running: Running) -> None:
    reply = client.chat.completions.create(
        model=running.model_id,
        messages=ask("What is the weather in Paris?"),
        max_tokens=80,
        temperature=0,
        tools=TOOLS,
        tool_choice="required",
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    _check_calls(reply.choices[0].message.tool_calls, {"get_weather", "get_time"})


def test_named_tool_call_streams_as_deltas(client: openai.OpenAI, running: Running) -> None:
    stream = client.chat.completions.create(
        model=running.model_id,
        messages=ask("What is the weather in Paris?"),
        max_tokens=60,
        temperature=0,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    deltas = 0
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for d in choice.delta.tool_calls or ():
            deltas += 1
            slot = calls.setdefault(d.index, {"name": "", "arguments": ""})
            if d.function and d.function.name:
                slot["name"] = d.function.name
            if d.function and d.function.arguments:
                slot["arguments"] += d.function.arguments
    assert finish == "tool_calls"
    assert deltas > 2  # the name first, then the arguments piece by piece
    assert [c["name"] for c in calls.values()] == ["get_time"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), TIME)


def _weather_exchange(city: str, n: int) -> list[Any]:
    """A user's question, the assistant's call, the tool's result and the answer."""
    return [
        {"role": "user", "content": f"What is the weather in {city}?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{n}",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": json.dumps({"city": city, "unit": "celsius"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": f"call_{n}", "content": '{"temperature": 21}'},
        {"role": "assistant", "content": f"It is 21 degrees in {city}."},
    ]


def test_auto_tool_call_after_a_tool_round_trip(client: openai.OpenAI, running: Running) -> None:
    """Earlier calls and their results are rendered back (tool messages round-trip), and
    with ``auto`` the model follows them with a call of its own, which validates."""
    messages: list[Any] = [
        *_weather_exchange("Berlin", 1),
        *_weather_exchange("Rome", 2),
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    reply = client.chat.completions.create(
        model=running.model_id,
        messages=messages,
        max_tokens=60,
        temperature=0,
        tools=TOOLS,
        tool_choice="auto",
    )
    message = reply.choices[0].message
    assert message.tool_calls, f"no call in {message.content!r}"
    assert reply.choices[0].finish_reason == "tool_calls"
    _check_calls(message.tool_calls, {"get_weather", "get_time"})


def test_tool_choice_none_answers_in_text(client: openai.OpenAI, running: Running) -> None:
    reply = client.chat.completions.create(
        model=running.model_id,
        messages=ask("Say hello."),
        max_tokens=8,
        temperature=0,
        tools=TOOLS,
        tool_choice="none",
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content


def test_logprobs_come_with_alternatives(client: openai.OpenAI, running: Running) -> None:
    reply = client.chat.completions.create(
        model=running.model_id,
        messages=ask("Count: one, two,"),
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content) == reply.usage.completion_tokens  # type: ignore[union-attr]
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)


def test_completions_route_continues_a_prompt(client: openai.OpenAI, running: Running) -> None:
    whole = client.completions.create(
        model=running.model_id, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert whole.choices[0].text
    parts = client.completions.create(
        model=running.model_id,
        prompt="The capital of France is",
        max_tokens=5,
        temperature=0,
        stream=True,
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == whole.choices[0].text


def test_embeddings_of_a_chat_model_are_refused_plainly(
    client: openai.OpenAI, running: Running
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=running.model_id, input="hello")
    assert "does not produce embeddings" in str(info.value)
    assert info.value.code == "model_cannot_embed"


def test_a_wrong_key_is_refused_with_401(running: Running) -> None:
    bad = openai.OpenAI(base_url=running.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.status_code == 401
    body = info.value.body
    assert isinstance(body, dict) and body.get("code") == "invalid_api_key"
    # Every route checks it, the unknown ones included.
    import httpx2

    r = httpx2.get(running.url.replace("/v1", "/metrics"))
    assert r.status_code == 401


def test_an_unknown_model_is_a_404_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=ask("hi"), max_tokens=2)
    assert info.value.status_code == 404
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert "no-such-model" in body["message"]


def test_a_disconnect_mid_stream_frees_the_model(client: openai.OpenAI, running: Running) -> None:
    stream = client.chat.completions.create(
        model=running.model_id,
        messages=ask("Write a long story about a dragon."),
        max_tokens=400,
        temperature=0,
        stream=True,
    )
    got = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got >= 3:
                break
    stream.close()
    # The generation stops at its next token: the model is free for the next request.
    deadline = time.monotonic() + 60
    stopped = None
    while time.monotonic() < deadline and stopped is None:
        stopped = next(
            (r for r in running.server.log.latest() if r.error == "client disconnected"), None
        )
        time.sleep(0.1)
    assert stopped is not None and stopped.status == 499
    assert stopped.completion_tokens < 400
    reply = client.chat.completions.create(
        model=running.model_id, messages=ask("Hi"), max_tokens=3, temperature=0
    )
    assert reply.choices[0].message.content is not None


def test_twenty_concurrent_streams_all_finish_in_order(
    client: openai.OpenAI, running: Running
) -> None:
    barrier = threading.Barrier(20)

    def one(i: int) -> dict[str, Any]:
        barrier.wait()
        text = ""
        final: dict[str, Any] = {}
        for chunk in client.chat.completions.create(
            model=running.model_id,
            messages=ask(f"Say the number {i}."),
            max_tokens=4,
            temperature=0,
            stream=True,
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                if chunk.choices[0].finish_reason:
                    final = dict((chunk.model_extra or {})["timings"])
                    final["finish"] = chunk.choices[0].finish_reason
        return final

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert len(results) == 20
    assert all(r.get("finish") in ("stop", "length") for r in results)
    # Started in the order they arrived, each once.
    assert all(r["started"] - r["received"] == results[0]["started"] - results[0]["received"]
               for r in results)  # fmt: skip
    assert len({r["received"] for r in results}) == 20


def test_stats_and_metrics_report_per_model(running: Running) -> None:
    import httpx2

    headers = {"Authorization": f"Bearer {API_KEY}"}
    stats = httpx2.get(running.url + "/stats", headers=headers).json()
    model = stats["models"][running.model_id]
    assert model["requests"] > 0 and model["mean_gen_tokens_per_s"] > 0
    assert stats["loaded"][0]["id"] == running.model_id
    text = httpx2.get(running.url.replace("/v1", "/metrics"), headers=headers).text
    assert f'quantdesk_requests_total{{model="{running.model_id}"}}' in text


def test_cors_is_off_unless_asked(running: Running) -> None:
    import httpx2

    r = httpx2.get(
        running.url + "/models",
        headers={"Authorization": f"Bearer {API_KEY}", "Origin": "https://example.org"},
    )
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_seed_repeats_a_sampled_answer_and_stop_ends_it(
    client: openai.OpenAI, running: Running
) -> None:
    kwargs: dict[str, Any] = {
        "model": running.model_id,
        "messages": ask("Write a short poem."),
        "max_tokens": 16,
        "temperature": 0.9,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
    }
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second
    stopped = client.completions.create(
        model=running.model_id,
        prompt="1\n2\n3\n4\n",
        max_tokens=20,
        temperature=0,
        stop=["\n"],
    )
    assert stopped.choices[0].text and "\n" not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"
