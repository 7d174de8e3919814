"""Chat formatting: how a conversation becomes the prompt text a model expects.

Three sources, in this order:

1. the model file's own ``tokenizer.chat_template`` (a Jinja template written by
   the model's authors), rendered in a sandbox that refuses attribute access
   outside plain data and any attempt to change the messages;
2. a built-in template for the family, picked from ``general.architecture`` and
   the vocabulary's special tokens, when the file has none or its template is
   refused (the bundled Gemma 3 270M file has none);
3. raw completion: no template at all; the text continues the document.

A template that tries something the sandbox forbids raises
:class:`ChatTemplateError`; :func:`select_template` then falls back to the
built-in family template and says so in :attr:`ChatTemplate.note`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from quant.prompts.in_context import STOP_STRINGS as IN_CONTEXT_STOPS
from quant.prompts.in_context import load_prompt
from quant.prompts.sandbox import ChatTemplateError, render_template

logger = logging.getLogger(__name__)

__all__ = ["ChatTemplateError"]


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class PromptMode(StrEnum):
    """How messages become a prompt.

    ``CHAT`` picks the best chat format for the model: its chat template, or
    in-context examples when the model looks like a base model. ``TEMPLATE``
    uses the chat template even for a base model, ``IN_CONTEXT`` the examples
    even for a tuned one, and ``RAW`` continues the text as written.
    """

    CHAT = "chat"
    TEMPLATE = "template"
    IN_CONTEXT = "in-context"
    RAW = "raw"


class TemplateSource(StrEnum):
    GGUF = "gguf"
    BUILTIN = "built-in"
    IN_CONTEXT = "in-context"
    RAW = "raw"


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role.value, "content": self.content}


def render_jinja(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
    template_name: str = "chat template",
    **extra: Any,
) -> str:
    """Render a Hugging Face style chat template with the sandbox's limits.

    ``extra`` reaches the template as further variables, the way
    ``apply_chat_template`` passes them (``tools``, ``documents``,
    ``enable_thinking`` …). Raises :class:`ChatTemplateError` for a syntax error,
    a refused operation, a limit, or an error the template raises itself.
    """
    context: dict[str, Any] = {"tools": None, "documents": None, **extra}
    context.update(
        messages=[dict(m) for m in messages],
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )
    return render_template(source, context, template_name=template_name)


# ----------------------------------------------------------------------------- templates

# Built-in templates, one per family. Whitespace is explicit ("\n" inside the
# literals) so the rendering is byte-exact for the family's documented format.
_GEMMA = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{{ m.content }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_CHATML = (
    "{% for m in messages %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAMA3 = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_MISTRAL = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
    "{% else %}{{ m.content }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
_PHI3 = (
    "{% for m in messages %}"
    "<|{{ m.role }}|>\n{{ m.content }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_PLAIN = (
    "{% for m in messages %}"
    "{{ m.role | capitalize }}: {{ m.content }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class _Family:
    name: str
    label: str
    source: str
    system_role: bool
    stop_strings: tuple[str, ...]


_FAMILIES: dict[str, _Family] = {
    "gemma": _Family("gemma", "Gemma", _GEMMA, False, ("<end_of_turn>",)),
    "chatml": _Family("chatml", "ChatML", _CHATML, True, ("<|im_end|>",)),
    "llama3": _Family("llama3", "Llama 3", _LLAMA3, True, ("<|eot_id|>",)),
    "mistral": _Family("mistral", "Mistral", _MISTRAL, False, ("[INST]",)),
    "phi3": _Family("phi3", "Phi-3", _PHI3, True, ("<|end|>",)),
    "plain": _Family("plain", "plain text", _PLAIN, True, ("\nUser:",)),
}

_GEMMA_ARCHES = frozenset({"gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding"})
_MISTRAL_ARCHES = frozenset({"mistral3", "mistral"})


@dataclass(frozen=True)
class ChatTemplate:
    """How to turn a conversation into prompt text for one model.

    ``system_role`` is False for families with no system turn (Gemma, Mistral):
    the system prompt is folded into the first user message. ``stop_strings``
    end an answer when they appear in the text, for files whose end-of-turn
    marker is not flagged as an end-of-generation token. ``note`` says, in one
    sentence, which template was chosen and why, for the UI.
    """

    name: str
    source: TemplateSource
    text: str
    bos_token: str = ""
    eos_token: str = ""
    system_role: bool = True
    stop_strings: tuple[str, ...] = ()
    note: str = ""

    @property
    def is_raw(self) -> bool:
        return self.source is TemplateSource.RAW

    @property
    def is_in_context(self) -> bool:
        return self.source is TemplateSource.IN_CONTEXT

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        system_prompt: str = "",
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text for ``messages`` (system prompt given separately).

        In raw mode the system prompt and the messages are concatenated as they
        are, so the model continues the text.
        """
        if self.is_raw:
            parts = [system_prompt + "\n\n"] if system_prompt else []
            parts.extend(m.content for m in messages if m.role is not Role.SYSTEM)
            return "".join(parts)
        dicts = prepare_messages(messages, system_prompt, system_role=self.system_role)
        return render_jinja(
            self.text,
            dicts,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            template_name=f"{self.name} chat template",
        )


