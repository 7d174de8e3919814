"""In-context chat for base models: a preamble and example exchanges steer a model that was
never tuned to follow instructions into short answers that end by themselves.

The prompt (the method is described in ``resources/prompts/in-context/README.md``)::

    <preamble>
    <the user's system prompt, if any>

    # Query:
    ```
    <example question>
    ```

    # Answer:
    ```
    <example answer>
    ```

    … more examples, then the conversation's earlier turns in the same form …

    # Query:
    ```
    <the user's message>
    ```

    # Answer:
    ```

Generation stops at the closing fence or at a new ``# Query`` heading; the stop
scanner of the chat session holds back a partial marker, so the user never sees
the format's markup. The preamble and examples are a fixed prefix, so the KV
cache keeps them between turns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from quant.errors import QuantError
from quant.resources import resources_dir
from quant.untrusted import UntrustedValueError, read_json_file

QUERY = "# Query:"
ANSWER = "# Answer:"
FENCE = "```"
# What ends an answer: the closing fence (on its own line or not) or a new query.
STOP_STRINGS = ("\n" + FENCE, FENCE, "\n" + QUERY, QUERY)

_DEFAULT_FOLDER = "prompts/in-context"


class InContextError(QuantError):
    """The in-context examples could not be read (a damaged installation)."""


@dataclass(frozen=True)
class Example:
    query: str
    answer: str


@dataclass(frozen=True)
class InContextPrompt:
    """The fixed part of the prompt: the preamble and the example exchanges."""

    preamble: str
    examples: tuple[Example, ...]

    def jinja(self) -> str:
        """The prompt as a chat template (rendered in the sandbox like any other)."""
        preamble = _raw(self.preamble.rstrip("\n") + "\n\n")
        shots = _raw("".join(exchange(e.query, e.answer) for e in self.examples))
        return (
            "{{ bos_token }}" + preamble + "{% for m in messages %}"
            "{% if m.role == 'system' %}{{ m.content }}\n\n{% endif %}"
            "{% endfor %}" + shots + "{% for m in messages %}"
            "{% if m.role == 'user' %}"
            + _raw(f"{QUERY}\n{FENCE}\n")
            + "{{ m.content }}"
            + _raw(f"\n{FENCE}\n\n")
            + "{% elif m.role == 'assistant' %}"
            + _raw(f"{ANSWER}\n{FENCE}\n")
            + "{{ m.content }}"
            + _raw(f"\n{FENCE}\n\n")
            + "{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}" + _raw(f"{ANSWER}\n{FENCE}\n") + "{% endif %}"
        )


def exchange(query: str, answer: str) -> str:
    """One question and its answer in the prompt's format."""
    return f"{QUERY}\n{FENCE}\n{query}\n{FENCE}\n\n{ANSWER}\n{FENCE}\n{answer}\n{FENCE}\n\n"


def _raw(text: str) -> str:
    if "{% endraw %}" in text:
        raise InContextError("the in-context examples may not contain '{% endraw %}'")
    return "{% raw %}" + text + "{% endraw %}"


@functools.lru_cache(maxsize=4)
def load_prompt(folder: Path | None = None) -> InContextPrompt:
    """The preamble and examples shipped in ``resources/prompts/in-context`` (or ``folder``)."""
    where = folder or resources_dir() / _DEFAULT_FOLDER
    try:
        preamble = (where / "preamble.txt").read_text(encoding="utf-8")
        raw = read_json_file(where / "examples.json")
    except (OSError, UntrustedValueError) as exc:
        raise InContextError(
            f"{where}: the in-context chat examples cannot be read ({exc}); reinstall Quantdesk"
        ) from exc
    if not isinstance(raw, list) or not all(
        isinstance(e, dict) and isinstance(e.get("query"), str) and isinstance(e.get("answer"), str)
        for e in raw
    ):
        raise InContextError(
            f"{where / 'examples.json'}: expected a list of {{query, answer}} objects; "
            "reinstall Quantdesk"
        )
    return InContextPrompt(preamble, tuple(Example(e["query"], e["answer"]) for e in raw))


# Sampling for base models answering through examples, chosen with
# benchmarks/first_chat.py on the bundled starter (the note of that benchmark's
# run records the comparison): low temperature keeps a small model on the
# examples' style, min-p cuts the long tail that starts rambling, and a mild
# repeat penalty breaks loops without bending short factual answers.
BASE_MODEL_SAMPLING: dict[str, float | int] = {
    "temperature": 0.2,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.1,
    "repeat_penalty": 1.15,
}
