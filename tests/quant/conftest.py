"""Fixtures of the quantization tests.

The imatrix, quantize and evaluate stages start from ``f16_model`` (tests/conftest.py),
a real F16 Gemma 3 270M made once per session from the starter model. Calibration
and evaluation in these tests use a few short chunks so each stage takes seconds.
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
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by the tests of a session (imatrix, reference logits)."""
    return tmp_path_factory.mktemp("qcache")
