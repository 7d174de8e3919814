"""The whole job: sources, stage reuse, disk check, cancellation in a child process."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quant.errors import InsufficientResourcesError, QuantError
from quant.facts import SourceKind, detect_source
from quant.gguf.header import read_gguf_header
from quant.gguf.types import GGMLType, LlamaFileType
from quant.jobs import pipeline
from quant.jobs.pipeline import JobSpec, plan_stages, run_pipeline
from quant.jobs.quantize import ImatrixRequiredError
from tests.quant.conftest import CHUNK

ROOT = Path(__file__).resolve().parents[2]


def small_spec(source: Path | str, out: Path, cache: Path, *types: str, **kw: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "source": str(source),
        "types": tuple(LlamaFileType[t] for t in types),
        "out_dir": str(out),
        "cache_dir": str(cache),
        "imatrix_chunk_size": CHUNK,
        "imatrix_chunks": 2,
        "eval_chunk_size": CHUNK,
        "eval_chunks": 1,
    }
    fields.update(kw)
    return JobSpec(**fields)


def test_spec_round_trips_through_json_and_lists_its_stages(tmp_path: Path) -> None:
    spec = small_spec("m.gguf", tmp_path, tmp_path, "Q8_0", "IQ4_XS")
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert plan_stages(spec) == [
        "prepare",
        "imatrix",
        "quantize Q8_0",
        "quantize IQ4_XS",
        "reference",
        "evaluate Q8_0",
        "evaluate IQ4_XS",
        "report",
    ]
    only_q8 = small_spec("m.gguf", tmp_path, tmp_path, "Q8_0", eval_text="none")
    assert plan_stages(only_q8) == ["prepare", "quantize Q8_0", "report"]


def test_output_and_embedding_types_reach_the_quantizer(tmp_path: Path) -> None:
    spec = small_spec("m.gguf", tmp_path, tmp_path, "IQ4_XS", token_embedding_type="q8_0")
    options = spec.quantize_options(LlamaFileType.IQ4_XS)
    assert options.token_embedding_type is GGMLType.Q8_0
    assert options.output_tensor_type is None
    assert spec.options_key == "output=-,embd=q8_0"
    bad = small_spec("m.gguf", tmp_path, tmp_path, "IQ4_XS", output_tensor_type="Q9_9")
    with pytest.raises(QuantError, match="unknown tensor type 'Q9_9'"):
        bad.quantize_options(LlamaFileType.IQ4_XS)


def test_sources_are_told_apart(tmp_path: Path, f16_model: Path) -> None:
    assert detect_source(str(f16_model), need_weights=True) is SourceKind.GGUF
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert detect_source(str(tmp_path / "hf"), need_weights=True) is SourceKind.HF_FOLDER
    assert detect_source("google/gemma-3-270m", need_weights=True) is SourceKind.HUB
    with pytest.raises(QuantError, match=r"a folder without config\.json"):
        detect_source(str(tmp_path), need_weights=True)
    with pytest.raises(QuantError, match=r"nothing\.gguf: no such GGUF file"):
        detect_source(str(tmp_path / "nothing.gguf"), need_weights=True)
    with pytest.raises(QuantError, match="not a hub repo id"):
        detect_source(str(tmp_path / "no-such-folder"), need_weights=True)


def test_a_gguf_without_its_suffix_is_recognised_by_its_magic(
    tmp_path: Path, f16_model: Path
) -> None:
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(f16_model.read_bytes()[:4096])
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        assert detect_source(str(renamed), need_weights=True) is SourceKind.GGUF
        with pytest.raises(QuantError, match=r"notes\.txt: not a GGUF file"):
            detect_source(str(other), need_weights=True)
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]


def test_no_imatrix_with_a_type_that_needs_one_fails_before_any_work(
    f16_model: Path, tmp_path: Path
) -> None:
    spec = small_spec(
        f16_model, tmp_path / "out", tmp_path / "cache", "Q8_0", "IQ3_XXS", imatrix="none"
    )
    with pytest.raises(ImatrixRequiredError, match="IQ3_XXS"):
        run_pipeline(spec)
    assert not (tmp_path / "out").exists()


def test_disk_space_is_checked_for_all_outputs_first(
    f16_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = 100 * 2**20

    def tiny_disk(path: Any) -> Any:
        return type("U", (), {"total": free, "used": 0, "free": free})()

    monkeypatch.setattr(pipeline.shutil, "disk_usage", tiny_disk)
    spec = small_spec(f16_model, tmp_path / "out", tmp_path / "cache", "Q8_0", "Q4_K_M")
    with pytest.raises(InsufficientResourcesError, match=r"needs 519.\d MiB but only 100.0 MiB"):
        run_pipeline(spec)
    assert list((tmp_path / "out").glob("*.gguf")) == []


# -- a child process, cancelled in each stage, then completed -----------------------------


def _child(spec: JobSpec) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quant",
            "pipeline",
            "--json-progress",
            "--spec",
            json.dumps(spec.to_dict()),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _run_until(
    spec: JobSpec, stop: Callable[[dict[str, Any]], bool]
) -> tuple[int, list[dict[str, Any]]]:
    """Run the job in a child process and send it SIGTERM at the first line ``stop`` accepts."""
    proc = _child(spec)
    lines: list[dict[str, Any]] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        if not raw.strip():
            continue
        obj = json.loads(raw)
        lines.append(obj)
        if stop(obj):
            os.killpg(proc.pid, signal.SIGTERM)
            break
    proc.stdout.read()
    return proc.wait(timeout=60), lines


def _leftovers(*folders: Path) -> list[str]:
    return sorted(p.name for f in folders if f.exists() for p in f.rglob(".*partial*"))


def _at(stage: str, done: int, total: int) -> Callable[[dict[str, Any]], bool]:
    return lambda o: (o.get("stage"), o.get("done"), o.get("total")) == (stage, done, total)


def test_cancel_in_every_stage_leaves_nothing_half_written_and_a_rerun_completes(
    f16_model: Path, tmp_path: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    spec = small_spec(f16_model, out, cache, "Q4_0", eval_chunks=2)

    # 1. in the imatrix, after its first chunk
    rc, lines = _run_until(spec, _at("imatrix", 1, 2))
    assert rc == 130
    assert lines[0]["stages"] == [
        "prepare",
        "imatrix",
        "quantize Q4_0",
        "reference",
        "evaluate Q4_0",
        "report",
    ]
    assert not list(cache.rglob("*.imatrix.gguf"))
    assert not _leftovers(out, cache)

    # 2. in llama.cpp's quantization, a few tensors in
    rc, lines = _run_until(spec, _at("quantize Q4_0", 5, 236))
    assert rc == 130
    assert len(list(cache.rglob("*.imatrix.gguf"))) == 1  # the finished stage is kept
    assert not list(out.glob("*.gguf"))
    assert not _leftovers(out, cache)

    # 3. while the reference logits are being written
    rc, lines = _run_until(
        spec, lambda o: o.get("event") == "writing" and "reference" in o.get("path", "")
    )
    assert rc == 130
    assert [p.name for p in out.glob("*.gguf")] == ["gemma-3-270m-Q4_0.gguf"]
    assert not _leftovers(out, cache)

    # 4. in the evaluation, after its first chunk
    rc, lines = _run_until(spec, _at("evaluate Q4_0", 1, 2))
    assert rc == 130
    assert not list(out.glob("*-report.json"))
    assert not _leftovers(out, cache)

    # 5. to the end, reusing every finished stage
    rc, lines = _run_until(spec, lambda o: False)
    assert rc == 0, lines[-1]
    done = {o["stage"]: o for o in lines if o.get("event") == "stage_done"}
    assert done["imatrix"]["reused"] is True
    assert done["quantize Q4_0"]["reused"] is True
    assert done["evaluate Q4_0"]["reused"] is False
    report = lines[-1]["result"]
    q4 = report["outputs"][0]
    assert (q4["type"], q4["imatrix"]) == ("Q4_0", True)
    assert q4["evaluation"]["kld_mean"] > 0
    assert report["reference"]["tokens"] == 2 * (CHUNK - CHUNK // 2 - 1)
    assert Path(report["report_path"]).is_file()
    assert "| Q4_0 |" in Path(report["card_path"]).read_text(encoding="utf-8")
    assert not _leftovers(out, cache)


# -- HF folder and hub sources (tiny checkpoints built on the spot) -----------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.convert import checkpoints as ckpt

    tok = ckpt.with_bos(
        ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
    )
    return ckpt.build_llama(tmp_path_factory.mktemp("hub") / "tiny-llama", tok).path


def test_hub_failures_of_the_download_are_sentences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's download tells hub failures in the same words as every other hub call."""
    import huggingface_hub.constants

    from quant.errors import HubError
    from tests.fakehub import serve_fake_hub

    with serve_fake_hub(monkeypatch, tmp_path / "hf-cache"):
        with pytest.raises(HubError, match="acme/nope: no such model on the Hugging Face hub"):
            pipeline._download("acme/nope", None)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        with pytest.raises(HubError, match="acme/x: cannot download acme/x in offline mode"):
            pipeline._download("acme/x", None)


