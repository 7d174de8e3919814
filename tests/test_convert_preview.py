"""What the Convert form shows before a job: the source in one line, each type's size and
quality."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core import convert_preview
from app.core.convert_preview import SourceInfo, describe_source, preview_conversion
from quant.gguf.types import GGMLType
from tests.ggufs import write_tiny_gguf
from tests.test_hub_cli import tiny_gguf


def test_a_full_precision_gguf_is_described_with_its_facts(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny-F32.gguf")
    info = describe_source(f"  {path}  ")
    assert info.source == str(path)
    assert info.note.startswith("GGUF llama, ")
    assert info.note.endswith(" parameters")
    assert "already quantized" not in info.note
    assert info.facts is not None and info.parameters == info.facts.parameters


def test_a_quantized_gguf_is_expanded_first_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "tiny-Q4_K_M.gguf"
    path.write_bytes(tiny_gguf(tmp_path / "q4.gguf", GGMLType.Q4_K))
    note = describe_source(str(path)).note
    assert "already quantized (Q4_K)" in note
    assert "the new files carry its loss" in note


def test_other_sources_in_one_line(tmp_path: Path) -> None:
    hub = describe_source("google/gemma-3-1b-it")
    assert hub == SourceInfo("google/gemma-3-1b-it", "Hub repo: downloaded (resumable) and "
                             "converted first")  # fmt: skip
    assert hub.facts is None
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    bad = describe_source(str(notes))
    assert "notes.txt: not a GGUF file" in bad.note and bad.facts is None
    assert describe_source("   ") == SourceInfo("", "")


def test_each_type_gets_its_size_and_quality(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny-F32.gguf")
    preview = preview_conversion(
        str(path), ["Q8_0", "Q4_K_M", "IQ2_XS", "NOT_A_TYPE"], imatrix=True
    )
    assert [t.name for t in preview.types] == ["Q8_0", "Q4_K_M", "IQ2_XS"]
    q8, q4, iq2 = preview.types
    assert q8.size_bytes is not None and q4.size_bytes is not None
    assert q8.size_bytes > q4.size_bytes > 0
    assert q8.bits_per_weight > q4.bits_per_weight
    assert q4.kld is not None and q8.kld is not None and q8.kld < q4.kld
    assert iq2.needs_imatrix and not q4.needs_imatrix
    assert preview.source.note.startswith("GGUF llama")


def test_without_a_source_only_bits_per_weight(tmp_path: Path) -> None:
    preview = preview_conversion("", ["Q4_K_M"], imatrix=True)
    (q4,) = preview.types
    assert q4.bits_per_weight > 4 and q4.size_bytes is None and q4.kld is None


def test_a_source_already_described_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_tiny_gguf(tmp_path / "tiny-F32.gguf")
    known = describe_source(str(path))

    def no_reading(text: str) -> SourceInfo:
        raise AssertionError("the source was read again")

    monkeypatch.setattr(convert_preview, "describe_source", no_reading)
    with_im = preview_conversion(str(path), ["Q4_K_M"], imatrix=True, known=known)
    without = preview_conversion(str(path), ["Q4_K_M"], imatrix=False, known=known)
    assert with_im.source is known
    assert with_im.types[0].size_bytes == without.types[0].size_bytes
    assert with_im.types[0].kld is not None and without.types[0].kld is not None
    assert with_im.types[0].kld <= without.types[0].kld  # an imatrix never costs quality
