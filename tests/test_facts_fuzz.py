"""Seeded mutations and truncations of small valid GGUF files.

Whatever the bytes, reading a header and mapping it to facts either succeeds or
raises ModelFormatError, and never takes long (pytest-timeout bounds each test).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from app.core.runtime import import_llama_first

import_llama_first()

import gguf  # noqa: E402
import pytest  # noqa: E402

from quant.errors import ModelFormatError  # noqa: E402
from quant.facts import inspect_model  # noqa: E402
from quant.facts.gguf import facts_from_gguf  # noqa: E402
from quant.gguf.header import read_gguf_header_from  # noqa: E402
from quant.gguf.types import GGMLType  # noqa: E402
from tests.test_facts_gguf import arch_kv, llama_like, write_gguf  # noqa: E402

SEED = 20240611
EXTREMES = (0, 1, 2, 3, 7, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, (1 << 63) - 1, (1 << 64) - 1)


def _every_value_type(tmp_path: Path) -> bytes:
    kv = arch_kv("gemma3", n_layers=6)
    kv.update(
        {
            "gemma3.attention.sliding_window": 512,
            "gemma3.attention.sliding_window_pattern": [True, True, False, True, True, False],
            "t.u8": (200, gguf.GGUFValueType.UINT8),
            "t.i8": (-5, gguf.GGUFValueType.INT8),
            "t.u16": (60000, gguf.GGUFValueType.UINT16),
            "t.i16": (-30000, gguf.GGUFValueType.INT16),
            "t.i32": (-7, gguf.GGUFValueType.INT32),
            "t.u64": (1 << 40, gguf.GGUFValueType.UINT64),
            "t.i64": (-(1 << 40), gguf.GGUFValueType.INT64),
            "t.f64": (2.5, gguf.GGUFValueType.FLOAT64),
            "t.bool": True,
            "t.floats": [0.5, 1.5, -2.0],
            "t.nested": [[1, 2, 3], [4], [5, 6]],
            "t.strings": ["a", "bc", "déf"],
            "general.alignment": 64,
            "tokenizer.chat_template": "{{ messages }}",
        }
    )
    kv["tokenizer.ggml.tokens"] = [f"t{i}" for i in range(64)]
    specs = [
        *llama_like(n_layers=1, hidden=256, ff=256, vocab=64),
        ("blk.0.extra_iq.weight", (2, 256), GGMLType.IQ4_XS),
        ("blk.0.extra_tq.weight", (1, 256), GGMLType.TQ2_0),
        ("blk.0.extra_mx.weight", (1, 64), GGMLType.MXFP4),
        # Every layer the header counts has tensors, as llama.cpp requires.
        *((f"blk.{i}.attn_norm.weight", (256,), GGMLType.F32) for i in range(1, 6)),
    ]
    (path,) = write_gguf(tmp_path / "types.gguf", "gemma3", kv, specs)
    return path.read_bytes()


def _long_arrays(tmp_path: Path) -> bytes:
    kv = arch_kv(
        "llama",
        n_layers=1,
        **{
            "tokenizer.ggml.tokens": [f"tok{i}" for i in range(5000)],
            "tokenizer.ggml.scores": [float(i) for i in range(5000)],
        },
    )
    (path,) = write_gguf(tmp_path / "vocab.gguf", "llama", kv, llama_like(n_layers=1, vocab=5000))
    return path.read_bytes()


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and len(b) > 8:  # an extreme 64-bit value (counts, lengths, offsets, dims)
            i = rng.randrange(len(b) - 8)
            value = rng.choice((*EXTREMES, len(b), len(b) + rng.randrange(64)))
            b[i : i + 8] = (value & ((1 << 64) - 1)).to_bytes(8, "little")
        elif op == 2 and len(b) > 4:  # an extreme 32-bit value (types, n_dims, versions)
            i = rng.randrange(len(b) - 4)
            b[i : i + 4] = (rng.choice(EXTREMES) & 0xFFFF_FFFF).to_bytes(4, "little")
        elif op == 3:  # truncate
            del b[rng.randrange(len(b) + 1) :]
        elif op == 4 and b:  # delete a slice
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 64)]
        elif b:  # duplicate a slice
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randint(1, 64)]
    return bytes(b)


def _check(data: bytes) -> bool:
    """True when the bytes were accepted, False when refused with ModelFormatError."""
    try:
        header = read_gguf_header_from(io.BytesIO(data), len(data), Path("fuzz.gguf"))
        facts = facts_from_gguf(header, source="fuzz.gguf")
    except ModelFormatError as exc:
        message = str(exc)
        assert message.startswith("fuzz.gguf: ") and len(message) < 400, message
        return False
    assert facts.parameters >= 0 and facts.n_layers >= 0
    facts.to_dict()
    return True


@pytest.mark.timeout(120)
def test_mutated_headers_raise_only_model_format_errors(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    bases = [_every_value_type(tmp_path), _long_arrays(tmp_path)]
    assert all(_check(b) for b in bases)
    accepted = refused = 0
    for case in range(3000):
        base = bases[0] if case % 5 else bases[1]
        data = _mutate(rng, base)
        try:
            ok = _check(data)
        except AssertionError:
            raise
        except Exception as exc:  # report the case that broke the contract
            pytest.fail(f"case {case} (seed {SEED}) raised {type(exc).__name__}: {exc}")
        accepted += ok
        refused += not ok
    # Both outcomes occur: the mutations reach the checks, not only the magic.
    assert accepted > 100 and refused > 1000


@pytest.mark.timeout(60)
def test_every_truncation_is_refused(tmp_path: Path) -> None:
    data = _every_value_type(tmp_path)
    header = read_gguf_header_from(io.BytesIO(data), len(data), Path("fuzz.gguf"))
    assert header.data_offset % 64 == 0  # general.alignment honoured
    rng = random.Random(SEED + 2)
    # Every cut inside the header, and a sample of cuts inside the tensor data, is refused.
    cuts = [*range(header.data_offset + 1), *rng.sample(range(header.data_offset, len(data)), 300)]
    for cut in cuts:
        with pytest.raises(ModelFormatError):
            read_gguf_header_from(io.BytesIO(data[:cut]), cut, Path("fuzz.gguf"))


@pytest.mark.timeout(60)
def test_mutated_files_on_disk(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    base = _every_value_type(tmp_path)
    target = tmp_path / "case.gguf"
    for _ in range(200):
        target.write_bytes(_mutate(rng, base))
        try:
            inspect_model(target)
        except ModelFormatError as exc:
            assert "case.gguf" in str(exc)
