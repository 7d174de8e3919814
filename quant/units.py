"""Numbers for people, the same in the CLI and the GUI: sizes, rates, parameter counts, ages."""

from __future__ import annotations

import time

GIB = 1024**3
MIB = 1024**2

_DAY = 86_400.0


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_rate(value: float) -> str:
    """A rate for people: ``1,050``, ``64``, ``7.5``, ``0.42`` — never ``1.05e+03``."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def format_params(n: int | None, *, short: bool = False) -> str:
    """A parameter count the way model cards write it: ``268.1M``, ``8.03B``, ``30.5B``, ``405B``.

    Billions and trillions keep three significant digits, millions and thousands one
    decimal. ``short`` is for table cells and chips: one decimal below 100, none
    above (``268M``, ``8.0B``). ``—`` when unknown (None or 0).
    """
    if not n:
        return "—"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n < div:
            continue
        value = n / div
        if short:
            return f"{value:.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"
        if unit in ("M", "K"):
            return f"{value:.1f}{unit}"
        if value >= 100:
            return f"{value:.0f}{unit}"
        return f"{value:.1f}{unit}" if value >= 10 else f"{value:.2f}{unit}"
    return str(n)


def format_count(n: int | None) -> str:
    """A count of downloads or likes: ``950``, ``1.2k``, ``12k``, ``4.1M``."""
    if n is None:
        return "—"
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def format_ago(when: float, now: float | None = None) -> str:
    """How long ago a Unix time was: ``just now``, ``5 min ago``, ``3 h ago``, ``yesterday``,
    ``12 days ago``, then the local date (``2024-03-01``) from 30 days on."""
    age = (time.time() if now is None else now) - when
    if age < 60:
        return "just now"
    if age < 3600:
        return f"{int(age // 60)} min ago"
    if age < _DAY:
        return f"{int(age // 3600)} h ago"
    days = int(age // _DAY)
    if days < 30:
        return "yesterday" if days == 1 else f"{days} days ago"
    return time.strftime("%Y-%m-%d", time.localtime(when))


def format_last_used(when: float | None, now: float | None = None) -> str:
    """When a model was last used: :func:`format_ago`, or ``never``."""
    return "never" if not when else format_ago(when, now)
