"""GBNF grammars from JSON schemas, for structured output and tool calls.

The conversion is llama-cpp-python's (:mod:`llama_cpp.llama_grammar`, a port of
llama.cpp's ``json_schema_to_grammar``): ``$ref``, ``anyOf``/``oneOf``,
``enum``/``const``, nested objects and arrays, ``minItems``/``maxItems``,
string lengths and formats. Objects allow no properties beyond those listed
unless the schema says ``additionalProperties``; optional properties may be
left out. It is imported only when a grammar is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from quant.errors import QuantError


class SchemaError(QuantError):
    """A JSON schema that cannot become a grammar."""


# Any JSON object: what response_format {"type": "json_object"} asks for.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _converter(prop_order: Sequence[str]) -> Any:
    import importlib

    grammar: Any = importlib.import_module("llama_cpp.llama_grammar")
    return grammar.SchemaConverter(
        prop_order={name: i for i, name in enumerate(prop_order)},
        allow_fetch=False,
        dotall=False,
        raw_pattern=False,
    )


def schema_rules(schema: Mapping[str, Any], name: str, *, prop_order: Sequence[str] = ()) -> str:
    """GBNF rules for ``schema``, its top rule called ``name`` (no ``root`` rule unless
    ``name`` is ``root``). Raises :class:`SchemaError` for a schema the converter refuses."""
    conv = _converter(prop_order)
    try:
        resolved = conv.resolve_refs(json.loads(json.dumps(schema)), "request")
        conv.visit(resolved, "" if name == "root" else name)
        return str(conv.format_grammar())
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
        raise SchemaError(f"the JSON schema cannot be turned into a grammar ({exc})") from None
    except Exception as exc:  # the converter raises bare Exceptions for unsupported parts
        raise SchemaError(f"the JSON schema cannot be turned into a grammar ({exc})") from None


def json_grammar(schema: Mapping[str, Any] | None = None) -> str:
    """A grammar whose text is one JSON value valid against ``schema`` (any object if None)."""
    return schema_rules(schema if schema is not None else ANY_OBJECT, "root")
