"""Importance matrices: accumulation, llama.cpp's file formats, collection, use in quantize."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import pytest

from quant.gguf.header import read_gguf_header
from quant.gguf.types import LlamaFileType
from quant.jobs.calibration import CalibrationKind, CalibrationSet, Document, default_mix
from quant.jobs.imatrix import (
    ImatrixCollector,
    ImatrixData,
    ImatrixEntry,
    ImatrixError,
    collect_imatrix,
    load_imatrix,
)
from quant.jobs.quantize import QuantizeOptions, quantize
from quant.progress import Progress
from tests.quant.conftest import CHUNK, IMATRIX_CHUNKS


def test_dense_accumulation_sums_squares_per_column() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 1, 20, 8)).astype(np.float32)
    c = ImatrixCollector()
    c.add_dense("blk.0.w", x, (1, 1))
    c.add_dense("blk.0.w", x, (1, 1))
    st = c.stats["blk.0.w"]
    np.testing.assert_allclose(st.sums, 2 * (x[0, 0].astype(np.float64) ** 2).sum(axis=0))
    assert st.counts.tolist() == [40]


def test_dense_3d_weights_get_one_slice_per_matrix_and_one_count() -> None:
    # A weight with ne2 = 2 multiplied by a batch with ne2 = 4 (broadcast, like llama.cpp).
    x = np.arange(4 * 3 * 2, dtype=np.float32).reshape(1, 4, 3, 2)
    c = ImatrixCollector()
    c.add_dense("blk.0.w", x, (2, 1))
    st = c.stats["blk.0.w"]
    sq = (x.astype(np.float64) ** 2).sum(axis=2)[0]  # (4, 2)
    np.testing.assert_allclose(st.sums.reshape(2, 2), [sq[0] + sq[2], sq[1] + sq[3]])
    assert st.counts.tolist() == [6]  # 12 rows over 2 matrices


def test_expert_accumulation_follows_the_routing() -> None:
    rng = np.random.default_rng(1)
    n_tokens, n_used, ne0, n_expert = 5, 2, 4, 3
    x = rng.normal(size=(n_tokens, n_used, ne0)).astype(np.float32)
    ids = np.array([[0, 2], [1, 2], [0, 1], [2, 0], [2, 1]], dtype=np.int32)
    c = ImatrixCollector()
    c.add_expert("blk.0.ffn_up_exps.weight", x, ids, n_expert)
    st = c.stats["blk.0.ffn_up_exps.weight"]
    want = np.zeros((n_expert, ne0))
    counts = np.zeros(n_expert, dtype=int)
    for t in range(n_tokens):
        for k in range(n_used):
            want[ids[t, k]] += x[t, k].astype(np.float64) ** 2
            counts[ids[t, k]] += 1
    np.testing.assert_allclose(st.sums.reshape(n_expert, ne0), want)
    assert st.counts.tolist() == counts.tolist()


def _sample_data() -> ImatrixData:
    rng = np.random.default_rng(2)
    entries = {
        "blk.0.attn_q.weight": ImatrixEntry(rng.random(8) * 100, np.array([50])),
        "blk.0.ffn_up_exps.weight": ImatrixEntry(rng.random(12) * 10, np.array([7, 0, 5])),
    }
    return ImatrixData(entries, ("my-text.txt",), chunk_count=3, chunk_size=512)


def test_gguf_imatrix_has_llama_cpp_layout_and_round_trips(tmp_path: Path) -> None:
    data = _sample_data()
    path = data.save(tmp_path / "m.imatrix.gguf")
    info = read_gguf_header(path)
    assert info.get("general.type") == "imatrix"
    assert info.get("imatrix.datasets") == ["my-text.txt"]
    assert info.get("imatrix.chunk_count") == 3
    assert info.get("imatrix.chunk_size") == 512
    shapes = {t.name: (t.shape, t.type) for t in info.tensors}
    assert shapes["blk.0.attn_q.weight.in_sum2"] == ((8, 1), 0)
    assert shapes["blk.0.attn_q.weight.counts"] == ((1, 1), 0)
    assert shapes["blk.0.ffn_up_exps.weight.in_sum2"] == ((4, 3), 0)
    back = load_imatrix(path)
    for name, e in data.entries.items():
        np.testing.assert_allclose(back.entries[name].means(), e.means(), rtol=1e-6)
    # An expert that saw no token gets 1.0, as llama.cpp's quantize does.
    assert back.entries["blk.0.ffn_up_exps.weight"].means()[4:8].tolist() == [1.0] * 4


def test_a_matrix_without_datasets_round_trips(tmp_path: Path) -> None:
    data = _sample_data()
    bare = ImatrixData(data.entries, (), chunk_count=3, chunk_size=512)
    back = load_imatrix(bare.save(tmp_path / "bare.imatrix.gguf"))
    assert back.datasets == () and (back.chunk_count, back.chunk_size) == (3, 512)
    assert set(back.entries) == set(data.entries)


def test_legacy_dat_round_trips_to_the_same_means(tmp_path: Path) -> None:
    data = _sample_data()
    path = data.save(tmp_path / "m.dat")
    assert path.read_bytes()[:4] != b"GGUF"
    back = load_imatrix(path)
    assert back.chunk_count == 3
    assert back.datasets == ("my-text.txt",)
    for name, e in data.entries.items():
        np.testing.assert_allclose(back.entries[name].means(), e.means(), rtol=1e-5)


def test_reading_a_matrix_leaves_no_file_open(tmp_path: Path) -> None:
    """Telling the two formats apart by their first bytes closes the file again."""
    data = _sample_data()
    paths = [data.save(tmp_path / "m.imatrix.gguf"), data.save(tmp_path / "m.dat")]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        for path in paths:
            load_imatrix(path)
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]


def test_garbage_is_not_an_imatrix(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dat"
    bad.write_bytes(b"\xff\xff\xff\x7f hello")
    with pytest.raises(ImatrixError, match=r"notes\.dat"):
        load_imatrix(bad)


def test_too_little_text_is_explained(f16_model: Path) -> None:
    tiny = CalibrationSet("tiny", CalibrationKind.FILES, (Document("t", "Hello there."),))
    with pytest.raises(ImatrixError, match=r"'tiny' is \d+ tokens, less than one 128-token chunk"):
        collect_imatrix(f16_model, tiny, chunk_size=CHUNK)


_progress: list[Progress] = []


@pytest.fixture(scope="module")
def collected(f16_model: Path) -> ImatrixData:
    return collect_imatrix(
        f16_model,
        default_mix(),
        chunk_size=CHUNK,
        max_chunks=IMATRIX_CHUNKS,
        on_progress=_progress.append,
    )


def test_collection_covers_every_block_matrix(collected: ImatrixData) -> None:
    # Gemma 3 270M: 18 blocks × (q, k, v, output, gate, up, down).
    assert len(collected.entries) == 18 * 7
    assert collected.tokens == CHUNK * IMATRIX_CHUNKS
    assert collected.datasets == ("quantdesk-default-mix-v1",)
    q = collected.entries["blk.0.attn_q.weight"]
    assert q.counts.tolist() == [CHUNK * IMATRIX_CHUNKS]
    assert len(q.sums) == 640
    assert len(collected.entries["blk.3.ffn_down.weight"].sums) == 2048
    assert all(np.isfinite(e.sums).all() and (e.sums > 0).any() for e in collected.entries.values())


def test_progress_reports_each_chunk(collected: ImatrixData) -> None:
    chunks = [p for p in _progress if p.total]
    assert [(p.done, p.total) for p in chunks] == [(1, 2), (2, 2)]
    assert chunks[-1].message == "chunk 2/2 (256 tokens)"


def test_our_file_read_back_is_accepted_by_llama_cpp_quantize(
    collected: ImatrixData, f16_model: Path, tmp_path: Path
) -> None:
    path = collected.save(tmp_path / "gemma.imatrix.gguf")
    loaded = load_imatrix(path)
    out = tmp_path / "gemma-Q4_0.gguf"
    result = quantize(f16_model, out, QuantizeOptions(LlamaFileType.Q4_0), imatrix=loaded)
    assert result.imatrix_entries == 126
    info = read_gguf_header(out)
    assert info.get("quantize.imatrix.file") == "gemma.imatrix.gguf"
    assert info.get("quantize.imatrix.dataset") == "quantdesk-default-mix-v1"
    assert info.get("quantize.imatrix.entries_count") == 126
    assert info.get("quantize.imatrix.chunks_count") == IMATRIX_CHUNKS
