"""Rendering chat templates that arrive inside downloaded model files, with hard limits.

A GGUF's ``tokenizer.chat_template`` is Jinja code written by whoever made the
file. It is rendered the way Hugging Face's ``apply_chat_template`` renders it
(trimmed blocks, ``loopcontrols``, ``{% generation %}``, ``raise_exception``,
``strftime_now``, a ``tojson`` that keeps non-ASCII text), inside Jinja's
immutable sandbox, plus limits that a template cannot get around:

* **time** — a trace function watches the template's own frames (not the
  library's) and stops the render after :attr:`Limits.seconds`; nested
  ``range()`` loops end there instead of hanging a model load;
* **size** — every value the template builds is bounded: ``*``, ``+``, ``%``
  and ``~`` check the size of their result before making it, every filter,
  global and method call checks its integer arguments (``center(10**9)``,
  ``tojson(indent=10**8)``, ``'{:>999999999}'.format``) and the size of its
  result, and the output is counted as it streams;
* **depth** — recursive macros stop at :attr:`Limits.depth` nested calls.

Every failure — a syntax error, a refused operation, a limit, an exception the
template raises or causes (``{{ 1/0 }}``) — becomes one
:class:`ChatTemplateError` sentence: "this file's template cannot be used".
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import operator
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from jinja2 import TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from quant.errors import QuantError
from quant.untrusted import short_text


class ChatTemplateError(QuantError):
    """A chat template could not be compiled or rendered, was refused, or broke a limit."""


class TemplateRaisedError(ChatTemplateError):
    """The template called ``raise_exception``: it refuses this conversation."""


@dataclass(frozen=True)
class Limits:
    """What one render may cost. The defaults are far above any real chat template."""

    seconds: float = 2.0
    # Characters in the rendered prompt, and in any one string or list built on the way.
    chars: int = 8_000_000
    # Largest integer argument to a filter, global or method (widths, counts, indents).
    argument: int = 65_536
    # Nested template frames (macro calls, includes of blocks).
    depth: int = 64
    # Characters of template source.
    source_chars: int = 1_000_000


DEFAULT_LIMITS = Limits()

_TEMPLATE_FILE = "<template>"
# Integers a template may build by multiplication (far above any token id or count).
_MAX_INT_BITS = 4096
# Width or precision numbers inside a %-format or str.format spec ("%0999999d", "{:>999999}").
_FORMAT_NUMBER = re.compile(r"\d{6,}")


class _LimitError(SecurityError):
    """A limit of :class:`Limits` was reached (a SecurityError, so Jinja never swallows it)."""


def _weight(value: Any, budget: int) -> int:
    """About how many characters ``value`` becomes as text, counted until ``budget`` is passed.

    A list of 100,000 references to one long string is cheap to hold but not to join,
    print or serialize: the weight counts every reference, and stops counting early.
    """
    total = 0
    stack = [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 1
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            total += 1
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
            total += 1
        else:
            total += 1
    return total


class _Guard:
    """Per-render state: the deadline and the template's call depth, on this thread."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.depth = 0
        self.lines = 0

    def check_size(self, value: Any, what: str) -> Any:
        """``value`` when its weight is within the limit; else a limit error."""
        if _weight(value, self.limits.chars) > self.limits.chars:
            raise _LimitError(f"{what} built a value of more than {self.limits.chars:,} characters")
        return value

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], what: str) -> None:
        """Integer arguments within :attr:`Limits.argument`, every argument within the size."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                if abs(value) > self.limits.argument:
                    raise _LimitError(f"{what} was called with {value}, beyond the limit")
            elif isinstance(value, str) and "%" in value and _FORMAT_NUMBER.search(value):
                raise _LimitError(f"{what} was given a format with a huge width")
            else:
                self.check_size(value, what)

    # The trace function: only the template's own frames are traced line by line.
    def trace(self, frame: FrameType, event: str, _arg: Any) -> Callable[..., Any] | None:
        if event != "call" or frame.f_code.co_filename != _TEMPLATE_FILE:
            return None
        self.depth += 1
        if self.depth > self.limits.depth:
            self.depth -= 1
            raise _LimitError(f"the template nests calls more than {self.limits.depth} deep")
        return self._local

    def _local(self, frame: FrameType, event: str, _arg: Any) -> Callable[..., Any] | None:
        if event == "return":
            self.depth -= 1
        elif event == "line":
            self.lines += 1
            if self.lines % 64 == 0:
                self._check_time()
                self._check_locals(frame)
        return self._local

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitError(f"the template ran longer than {self.limits.seconds:g} s")

    def _check_locals(self, frame: FrameType) -> None:
        for value in frame.f_locals.values():
            self.check_size(value, "the template")


_local = threading.local()


def _guard() -> _Guard | None:
    guard: _Guard | None = getattr(_local, "guard", None)
    return guard


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``a ~ b`` routed through the size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Generation(Extension):
    """Hugging Face's ``{% generation %}…{% endgeneration %}``: renders its body as is."""

    tags = {"generation"}  # noqa: RUF012 - Jinja's own class attribute

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox that raises on unsafe access and bounds every value."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        # The stock sandbox renders x.__class__ as ''; a chat template has no business
        # asking for it, so the template is refused outright.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        guard = _guard() or _Guard(DEFAULT_LIMITS)
        limit = guard.limits.chars
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and _weight(seq, limit) * max(count, 0) > limit
                ):
                    raise _LimitError("the template repeats a sequence beyond the size limit")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > _MAX_INT_BITS
            ):
                raise _LimitError("the template multiplies numbers beyond the limit")
            return operator.mul(left, right)
        if operator_ == "**":
            if isinstance(right, int) and abs(right) > 64:
                raise _LimitError("the template raises a number to a power beyond the limit")
            if isinstance(left, int) and left.bit_length() * 64 > _MAX_INT_BITS:
                raise _LimitError("the template raises a number to a power beyond the limit")
            return operator.pow(left, right)
        if operator_ == "+":
            if _weight(left, limit) + _weight(right, limit) > limit:
                raise _LimitError("the template joins values beyond the size limit")
            return operator.add(left, right)
        if operator_ == "%":
            if isinstance(left, str) and _FORMAT_NUMBER.search(left):
                raise _LimitError("the template formats with a width beyond the limit")
            guard.check_size(right, "'%'")
            return guard.check_size(operator.mod(left, right), "'%'")
        return super().call_binop(context, operator_, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        guard = _guard()
        if guard is not None:
            guard.check_arguments(args, kwargs, _callable_name(__obj))
            # The sandbox hands str.format out wrapped; the string is the wrapped method's.
            method = getattr(__obj, "__wrapped__", __obj)
            owner = getattr(method, "__self__", None)
            if isinstance(owner, str):
                _check_growth(guard, getattr(method, "__name__", ""), owner, args, kwargs)
            if _is_format_method(method) and any(
                isinstance(a, str) and _FORMAT_NUMBER.search(a) for a in (owner, *args)
            ):
                raise _LimitError("the template formats with a width beyond the limit")
        result = super().call(__context, __obj, *args, **kwargs)
        return guard.check_size(result, _callable_name(__obj)) if guard else result

    def bounded_join(self, values: tuple[Any, ...]) -> str:
        """``a ~ b``: the joined text, refused before it is made when it would be too long."""
        guard = _guard() or _Guard(DEFAULT_LIMITS)
        guard.check_size(list(values), "'~'")
        return "".join(str(v) for v in values)

    def bounded_output(self, value: Any) -> Any:
        """What ``{{ … }}`` prints, refused before it becomes text when it is too long."""
        guard = _guard() or _Guard(DEFAULT_LIMITS)
        return guard.check_size(value, "the template's output")


# Filters and str methods whose result grows with an integer argument (a width, an
# indent, a fill): the result is at most the input's size times that number.
_WIDENING = frozenset(
    {"center", "indent", "wordwrap", "ljust", "rjust", "zfill", "expandtabs", "tojson"}
)


def _check_growth(
    guard: _Guard, name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Refuse a call before it runs when its result could pass the size limit."""
    limit = guard.limits.chars
    base = _weight(value, limit)
    if name in _WIDENING:
        widths = [
            a for a in (*args, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)
        ]
        if widths and base * (max(widths) + 1) > limit:
            raise _LimitError(f"{name} would build more than {limit:,} characters")
    elif name == "replace":
        strings = [a for a in (*args, *kwargs.values()) if isinstance(a, str)]
        if len(strings) >= 2:
            old, new = strings[0], strings[1]
            if (base // max(len(old), 1) + 1) * len(new) + base > limit:
                raise _LimitError(f"replace would build more than {limit:,} characters")
    elif name == "join":
        items = args[0] if args else ()
        sep = value if isinstance(value, str) else ""
        if (
            isinstance(items, list | tuple)
            and _weight(items, limit) + len(sep) * len(items) > limit
        ):
            raise _LimitError(f"join would build more than {limit:,} characters")


def _callable_name(obj: Any) -> str:
    name = getattr(obj, "__name__", None) or type(obj).__name__
    return f"{name}()"


def _is_format_method(obj: Any) -> bool:
    return getattr(obj, "__name__", "") in ("format", "format_map") and isinstance(
        getattr(obj, "__self__", None), str
    )


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its integer arguments and its result checked against the limits."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = _guard()
        if guard is None:
            # Outside a render (Jinja folding constants at compile time): fold only
            # what is small; anything else is computed, and checked, at render time.
            guard = _Guard(DEFAULT_LIMITS)
        # Filters that take the context first (pass_context) have the value second.
        first = 1 if args and isinstance(args[0], Context | EvalContext) else 0
        value = args[first] if len(args) > first else None
        guard.check_size(value, f"the {name} filter")
        rest = args[first + 1 :]
        guard.check_arguments(rest, kwargs, f"the {name} filter")
        if name == "join":
            # join(value, separator): the value holds the items, the separator repeats.
            sep = rest[0] if rest else kwargs.get("d", "")
            _check_growth(guard, "join", sep if isinstance(sep, str) else "", (value,), {})
        else:
            _check_growth(guard, name, value, rest, kwargs)
        return guard.check_size(fn(*args, **kwargs), f"the {name} filter")

    return wrapper


def _raise_exception(message: object = "") -> NoReturn:
    # Templates call raise_exception() to reject conversations they cannot format.
    raise TemplateRaisedError(
        f"the chat template rejected the conversation: {short_text(str(message), 200)}"
    )


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(str(fmt)[:200])


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # As Hugging Face renders it: non-ASCII kept, no HTML escaping.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _make_env() -> _BoundedSandbox:
    env = _BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
    )
    env.finalize = env.bounded_output
    env.filters["tojson"] = _tojson
    for name, fn in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, fn)
    # Lorem ipsum has no place in a prompt, and its counts are not bounded.
    env.globals.pop("lipsum", None)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _make_env()
_COMPILE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=32)
def _compiled(source: str) -> Any:
    # Compiling costs milliseconds; a conversation renders the same template every turn.
    return _ENV.from_string(source)


def _refusal(template_name: str, reason: str) -> ChatTemplateError:
    return ChatTemplateError(f"the {template_name} was refused: {short_text(reason, 200)}")


def compile_template(source: str, *, template_name: str = "chat template") -> Any:
    """Compile ``source`` in the bounded sandbox; raise :class:`ChatTemplateError`."""
    if len(source) > DEFAULT_LIMITS.source_chars:
        raise _refusal(template_name, f"{len(source):,} characters of template source")
    try:
        with _COMPILE_LOCK, _rendering(DEFAULT_LIMITS):
            return _compiled(source)
    except ChatTemplateError:
        raise
    except (TemplateError, RecursionError, MemoryError, ValueError, TypeError) as exc:
        raise _refusal(template_name, f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # any failure means this template cannot be used
        raise _refusal(template_name, f"{type(exc).__name__}: {exc}") from None


class _rendering:  # noqa: N801 - used as a context manager
    """Install the guard and its trace function on this thread for one render."""

    def __init__(self, limits: Limits) -> None:
        self.guard = _Guard(limits)
        self._previous: Any = None

    def __enter__(self) -> _Guard:
        self._outer = _guard()
        _local.guard = self.guard
        self._previous = sys.gettrace()
        sys.settrace(self.guard.trace)
        return self.guard

    def __exit__(self, *_: object) -> None:
        sys.settrace(self._previous)
        _local.guard = self._outer


def render_template(
    source: str,
    context: Mapping[str, Any],
    *,
    template_name: str = "chat template",
    limits: Limits = DEFAULT_LIMITS,
) -> str:
    """Render ``source`` with ``context`` within ``limits``; one sentence on any failure.

    Raises :class:`TemplateRaisedError` when the template itself refuses the
    conversation (``raise_exception``) and :class:`ChatTemplateError` for
    anything else.
    """
    template = compile_template(source, template_name=template_name)
    out: list[str] = []
    total = 0
    try:
        with _rendering(limits):
            for chunk in _generate(template, context):
                total += len(chunk)
                if total > limits.chars:
                    raise _LimitError(f"the prompt grew past {limits.chars:,} characters")
                out.append(chunk)
    except TemplateRaisedError:
        raise
    except _LimitError as exc:
        raise _refusal(template_name, str(exc)) from None
    except SecurityError as exc:
        raise _refusal(template_name, f"it tried an unsafe operation: {exc}") from None
    except RecursionError:
        raise _refusal(template_name, "it recurses without end") from None
    except MemoryError:
        raise _refusal(template_name, "it ran out of memory") from None
    except Exception as exc:  # any failure means this template cannot be used
        raise _refusal(template_name, f"{type(exc).__name__}: {exc}") from None
    return "".join(out)


def _generate(template: Any, context: Mapping[str, Any]) -> Iterator[str]:
    yield from template.generate(**context)
