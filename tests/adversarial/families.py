"""The attack families, and one function that builds and runs any of them.

Each family module has ``FAMILY`` (its name) and ``cases(assets, rng, long)``; a
family's random cases come from ``random.Random(f"{seed}:{family}")``, so a seed
reproduces them exactly. The fast subset (``long=False``) is what the pytest suite
runs; ``long=True`` is the long run of ``run_attacks.py --long``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests.adversarial import (
    disk_attacks,
    folder_attacks,
    gguf_attacks,
    known_attacks,
    signal_attacks,
    terminal_attacks,
)
from tests.adversarial.assets import Assets
from tests.adversarial.harness import Case, Result, Runner

MODULES: tuple[ModuleType, ...] = (
    gguf_attacks,
    terminal_attacks,
    folder_attacks,
    disk_attacks,
    signal_attacks,
    known_attacks,
)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Assets, random.Random, bool], list[Case]]


def _families() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for module in MODULES:
        names = getattr(module, "FAMILIES", None) or {module.FAMILY: module.cases}
        for name, build in names.items():
            out[name] = Family(name, build)
    return out


FAMILIES = _families()


def build_cases(names: Sequence[str], assets: Assets, *, seed: int, long: bool) -> list[Case]:
    cases: list[Case] = []
    for name in names:
        rng = random.Random(f"{seed}:{name}")
        cases += FAMILIES[name].build(assets, rng, long)
    return cases


def run_families(
    names: Sequence[str],
    root: Path,
    *,
    seed: int = 0,
    long: bool = False,
    jobs: int = 2,
    keep: bool = False,
    starter: Path | None = None,
    select: Callable[[Case], bool] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Build the cases of ``names`` and run them under ``root``."""
    assets = Assets(root, starter=starter)
    cases = build_cases(names, assets, seed=seed, long=long)
    if select is not None:
        cases = [c for c in cases if select(c)]
    runner = Runner(root, jobs=jobs, keep=keep, fill_sentinel=assets.fill_sentinel)
    return runner.run(cases, on_result=on_result)
