"""GGUF header reading and GGUF → model facts, on the real starter model and on
small files written with gguf-py's GGUFWriter (tensor data left sparse)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from app.core.runtime import import_llama_first

# llama_cpp before gguf (which may import sentencepiece): docs/llama-cpp.md#import-order.
import_llama_first()

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from quant.errors import ModelFormatError  # noqa: E402
from quant.facts import SourceKind, inspect_model  # noqa: E402
from quant.gguf.header import MAX_TENSORS, read_gguf_header  # noqa: E402
from quant.gguf.types import (  # noqa: E402
    GGMLType,
    LlamaFileType,
    file_type_from_filename,
)

TensorSpec = tuple[str, Sequence[int], GGMLType]


def write_gguf(
    path: Path,
    arch: str,
    kv: dict[str, Any] | None = None,
    tensors: Iterable[TensorSpec] = (),
    *,
    endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    split_max_tensors: int = 0,
    with_data: bool = True,
) -> list[Path]:
    """Write a GGUF header with gguf-py and extend each file to its full (sparse) size.

    Tensor shapes are given in numpy order (rows last), as gguf-py takes them.
    Values of ``kv`` are typed by gguf-py from the Python value, except
    ``(value, GGUFValueType)`` pairs.
    """
    writer = gguf.GGUFWriter(path, arch, endianess=endian, split_max_tensors=split_max_tensors)
    kv = dict(kv or {})
    alignment = int(kv.pop("general.alignment", 32))
    if alignment != 32:
        writer.add_custom_alignment(alignment)
    for key, value in kv.items():
        if isinstance(value, tuple):
            writer.add_key_value(key, value[0], value[1])
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    sizes: list[list[int]] = [[]]
    for name, shape, ttype in tensors:
        qtype = gguf.GGMLQuantizationType(int(ttype))
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(shape, qtype)))
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    sizes = [[ti.nbytes for ti in shard.values()] for shard in writer.tensors]
    files = writer.format_shard_names(path)
    writer.close()
    if with_data:
        for file, shard_sizes in zip(files, sizes, strict=True):
            header_end = file.stat().st_size
            data_start = header_end + (-header_end % alignment) if shard_sizes else header_end
            data = sum(n + (-n % alignment) for n in shard_sizes)
            os.truncate(file, data_start + data)
    return files


def llama_like(
    n_layers: int = 2, hidden: int = 256, ff: int = 512, vocab: int = 512, tied: bool = False
) -> list[TensorSpec]:
    t: list[TensorSpec] = [
        ("token_embd.weight", (vocab, hidden), GGMLType.Q8_0),
        ("output_norm.weight", (hidden,), GGMLType.F32),
    ]
    if not tied:
        t.append(("output.weight", (vocab, hidden), GGMLType.Q6_K))
    for i in range(n_layers):
        t += [
            (f"blk.{i}.attn_norm.weight", (hidden,), GGMLType.F32),
            (f"blk.{i}.attn_q.weight", (hidden, hidden), GGMLType.Q4_K),
            (f"blk.{i}.attn_k.weight", (hidden // 4, hidden), GGMLType.Q4_K),
            (f"blk.{i}.attn_v.weight", (hidden // 4, hidden), GGMLType.Q6_K),
            (f"blk.{i}.attn_output.weight", (hidden, hidden), GGMLType.Q4_K),
            (f"blk.{i}.ffn_norm.weight", (hidden,), GGMLType.F32),
            (f"blk.{i}.ffn_gate.weight", (ff, hidden), GGMLType.Q4_K),
            (f"blk.{i}.ffn_up.weight", (ff, hidden), GGMLType.Q4_K),
            (f"blk.{i}.ffn_down.weight", (hidden, ff), GGMLType.Q6_K),
        ]
    return t


def arch_kv(arch: str, n_layers: int = 2, **more: Any) -> dict[str, Any]:
    kv: dict[str, Any] = {
        "general.name": f"tiny {arch}",
        f"{arch}.block_count": n_layers,
        f"{arch}.embedding_length": 256,
        f"{arch}.feed_forward_length": 512,
        f"{arch}.attention.head_count": 8,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.context_length": 4096,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(512)],
        "general.file_type": int(LlamaFileType.Q4_K_M),
    }
    kv.update(more)
    return kv


def n_elements(specs: Iterable[TensorSpec]) -> int:
    return sum(int(np.prod(shape)) for _, shape, _ in specs)


# --- the real starter model --------------------------------------------------------


def test_starter_model_facts(starter_model: Path) -> None:
    facts = inspect_model(starter_model)
    assert facts.kind is SourceKind.GGUF
    assert facts.architecture == "gemma3"
    assert (facts.n_layers, facts.embedding_length, facts.feed_forward_length) == (18, 640, 2048)
    assert (facts.n_heads, facts.n_kv_heads, facts.head_dim, facts.head_dim_v) == (4, 1, 256, 256)
    assert facts.vocab_size == 262144
    assert facts.context_length == 32768
    assert facts.sliding_window == 512
    # Gemma 3: five local layers, then one global one.
    assert facts.swa_layers == tuple((i + 1) % 6 != 0 for i in range(18))
    assert facts.n_swa_layers == 15
    assert facts.file_type == "Q4_K_M"
    assert 265e6 < facts.parameters < 271e6
    assert facts.tied_embeddings
    assert facts.has_tokenizer and facts.tokenizer_model == "llama"
    assert facts.license == "gemma"
    assert facts.file_size_bytes == starter_model.stat().st_size
    # The data section ends exactly at the end of the file.
    assert facts.extra["data_offset"] + sum(t.n_bytes for t in facts.tensors) == (
        facts.file_size_bytes
    )
    assert 4.5 < (facts.bits_per_weight or 0) < 8.5
    assert len(facts.tensors) == 236


def test_starter_model_matches_llama_cpp(starter_model: Path) -> None:
    """What the header reader says is what llama.cpp itself reports after loading the file."""
    import llama_cpp

    facts = inspect_model(starter_model)
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(starter_model).encode(), params)
    assert model
    try:
        assert llama_cpp.llama_model_n_params(model) == facts.parameters
        assert llama_cpp.llama_model_size(model) == sum(t.n_bytes for t in facts.tensors)
        assert llama_cpp.llama_model_n_layer(model) == facts.n_layers
        assert llama_cpp.llama_model_n_embd(model) == facts.embedding_length
        assert llama_cpp.llama_model_n_head(model) == facts.n_heads
        assert llama_cpp.llama_model_n_head_kv(model) == facts.n_kv_heads
        assert llama_cpp.llama_model_n_ctx_train(model) == facts.context_length
        assert llama_cpp.llama_model_n_swa(model) == facts.sliding_window
        assert llama_cpp.llama_model_ftype(model) == LlamaFileType[facts.file_type or ""]
        vocab = llama_cpp.llama_model_get_vocab(model)
        assert llama_cpp.llama_vocab_n_tokens(vocab) == facts.vocab_size
        has_template = llama_cpp.llama_model_chat_template(model, None) is not None
        assert has_template == facts.has_chat_template
    finally:
        llama_cpp.llama_model_free(model)


def test_starter_header_reads_only_the_header(
    starter_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader touches the metadata and tensor infos, never the 240 MB of tensor data."""
    read_bytes = 0
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(self, *args, **kwargs)
        real_read = fh.read

        def read(n: int = -1) -> bytes:
            nonlocal read_bytes
            data = real_read(n)
            read_bytes += len(data)
            return data

        fh.read = read
        return fh

    monkeypatch.setattr(Path, "open", counting_open)
    header = read_gguf_header(starter_model)
    # The header is ~6.5 MB (mostly the 262k-token vocabulary); one read window past it at most.
    assert read_bytes <= header.data_offset + (1 << 20)
    assert read_bytes < starter_model.stat().st_size / 20


