"""Chat templates arrive inside downloaded model files: a hostile one never hangs a load,
allocates gigabytes, overflows the stack or ends in a traceback. Each is refused with one
sentence, and a file carrying it falls back to the built-in template for its family."""

from __future__ import annotations

import resource
import threading
from typing import Any

import pytest

from quant.prompts.sandbox import ChatTemplateError, TemplateRaisedError, render_template
from quant.prompts.templates import ChatMessage, Role, TemplateSource, select_template

NS = "{% set ns = namespace(x='ab') %}"
HOSTILE: dict[str, str] = {
    "nested range loops": (
        "{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}"
    ),
    "center(10**9)": "{{ 'x'|center(10**9) }}",
    "center literal": "{{ 'x'|center(1000000000) }}",
    "tojson indent": "{{ messages|tojson(indent=100000000) }}",
    "indent of many lines": "{{ ('x\\n' * 100000)|indent(60000) }}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive loop": "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
    "division by zero": "{{ 1/0 }}",
    "syntax error": "{% for %}",
    "unclosed block": "{% if true %}",
    "doubling with ~": NS + "{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}"
    "{{ ns.x|length }}",
    "doubling with +": "{% set ns = namespace(x=['a']) %}{% for i in range(40) %}"
    "{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x|length }}",
    "repeated references joined": "{{ ([('x' * 4000000)] * 60000)|join }}",
    "repeated references printed": "{{ [('x' * 4000000)] * 60000 }}",
    "repeated references as JSON": "{{ ([('x' * 4000000)] * 60000)|tojson }}",
    "str.join of references": "{{ ''.join([('x' * 4000000)] * 60000) }}",
    "replace blow-up": "{{ ('a' * 1000000).replace('a', 'b' * 60000) }}",
    "str.center method": "{{ 'x'.center(1000000000) }}",
    "percent width": "{{ '%0999999999d' % 1 }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "huge power": "{{ 99999 ** 99999 }}",
    "squaring numbers": "{% set ns = namespace(x=99) %}{% for i in range(64) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
    "huge output": "{% for i in range(60000) %}{{ 'x' * 1000 }}{% endfor %}",
    "lipsum": "{{ lipsum(10000, false, 10000, 10000) }}",
    "deep parentheses": "{{ " + "(" * 50000 + "1" + ")" * 50000 + " }}",
    "class escape": "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "globals escape": "{{ cycler.__init__.__globals__.os }}",
    "mutation": "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",
    "undefined call": "{{ nothing() }}",
    "type error": "{{ messages + 1 }}",
    "raise_exception": "{{ raise_exception('no system role') }}",
    "huge source": "{{ 'a' }}" * 200_000,
}

CONTEXT: dict[str, Any] = {
    "messages": [{"role": "user", "content": "hi"}],
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "add_generation_prompt": True,
}


def _render_in_thread(source: str) -> tuple[BaseException | None, str | None, bool]:
    """Render on a worker thread so a hang is reported instead of stalling the suite."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["text"] = render_template(source, CONTEXT)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(60)
    return box.get("error"), box.get("text"), t.is_alive()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_one_sentence(name: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error, text, hung = _render_in_thread(HOSTILE[name])
    assert not hung, f"{name}: the render did not end"
    assert text is None, f"{name}: rendered {len(text or '')} characters"
    assert isinstance(error, ChatTemplateError), f"{name}: {type(error).__name__}: {error}"
    message = str(error)
    assert "\n" not in message and len(message) < 400
    # No render may take gigabytes on the way (ru_maxrss is in KiB on Linux).
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 600, f"{name}: peak memory grew by {grown_mib:.0f} MiB"


def test_raise_exception_is_told_apart_from_a_broken_template() -> None:
    with pytest.raises(TemplateRaisedError, match="no system role"):
        render_template(HOSTILE["raise_exception"], CONTEXT)


@pytest.mark.parametrize("name", ["nested range loops", "center literal", "recursive macro"])
def test_a_file_with_a_hostile_template_falls_back_to_the_builtin_one(name: str) -> None:
    chosen = select_template(
        {"general.architecture": "gemma3", "tokenizer.chat_template": HOSTILE[name]},
        has_token=lambda _t: False,
        bos_token="<bos>",
    )
    assert chosen.source is TemplateSource.BUILTIN
    assert "refused" in chosen.note
    assert chosen.render([ChatMessage(Role.USER, "hi")]).startswith("<bos><start_of_turn>user")


def test_real_template_features_still_render() -> None:
    """What real instruct templates use keeps working under the limits."""
    source = (
        "{{ bos_token }}{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% generation %}<|{{ m.role }}|>{{ m.content|trim }}{% endgeneration %}"
        "{% if m.tool_calls is defined %}{{ m.tool_calls|tojson }}{% endif %}"
        "{% endfor %}"
        "{% if tools %}{{ tools|tojson(indent=2) }}{% endif %}"
        "{{ strftime_now('%Y')|length }}{{ ns.n }}{{ '%d' % 3 }}{{ '{:>3}'.format(1) }}"
        "{% for i in range(3) %}{% if loop.last %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    text = render_template(
        source,
        {
            **CONTEXT,
            "messages": [
                {"role": "user", "content": " hé "},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
    )
    assert text.startswith("<bos><|user|>hé<|assistant|>")
    assert '[{"name": "f"}]' in text
    assert text.endswith("423  101")


@pytest.mark.parametrize("name", ["syntax error", "center literal", "nested range loops"])
def test_a_model_file_with_a_hostile_template_loads_for_chat(name: str, tmp_path: Any) -> None:
    """llama-cpp-python compiles the file's template itself unless kept from it."""
    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan
    from tests.ggufs import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "hostile.gguf", chat_template=HOSTILE[name], byte_tokens=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with ChatSession.load(path, LoadPlan(n_ctx=256), check_fit=False) as session:
        assert "refused" in session.info.template_note
        assert session.template.source is TemplateSource.BUILTIN
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 600