def test_a_hub_repo_is_downloaded_converted_and_quantized(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str | None]] = []

    def fake_download(repo_id: str, revision: str | None) -> Path:
        asked.append((repo_id, revision))
        return tiny_llama

    monkeypatch.setattr(pipeline, "_download", fake_download)
    events: list[tuple[str, dict[str, Any]]] = []
    spec = small_spec(
        "someone/tiny-llama",
        tmp_path / "out",
        tmp_path / "cache",
        "Q8_0",
        "Q4_K_M",
        imatrix_chunk_size=32,
        eval_chunk_size=32,
        eval_chunks=2,
    )
    report = run_pipeline(spec, on_event=lambda n, d: events.append((n, d)))
    assert asked == [("someone/tiny-llama", None)]
    assert report.source_kind == "hub"
    assert report.base_type == "F16"
    assert [o.type for o in report.outputs] == ["Q8_0", "Q4_K_M"]
    assert all(Path(o.path).is_file() for o in report.outputs)
    assert report.outputs[1].imatrix and not report.outputs[0].imatrix
    assert all(o.evaluation is not None for o in report.outputs)
    info = read_gguf_header(report.outputs[1].path)
    assert info.get("general.architecture") == "llama"
    assert report.imatrix is not None
    assert info.get(pipeline.KEY_IMATRIX) == report.imatrix["key"]
    stages = next(d["stages"] for n, d in events if n == "stages")
    assert stages[0] == "prepare"


