"""The longest context that fits: the advisor and chat give the same answer."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from app.core.chat.session import estimate_fit
from app.core.chat.settings import FlashAttention, LoadPlan
from quant.facts import inspect_model
from quant.facts.model import ModelFacts
from quant.plan.advisor import Task, recommend
from tests.test_advisor_file_option import machine


@pytest.fixture(scope="module")
def starter_facts(starter_model: Path) -> ModelFacts:
    return inspect_model(starter_model)


@pytest.mark.parametrize("ram_gib", [0.4, 0.6, 0.9])
def test_advisor_and_chat_agree_on_the_longest_context(
    starter_model: Path, starter_facts: ModelFacts, ram_gib: float
) -> None:
    """Same model (the starter is a Q4_K_M), same machine: the advisor's "a shorter
    context would fit" and chat's suggestion for a plan that does not fit name one
    context, and it is exact: it fits, 256 tokens more does not."""
    profile = machine(ram_gib=ram_gib)
    ram = profile.memory.available_bytes
    rec = recommend(starter_facts, profile, task=Task.CHAT, ctx=32768)
    said = [
        re.search(r"A shorter context \((\d+) tokens\) would let Q4_K_M fit", s)
        for s in rec.suggestions
    ]
    advisor_ctx = next(int(m.group(1)) for m in said if m)

    # The advisor's runtime defaults: flash attention off, batches of 512.
    plan = LoadPlan(n_ctx=32768, flash_attention=FlashAttention.OFF, n_threads=1)
    report = estimate_fit(
        starter_model, plan, profile=profile, facts=starter_facts, available_ram=ram
    )
    assert not report.fits
    assert report.suggestion is not None
    assert report.suggestion.n_ctx == advisor_ctx
    assert f"try a context of {advisor_ctx:,} tokens" in report.message

    fits = estimate_fit(
        starter_model, report.suggestion, profile=profile, facts=starter_facts, available_ram=ram
    )
    assert fits.fits
    longer = replace(report.suggestion, n_ctx=advisor_ctx + 256)
    assert not estimate_fit(
        starter_model, longer, profile=profile, facts=starter_facts, available_ram=ram
    ).fits
