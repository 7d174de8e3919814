"""``quantdesk inspect MODEL``: model facts from headers only.

MODEL is a GGUF file, a Hugging Face model folder, a bare ``config.json`` or a
hub repo id. ``--json`` prints the object documented in ``docs/formats.md``;
``--tensors`` adds the per-tensor list to either form.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from app.core.commands.common import (
    NAME_LIMIT,
    TEXT_LIMIT,
    human_bytes,
    print_json,
    resolve_model_arg,
)
from quant.facts import ModelFacts, inspect_model
from quant.units import format_params
from quant.untrusted import short_text, terminal_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="model facts from headers only (GGUF, HF folder, config.json, hub repo id)",
        description="Show what a model is: architecture, parameters, layers, heads, "
        "vocabulary, context, sliding-window layers, experts, file type and bits per "
        "weight. Only headers are read; hub repos are looked up without downloading "
        "weights.",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a .gguf file, an HF model folder, a config.json, org/name, or 'starter'",
    )
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    parser.add_argument(
        "--tensors", action="store_true", help="also list every tensor (name, type, shape, size)"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never contact the hub (a repo id then fails with a message)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    facts = inspect_model(resolve_model_arg(args.model), offline=True if args.offline else None)
    if args.json:
        print_json(facts.to_dict(with_tensors=args.tensors))
    else:
        write_summary(facts, sys.stdout, with_tensors=args.tensors)
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_rows(facts: ModelFacts) -> list[tuple[str, str]]:
    """The label/value rows of the human summary, in display order.

    Names the file sets (architecture, tokenizer, license) are cut to a name's length.
    """
    rows: list[tuple[str, str]] = [
        ("source", f"{facts.source} ({facts.kind.value})"),
        ("architecture", short_text(facts.architecture, NAME_LIMIT)),
    ]
    params = f"{format_params(facts.parameters)} ({facts.parameters:,})"
    rows.append(("parameters", params))
    if facts.is_moe:
        active = facts.active_parameters
        rows.append(
            (
                "experts",
                f"{facts.n_experts}, {facts.n_experts_used} used per token; "
                f"{format_params(active)} active parameters",
            )
        )
    rows.append(("layers", str(facts.n_layers)))
    kv = _plural(facts.n_kv_heads, "KV head")
    if facts.n_kv_heads_per_layer:
        kv = f"{min(facts.n_kv_heads_per_layer)} to {max(facts.n_kv_heads_per_layer)} KV heads"
    head_dim = str(facts.head_dim)
    if facts.head_dim_v and facts.head_dim_v != facts.head_dim:
        head_dim = f"{facts.head_dim} (values {facts.head_dim_v})"
    rows.append(("attention", f"{_plural(facts.n_heads, 'head')}, {kv}, head dim {head_dim}"))
    ffn = f", feed-forward {facts.feed_forward_length:,}" if facts.feed_forward_length else ""
    rows.append(("embedding", f"{facts.embedding_length:,}{ffn}"))
    tokenizer = (
        f" ({short_text(facts.tokenizer_model, NAME_LIMIT)})" if facts.tokenizer_model else ""
    )
    rows.append(("vocabulary", f"{facts.vocab_size:,}{tokenizer}"))
    rows.append(("context", f"{facts.context_length:,} tokens" if facts.context_length else "—"))
    if facts.swa_layers and facts.sliding_window:
        rows.append(
            (
                "sliding window",
                f"{facts.sliding_window:,} tokens in {facts.n_swa_layers} of "
                f"{len(facts.swa_layers)} layers",
            )
        )
    else:
        rows.append(("sliding window", "none (full attention in every layer)"))
    if facts.file_type:
        bpw = (
            f", {facts.bits_per_weight:.2f} bits per weight"
            if facts.bits_per_weight is not None
            else ""
        )
        rows.append(("file type", f"{facts.file_type}{bpw}"))
    if facts.file_size_bytes:
        rows.append(("size", f"{human_bytes(facts.file_size_bytes)} ({facts.file_size_bytes:,} B)"))
    if facts.tensor_types:
        rows.append(
            (
                "tensor types",
                ", ".join(
                    f"{t.type} ×{t.n_tensors} ({human_bytes(t.n_bytes)})"
                    for t in facts.tensor_types
                ),
            )
        )
    rows.append(("tokenizer", "yes" if facts.has_tokenizer else "no"))
    rows.append(("chat template", "yes" if facts.has_chat_template else "no"))
    rows.append(("tied embeddings", "yes" if facts.tied_embeddings else "no"))
    if facts.license:
        rows.append(("license", short_text(facts.license, NAME_LIMIT)))
    return rows


def _tensor_lines(facts: ModelFacts) -> Iterable[str]:
    rows = [
        (terminal_text(t.name, NAME_LIMIT), terminal_text(t.type, NAME_LIMIT), t)
        for t in facts.tensors
    ]
    width = max((len(name) for name, _, _ in rows), default=4)
    yield f"  {'name':<{width}}  {'type':<8}  {'shape':<24}  size"
    for name, typ, t in rows:
        shape = "×".join(str(d) for d in t.shape)
        yield f"  {name:<{width}}  {typ:<8}  {shape:<24}  {human_bytes(t.n_bytes)}"


def write_summary(facts: ModelFacts, out: TextIO, *, with_tensors: bool = False) -> None:
    """The facts for a terminal. Names, metadata and notes come from the file or the hub,
    so each is shown through :func:`~quant.untrusted.terminal_text`."""
    out.write(f"{terminal_text(facts.name)}\n")
    rows = summary_rows(facts)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"  {label:<{width}}  {terminal_text(value, TEXT_LIMIT)}\n")
    if facts.remote_files:
        out.write(f"GGUF files on the hub ({len(facts.remote_files)}):\n")
        for r in facts.remote_files:
            ftype = terminal_text(r.file_type or "?", NAME_LIMIT)
            out.write(
                f"  {terminal_text(r.filename, NAME_LIMIT)}  {ftype}  {human_bytes(r.size_bytes)}\n"
            )
    if facts.notes:
        out.write("notes:\n")
        for note in facts.notes:
            out.write(f"  - {terminal_text(note, TEXT_LIMIT)}\n")
    if with_tensors and facts.tensors:
        out.write(f"tensors ({len(facts.tensors)}):\n")
        for line in _tensor_lines(facts):
            out.write(line + "\n")