def test_experts_get_one_importance_row_each(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from quant.convert import convert_hf
    from quant.jobs.calibration import default_mix
    from quant.jobs.imatrix import collect_imatrix
    from tests.convert import checkpoints as ckpt

    tok = ckpt.train_bpe("qwen2", specials=ckpt.QWEN_SPECIALS)
    built = ckpt.build_qwen3_moe(tmp_path / "moe", tok)
    gguf = convert_hf(built.path, tmp_path / "moe-F16.gguf", outtype="f16").output
    data = collect_imatrix(gguf, default_mix(), chunk_size=64, max_chunks=2)
    experts = {n: e for n, e in data.entries.items() if "_exps" in n}
    assert {n.split(".")[2] for n in experts} == {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}
    up = experts["blk.0.ffn_up_exps.weight"]
    assert len(up.counts) == 8  # one count per expert
    assert up.counts.sum() == 2 * 64 * 2  # every token goes to two experts
    assert len(up.sums) == 8 * 64
    assert np.isfinite(up.means()).all()


def test_a_quantized_source_is_refused_unless_requantizing_is_allowed(
    starter_model: Path, tmp_path: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    spec = small_spec(starter_model, out, cache, "Q8_0", imatrix="none", eval_text="none")
    with pytest.raises(QuantError, match=r"already quantized.*--requantize"):
        run_pipeline(spec)
    assert not out.exists() or list(out.glob("*.gguf")) == []

    allowed = small_spec(
        starter_model, out, cache, "Q8_0", imatrix="none", eval_text="none", requantize=True
    )
    report = run_pipeline(allowed)
    made = Path(report.outputs[0].path)
    assert made.exists()
    assert read_gguf_header(made).file_type is LlamaFileType.Q8_0
    # The expansion is cached beside the other intermediates and reused on a rerun.
    assert len(list((cache / "f16").glob("*-F16.gguf"))) == 1