# --- ggml types and file types ------------------------------------------------------


def test_ggml_type_table_matches_gguf_py() -> None:
    known = {q.value: q for q in gguf.GGMLQuantizationType}
    for t in GGMLType:
        theirs = gguf.GGML_QUANT_SIZES.get(known[t.value]) if t.value in known else None
        if t is GGMLType.Q8_1:
            # block_q8_1 in ggml-common.h: two fp16 (scale, sum) + 32 int8 = 36 bytes;
            # gguf-py 0.19 lists 40.
            assert (t.block_size, t.type_size) == (32, 36)
        elif theirs is not None:
            assert (t.block_size, t.type_size) == theirs, t.name
    assert GGMLType.Q4_K.bits_per_weight == 4.5
    assert GGMLType.Q6_K.n_bytes(256 * 10) == 2100
    assert GGMLType.Q2_0.type_size == 18  # newer than gguf-py 0.19


def test_file_type_names_and_numbers() -> None:
    assert LlamaFileType.Q4_K_M == 15
    assert LlamaFileType.MXFP4_MOE == 38
    assert LlamaFileType.BF16 == 32
    assert LlamaFileType.from_name("q4_k_m") is LlamaFileType.Q4_K_M
    assert LlamaFileType.from_name("fp16") is LlamaFileType.F16
    assert LlamaFileType.Q4_K_M.description == "Q4_K - Medium"
    with pytest.raises(ValueError, match="Q9_Z"):
        LlamaFileType.from_name("Q9_Z")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", LlamaFileType.Q4_K_M),
        ("gemma-3-270m-q4_k_m.gguf", LlamaFileType.Q4_K_M),
        ("Meta-Llama-3.1-8B-Instruct-IQ2_XXS.gguf", LlamaFileType.IQ2_XXS),
        ("Q8_0/model-Q8_0-00001-of-00002.gguf", LlamaFileType.Q8_0),
        ("llama-3-8b.f16.gguf", LlamaFileType.F16),
        ("model-bf16.gguf", LlamaFileType.BF16),
        ("gpt-oss-20b-mxfp4.gguf", LlamaFileType.MXFP4_MOE),
        ("Qwen3-8B-UD-Q4_K_XL.gguf", None),
        ("mmproj-model.gguf", None),
    ],
)
def test_file_type_from_filename(filename: str, expected: LlamaFileType | None) -> None:
    assert file_type_from_filename(filename) is expected


