"""``quantdesk quality``: a report card for any GGUF, kept with the library entry.

Two files of the starter made by the convert pipeline are measured with
``--reference auto``, which finds the F16 the pipeline made; the numbers equal
the convert report's for the same text, the cards are listed with the library,
and the Advisor uses them. Evaluation runs are short (two 128-token chunks).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from app.core.cli import run_cli
from app.core.library import ModelLibrary
from app.core.library_listing import list_library
from app.core.quality import QualityStore, keep_report
from quant.gguf.types import LlamaFileType
from quant.jobs.evaluate import model_fingerprint
from quant.jobs.pipeline import JobSpec, model_name_for, run_pipeline
from quant.plan.formats import Provenance
from tests.quant.conftest import CHUNK

CHUNKS = 2


def _place_expansion(starter: Path, f16: Path, cache: Path) -> Path:
    """Put the session's F16 expansion where a requantizing convert job keeps its own, so
    the job reuses it instead of expanding the starter again."""
    from quant.facts import SourceKind

    name = model_name_for(str(starter), SourceKind.GGUF)
    target = cache / "f16" / f"{name}-{model_fingerprint(starter)}-F16.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(f16, target)
    except OSError:
        shutil.copyfile(f16, target)
    return target


def _card(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    rc = run_cli(["quality", *args, "--chunks", str(CHUNKS), "--chunk-size", str(CHUNK), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    card: dict[str, object] = json.loads(captured.out)
    return card


def test_two_pipeline_files_measure_as_the_convert_report_says(
    starter_model: Path,
    f16_model: Path,
    quantdesk_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache, out = quantdesk_home / "cache", quantdesk_home / "data" / "models"
    expansion = _place_expansion(starter_model, f16_model, cache)
    assert run_cli(["models", "--add", str(starter_model)]) == 0
    capsys.readouterr()
    spec = JobSpec(
        source=str(starter_model),
        types=(LlamaFileType.Q8_0, LlamaFileType.IQ4_XS),
        requantize=True,
        out_dir=str(out),
        cache_dir=str(cache),
        imatrix_chunk_size=CHUNK,
        imatrix_chunks=2,
        eval_chunk_size=CHUNK,
        eval_chunks=CHUNKS,
    )
    report = run_pipeline(spec).as_dict()
    assert report["base_model"] == str(expansion)  # the expansion was reused

    for made in report["outputs"]:
        card = _card(capsys, made["path"])
        ev = made["evaluation"]
        # auto found the F16 the pipeline made, and knows it holds the starter's weights.
        assert card["reference_path"] == str(expansion)
        assert card["base_type"] == "Q4_K_M"
        assert card["file_type"] == made["type"]
        assert card["tokens"] == ev["tokens"] == CHUNKS * (CHUNK - CHUNK // 2 - 1)
        assert card["kld_mean"] == pytest.approx(ev["kld_mean"], abs=1e-6)
        assert card["kld_median"] == pytest.approx(ev["kld_median"], abs=1e-6)
        assert card["kld_p99"] == pytest.approx(ev["kld_p99"], abs=1e-6)
        assert card["same_top_token"] == pytest.approx(ev["top1_agreement"], abs=1e-4)
        assert card["perplexity"] == pytest.approx(ev["perplexity"], abs=1e-4)

    # The cards are kept with the library entries and listed with them.
    rows = list_library(ModelLibrary(), None).rows
    by_path = {str(r.entry.path): r for r in rows}
    for made in report["outputs"]:
        row = by_path[made["path"]]
        assert row.measured_quality is not None
        assert row.measured_quality.kld_mean == pytest.approx(
            made["evaluation"]["kld_mean"], abs=1e-6
        )
    assert run_cli(["models"]) == 0
    listing = capsys.readouterr().out
    assert "    quality: Measured quality: mean KLD" in listing

    # The Advisor for the starter shows the measured loss of what it would make from it.
    keep_report(report)
    assert run_cli(["recommend", str(starter_model), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    q8 = next(o for o in rec["options"] if o["file_type"] == "Q8_0" and o["source"] == "planned")
    assert q8["quality"]["added_provenance"] == Provenance.MEASURED.value
    measured_q8 = report["outputs"][0]["evaluation"]["kld_mean"]
    assert q8["quality"]["added_kld"] == pytest.approx(measured_q8, abs=1e-5)
    assert q8["quality"]["inherited_kld"] > 0  # and it keeps the starter's own loss


def test_the_starter_cannot_be_measured_against_its_own_expansion(
    starter_model: Path,
    f16_model: Path,
    quantdesk_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expansion = _place_expansion(starter_model, f16_model, quantdesk_home / "cache")
    rc = run_cli(["quality", str(starter_model), "--offline", "--chunks", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{expansion.name} holds this file's own weights" in err
    assert "add the original model's F16, BF16 or Q8_0 file" in err
    assert QualityStore().for_file(starter_model) is None


def test_with_no_reference_here_the_hub_repo_s_file_is_named(
    starter_model: Path,
    quantdesk_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.core import hub
    from app.core.hub import HubFile, HubRepo
    from quant.hub.listing import RepoFile

    snap = tmp_path / "hf" / "models--someone--gemma-270m-GGUF" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    mine = snap / "gemma-270m-Q4_K_M.gguf"
    mine.symlink_to(starter_model)

    def files(repo_id: str, *, revision: str | None = None) -> HubRepo:
        assert repo_id == "someone/gemma-270m-GGUF"
        parts = [
            HubFile(n, s, t, (RepoFile(n, s),))
            for n, s, t in (
                ("gemma-270m-Q4_K_M.gguf", 253_000_000, "Q4_K_M"),
                ("gemma-270m-F16.gguf", 543_000_000, "F16"),
            )
        ]
        return HubRepo(repo_id, "abc", None, tuple(parts))

    monkeypatch.setattr(hub, "repo_files", files)
    rc = run_cli(["quality", str(mine), "--chunks", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no more precise file of this model" in err
    assert "quantdesk pull someone/gemma-270m-GGUF --file gemma-270m-F16.gguf" in err
