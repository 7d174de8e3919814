"""Quality measurement: KL divergence, perplexity, top-token agreement, cached reference."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from quant.jobs.calibration import Split, default_mix
from quant.jobs.evaluate import (
    ReferenceLogits,
    compute_reference,
    evaluate,
    kl_divergence,
    log_softmax,
)
from tests.quant.conftest import CHUNK, EVAL_CHUNKS


def test_kl_divergence_of_known_distributions() -> None:
    p = np.log(np.array([[0.5, 0.5, 0.0 + 1e-300], [0.9, 0.05, 0.05]]))
    q = np.log(np.array([[0.25, 0.75, 1e-300], [0.9, 0.05, 0.05]]))
    kl = kl_divergence(p, q)
    want0 = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert kl[0] == pytest.approx(want0, rel=1e-9)
    assert kl[1] == pytest.approx(0.0, abs=1e-12)


def test_log_softmax_rows_normalise() -> None:
    x = np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    lp = log_softmax(x)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), [1.0, 1.0])


@pytest.fixture(scope="module")
def reference(f16_model: Path, session_cache: Path) -> ReferenceLogits:
    return compute_reference(
        f16_model,
        default_mix(Split.HELD_OUT),
        chunk_size=CHUNK,
        max_chunks=EVAL_CHUNKS,
        cache_dir=session_cache / "reference",
    )


def test_reference_is_cached_and_reloaded(
    reference: ReferenceLogits, f16_model: Path, session_cache: Path
) -> None:
    assert reference.n_scored == EVAL_CHUNKS * (CHUNK - CHUNK // 2 - 1)
    assert reference.full_logp.shape == (reference.n_scored, 262144)
    assert 1.0 < reference.perplexity < 1000.0
    t0 = time.monotonic()
    again = compute_reference(
        f16_model,
        default_mix(Split.HELD_OUT),
        chunk_size=CHUNK,
        max_chunks=EVAL_CHUNKS,
        cache_dir=session_cache / "reference",
    )
    assert time.monotonic() - t0 < 5.0  # loaded, not recomputed
    np.testing.assert_array_equal(again.top_ids, reference.top_ids)
    np.testing.assert_array_equal(again.target_logp, reference.target_logp)
    # Nothing half-written is left next to the cache entry.
    assert not [p for p in (session_cache / "reference").iterdir() if p.name.startswith(".")]


def test_reference_model_against_itself_is_lossless(
    reference: ReferenceLogits, f16_model: Path
) -> None:
    r = evaluate(f16_model, reference)
    assert r.kld_mean < 1e-3  # only the float16 storage of the reference log-probs
    assert r.top1_agreement == 1.0
    assert r.perplexity == pytest.approx(reference.perplexity, rel=1e-3)


def test_starter_q4_k_m_is_close_to_its_own_f16_expansion(
    reference: ReferenceLogits, starter_model: Path
) -> None:
    # The F16 file holds the Q4_K_M weights (rounded to F16), so the two models differ
    # only in how llama.cpp multiplies: with Q4_K weights it quantizes activations to
    # 8 bits, so a small loss remains, about that of a Q8_0 file. A broken expansion
    # (wrong block layout, transposed tensors) gives a KLD of several nats instead.
    r = evaluate(starter_model, reference)
    assert r.kld_mean < 0.02
    assert r.top1_agreement > 0.85
    assert r.n_tokens == reference.n_scored
    d = r.as_dict()
    assert set(d) >= {"perplexity", "kld_mean", "kld_p99", "top1_agreement", "delta_perplexity"}