# --- synthetic files: mapping ---------------------------------------------------------


def test_dense_model_counts_and_types(tmp_path: Path) -> None:
    specs = llama_like()
    (path,) = write_gguf(tmp_path / "m.gguf", "llama", arch_kv("llama"), specs)
    facts = inspect_model(path)
    assert facts.parameters == n_elements(specs)
    data_bytes = sum(GGMLType(t).n_bytes(int(np.prod(s))) for _, s, t in specs)
    assert sum(t.n_bytes for t in facts.tensors) == data_bytes
    assert facts.bits_per_weight == pytest.approx(8 * data_bytes / facts.parameters)
    assert (facts.n_heads, facts.n_kv_heads, facts.head_dim) == (8, 2, 32)
    assert facts.vocab_size == 512 and facts.tokenizer_model == "gpt2"
    assert facts.file_type == "Q4_K_M" and not facts.extra["file_type_guessed"]
    assert not facts.tied_embeddings and not facts.is_moe and facts.active_parameters is None
    assert facts.name == "tiny llama"
    # ggml order in the file: fastest-varying dimension first.
    emb = next(t for t in facts.tensors if t.name == "token_embd.weight")
    assert emb.shape == (256, 512) and emb.type == "Q8_0"
    by_type = {t.type: t for t in facts.tensor_types}
    assert by_type["Q4_K"].n_tensors == 10 and by_type["F32"].n_tensors == 5


