"""Headers llama.cpp would abort on are broken files, told in one sentence.

Mutated copies of a tiny GGUF (tests/ggufs.py) and of the starter model's header
(its tensor data left sparse) are refused by ``quantdesk inspect``, the library
and :func:`validate_for_llama` before llama.cpp ever sees them.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import pytest

from app.core.cli import run_cli
from app.core.library import ModelLibrary
from app.core.library_index import LibraryIndex, describe_library
from app.core.settings import Settings
from quant.errors import ModelFormatError
from quant.facts import inspect_model
from quant.gguf.header import GGUFHeader, SkippedArray, read_gguf_header
from quant.gguf.validate import validate_for_llama
from tests.ggufs import write_tiny_gguf
from tests.test_facts_gguf import _expect_error


def _value_at(raw: bytes, key: str) -> int:
    """Offset of the value of ``key`` (after its type) in a little-endian GGUF."""
    needle = struct.pack("<Q", len(key)) + key.encode()
    return raw.index(needle) + len(needle) + 4


def _patched(raw: bytes, key: str, fmt: str, value: float) -> bytes:
    at = _value_at(raw, key)
    packed = struct.pack("<" + fmt, value)
    return raw[:at] + packed + raw[at + len(packed) :]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", n_layers=2)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("llama.block_count", "I", 0), "llama.block_count is 0 (expected 1 to 512)"),
        (("llama.block_count", "I", 513), "expected 1 to 512"),
        (("llama.block_count", "I", 3), "layer 2 of 3 has no tensors"),
        (("llama.block_count", "I", 1), "tensors of layer 1 exist but llama.block_count is 1"),
        (("llama.attention.layer_norm_rms_epsilon", "f", math.nan), "is NaN"),
        (("llama.attention.layer_norm_rms_epsilon", "f", -1e-5), "above 0"),
        (("llama.attention.layer_norm_rms_epsilon", "f", math.inf), "above 0"),
        (("llama.context_length", "I", 0), "llama.context_length is 0"),
        (("llama.embedding_length", "I", 0), "llama.embedding_length is 0"),
        (("llama.embedding_length", "I", 128), "token_embd.weight has shape [64, 32]"),
        (("llama.attention.head_count_kv", "I", 3), "not a multiple of its 3 KV heads"),
        (("llama.attention.head_count", "I", 1 << 20), "llama.attention.head_count is"),
        (("llama.rope.dimension_count", "I", 15), "even count of at most the head size 16"),
        (("llama.rope.dimension_count", "I", 32), "even count of at most the head size 16"),
        (("llama.feed_forward_length", "I", 0xFFFF_FFFF), "llama.feed_forward_length is"),
    ],
)
def test_hyper_parameters_llama_cpp_aborts_on(
    tmp_path: Path, tiny: bytes, change: tuple[str, str, float], words: str
) -> None:
    message = _expect_error(tmp_path, _patched(tiny, *change), words)
    assert "llama.cpp cannot run this file" in message


def test_the_unchanged_tiny_model_passes(tmp_path: Path, tiny: bytes) -> None:
    good = tmp_path / "good.gguf"
    good.write_bytes(tiny)
    validate_for_llama(read_gguf_header(good), vocabulary=True)
    assert inspect_model(good).n_layers == 2


def test_a_broken_model_is_listed_as_broken(tmp_path: Path, tiny: bytes) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "zero-layers.gguf").write_bytes(_patched(tiny, "llama.block_count", "I", 0))
    (folder / "fine.gguf").write_bytes(tiny)
    library = ModelLibrary(Settings(), external_roots=(), models_dir=tmp_path / "made")
    library.add_folder(folder)
    rows = {
        r.entry.name: r
        for r in describe_library(library, None, index=LibraryIndex(tmp_path / "index.json"))
    }
    assert rows["fine"].broken is None and rows["fine"].architecture == "llama"
    broken = rows["zero-layers"].broken
    assert broken is not None and "llama.block_count is 0 (expected 1 to 512)" in broken
    assert rows["zero-layers"].architecture is None


def test_inspect_says_broken_in_one_sentence(
    tmp_path: Path, tiny: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(_patched(tiny, "llama.attention.layer_norm_rms_epsilon", "f", math.nan))
    assert run_cli(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nan.gguf" in err and "is NaN" in err


# --- the starter model's header ------------------------------------------------------


def _infos_end(header: GGUFHeader) -> int:
    """Where the tensor infos end (the data section follows after alignment padding)."""
    end = 24 + sum(header.kv_bytes.values())
    for name, shape in zip(header.table.raw_names, header.table.shapes, strict=True):
        end += 8 + len(name) + 4 + 8 * len(shape) + 4 + 8
    return end


def _sparse_copy(header: GGUFHeader, head: bytes, path: Path) -> Path:
    """``head`` (a header up to its tensor infos) padded, then the data section left sparse."""
    data_size = header.file_size - header.data_offset
    padded = head + bytes(-len(head) % header.alignment)
    path.write_bytes(padded)
    os.truncate(path, len(padded) + data_size)
    return path


@pytest.fixture(scope="module")
def starter(starter_model: Path) -> tuple[GGUFHeader, bytes]:
    header = read_gguf_header(starter_model)
    with starter_model.open("rb") as fh:
        head = fh.read(_infos_end(header))
    return header, head


def test_a_sparse_copy_of_the_starter_header_passes(
    tmp_path: Path, starter: tuple[GGUFHeader, bytes]
) -> None:
    header, head = starter
    copy = _sparse_copy(header, head, tmp_path / "copy.gguf")
    assert inspect_model(copy).vocab_size == 262144
    validate_for_llama(read_gguf_header(copy), vocabulary=True)


def test_a_vocabulary_of_empty_strings(tmp_path: Path, starter: tuple[GGUFHeader, bytes]) -> None:
    header, head = starter
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, SkippedArray)
    emptied = (
        head[: tokens.offset] + bytes(8 * tokens.length) + head[tokens.offset + tokens.n_bytes :]
    )
    copy = _sparse_copy(header, emptied, tmp_path / "empty-vocab.gguf")
    with pytest.raises(ModelFormatError, match=r"empty-vocab\.gguf: every token of the vocabulary"):
        inspect_model(copy)


def test_one_empty_token_among_many_is_tolerated(
    tmp_path: Path, starter: tuple[GGUFHeader, bytes]
) -> None:
    """llama.cpp renames a lone empty token and runs the model; so it is not broken."""
    header, head = starter
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, SkippedArray)
    # The last token: its length set to 0, its bytes dropped.
    values = header.get("tokenizer.ggml.tokens")
    assert isinstance(values, list)
    last = values[-1]
    size = len(last.encode() if isinstance(last, str) else last)
    end = tokens.offset + tokens.n_bytes
    cut = head[: end - size - 8] + bytes(8) + head[end:]
    copy = _sparse_copy(header, cut, tmp_path / "one-empty.gguf")
    assert inspect_model(copy).vocab_size == 262144
    validate_for_llama(read_gguf_header(copy), vocabulary=True)


def test_a_repeated_token_is_found_before_a_model_load(
    tmp_path: Path, starter: tuple[GGUFHeader, bytes]
) -> None:
    header, head = starter
    a, b = b"<unused0>", b"<unused1>"
    i = head.index(struct.pack("<Q", len(b)) + b) + 8
    copy = _sparse_copy(header, head[:i] + a + head[i + len(b) :], tmp_path / "twice.gguf")
    inspect_model(copy)  # a listing does not read the whole vocabulary
    with pytest.raises(ModelFormatError, match=r"twice\.gguf: the vocabulary lists a token twice"):
        validate_for_llama(read_gguf_header(copy), vocabulary=True)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("gemma3.block_count", "I", 0), "gemma3.block_count is 0"),
        (("gemma3.attention.layer_norm_rms_epsilon", "f", math.nan), "is NaN"),
        (("gemma3.rope.freq_base", "f", 0.0), "gemma3.rope.freq_base is 0.0"),
        (("gemma3.rope.freq_base", "f", math.inf), "gemma3.rope.freq_base is inf"),
        (("gemma3.attention.key_length", "I", 0), "gemma3.attention.key_length is 0"),
    ],
)
def test_starter_header_with_bad_hyper_parameters(
    tmp_path: Path, starter: tuple[GGUFHeader, bytes], change: tuple[str, str, float], words: str
) -> None:
    header, head = starter
    copy = _sparse_copy(header, _patched(head, *change), tmp_path / "bad.gguf")
    with pytest.raises(ModelFormatError, match=words.replace(".", r"\.")):
        inspect_model(copy)


def test_projectors_and_adapters_are_not_held_to_model_rules(tmp_path: Path, tiny: bytes) -> None:
    """Only model files are checked as models: llama.cpp loads the others differently."""
    raw = _patched(tiny, "llama.block_count", "I", 0)
    header = tmp_path / "x.gguf"
    header.write_bytes(raw)
    parsed = read_gguf_header(header)
    from dataclasses import replace

    adapter = replace(parsed, metadata={**parsed.metadata, "general.type": "adapter"})
    validate_for_llama(adapter)
    unknown = replace(parsed, metadata={**parsed.metadata, "general.architecture": "notyet"})
    validate_for_llama(unknown)
    with pytest.raises(ModelFormatError):
        validate_for_llama(parsed)