def prepare_messages(
    messages: Sequence[ChatMessage], system_prompt: str, *, system_role: bool
) -> list[dict[str, str]]:
    """Messages as template input, with the system prompt placed for the family.

    Families without a system role get it folded into the first user turn
    (``system + "\\n\\n" + user``), which keeps the prefix of every later prompt
    identical so the KV cache can be reused between turns.
    """
    system_parts = [system_prompt] if system_prompt.strip() else []
    rest: list[ChatMessage] = []
    for m in messages:
        if m.role is Role.SYSTEM:
            if m.content.strip():
                system_parts.append(m.content)
        else:
            rest.append(m)
    system = "\n\n".join(system_parts)
    out: list[dict[str, str]] = []
    if system and system_role:
        out.append({"role": "system", "content": system})
    folded = not system or system_role
    for m in rest:
        content = m.content
        if not folded and m.role is Role.USER:
            content = f"{system}\n\n{content}"
            folded = True
        out.append({"role": m.role.value, "content": content})
    if not folded:  # a system prompt and no user turn yet
        out.insert(0, {"role": "user", "content": system})
    return out


def builtin_template(family: str, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """The built-in template of ``family`` (gemma, chatml, llama3, mistral, phi3, plain)."""
    try:
        fam = _FAMILIES[family]
    except KeyError as exc:
        known = ", ".join(sorted(_FAMILIES))
        raise ChatTemplateError(
            f"there is no built-in chat template called {family!r}; choose one of {known}"
        ) from exc
    return ChatTemplate(
        name=fam.name,
        source=TemplateSource.BUILTIN,
        text=fam.source,
        bos_token=bos_token,
        eos_token=eos_token,
        system_role=fam.system_role,
        stop_strings=fam.stop_strings,
        note=f"using the built-in {fam.label} template",
    )


def in_context_template(*, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """Chat by in-context examples (:mod:`quant.prompts.in_context`), for base models."""
    return ChatTemplate(
        name="in-context",
        source=TemplateSource.IN_CONTEXT,
        text=load_prompt().jinja(),
        bos_token=bos_token,
        eos_token=eos_token,
        system_role=True,
        stop_strings=IN_CONTEXT_STOPS,
        note="answering through in-context examples, the way a base model can chat",
    )


def raw_template() -> ChatTemplate:
    return ChatTemplate(
        name="raw",
        source=TemplateSource.RAW,
        text="",
        note="raw completion: the model continues the text as written",
    )


def guess_family(architecture: str, has_token: Callable[[str], bool]) -> str:
    """The built-in family for a model, from its architecture and special tokens."""
    arch = architecture.lower()
    if arch in _GEMMA_ARCHES:
        return "gemma"
    if has_token("<|start_header_id|>") and has_token("<|eot_id|>"):
        return "llama3"
    if has_token("<|im_start|>") and has_token("<|im_end|>"):
        return "chatml"
    if has_token("<|user|>") and has_token("<|end|>"):
        return "phi3"
    if arch in _MISTRAL_ARCHES or has_token("[INST]"):
        return "mistral"
    if has_token("<start_of_turn>") and has_token("<end_of_turn>"):
        return "gemma"
    return "plain"


_PROBE = (
    ChatMessage(Role.USER, "Hello"),
    ChatMessage(Role.ASSISTANT, "Hi, how can I help?"),
    ChatMessage(Role.USER, "Say something."),
)


def select_template(
    metadata: Mapping[str, str],
    *,
    has_token: Callable[[str], bool],
    bos_token: str = "",
    eos_token: str = "",
    mode: PromptMode = PromptMode.CHAT,
    prefer_builtin: str | None = None,
    filename: str = "",
) -> ChatTemplate:
    """Choose how a model's conversations become prompt text, from its GGUF metadata.

    In ``CHAT`` mode a model that looks like a base model (:func:`is_base_model`)
    gets in-context examples (say so with :data:`BASE_MODEL_NOTE`); otherwise the
    file's ``tokenizer.chat_template`` wins when it renders a probe conversation in
    the sandbox, and the family's built-in template is used when it has none or
    it is refused (the note says why). ``prefer_builtin`` forces a built-in family
    (a user setting).
    """
    if mode is PromptMode.RAW:
        return raw_template()
    if mode is PromptMode.IN_CONTEXT or (
        mode is PromptMode.CHAT and prefer_builtin is None and is_base_model(metadata, filename)
    ):
        return in_context_template(bos_token=bos_token, eos_token=eos_token)
    arch = str(metadata.get("general.architecture", ""))
    family = prefer_builtin or guess_family(arch, has_token)
    fam = _FAMILIES.get(family, _FAMILIES["plain"])
    file_template = str(metadata.get("tokenizer.chat_template", "") or "")
    if file_template.strip() and prefer_builtin is None:
        candidate = ChatTemplate(
            name="file",
            source=TemplateSource.GGUF,
            text=file_template,
            bos_token=bos_token,
            eos_token=eos_token,
            system_role=True,
            stop_strings=fam.stop_strings if family != "plain" else (),
            note="using the chat template stored in the model file",
        )
        try:
            candidate.render(list(_PROBE), system_prompt="Be brief.")
        except ChatTemplateError as exc:
            logger.warning("model chat template refused: %s", exc)
            fallback = builtin_template(family, bos_token=bos_token, eos_token=eos_token)
            return _with_note(fallback, f"{exc}; {fallback.note}")
        return candidate
    chosen = builtin_template(family, bos_token=bos_token, eos_token=eos_token)
    if prefer_builtin is None:
        arch_text = f" ({arch})" if arch else ""
        return _with_note(chosen, f"the model file{arch_text} has no chat template; {chosen.note}")
    return chosen


# Words in a model's name or fine-tune tag that mark it as trained to follow instructions.
_TUNED = re.compile(
    r"(?:^|[^a-z0-9])(?:it|instruct|chat|sft|dpo|orpo|rlhf|assistant|hermes|tulu)(?:[^a-z0-9]|$)",
    re.IGNORECASE,
)


BASE_MODEL_NOTE = (
    "this looks like a base model (no chat template, and nothing in its name marks it as "
    "instruction-tuned), so it answers through in-context examples that teach it to reply "
    "briefly; switch to the chat template or to raw completion in the chat settings"
)


BASE_MODEL_TEMPLATE_NOTE = (
    "this looks like a base model (no chat template, and nothing in its name marks it as "
    "instruction-tuned): with the chat template it tends to continue the text instead of "
    "answering; the default chat mode answers through in-context examples"
)


def is_base_model(metadata: Mapping[str, str], filename: str = "") -> bool:
    """True for a model that looks pretrained only (not instruction-tuned).

    Such a model continues text instead of answering: it has no chat template, and
    neither its GGUF name, fine-tune tag nor file name marks it as tuned for chat.
    """
    if str(metadata.get("tokenizer.chat_template", "") or "").strip():
        return False
    names = [
        str(metadata.get(key, "") or "")
        for key in ("general.finetune", "general.name", "general.basename")
    ]
    names.append(filename)
    return not any(_TUNED.search(n) for n in names if n)


def _with_note(template: ChatTemplate, note: str) -> ChatTemplate:
    return replace(template, note=note)


def builtin_families() -> tuple[str, ...]:
    return tuple(_FAMILIES)


# ----------------------------------------------------------------------------- API requests


def message_text(content: Any) -> str:
    """The text of an OpenAI message's ``content``: a string, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return str(content)


def _arguments_value(arguments: Any) -> Any:
    # Hugging Face templates expect a call's arguments as a mapping (apply_chat_template's
    # convention); OpenAI sends them as JSON text.
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages as a Hugging Face chat template reads them.

    Content parts become one string, tool calls keep OpenAI's shape with their
    arguments parsed from JSON, tool results keep ``tool_call_id`` and ``name``.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        role = str(m.get("role", "user"))
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        msg: dict[str, Any] = {"role": role, "content": message_text(m.get("content"))}
        calls = m.get("tool_calls")
        if role == "assistant" and calls:
            msg["tool_calls"] = [
                {
                    "id": c.get("id", ""),
                    "type": c.get("type", "function"),
                    "function": {
                        "name": c.get("function", {}).get("name", ""),
                        "arguments": _arguments_value(c.get("function", {}).get("arguments", {})),
                    },
                }
                for c in calls
                if isinstance(c, Mapping)
            ]
        if role == "tool":
            if m.get("tool_call_id") is not None:
                msg["tool_call_id"] = str(m["tool_call_id"])
            if m.get("name") is not None:
                msg["name"] = str(m["name"])
        for key in ("reasoning_content",):
            if isinstance(m.get(key), str):
                msg[key] = m[key]
        out.append(msg)
    return out


def _flattened(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
) -> list[ChatMessage]:
    """Messages for a template that knows only system, user and assistant turns.

    Tools are described in the system message, earlier calls are written in the
    Hermes format the description teaches, and tool results become user turns.
    """
    from quant.prompts.tools import ToolFormat, format_call, format_result, tools_system_text

    out: list[ChatMessage] = []
    for m in template_messages(messages):
        role, text = m["role"], m["content"]
        if role == "system":
            out.append(ChatMessage(Role.SYSTEM, text))
        elif role == "assistant":
            calls = [
                format_call(ToolFormat.HERMES, c["function"]["name"], c["function"]["arguments"])
                for c in m.get("tool_calls", ())
            ]
            out.append(ChatMessage(Role.ASSISTANT, "\n".join(x for x in (text, *calls) if x)))
        elif role == "tool":
            out.append(ChatMessage(Role.USER, format_result(text)))
        else:
            out.append(ChatMessage(Role.USER, text))
    if tools:
        out.insert(0, ChatMessage(Role.SYSTEM, tools_system_text(tools)))
    return out


def render_request(
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """The prompt for an OpenAI-style request: ``messages`` (roles system, developer,
    user, assistant with ``tool_calls``, tool; content as text or parts) and ``tools``.

    A model's own template that knows tools gets them as ``apply_chat_template``
    passes them (the ``tools`` variable, calls and results in the messages), so
    a model trained on a native tool format sees exactly that format; ``extra``
    reaches it too (``enable_thinking`` …). Built-in templates, in-context
    examples and file templates without tools get the tools described in the
    system message and tool turns written as text. Raises
    :class:`ChatTemplateError` when the template refuses the conversation.
    """
    from quant.prompts.tools import template_handles_tools

    native = template.source is TemplateSource.GGUF and (
        not tools or template_handles_tools(template.text)
    )
    has_tool_turns = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
    if native and (not has_tool_turns or template_handles_tools(template.text)):
        return render_jinja(
            template.text,
            template_messages(messages),
            bos_token=template.bos_token,
            eos_token=template.eos_token,
            add_generation_prompt=add_generation_prompt,
            template_name=f"{template.name} chat template",
            **({"tools": list(tools)} if tools else {}),
            **extra,
        )
    return template.render(_flattened(messages, tools), add_generation_prompt=add_generation_prompt)