def test_moe_active_parameters(tmp_path: Path) -> None:
    n_exp, used, hidden, eff = 8, 2, 256, 256
    specs = [
        *llama_like(n_layers=1, tied=True)[:2],
        ("blk.0.attn_q.weight", (hidden, hidden), GGMLType.Q8_0),
        ("blk.0.ffn_gate_inp.weight", (n_exp, hidden), GGMLType.F32),
        ("blk.0.ffn_gate_exps.weight", (n_exp, eff, hidden), GGMLType.Q4_K),
        ("blk.0.ffn_up_exps.weight", (n_exp, eff, hidden), GGMLType.Q4_K),
        ("blk.0.ffn_down_exps.weight", (n_exp, hidden, eff), GGMLType.Q6_K),
        ("blk.0.ffn_gate_shexp.weight", (eff, hidden), GGMLType.Q8_0),
    ]
    kv = arch_kv(
        "qwen3moe",
        n_layers=1,
        **{"qwen3moe.expert_count": n_exp, "qwen3moe.expert_used_count": used},
    )
    (path,) = write_gguf(tmp_path / "moe.gguf", "qwen3moe", kv, specs)
    facts = inspect_model(path)
    experts = 3 * n_exp * eff * hidden
    assert facts.parameters == n_elements(specs)
    assert facts.active_parameters == facts.parameters - experts + experts * used // n_exp
    assert facts.is_moe and (facts.n_experts, facts.n_experts_used) == (8, 2)
    assert facts.tied_embeddings


def test_per_layer_kv_heads_and_head_lengths(tmp_path: Path) -> None:
    kv = arch_kv(
        "foo",
        n_layers=4,
        **{
            "foo.attention.head_count_kv": [0, 2, 0, 4],
            "foo.attention.key_length": 192,
            "foo.attention.value_length": 128,
        },
    )
    (path,) = write_gguf(tmp_path / "hybrid.gguf", "foo", kv, llama_like(n_layers=1))
    facts = inspect_model(path)
    # An architecture Quantdesk has never heard of is still described from its header.
    assert facts.architecture == "foo"
    assert facts.n_kv_heads_per_layer == (0, 2, 0, 4)
    assert facts.n_kv_heads == 4
    assert [facts.kv_heads_for_layer(i) for i in range(4)] == [0, 2, 0, 4]
    assert (facts.head_dim, facts.head_dim_v) == (192, 128)


@pytest.mark.parametrize(
    ("arch", "kv", "window", "flags"),
    [
        # Gemma 2 slides in every other layer, 4096 tokens when the key is absent.
        ("gemma2", {}, 4096, [True, False] * 3),
        ("gemma3", {"gemma3.attention.sliding_window": 1024}, 1024, [True] * 5 + [False]),
        # Gemma 3 without a window key runs full attention everywhere.
        ("gemma3", {}, None, []),
        (
            "cohere2",
            {"cohere2.attention.sliding_window": 4096},
            4096,
            [True, True, True, False] * 1 + [True, True],
        ),
        ("gpt-oss", {"gpt-oss.attention.sliding_window": 128}, 128, [True, False] * 3),
        # An explicit per-layer array wins over the architecture's period.
        (
            "gemma3",
            {
                "gemma3.attention.sliding_window": 512,
                "gemma3.attention.sliding_window_pattern": [True, False, True, False, True, True],
            },
            512,
            [True, False, True, False, True, True],
        ),
        # An integer pattern overrides the default period.
        (
            "gemma3",
            {
                "gemma3.attention.sliding_window": 512,
                "gemma3.attention.sliding_window_pattern": 3,
            },
            512,
            [True, True, False] * 2,
        ),
        # llama.cpp ignores Phi-3's window.
        ("phi3", {"phi3.attention.sliding_window": 2047}, None, []),
        # Llama 4 uses chunked attention: three chunked layers, then one global.
        ("llama4", {}, 8192, [True, True, True, False, True, True]),
    ],
)
def test_sliding_window_layouts(
    tmp_path: Path, arch: str, kv: dict[str, Any], window: int | None, flags: list[bool]
) -> None:
    (path,) = write_gguf(tmp_path / "swa.gguf", arch, arch_kv(arch, n_layers=6, **kv), [])
    facts = inspect_model(path)
    assert facts.sliding_window == window
    assert list(facts.swa_layers) == flags
    if arch == "phi3":
        assert any("full attention" in n for n in facts.notes)


