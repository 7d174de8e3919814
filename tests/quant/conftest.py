"""Fixtures of the quantization tests: an F16 Gemma 3 270M made from the starter model.

The starter model ships as Q4_K_M. Dequantizing it with gguf-py gives a real
F16 model (about 540 MB) of the same architecture and vocabulary, which the
imatrix, quantize and evaluate stages start from. It is made once per test
session. Calibration and evaluation in these tests use a few short chunks so
each stage takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp  # noqa: F401  - before gguf (see app/core/runtime.py)
import pytest

# Small stages for tests: enough tokens to exercise every code path.
CHUNK = 128
IMATRIX_CHUNKS = 2
EVAL_CHUNKS = 2


@pytest.fixture(scope="session")
def f16_model(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from quant.jobs.dequantize import dequantize_gguf

    out = tmp_path_factory.mktemp("f16") / "gemma-3-270m-F16.gguf"
    return dequantize_gguf(starter_model, out)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by the tests of a session (imatrix, reference logits)."""
    return tmp_path_factory.mktemp("qcache")
