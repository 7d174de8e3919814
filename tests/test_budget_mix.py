"""Quantdesk mixes, the planning half: budgets, candidate types, the recipe and the knapsack."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quant.gguf.types import GGMLType, LlamaFileType
from quant.plan.mix import (
    Budget,
    BudgetError,
    Choice,
    Recipe,
    TensorOptions,
    allocate,
    candidate_types,
    parse_budget,
    tensor_choice,
)


def test_budgets_read_as_people_write_them() -> None:
    assert parse_budget("3.2GB") == Budget(n_bytes=3_200_000_000)
    assert parse_budget("450MiB") == Budget(n_bytes=450 * 2**20)
    assert parse_budget("123456789") == Budget(n_bytes=123_456_789)
    assert parse_budget(" 2 gib ") == Budget(n_bytes=2 * 2**30)
    four = parse_budget("4.25bpw")
    assert four.resolve(268_098_176) == int(4.25 * 268_098_176 / 8)
    assert four.text == "4.25bpw"
    for bad in ("fit", "3.2 GB extra", "-5", "0", "12 parsecs", "0.5bpw"):
        with pytest.raises(BudgetError):
            parse_budget(bad)


def test_candidates_respect_row_sizes_importance_and_untouched_tensors() -> None:
    narrow = candidate_types("blk.0.attn_q.weight", (640, 1024), has_imatrix=True)
    assert narrow  # 640 = 20 blocks of 32 but not whole 256-blocks
    assert all(t.block_size == 32 or t is GGMLType.F16 for t in narrow)
    assert GGMLType.Q4_K not in narrow and GGMLType.Q2_K not in narrow
    wide = candidate_types("blk.0.ffn_down.weight", (2048, 640), has_imatrix=True)
    assert GGMLType.Q4_K in wide and GGMLType.Q2_K in wide
    with_low = (GGMLType.IQ2_XS, GGMLType.IQ3_XXS, GGMLType.Q4_K)
    assert candidate_types(
        "blk.0.ffn_down.weight", (2048, 640), has_imatrix=False, types=with_low
    ) == (GGMLType.Q4_K,)
    assert candidate_types("blk.0.attn_norm.weight", (640,), has_imatrix=True) == ()
    assert candidate_types("blk.0.ffn_gate_inp.weight", (640, 8), has_imatrix=True) == ()


def _options(rng: np.random.Generator, n: int) -> list[TensorOptions]:
    out = []
    types = (GGMLType.Q2_K, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0)
    for i in range(n):
        shape = (256 * int(rng.integers(1, 5)), int(rng.integers(1, 40)))
        base = float(rng.uniform(0.1, 10))
        choices = tuple(tensor_choice(shape, t, base * 2.0 ** (-t.bits_per_weight)) for t in types)
        out.append(TensorOptions(f"blk.{i}.w.weight", shape, choices))
    return out


def test_the_allocation_is_the_exact_optimum_and_never_over_the_budget() -> None:
    rng = np.random.default_rng(7)
    opts = _options(rng, 6)
    sizes = [sum(c) for c in itertools.product(*[[ch.n_bytes for ch in o.choices] for o in opts])]
    for capacity in sorted(set(sizes))[:: max(1, len(set(sizes)) // 25)]:
        got = allocate(opts, capacity, cells=capacity)  # one byte per cell: exact
        best = min(
            sum(c.cost for c in combo)
            for combo in itertools.product(*[o.choices for o in opts])
            if sum(c.n_bytes for c in combo) <= capacity
        )
        assert got.bytes <= capacity
        assert got.predicted == pytest.approx(best)
        # With coarse cells the greedy fill keeps it within the budget, near the optimum.
        for cells in (64, 4096):
            coarse = allocate(opts, capacity, cells=cells)
            assert coarse.bytes <= capacity
        assert coarse.predicted <= best * 1.05 + 1e-12


def test_a_budget_below_the_smallest_types_is_refused_in_a_sentence() -> None:
    opts = _options(np.random.default_rng(1), 3)
    floor = sum(min(c.n_bytes for c in o.choices) for o in opts)
    with pytest.raises(BudgetError, match="give a larger budget"):
        allocate(opts, floor - 1)
    assert allocate(opts, floor).bytes == floor


def test_repacked_types_count_twice_against_a_memory_budget() -> None:
    shape = (256, 64)
    q4 = tensor_choice(shape, GGMLType.Q4_K, 1.0, repacked=frozenset({GGMLType.Q4_K}))
    q5 = tensor_choice(shape, GGMLType.Q5_K, 1.5)
    assert q4.charged == 2 * q4.n_bytes and q5.charged == q5.n_bytes
    opts = [TensorOptions("blk.0.x.weight", shape, (q4, q5))]
    # Q4_K is better but its file bytes plus the CPU's repacked copy exceed the budget.
    got = allocate(opts, q5.n_bytes + 10)
    assert got.recipe.types["blk.0.x.weight"] is GGMLType.Q5_K


def test_a_forbidden_type_is_never_chosen() -> None:
    """Whatever the costs say, a tensor only ever gets one of its own candidates."""
    rng = np.random.default_rng(3)
    shapes = {
        "token_embd.weight": (640, 1000),
        **{f"blk.{i}.attn_q.weight": (640, 1024) for i in range(4)},
        **{f"blk.{i}.ffn_down.weight": (2048, 640) for i in range(4)},
    }
    opts = []
    for name, shape in shapes.items():
        allowed = candidate_types(name, shape, has_imatrix=name.startswith("blk."))
        opts.append(
            TensorOptions(
                name, shape, tuple(tensor_choice(shape, t, float(rng.uniform())) for t in allowed)
            )
        )
    total_min = sum(o.cheapest().n_bytes for o in opts)
    total_max = sum(max(c.n_bytes for c in o.choices) for o in opts)
    for capacity in np.linspace(total_min, total_max, 7).astype(int):
        got = allocate(opts, int(capacity))
        for name, t in got.recipe.types.items():
            assert t in candidate_types(name, shapes[name], has_imatrix=name.startswith("blk."))
            assert shapes[name][0] % t.block_size == 0


def test_a_recipe_survives_its_metadata_and_becomes_exact_overrides() -> None:
    types = {f"blk.{i}.attn_v.weight": GGMLType.Q6_K if i % 3 else GGMLType.Q8_0 for i in range(40)}
    types |= {f"blk.{i}.ffn_down.weight": GGMLType.Q4_K for i in range(40)}
    types["token_embd.weight"] = GGMLType.Q5_0
    recipe = Recipe(types)
    meta = recipe.to_metadata()
    assert all(len(str(v).encode()) <= 127 for v in meta.values())
    assert Recipe.from_metadata(meta.get) == recipe
    assert "blk.{0-39}.ffn_down.weight=Q4_K" in recipe.entries()
    overrides = recipe.overrides()
    for name, t in types.items():
        matched = [ty for pat, ty in overrides if re.search(pat, name)]
        assert matched == [t], name
    assert not any(re.search(p, "blk.1.attn_v.weight_extra") for p, _ in overrides)
    assert not any(re.search(p, "blk.100.attn_v.weight") for p, _ in overrides)
    assert Recipe.from_metadata({}.get) is None
    with pytest.raises(BudgetError):
        Recipe.from_text("blk.{3-1}.attn_v.weight=Q6_K")


def test_choices_report_padded_bytes() -> None:
    c = tensor_choice((640, 3), GGMLType.Q4_0, 0.0)
    assert c == Choice(GGMLType.Q4_0, 1088, 0.0, 1088)  # 3 rows × 360 bytes, padded to 32


# -- 'fit': the largest file that runs on a machine ---------------------------------------

GIB = 1024**3
LAPTOP = {
    "cpu": {"brand": "Intel Core i7-1260P", "arch": "x86_64", "physical_cores": 4,
            "logical_cores": 16, "features": ["avx2", "fma", "f16c"]},
    "memory": {"total_bytes": 16 * GIB, "available_bytes": 12 * GIB},
}  # fmt: skip
LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}


def test_fit_is_the_largest_file_the_memory_model_lets_run_and_the_advisor_offers_it() -> None:
    from dataclasses import replace

    from quant.facts.config_params import facts_from_config
    from quant.facts.model import SourceKind
    from quant.hardware.profile import HardwareProfile
    from quant.plan.advisor import recommend
    from quant.plan.memory import (
        allows_quantization,
        estimate_memory,
        fits_memory,
        plan_tensors,
        weights_bytes,
    )
    from quant.plan.mix import fit_budget

    facts = facts_from_config(LLAMA_8B, source="llama", kind=SourceKind.CONFIG, name="llama-8b")
    laptop = HardwareProfile.from_dict(LAPTOP, source="laptop")
    budget = fit_budget(facts, laptop, ctx=4096)
    f16 = weights_bytes(plan_tensors(facts, None))
    q8 = weights_bytes(plan_tensors(facts, LlamaFileType.Q8_0))
    assert q8 < budget < f16  # 12 GiB free: more than Q8_0, less than F16

    def runs(n_bytes: int) -> bool:
        source = plan_tensors(facts, None)
        quant = sum(t.n_bytes for t in source if allows_quantization(t.name, len(t.shape)))
        scale = (n_bytes - (weights_bytes(source) - quant)) / quant
        plan = tuple(
            replace(t, n_bytes=int(t.n_bytes * scale))
            if allows_quantization(t.name, len(t.shape))
            else t
            for t in source
        )
        est = estimate_memory(facts, ctx=4096, profile=laptop, plan=plan)
        return fits_memory(est, laptop.memory.available_bytes, ())

    assert runs(budget) and not runs(int(budget * 1.01))
    # A longer context leaves less for the weights.
    assert fit_budget(facts, laptop, ctx=32768) < budget

    rec = recommend(facts, laptop, ctx=4096)
    offer = rec.mix_offer
    assert offer is not None and offer.budget_bytes == budget
    assert offer.stock == "Q8_0" and "leaves" in offer.text
    assert rec.to_dict()["mix_offer"]["budget_bytes"] == budget
    big = HardwareProfile.from_dict(
        {**LAPTOP, "memory": {"total_bytes": 64 * GIB, "available_bytes": 60 * GIB}}, source="big"
    )
    assert recommend(facts, big, ctx=4096).mix_offer is None  # F16 fits: nothing to gain


def test_the_convert_command_takes_a_budget_in_any_form(tmp_path: Path) -> None:
    import argparse

    from app.core.commands import convert
    from quant.hardware.profile import HardwareProfile
    from tests.ggufs import write_tiny_gguf

    parser = argparse.ArgumentParser()
    convert.register(parser.add_subparsers())
    gguf = str(write_tiny_gguf(tmp_path / "tiny-F32.gguf"))

    def spec(*extra: str) -> Any:
        return convert.spec_from_args(parser.parse_args(["convert", gguf, *extra]))

    assert spec().types == (LlamaFileType.Q4_K_M,) and spec().budget is None
    only_mix = spec("--budget", "4.25bpw")
    assert only_mix.budget == "4.25bpw" and only_mix.types == ()
    both = spec("--budget", "3.2GB", "--to", "IQ4_XS")
    assert both.budget == "3.2GB" and both.types == (LlamaFileType.IQ4_XS,)
    with pytest.raises(BudgetError, match="not a size"):
        spec("--budget", "roomy")

    # 'fit' on a saved machine without a GPU: a number of bytes, repacked types twice.
    profile = tmp_path / "laptop.json"
    profile.write_text(HardwareProfile.from_dict(LAPTOP, source="laptop").to_json())
    fit = spec("--budget", "fit", "--hardware", str(profile), "--ctx", "512")
    assert fit.budget is not None and fit.budget.isdigit()
    # 12 GiB holds this tiny model whole: the budget is its F16 file, the largest mix.
    from quant.facts import inspect_model
    from quant.plan.memory import allows_quantization, tensor_bytes

    facts = inspect_model(gguf)
    f16 = sum(
        tensor_bytes(GGMLType.F16, t.shape)
        if allows_quantization(t.name, len(t.shape))
        else t.n_bytes
        for t in facts.tensors
    )
    header = facts.file_size_bytes - sum(t.n_bytes for t in facts.tensors)
    assert int(fit.budget) == header + f16
    assert "Q4_0" in fit.budget_repacked