def test_missing_file_type_is_guessed_like_llama_cpp(tmp_path: Path) -> None:
    kv = arch_kv("llama")
    del kv["general.file_type"]
    (path,) = write_gguf(tmp_path / "m.gguf", "llama", kv, llama_like())
    facts = inspect_model(path)
    assert facts.file_type == "Q4_K_M"
    assert facts.extra["file_type_guessed"]
    assert any("general.file_type" in n for n in facts.notes)


def test_chat_template_and_version_2_and_big_endian(tmp_path: Path) -> None:
    kv = arch_kv("llama", **{"tokenizer.chat_template": "{{ messages }}"})
    (path,) = write_gguf(tmp_path / "v3.gguf", "llama", kv, llama_like())
    facts = inspect_model(path)
    assert facts.has_chat_template and facts.chat_template == "{{ messages }}"
    assert "chat_template" not in facts.to_dict()

    # Version 2 has the same layout as version 3.
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack("<I", 2)
    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(raw)
    assert inspect_model(v2).parameters == facts.parameters
    assert inspect_model(v2).extra["gguf_version"] == 2

    (be,) = write_gguf(tmp_path / "be.gguf", "llama", kv, llama_like(), endian=gguf.GGUFEndian.BIG)
    big = inspect_model(be)
    assert big.extra["byte_order"] == "big"
    assert (big.parameters, big.n_layers, big.vocab_size) == (facts.parameters, 2, 512)


def test_split_files_are_read_together(tmp_path: Path) -> None:
    specs = llama_like(n_layers=2)
    files = write_gguf(tmp_path / "m.gguf", "llama", arch_kv("llama"), specs, split_max_tensors=8)
    assert len(files) == 3 and files[0].name == "m-00001-of-00003.gguf"
    facts = inspect_model(files[0])
    assert facts.parameters == n_elements(specs)
    assert facts.file_size_bytes == sum(f.stat().st_size for f in files)
    files[2].unlink()
    partial = inspect_model(files[0])
    assert partial.parameters < facts.parameters
    assert any("2 of the 3 split files" in n for n in partial.notes)


def test_huge_sparse_file_opens_instantly(tmp_path: Path) -> None:
    """A 70B-sized F16 model: only the header is read, whatever the file's size."""
    specs: list[TensorSpec] = [("token_embd.weight", (128256, 8192), GGMLType.F16)]
    for i in range(80):
        specs += [
            (f"blk.{i}.attn_q.weight", (8192, 8192), GGMLType.F16),
            (f"blk.{i}.ffn_up.weight", (28672, 8192), GGMLType.F16),
            (f"blk.{i}.ffn_gate.weight", (28672, 8192), GGMLType.F16),
            (f"blk.{i}.ffn_down.weight", (8192, 28672), GGMLType.F16),
        ]
    kv = arch_kv(
        "llama",
        n_layers=80,
        **{
            "llama.embedding_length": 8192,
            "tokenizer.ggml.tokens": [f"t{i}" for i in range(128256)],
        },
    )
    try:
        (path,) = write_gguf(tmp_path / "big.gguf", "llama", kv, specs)
    except OSError as exc:  # a filesystem without sparse files
        pytest.fail(f"cannot create a sparse file here: {exc}")
    assert path.stat().st_size > 100e9
    facts = inspect_model(path)
    assert facts.parameters == n_elements(specs)
    assert facts.file_size_bytes == path.stat().st_size
    assert facts.bits_per_weight == pytest.approx(16.0)


# --- bad input ---------------------------------------------------------------------


def _valid(tmp_path: Path) -> bytes:
    (path,) = write_gguf(tmp_path / "ok.gguf", "llama", arch_kv("llama"), llama_like(n_layers=1))
    return path.read_bytes()


