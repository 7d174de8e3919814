"""Where the data files in ``resources/`` are: beside the packages in a checkout or an
install, at the top of a desktop bundle.

A PyInstaller bundle unpacks its data under ``sys._MEIPASS``, where
packaging/quantdesk.spec puts ``resources/``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    """The ``resources/`` folder."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"
