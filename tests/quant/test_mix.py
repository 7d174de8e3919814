"""Quantdesk mixes on real models: the search, the file it builds, and its stage in a job.

The exactness checks run on the F16 starter (rows of 640 values take only 32-value
blocks, rows of 1024 and 2048 the k-quants too). The job-level checks — a child
process cancelled in the search and resumed, a recipe read back — run on a tiny
Llama built on the spot, where every stage takes seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from quant.gguf.header import read_gguf_header
from quant.gguf.types import GGMLType
from quant.jobs.calibration import default_mix
from quant.jobs.imatrix import ImatrixData, collect_imatrix
from quant.jobs.mix import (
    SearchSettings,
    build_mix,
    measure,
    mix_options,
    plan_of,
    recipe_of,
    search_mix,
)
from quant.jobs.pipeline import MIX, JobSpec
from quant.jobs.quantize import plan_quantization
from quant.plan.mix import BudgetError, candidate_types
from tests.quant.conftest import CHUNK
from tests.quant.test_pipeline import _leftovers, _run_until


@pytest.fixture(scope="module")
def starter_imatrix(f16_model: Path) -> ImatrixData:
    return collect_imatrix(f16_model, default_mix(), chunk_size=CHUNK, max_chunks=1)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-block Llama with 256-wide rows (k-quants allowed), as an F16 GGUF."""
    from quant.convert import convert_hf
    from tests.convert import checkpoints as ckpt

    folder = tmp_path_factory.mktemp("mix")
    tok = ckpt.with_bos(
        ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
    )
    built = ckpt.build_llama(
        folder / "tiny-llama", tok, hidden_size=256, intermediate_size=512, num_attention_heads=4
    )
    return convert_hf(built.path, folder / "tiny-llama-F16.gguf", outtype="f16").output


def test_the_mix_fits_its_budget_to_the_byte_with_only_allowed_types(
    f16_model: Path, starter_imatrix: ImatrixData, tmp_path: Path
) -> None:
    settings = SearchSettings(rows=8, calibrate=False)
    sens = measure(
        f16_model, starter_imatrix, settings, reference=None, cache_dir=tmp_path, cache_key="k"
    )
    header = read_gguf_header(f16_model)
    shapes = {t.name: t.shape for t in header.tensors}
    for budget in (200_000_000, 260_000_000):
        plan = search_mix(f16_model, sens, budget, imatrix=starter_imatrix)
        assert budget - 2 * 2**20 < plan.size_bytes <= budget  # the budget is used, not exceeded
        # llama.cpp's own dry run: the same size to the byte, every tensor as planned.
        dry = plan_quantization(f16_model, mix_options(plan), imatrix=starter_imatrix)
        assert dry.size_bytes == plan.size_bytes
        planned = {t.name: t.target_type for t in dry.tensors}
        for name, t in plan.recipe.types.items():
            assert planned[name] == t.name
            assert t in candidate_types(name, shapes[name], has_imatrix=True)
        embd = plan.recipe.types["token_embd.weight"]
        assert embd.block_size == 32 or embd is GGMLType.F16  # 640-wide rows
    with pytest.raises(BudgetError, match="give a larger budget"):
        search_mix(f16_model, sens, 50_000_000, imatrix=starter_imatrix)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_recipe_read_back_from_the_file_makes_the_same_file(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    im = collect_imatrix(tiny_gguf, default_mix(), chunk_size=32, max_chunks=2)
    sens = measure(
        tiny_gguf,
        im,
        SearchSettings(rows=16, calibrate=False),
        reference=None,
        cache_dir=None,
        cache_key="k",
    )
    full = plan_quantization(tiny_gguf, mix_options(search_mix(tiny_gguf, sens, 10**9))).size_bytes
    plan = search_mix(tiny_gguf, sens, int(full * 0.55), imatrix=im)
    first = build_mix(tiny_gguf, tmp_path / "a.gguf", plan, imatrix=im).path
    assert first.stat().st_size == plan.size_bytes
    assert recipe_of(first) == plan.recipe
    assert len(set(plan.recipe.types.values())) > 1  # a real mix, not one type

    again = plan_of(first)
    assert again.recipe == plan.recipe
    second = build_mix(tiny_gguf, tmp_path / "b.gguf", again, imatrix=im).path
    assert _sha(second) == _sha(first)
    assert recipe_of(tiny_gguf) is None  # a file that is no mix has no recipe


# -- the search stage of a job, cancelled and resumed in a child process ------------------


def _cached(cache: Path, name: str) -> int:
    files = list((cache / "mix").rglob(name))
    return len(json.loads(files[0].read_text())["items"]) if files else 0


def test_the_search_stage_stops_on_cancel_and_resumes_where_it_stopped(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    n_tensors = len(
        [
            t
            for t in read_gguf_header(tiny_gguf).tensors
            if candidate_types(t.name, t.shape, has_imatrix=True)
        ]
    )
    spec = JobSpec(
        source=str(tiny_gguf),
        types=(),
        out_dir=str(out),
        cache_dir=str(cache),
        imatrix_chunk_size=32,
        imatrix_chunks=2,
        eval_chunk_size=32,
        eval_chunks=1,
        budget="4.5bpw",
        search_rows=16,
        search_chunks=1,
    )

    # 1. while the errors are measured, a few tensors in
    def in_errors(o: dict[str, Any]) -> bool:
        return (
            o.get("stage") == "search"
            and str(o.get("message", "")).startswith("error of")
            and o["done"] > 0
        )

    rc, lines = _run_until(spec, in_errors)
    assert rc == 130
    assert "search" in lines[0]["stages"]
    done_errors = _cached(cache, "errors.json")
    assert 0 < done_errors < n_tensors
    assert len(list(out.glob("*.gguf"))) == 2  # the stock types either side, made first
    assert not list(out.glob("*-mix-*.gguf"))
    assert not _leftovers(out, cache)

    # 2. while the groups are measured, after the first one
    rc, lines = _run_until(
        spec, lambda o: o.get("stage") == "search" and "measured" in str(o.get("message", ""))
    )
    assert rc == 130
    assert _cached(cache, "errors.json") == n_tensors
    first_search = next(o for o in lines if o.get("stage") == "search" and o.get("total"))
    assert first_search["done"] > 0  # it went on from the tensors measured before
    groups_done = _cached(cache, "groups-*.json")
    assert groups_done >= 2  # the model's own baseline and one group
    assert not _leftovers(out, cache)

    # 3. to the end
    rc, lines = _run_until(spec, lambda o: False)
    assert rc == 0, lines[-1]
    done = {o["stage"]: o for o in lines if o.get("event") == "stage_done"}
    assert done["search"]["resumed"] >= n_tensors + groups_done
    report = lines[-1]["result"]
    mix = report["mix"]
    assert mix["size_bytes"] <= mix["budget_bytes"]
    assert mix["evaluation"]["kld_mean"] >= 0
    assert mix["verdict"]
    kept = [o for o in report["outputs"] if o["type"] == MIX]
    assert bool(kept) == mix["kept"] == Path(mix["path"]).exists()
    assert not _leftovers(out, cache)
