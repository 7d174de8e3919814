"""The rounding table and the rounding load the quality prior reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from quant.errors import QuantError
from quant.gguf.types import GGMLType
from quant.plan import rounding
from quant.plan.formats import QuantType
from quant.plan.memory import plan_tensors
from quant.plan.quality import reference_load, requant_load
from quant.plan.rounding import BlockLoad, RoundingTable, block_load, rounding_table


def test_the_installed_table_covers_every_type_a_plan_can_give() -> None:
    table = rounding_table()
    for q in QuantType:
        load = reference_load(q.value)
        if q.spec.precision_bits >= 16:
            assert load is not None and load.error == 0.0
            continue
        assert load is not None and load.error > 0, q
    # Coarser grids cost more: the error falls with every bit of a family.
    f = table.fresh
    assert f["Q2_K"] > f["Q3_K"] > f["Q4_K"] > f["Q5_K"] > f["Q6_K"] > f["Q8_0"] > 0
    assert f["IQ1_S"] > f["IQ2_XXS"] > f["IQ3_XXS"] > f["IQ4_XS"]
    # A grid that nests in another costs far less than a fresh rounding; an unrelated one
    # of the same width about as much.
    assert table.error(GGMLType.Q5_K, GGMLType.Q4_K) < 0.3 * f["Q5_K"]  # type: ignore[operator]
    assert table.error(GGMLType.Q6_K, GGMLType.Q4_0) == pytest.approx(f["Q6_K"], rel=0.6)
    assert table.error(GGMLType.Q4_0, GGMLType.Q6_K) == pytest.approx(f["Q4_0"], rel=0.05)
    assert table.error(GGMLType.F16, GGMLType.Q4_K) == 0.0
    assert table.error(GGMLType.Q4_K, GGMLType.Q4_K) == 0.0
    assert table.error(GGMLType.Q4_K, GGMLType.F16) == f["Q4_K"]


@pytest.mark.parametrize("types", [(GGMLType.Q4_0, GGMLType.Q5_0), (GGMLType.Q4_K, GGMLType.Q5_K)])
def test_the_table_matches_what_ggml_measures_now(types: tuple[GGMLType, GGMLType]) -> None:
    """A few entries measured again with this ggml: the file is not stale or hand-edited."""
    data = rounding.measure_table(types)
    table = rounding_table()
    for t in types:
        assert data["fresh"][t.name] == pytest.approx(table.fresh[t.name], rel=0.02)
    a, b = types
    assert data["again"][a.name][b.name] == pytest.approx(table.again[a.name][b.name], rel=0.02)


@dataclass(frozen=True)
class T:
    name: str
    shape: tuple[int, ...]
    type: GGMLType

    @property
    def n_elements(self) -> int:
        return self.shape[0] * self.shape[1]


def test_the_load_counts_only_the_layers_matrices_and_what_changes() -> None:
    table = RoundingTable({"Q4_0": 0.01, "Q8_0": 0.001}, {"Q4_0": {"Q8_0": 0.0005}})
    plan = [
        T("token_embd.weight", (100, 1000), GGMLType.Q4_0),  # not a layer: never counted
        T("blk.0.attn_q.weight", (100, 100), GGMLType.Q4_0),
        T("blk.0.ffn_up.weight", (100, 300), GGMLType.Q8_0),
    ]
    fresh = block_load(plan, table=table)
    assert fresh == BlockLoad(pytest.approx((1e4 * 0.01 + 3e4 * 0.001) / 4e4), 0.0)
    own = {"blk.0.attn_q.weight": GGMLType.Q4_0, "blk.0.ffn_up.weight": GGMLType.Q4_0}
    again = block_load(plan, own, table=table)
    assert again is not None
    assert again.error == pytest.approx(3e4 * 0.0005 / 4e4)
    assert again.unchanged == pytest.approx(0.25) and again.changed == pytest.approx(0.75)
    # A type the table lacks: no load (the prior falls back to the label's own loss).
    assert block_load([T("blk.0.x.weight", (32, 32), GGMLType.IQ2_S)], table=table) is None
    assert block_load(plan[:1], table=table) is None


def test_the_starters_load_follows_its_fallback_types(starter_model: Path) -> None:
    """The starter's 640-wide matrices cannot take K-quants: its Q4_K_M keeps them in
    Q5_0, which Q4_0 rounds onto a coarser grid and Q5_K_M moves onto Q5_1."""
    from quant.facts import inspect_model

    facts = inspect_model(starter_model)
    own = requant_load(facts, QuantType.Q4_K_M.spec, "Q4_K_M")
    assert own == BlockLoad(0.0, 1.0)
    q4_0 = requant_load(facts, QuantType.Q4_0.spec, "Q4_K_M")
    q5 = requant_load(facts, QuantType.Q5_K_M.spec, "Q4_K_M")
    assert q4_0 is not None and q5 is not None
    assert q4_0.changed > 0.85 and q4_0.error > 10 * q5.error
    assert requant_load(facts, QuantType.Q4_0.spec, "Q8_0") is None  # not this file's type
    assert {t.type for t in plan_tensors(facts) if t.name.startswith("blk.")} >= {
        GGMLType.Q5_0,
        GGMLType.Q4_K,
    }


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "Expecting"),
        ('{"schema": 2}', "schema 1"),
        ('{"schema": 1, "fresh": {"Q4_0": "x"}, "again": {}}', "not a number"),
        ('{"schema": 1, "fresh": {"Q4_0": 1e999}, "again": {}}', "not a relative error"),
        ('{"schema": 1, "fresh": {"Q4_0": -1}, "again": {}}', "not a relative error"),
        ('{"schema": 1, "fresh": {}, "again": []}', "not an object"),
    ],
)
def test_a_damaged_table_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, why: str
) -> None:
    path = tmp_path / "rounding.json"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(rounding, "table_path", lambda: path)
    rounding_table.cache_clear()
    try:
        with pytest.raises(QuantError, match=why) as err:
            rounding_table()
        assert "python -m quant.plan.rounding" in str(err.value)
    finally:
        rounding_table.cache_clear()


def test_unknown_types_in_the_table_are_skipped() -> None:
    data = json.loads(rounding.table_path().read_text(encoding="utf-8"))
    data["fresh"]["Q9_X"] = 0.5
    data["again"]["Q9_X"] = {"Q4_0": 0.1}
    table = RoundingTable.from_dict(data)
    assert "Q9_X" not in table.fresh and "Q9_X" not in table.again
