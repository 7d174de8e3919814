"""``quantdesk convert`` and the child-process entry ``python -m quant``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.commands import convert
from tests.quant.test_pipeline import ROOT


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.convert import checkpoints as ckpt

    tok = ckpt.with_bos(
        ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
    )
    return ckpt.build_llama(tmp_path_factory.mktemp("cli") / "tiny-llama", tok).path


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="quantdesk")
    sub = parser.add_subparsers()
    convert.register(sub)
    return parser.parse_args(["convert", *argv])


def test_convert_command_prints_the_quality_table(
    tiny_hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        str(tiny_hf),
        "--to",
        "Q8_0,Q4_K_M",
        "--out",
        str(tmp_path / "out"),
        "--chunks",
        "2",
        "--eval-chunks",
        "2",
        "--chunk-size",
        "32",
    ]
    spec = convert.spec_from_args(_parse(*argv, "--embedding-type", "Q8_0"))
    assert [t.name for t in spec.types] == ["Q8_0", "Q4_K_M"]
    assert (spec.imatrix, spec.calibration, spec.imatrix_chunks) == ("auto", None, 2)
    assert (spec.imatrix_chunk_size, spec.token_embedding_type) == (32, "Q8_0")

    args = _parse(*argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "tiny-llama: from tiny-llama" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["Q8_0"][4] == "no" and rows["Q4_K_M"][4] == "yes"  # imatrix column
    assert float(rows["Q4_K_M"][5]) >= 0.0  # KLD
    assert "model card:" in out

    # --json prints the report; a rerun reuses every stage.
    args = _parse(*argv, "--json")
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [o["reused"] for o in report["outputs"]] == [True, True]
    assert Path(report["card_path"]).is_file()


def test_child_entry_lists_jobs_and_reports_errors_as_json(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "quant", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for job in ("convert-hf", "pipeline", "quantize", "imatrix", "dequantize"):
        assert job in help_text
    spec = {"source": str(tmp_path / "missing.gguf"), "types": ["Q4_K_M"]}
    proc = subprocess.run(
        [sys.executable, "-m", "quant", "pipeline", "--json-progress", "--spec", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["kind"] == "QuantError"
    assert "missing.gguf: no such GGUF file" in last["error"]
