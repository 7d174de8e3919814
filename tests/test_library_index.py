"""The library index keeps a summary of each header, not every tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.library import ModelLibrary
from app.core.library_index import (
    LibraryIndex,
    _decode_facts,
    _encode_facts,
    describe_library,
)
from app.core.settings import Settings
from quant.facts import inspect_model
from quant.facts.gguf import MAX_LISTED_TENSORS
from quant.hardware.profile import HardwareProfile
from quant.plan.advisor import Fit
from tests.ggufs import write_many_tensor_gguf, write_tiny_gguf


def _profile() -> HardwareProfile:
    return HardwareProfile.from_dict(
        {
            "cpu": {"brand": "Test CPU", "logical_cores": 8, "physical_cores": 4},
            "memory": {"total_bytes": 16 << 30, "available_bytes": 12 << 30},
            "measured_bandwidth_gbps": 20.0,
        },
        source="test",
    )


def _library(tmp_path: Path, *files: Path) -> ModelLibrary:
    library = ModelLibrary(Settings(), external_roots=(), models_dir=tmp_path / "made")
    for f in files:
        library.add(f)
    return library


def test_the_starter_is_kept_as_one_row_per_repeated_tensor(starter_model: Path) -> None:
    facts = inspect_model(starter_model)
    encoded = _encode_facts(facts)
    assert len(facts.tensors) == 236
    assert len(encoded["tensors"]) < 30
    back = _decode_facts(json.loads(json.dumps(encoded)))
    assert back is not None
    assert back.tensors == facts.tensors  # same tensors, in the file's order
    assert back.to_dict() == facts.to_dict()


def test_records_of_the_earlier_layout_still_read(tmp_path: Path) -> None:
    facts = inspect_model(write_tiny_gguf(tmp_path / "tiny.gguf"))
    earlier = facts.to_dict(with_tensors=False)
    earlier["tensors"] = [[t.name, list(t.shape), t.type, t.n_bytes] for t in facts.tensors]
    back = _decode_facts(earlier)
    assert back is not None and back.tensors == facts.tensors


@pytest.mark.parametrize("damage", ["garbage", [["blk.", ".w", [4], "F32", 16]], [[1, 2, 3]]])
def test_a_damaged_tensor_summary_is_read_again(tmp_path: Path, damage: object) -> None:
    facts = inspect_model(write_tiny_gguf(tmp_path / "tiny.gguf"))
    encoded = _encode_facts(facts)
    encoded["tensors"] = damage
    assert _decode_facts(encoded) is None


def test_a_fit_for_another_machine_comes_from_the_summary(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf", n_layers=4)
    library = _library(tmp_path, model)
    index_file = tmp_path / "index.json"
    (first,) = describe_library(library, _profile(), index=LibraryIndex(index_file))
    fresh = LibraryIndex(index_file)
    (again,) = describe_library(library, _profile(), index=fresh)
    assert fresh.header_reads == 0
    assert again.to_dict() == first.to_dict() and again.fit is Fit.CPU


def test_a_million_tensor_header_is_listed_with_a_small_record(tmp_path: Path) -> None:
    """Beyond MAX_LISTED_TENSORS the facts keep counts and sizes, not one row per tensor."""
    n = MAX_LISTED_TENSORS + 5_000
    model = write_many_tensor_gguf(tmp_path / "models" / "many.gguf", n, per_layer=n // 400)
    facts = inspect_model(model)
    assert facts.tensors == () and facts.n_layers == 400
    assert facts.parameters == 32 * 16 + 32 * (n - 1)  # token_embd, then (32,) tensors
    assert sum(t.n_tensors for t in facts.tensor_types) == n
    assert any(f"{n:,} tensors" in note for note in facts.notes)
    index_file = tmp_path / "index.json"
    (row,) = describe_library(_library(tmp_path, model), _profile(), index=LibraryIndex(index_file))
    assert row.broken is None and row.parameters == facts.parameters
    assert row.fit is None  # no per-tensor plan for such a file
    assert index_file.stat().st_size < 20_000
