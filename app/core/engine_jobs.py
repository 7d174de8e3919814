"""How the app starts the engine's child-process jobs (``python -m quant JOB …``).

One place for the command line and environment, used by the GUI's job runner
(app/workers/process_job.py) and by Qt-free callers such as the chat's load probe.
A frozen bundle has no ``-m``: its executable runs the job entry point for
:data:`JOB_FLAG` (app/__main__.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

JOB_FLAG = "--run-engine-job"


def engine_root() -> Path:
    """The folder that holds the ``quant`` package (put on the child's PYTHONPATH)."""
    import quant

    return Path(quant.__file__).resolve().parents[1]


def job_command(python: str | None = None) -> list[str]:
    """How to start ``python -m quant`` here."""
    exe = python or sys.executable
    if getattr(sys, "frozen", False) and exe == sys.executable:
        return [exe, JOB_FLAG]
    return [exe, "-m", "quant"]


def job_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: this one, with the engine importable and output unbuffered."""
    env = dict(os.environ if base is None else base)
    root = str(engine_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
