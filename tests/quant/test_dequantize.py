"""The F16 model rebuilt from the Q4_K_M starter model with gguf-py."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant.errors import Cancelled, ModelFormatError
from quant.gguf.header import read_gguf_header
from quant.gguf.types import GGMLType, LlamaFileType
from quant.jobs.dequantize import dequantize_gguf
from quant.progress import CancelToken, Progress


def test_header_reader_reads_the_starter_model(starter_model: Path) -> None:
    info = read_gguf_header(starter_model)
    assert info.architecture == "gemma3"
    assert info.file_type is LlamaFileType.Q4_K_M
    assert len(info.tensors) == 236
    assert len(info.get("tokenizer.ggml.tokens")) == 262144
    assert info.n_parameters == 268_098_176
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert embd.shape == (640, 262144)
    # The data section ends exactly at the end of the file.
    last = max(info.tensors, key=lambda t: t.offset)
    assert info.data_offset + last.offset + last.n_bytes <= info.file_size


def test_f16_copy_keeps_every_tensor_and_key(starter_model: Path, f16_model: Path) -> None:
    src, out = read_gguf_header(starter_model), read_gguf_header(f16_model)
    assert out.file_type is LlamaFileType.F16
    assert [t.name for t in out.tensors] == [t.name for t in src.tensors]
    assert [t.shape for t in out.tensors] == [t.shape for t in src.tensors]
    types = {GGMLType(t.type) for t in out.tensors}
    assert types == {GGMLType.F16, GGMLType.F32}
    assert all(GGMLType(t.type) is GGMLType.F32 for t in out.tensors if len(t.shape) == 1)
    assert set(src.metadata) == set(out.metadata)
    assert out.get("tokenizer.ggml.tokens") == src.get("tokenizer.ggml.tokens")
    assert out.get("gemma3.attention.sliding_window") == 512


def test_not_a_gguf_is_refused_with_its_magic(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelFormatError, match=r"model.gguf: not a GGUF file \(magic b'PK"):
        read_gguf_header(bad)


def test_cancel_leaves_no_file(starter_model: Path, tmp_path: Path) -> None:
    token = CancelToken()
    seen: list[Progress] = []

    def progress(p: Progress) -> None:
        seen.append(p)
        if p.done == 1:  # the output norm; the embedding table comes next
            token.cancel()

    out = tmp_path / "half.gguf"
    with pytest.raises(Cancelled):
        dequantize_gguf(starter_model, out, on_progress=progress, cancel=token)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert seen[-1].done == 1 and seen[-1].total == 236


def test_a_cut_download_is_refused_before_any_tensor_is_mapped(
    starter_model: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.gguf"
    with starter_model.open("rb") as src:
        cut.write_bytes(src.read(100_000_000))
    with pytest.raises(ModelFormatError, match=r"cut\.gguf: truncated — tensor .* ends at byte"):
        read_gguf_header(cut)
    with pytest.raises(ModelFormatError, match="truncated"):
        dequantize_gguf(cut, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
