"""Which format to run a model in: the advice sequence behind ``quantdesk recommend``
and the Advisor page.

Choose the machine (a saved profile, a probe already made, or a fresh probe),
read the model's facts from its headers, and rank every way to run it
(:func:`quant.plan.advisor.recommend`). Reading a hub repo's facts uses the
network and probing takes seconds: call :func:`advise` off the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.core.profiles import profile_for, profile_name
from quant.facts.model import ModelFacts
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Recommendation, Task, recommend
from quant.plan.memory import KvType
from quant.progress import CancelToken, Progress, ProgressCallback, check_cancel

#: Reads a model's facts from a path or hub repo id (``quant.facts.inspect_model``).
InspectFn = Callable[[str], ModelFacts]


def inspect_source(source: str | Path) -> ModelFacts:
    """The model's facts from its headers: a GGUF file, an HF folder, a config.json or a
    hub repo id. (``quant.facts`` is imported on first use: see app.core.runtime.)"""
    from quant.facts import inspect_model

    facts: ModelFacts = inspect_model(source)
    return facts


@dataclass(frozen=True)
class Advice:
    """A model's facts, the machine it was planned for, and the ranked options."""

    facts: ModelFacts
    recommendation: Recommendation
    profile: HardwareProfile
    #: "this machine", or the saved profile's file name.
    profile_name: str


def advise(
    source: str,
    *,
    profile: HardwareProfile | None = None,
    profile_path: str | Path | None = None,
    task: Task = Task.CHAT,
    ctx: int | None = None,
    kv_type: KvType = KvType.F16,
    training_tokens: float | None = None,
    inspect: InspectFn | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Advice:
    """Inspect ``source`` and rank its options for the chosen machine.

    The machine is the saved profile at ``profile_path`` when given, else
    ``profile`` (a probe already made), else a fresh (cached) probe of this one.
    ``ctx`` None (or 0) is the task's default context.
    """
    machine = profile_for(profile_path, probed=profile, cancel=cancel)
    check_cancel(cancel)
    if on_progress:
        on_progress(Progress("advisor", 0, 0, f"Reading {Path(source).name or source}…"))
    facts = (inspect or inspect_source)(source)
    check_cancel(cancel)
    rec = recommend(
        facts,
        machine,
        task=task,
        ctx=ctx or None,
        kv_type=kv_type,
        training_tokens=training_tokens,
        on_progress=on_progress,
        cancel=cancel,
    )
    return Advice(facts, rec, machine, profile_name(profile_path))
