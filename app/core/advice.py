"""Which format to run a model in: the advice sequence behind ``quantdesk recommend``
and the Advisor page.

Choose the machine (a saved profile, a probe already made, or a fresh probe),
read the model's facts from its headers, gather every quality measurement of
the model (report cards and convert reports: :func:`app.core.quality.evidence_for`),
and rank every way to run it (:func:`quant.plan.advisor.recommend`). Options a
serving engine runs come with the ``vllm serve`` command where one can be
written without asking the hub (a 16-bit or FP8 serve of a hub repo or a model
folder); options naming a hub repo's GGUF file say when that file is already
here. Reading a hub repo's facts uses the network and probing takes seconds:
call :func:`advise` off the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.core.chat.settings import LoadPlan
from app.core.profiles import profile_for, profile_name
from quant.facts.model import ModelFacts, SourceKind
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Engine, Option, OptionSource, Recommendation, Task, recommend
from quant.plan.formats import GpuFormat
from quant.plan.memory import KvType
from quant.plan.quality import QualityEvidence
from quant.progress import CancelToken, Progress, ProgressCallback, check_cancel

#: Reads a model's facts from a path or hub repo id (``quant.facts.inspect_model``).
InspectFn = Callable[[str], ModelFacts]


def inspect_source(source: str | Path) -> ModelFacts:
    """The model's facts from its headers: a GGUF file, an HF folder, a config.json or a
    hub repo id. (``quant.facts`` is imported on first use: see app.core.runtime.)"""
    from quant.facts import inspect_model

    facts: ModelFacts = inspect_model(source)
    return facts


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Advice:
    """A model's facts, the machine it was planned for, and the ranked options."""

    facts: ModelFacts
    recommendation: Recommendation
    profile: HardwareProfile
    #: "this machine", or the saved profile's file name.
    profile_name: str
    #: The ``vllm serve`` command of a serving option, by option key, where one is known.
    serving_commands: dict[str, str] = field(default_factory=dict)
    #: Hub files of the options that are already on this machine, by option key.
    local_files: dict[str, Path] = field(default_factory=dict)

    def serving_command(self, option: Option) -> str | None:
        return self.serving_commands.get(option.key)

    def local_file(self, option: Option) -> Path | None:
        return self.local_files.get(option.key)


def model_reference(facts: ModelFacts) -> str | None:
    """What a serving engine loads for this model: its hub repo id or its model folder."""
    if facts.kind is SourceKind.HUB and facts.source:
        return facts.source
    if facts.kind is SourceKind.HF_FOLDER and facts.source:
        return facts.source
    if facts.kind is SourceKind.CONFIG and facts.source:
        return str(Path(facts.source).parent)
    return None


def serving_commands(rec: Recommendation, facts: ModelFacts) -> dict[str, str]:
    """The ``vllm serve`` line of each BF16 and FP8 option (vLLM quantizes to FP8 as it loads);
    other formats need a checkpoint made in them (found on the hub from the Advisor)."""
    ref = model_reference(facts)
    if ref is None:
        return {}
    from app.core.hub import serving_command

    out: dict[str, str] = {}
    for o in rec.options:
        if o.engine is not Engine.SERVING:
            continue
        if o.file_type == GpuFormat.BF16.value:
            out[o.key] = serving_command(ref, GpuFormat.BF16, ctx=o.ctx)
        elif o.file_type == GpuFormat.FP8.value:
            out[o.key] = serving_command(ref, GpuFormat.FP8, ctx=o.ctx) + " --quantization fp8"
    return out


def local_hub_files(rec: Recommendation, facts: ModelFacts) -> dict[str, Path]:
    """The options' hub files that are complete in the Hugging Face cache already."""
    if facts.kind is not SourceKind.HUB or not facts.source:
        return {}
    from app.core.downloads import cached_hub_file

    out: dict[str, Path] = {}
    for o in rec.options:
        if o.source is OptionSource.HUB_FILE and o.filename:
            try:
                found = cached_hub_file(facts.source, o.filename)
            except (OSError, ValueError) as exc:
                logger.info("cache not checked for %s: %s", o.filename, exc)
                found = None
            if found is not None:
                out[o.key] = found
    return out


def quality_evidence(facts: ModelFacts, source: str) -> QualityEvidence:
    """Measurements of ``facts``'s model (and the file's own card when it is a local file)."""
    from app.core.quality import evidence_for

    path = Path(source) if facts.kind is SourceKind.GGUF else None
    try:
        return evidence_for(facts, path=path)
    except OSError as exc:
        logger.warning("quality measurements not read: %s", exc)
        return QualityEvidence()


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
        # Planned as the Chat page loads a model by default (flash attention on).
        options=LoadPlan(kv_type=kv_type).runtime_options(),
        quality=quality_evidence(facts, source),
        on_progress=on_progress,
        cancel=cancel,
    )
    return Advice(
        facts,
        rec,
        machine,
        profile_name(profile_path),
        serving_commands=serving_commands(rec, facts),
        local_files=local_hub_files(rec, facts),
    )
