"""The numbers the CLI and the GUI both show, written one way."""

from __future__ import annotations

import time

import pytest

from quant.units import (
    format_ago,
    format_count,
    format_last_used,
    format_params,
    format_rate,
    human_bytes,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (268_098_176, "268.1M"),
        (3_090_000_000, "3.09B"),
        (8_030_261_248, "8.03B"),
        (30_532_122_624, "30.5B"),
        (405_000_000_000, "405B"),
        (1_200_000_000_000, "1.20T"),
        (12_500, "12.5K"),
        (512, "512"),
        (None, "—"),
        (0, "—"),
    ],
)
def test_parameter_counts_read_like_model_cards(n: int | None, text: str) -> None:
    assert format_params(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(268_098_176, "268M"), (8_030_261_248, "8.0B"), (30_532_122_624, "30.5B"), (None, "—")],
)
def test_short_parameter_counts_fit_a_table_cell(n: int | None, text: str) -> None:
    assert format_params(n, short=True) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [(1050.4, "1,050"), (123.4, "123"), (64.4, "64"), (12.3, "12"), (7.54, "7.5"), (0.42, "0.42")],
)
def test_rates_never_use_scientific_notation(rate: float, text: str) -> None:
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(950, "950"), (1_234, "1.2k"), (12_345, "12k"), (4_100_000, "4.1M"), (None, "—")],
)
def test_download_counts(n: int | None, text: str) -> None:
    assert format_count(n) == text


def test_ages_the_way_people_say_them() -> None:
    now = 1_700_000_000.0
    assert format_ago(now - 5, now) == "just now"
    assert format_ago(now - 5 * 60, now) == "5 min ago"
    assert format_ago(now - 3 * 3600, now) == "3 h ago"
    assert format_ago(now - 86_400 - 60, now) == "yesterday"
    assert format_ago(now - 12 * 86_400, now) == "12 days ago"
    old = now - 90 * 86_400
    assert format_ago(old, now) == time.strftime("%Y-%m-%d", time.localtime(old))


def test_a_model_never_used_says_so() -> None:
    assert format_last_used(None) == "never"
    assert format_last_used(time.time()) == "just now"


def test_sizes() -> None:
    assert human_bytes(None) == "—"
    assert human_bytes(512) == "512 B"
    assert human_bytes(253 * 1024**2) == "253.0 MiB"