def _patch_u64_after(raw: bytes, marker: bytes, value: int) -> bytes:
    """Overwrite the 8 bytes right after ``marker`` (e.g. the length after a key's type)."""
    i = raw.index(marker) + len(marker)
    return raw[:i] + struct.pack("<Q", value) + raw[i + 8 :]


def _expect_error(tmp_path: Path, raw: bytes, *fragments: str) -> str:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(raw)
    with pytest.raises(ModelFormatError) as info:
        inspect_model(bad)
    message = str(info.value)
    assert "bad.gguf" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_not_a_gguf_file(tmp_path: Path) -> None:
    _expect_error(tmp_path, b"PK\x03\x04 this is a zip file", "not a GGUF file", "b'PK")
    _expect_error(tmp_path, b"", "not a GGUF file", "0 bytes")


def test_truncated_header_and_truncated_data(tmp_path: Path) -> None:
    raw = _valid(tmp_path)
    cut = raw.index(b"blk.0.ffn_down.weight") + 5  # inside the last tensor info
    _expect_error(tmp_path, raw[:cut], "cut short at byte", "truncated")
    # So short that the declared counts cannot fit: said as such.
    _expect_error(tmp_path, raw[:200], "12 tensors and 11 metadata keys", "200-byte file")
    # Header complete, tensor data cut short: a partial download.
    _expect_error(tmp_path, raw[:-100], "truncated", "download or convert it again")


def test_absurd_counts_and_lengths(tmp_path: Path) -> None:
    raw = _valid(tmp_path)
    too_many = raw[:8] + struct.pack("<Q", MAX_TENSORS + 1) + raw[16:]
    _expect_error(tmp_path, too_many, "tensors", "limit")
    many_kv = raw[:16] + struct.pack("<Q", 90_000) + raw[24:]
    _expect_error(tmp_path, many_kv, "metadata keys", "more than the")
    # The name string's length prefix of general.architecture's value.
    long_string = _patch_u64_after(raw, b"general.architecture" + struct.pack("<I", 8), 1 << 40)
    _expect_error(tmp_path, long_string, "string", "limit")
    array_len = _patch_u64_after(raw, b"tokenizer.ggml.tokens" + struct.pack("<II", 9, 8), 1 << 50)
    _expect_error(tmp_path, array_len, "array elements", "tokenizer.ggml.tokens")


def test_bad_versions_shapes_and_types(tmp_path: Path) -> None:
    raw = _valid(tmp_path)
    _expect_error(tmp_path, raw[:4] + struct.pack("<I", 1) + raw[8:], "version 1")
    _expect_error(tmp_path, raw[:4] + struct.pack("<I", 7) + raw[8:], "version 7")
    name = b"token_embd.weight"
    i = raw.index(name) + len(name)
    _expect_error(tmp_path, raw[:i] + struct.pack("<I", 5) + raw[i + 4 :], "5 dimensions")
    # First dimension of token_embd set to 0.
    _expect_error(tmp_path, raw[: i + 4] + struct.pack("<q", 0) + raw[i + 12 :], "dimension of 0")
    # Its ggml type (after n_dims and two dims) set to an unknown number.
    j = i + 4 + 16
    _expect_error(tmp_path, raw[:j] + struct.pack("<I", 99) + raw[j + 4 :], "unknown ggml type 99")
    # Its offset moved past the end of the file.
    k = j + 4
    past = raw[:k] + struct.pack("<Q", 1 << 40) + raw[k + 8 :]
    _expect_error(tmp_path, past, "token_embd.weight", "truncated")


def test_header_without_architecture(tmp_path: Path) -> None:
    path = tmp_path / "imatrix.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.kv_data[0].pop("general.architecture")
    writer.add_string("general.type", "imatrix")
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with pytest.raises(ModelFormatError, match=r"no general\.architecture.*imatrix"):
        inspect_model(path)
