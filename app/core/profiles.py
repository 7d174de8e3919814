"""Hardware profiles: this machine's, and the saved ones a plan can be made for.

A profile is what :func:`quant.hardware.probe.probe` finds, or what ``quantdesk hw
--json`` (or the Machine page's "Save profile…") wrote for another machine. The
CLI's ``--hardware FILE`` and the GUI's "Plan for" both end in
:func:`profile_for`; the GUI also remembers the saved profiles a user loaded, to
offer them again (:func:`recent_profile_files`).

Probing and reading files take time: call these off the GUI thread, except the
two settings helpers, which only touch the settings in memory and save them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.core.settings import Settings
from quant.atomic import atomic_write_text
from quant.hardware.profile import HardwareProfile
from quant.progress import CancelToken, ProgressCallback, check_cancel

logger = logging.getLogger(__name__)

RECENT_PROFILES_KEY = "recent_profiles"  # in the "hardware" settings section
MAX_RECENT = 8
#: What a plan made with the probed profile says it is for.
THIS_MACHINE = "this machine"


def probe_this_machine(
    *,
    use_cache: bool = True,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> HardwareProfile:
    """Probe this machine, memory bandwidth included (cached for 30 days unless ``use_cache``
    is False)."""
    from quant.hardware.probe import probe

    return probe(
        measure_bandwidth=True, use_cache=use_cache, on_progress=on_progress, cancel=cancel
    )


def load_profile(path: str | Path) -> HardwareProfile:
    """A profile saved by ``quantdesk hw --json``; raises HardwareProfileError with a sentence."""
    return HardwareProfile.load(path)


def save_profile(profile: HardwareProfile, path: str | Path) -> Path:
    """Write ``profile`` whole or not at all; a name without ``.json`` gets it. Returns the file."""
    target = Path(path)
    if target.suffix.lower() != ".json":
        target = target.with_name(target.name + ".json")
    atomic_write_text(target, profile.to_json() + "\n")
    return target


def profile_for(
    path: str | Path | None = None,
    *,
    probed: HardwareProfile | None = None,
    cancel: CancelToken | None = None,
) -> HardwareProfile:
    """The machine to plan for: the saved profile at ``path``; else ``probed`` (a probe
    already made); else a probe of this machine (bandwidth from the cache when fresh)."""
    if path is not None:
        return load_profile(path)
    if probed is not None:
        return probed
    check_cancel(cancel)
    return probe_this_machine(use_cache=True, cancel=cancel)


def profile_name(path: str | Path | None) -> str:
    """How a plan names its machine: the saved profile's file name, or "this machine"."""
    return Path(path).name if path is not None else THIS_MACHINE


def remember_profile_file(settings: Settings, path: Path) -> None:
    """Put ``path`` first in the list of saved profiles offered for planning."""
    section = settings.section("hardware")
    recent = [str(p) for p in section.get(RECENT_PROFILES_KEY, []) if str(p) != str(path)]
    section[RECENT_PROFILES_KEY] = [str(path), *recent][:MAX_RECENT]
    try:
        settings.save()
    except OSError as exc:
        logger.warning("could not save settings: %s", exc)


def recent_profile_files(settings: Settings) -> list[Path]:
    """The saved profiles a user loaded, most recent first."""
    value = settings.section("hardware").get(RECENT_PROFILES_KEY, [])
    return [Path(str(p)) for p in value] if isinstance(value, list) else []
