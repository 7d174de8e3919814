"""``quantdesk recommend``: which format to run a model in, on this machine or another."""

from __future__ import annotations

import argparse
import logging

from app.core.advice import advise
from app.core.commands.common import (
    NAME_LIMIT,
    TEXT_LIMIT,
    add_hardware_arg,
    human_bytes,
    positive_tokens,
    print_json,
    resolve_model_arg,
)
from quant.plan.advisor import Option, Recommendation, Task
from quant.plan.memory import KvType
from quant.plan.quality import quality_cell
from quant.units import format_params, format_rate
from quant.untrusted import terminal_text

logger = logging.getLogger(__name__)

# Options the table shows unless --all is given.
DEFAULT_ROWS = 12


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "recommend",
        help="rank the formats to run a model in, with memory, speed and quality",
        description="Rank the ways to run MODEL on this machine (or the one in --hardware): "
        "llama.cpp GGUF types and, on NVIDIA GPUs, serving formats (FP8, INT8, AWQ, GPTQ), "
        "each with the memory it takes, predicted tokens per second, predicted quality loss, "
        "and the reasons for its rank.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a GGUF file, a Hugging Face model folder, a config.json, a hub repo id, "
        "or 'starter' for the bundled model",
    )
    p.add_argument(
        "--task",
        choices=[t.value for t in Task],
        default=Task.CHAT.value,
        help="what the model is for (default: chat); code, math and long-context "
        "prefer 8-bit weights",
    )
    p.add_argument(
        "--ctx",
        type=positive_tokens,
        metavar="N",
        help="context length in tokens (default: 4096; 16384 for retrieval, "
        "32768 for long-context; never above the model's trained context)",
    )
    p.add_argument(
        "--kv",
        choices=[k.value for k in KvType],
        default=KvType.F16.value,
        help="KV cache type (default: f16); q8_0 halves it with little loss",
    )
    p.add_argument(
        "--training-tokens",
        type=float,
        metavar="N",
        help="tokens the model was trained on (e.g. 15e12), to sharpen the quality estimate",
    )
    p.add_argument("--all", action="store_true", help="show every option, too large ones too")
    add_hardware_arg(p)
    p.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    advice = advise(
        resolve_model_arg(args.model),
        profile_path=args.hardware,
        task=Task(args.task),
        ctx=args.ctx,
        kv_type=KvType(args.kv),
        training_tokens=args.training_tokens,
    )
    rec = advice.recommendation
    if args.json:
        data = rec.to_dict()
        for o, d in zip(rec.options, data["options"], strict=True):
            d["serving_command"] = advice.serving_command(o)
            local = advice.local_file(o)
            d["local_path"] = str(local) if local is not None else None
        print_json(data)
    else:
        print(render(rec, show_all=args.all, commands=advice.serving_commands))
    return 0


def _speed(o: Option) -> str:
    s = o.speed
    return f"{format_rate(s.generation_low)}–{format_rate(s.generation_high)}"


def _kld(o: Option) -> str:
    return quality_cell(o.quality)


def _top1(o: Option) -> str:
    t = o.quality.same_top_token
    return "—" if t is None else f"{100 * t:.0f}%"


def render(
    rec: Recommendation, *, show_all: bool = False, commands: dict[str, str] | None = None
) -> str:
    """The recommendation as a table and the reasons for the top pick (and, on a machine
    with two lanes, the best option that runs in Quantdesk's chat)."""
    model = terminal_text(rec.model, NAME_LIMIT)
    lines = [
        f"Model:    {model} ({format_params(rec.parameters)} parameters)",
        f"Machine:  {terminal_text(rec.hardware, TEXT_LIMIT)}",
        f"Task:     {rec.task.value}, {rec.ctx} tokens of context, {rec.kv_type.value} KV cache",
        "",
        terminal_text(rec.summary, TEXT_LIMIT),
        "",
    ]
    shown = list(rec.options) if show_all else [o for o in rec.options if o.fits]
    hidden = len(rec.options) - len(shown)
    if not show_all:
        if not shown:
            shown = list(rec.options[:5])
            hidden = len(rec.options) - len(shown)
        elif len(shown) > DEFAULT_ROWS:
            hidden += len(shown) - DEFAULT_ROWS
            shown = shown[:DEFAULT_ROWS]
    header = (
        "#",
        "RUNS",
        "TYPE",
        "FIT",
        "GPU LAYERS",
        "RAM",
        "VRAM",
        "GEN TOK/S",
        "PROMPT TOK/S",
        "KLD",
        "TOP-1",
    )
    rows = [header]
    for o in shown:
        layers = f"{o.gpu_layers}/{o.n_layers + 1}" if o.gpu_layers else "0"
        name = terminal_text(o.label, NAME_LIMIT) + (
            "" if not o.filename or o.source.value != "hub-file" else " ⭳"
        )
        rows.append(
            (
                str(o.rank),
                o.engine.short,
                name,
                o.fit.label,
                layers,
                human_bytes(o.ram_bytes),
                human_bytes(o.vram_bytes) if o.vram_bytes else "—",
                _speed(o),
                format_rate(o.speed.prompt),
                _kld(o),
                _top1(o),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    if hidden:
        lines.append(f"({hidden} more option{'s' if hidden != 1 else ''}; --all lists them)")
    hub = [o for o in shown if o.source.value == "hub-file" and o.filename]
    if hub:
        lines.append("⭳ a file the repository already has:")
        lines.extend(
            f"  {terminal_text(o.label, NAME_LIMIT)}: {terminal_text(o.filename, NAME_LIMIT)}"
            for o in hub
        )
    top = rec.top
    if top is not None:
        lines += ["", f"Why {terminal_text(top.label, NAME_LIMIT)} ({top.fit.label}):"]
        lines += [f"  - {terminal_text(reason, TEXT_LIMIT)}" for reason in top.reasons]
        command = (commands or {}).get(top.key)
        if command:
            lines += ["", "Serve it with:", f"  {terminal_text(command, TEXT_LIMIT)}"]
        here = rec.best_here
        if here is not None and here.key != top.key:
            lines += [
                "",
                f"To chat in Quantdesk now: {terminal_text(here.label, NAME_LIMIT)} "
                f"({here.fit.label}), {_speed(here)} tokens/s, "
                f"{format_rate(here.speed.prompt)} prompt tokens/s.",
            ]
    if rec.suggestions:
        lines += ["", "What would fit:"]
        lines += [f"  - {terminal_text(s, TEXT_LIMIT)}" for s in rec.suggestions]
    if rec.notes:
        lines += ["", "Notes:"]
        lines += [f"  - {terminal_text(n, TEXT_LIMIT)}" for n in rec.notes]
    return "\n".join(lines)
