"""GGUF value types, ggml tensor types and llama.cpp file types.

``GGUFValueType`` mirrors ``enum gguf_type`` in ``ggml/include/gguf.h``: the
type of a metadata value, with the ``struct`` format and size of the fixed-size
ones. ``GGMLType`` mirrors ``enum ggml_type`` in ``ggml/include/ggml.h`` and the
block size / bytes-per-block pairs of ``type_traits`` in upstream
``ggml/src/ggml.c`` (the block layouts are in ``ggml/src/ggml-common.h``).
``LlamaFileType`` mirrors ``enum llama_ftype`` in ``include/llama.h``; its member
names are the names the llama.cpp ``quantize`` tool and model file names use
("Q4_K_M", "IQ4_XS", …). All three were checked against the llama.cpp bundled
with llama-cpp-python 0.3.36.
"""

from __future__ import annotations

import re
import struct
from enum import IntEnum


class GGUFValueType(IntEnum):
    """A metadata value's type in a GGUF file (``enum gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12

    @property
    def struct_format(self) -> str | None:
        """The ``struct`` letter of a fixed-size type (without byte order); None otherwise."""
        return _VALUE_FORMATS.get(self.value)

    @property
    def size(self) -> int | None:
        """Bytes a value of a fixed-size type takes; None for strings and arrays."""
        return _VALUE_SIZES.get(self.value)


# struct letters of the fixed-size value types (GGUF_TYPE_SIZE in ggml/src/gguf.cpp).
_VALUE_FORMATS: dict[int, str] = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_VALUE_SIZES = {k: struct.calcsize("<" + f) for k, f in _VALUE_FORMATS.items()}

# Elements per super-block of the k-quants and i-quants (QK_K in ggml-common.h).
QK_K = 256

# (block size in elements, bytes per block), indexed by ggml type number.
_TRAITS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 2 + 16),  # Q4_0: fp16 scale + 32 nibbles
    3: (32, 2 + 2 + 16),  # Q4_1: fp16 scale and min + 32 nibbles
    6: (32, 2 + 4 + 16),  # Q5_0: scale + high bits + nibbles
    7: (32, 2 + 2 + 4 + 16),  # Q5_1
    8: (32, 2 + 32),  # Q8_0
    9: (32, 2 + 2 + 32),  # Q8_1: scale and scaled sum + 32 int8
    10: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),  # Q2_K = 84
    11: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),  # Q3_K = 110
    12: (QK_K, 2 + 2 + 12 + QK_K // 2),  # Q4_K = 144
    13: (QK_K, 2 + 2 + 12 + QK_K // 2 + QK_K // 8),  # Q5_K = 176
    14: (QK_K, 2 + QK_K // 16 + 3 * QK_K // 4),  # Q6_K = 210
    15: (QK_K, 4 + QK_K + 2 * (QK_K // 16)),  # Q8_K = 292
    16: (QK_K, 2 + 2 * (QK_K // 8)),  # IQ2_XXS = 66
    17: (QK_K, 2 + 2 * (QK_K // 8) + QK_K // 32),  # IQ2_XS = 74
    18: (QK_K, 2 + 3 * (QK_K // 8)),  # IQ3_XXS = 98
    19: (QK_K, 2 + QK_K // 8 + QK_K // 16),  # IQ1_S = 50
    20: (32, 2 + 16),  # IQ4_NL
    21: (QK_K, 2 + 13 * (QK_K // 32) + QK_K // 64),  # IQ3_S = 110
    22: (QK_K, 2 + QK_K // 4 + QK_K // 16),  # IQ2_S = 82
    23: (QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),  # IQ4_XS = 136
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),  # IQ1_M = 56
    30: (1, 2),  # BF16
    34: (QK_K, 2 + QK_K // 64 + (QK_K - 4 * (QK_K // 64)) // 5),  # TQ1_0 = 54
    35: (QK_K, 2 + QK_K // 4),  # TQ2_0 = 66
    39: (32, 1 + 16),  # MXFP4: e8m0 scale + 32 fp4 values
    40: (64, 4 + 32),  # NVFP4: four e4m3 scales + 64 fp4 values
    41: (128, 2 + 128 // 8),  # Q1_0
    42: (64, 2 + 64 // 4),  # Q2_0
}


class GGMLType(IntEnum):
    """A tensor's storage type in a GGUF file (``enum ggml_type``)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42

    @property
    def block_size(self) -> int:
        """Elements per block; a row's length must be a multiple of it."""
        return _TRAITS[self.value][0]

    @property
    def type_size(self) -> int:
        """Bytes per block."""
        return _TRAITS[self.value][1]

    @property
    def is_quantized(self) -> bool:
        return self.block_size > 1

    @property
    def bits_per_weight(self) -> float:
        """Nominal bits per element of this type (Q4_K: 4.5, Q8_0: 8.5)."""
        return 8.0 * self.type_size / self.block_size

    def n_bytes(self, n_elements: int) -> int:
        """Bytes that ``n_elements`` take in this type (a whole number of blocks)."""
        return (n_elements // self.block_size) * self.type_size

    @classmethod
    def from_name(cls, name: str) -> GGMLType:
        """The type named ``name`` (case-insensitive); ``ValueError`` when there is none."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown ggml type name {name!r}") from None


class LlamaFileType(IntEnum):
    """A GGUF file's overall quantization (``general.file_type``, ``enum llama_ftype``)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 7
    Q5_0 = 8
    Q5_1 = 9
    Q2_K = 10
    Q3_K_S = 11
    Q3_K_M = 12
    Q3_K_L = 13
    Q4_K_S = 14
    Q4_K_M = 15
    Q5_K_S = 16
    Q5_K_M = 17
    Q6_K = 18
    IQ2_XXS = 19
    IQ2_XS = 20
    Q2_K_S = 21
    IQ3_XS = 22
    IQ3_XXS = 23
    IQ1_S = 24
    IQ4_NL = 25
    IQ3_S = 26
    IQ3_M = 27
    IQ2_S = 28
    IQ2_M = 29
    IQ4_XS = 30
    IQ1_M = 31
    BF16 = 32
    TQ1_0 = 36
    TQ2_0 = 37
    MXFP4_MOE = 38
    NVFP4 = 39
    Q1_0 = 40
    Q2_0 = 41

    @property
    def description(self) -> str:
        """llama.cpp's own wording (``llama_model_ftype_name``), e.g. "Q4_K - Medium"."""
        return _FTYPE_DESCRIPTIONS.get(self, self.name)

    @classmethod
    def from_name(cls, name: str) -> LlamaFileType:
        """The file type named ``name`` ("q4_k_m", "Q8_0", "fp16"); ``ValueError`` if none."""
        key = name.strip().upper().replace("-", "_")
        key = _FTYPE_ALIASES.get(key, key)
        try:
            return cls[key]
        except KeyError:
            raise ValueError(f"unknown llama.cpp file type {name!r}") from None


# Bit llama.cpp sets on a file type it guessed from the tensors (LLAMA_FTYPE_GUESSED).
FTYPE_GUESSED_BIT = 1024

_FTYPE_DESCRIPTIONS: dict[LlamaFileType, str] = {
    LlamaFileType.F32: "all F32",
    LlamaFileType.Q2_K: "Q2_K - Medium",
    LlamaFileType.Q2_K_S: "Q2_K - Small",
    LlamaFileType.Q3_K_S: "Q3_K - Small",
    LlamaFileType.Q3_K_M: "Q3_K - Medium",
    LlamaFileType.Q3_K_L: "Q3_K - Large",
    LlamaFileType.Q4_K_S: "Q4_K - Small",
    LlamaFileType.Q4_K_M: "Q4_K - Medium",
    LlamaFileType.Q5_K_S: "Q5_K - Small",
    LlamaFileType.Q5_K_M: "Q5_K - Medium",
    LlamaFileType.IQ3_M: "IQ3_S mix - 3.66 bpw",
    LlamaFileType.MXFP4_MOE: "MXFP4 MoE",
}

_FTYPE_ALIASES = {"FP16": "F16", "FP32": "F32", "MXFP4": "MXFP4_MOE"}

# The file type llama.cpp assumes when general.file_type is missing, from the most
# common tensor type (src/llama-model-loader.cpp).
_FTYPE_FROM_DOMINANT: dict[GGMLType, LlamaFileType] = {
    GGMLType.F32: LlamaFileType.F32,
    GGMLType.F16: LlamaFileType.F16,
    GGMLType.BF16: LlamaFileType.BF16,
    GGMLType.Q4_0: LlamaFileType.Q4_0,
    GGMLType.Q4_1: LlamaFileType.Q4_1,
    GGMLType.Q5_0: LlamaFileType.Q5_0,
    GGMLType.Q5_1: LlamaFileType.Q5_1,
    GGMLType.Q8_0: LlamaFileType.Q8_0,
    GGMLType.Q2_K: LlamaFileType.Q2_K,
    GGMLType.Q3_K: LlamaFileType.Q3_K_M,
    GGMLType.Q4_K: LlamaFileType.Q4_K_M,
    GGMLType.Q5_K: LlamaFileType.Q5_K_M,
    GGMLType.Q6_K: LlamaFileType.Q6_K,
    GGMLType.TQ1_0: LlamaFileType.TQ1_0,
    GGMLType.TQ2_0: LlamaFileType.TQ2_0,
    GGMLType.IQ2_XXS: LlamaFileType.IQ2_XXS,
    GGMLType.IQ2_XS: LlamaFileType.IQ2_XS,
    GGMLType.IQ2_S: LlamaFileType.IQ2_S,
    GGMLType.IQ3_XXS: LlamaFileType.IQ3_XXS,
    GGMLType.IQ1_S: LlamaFileType.IQ1_S,
    GGMLType.IQ1_M: LlamaFileType.IQ1_M,
    GGMLType.IQ4_NL: LlamaFileType.IQ4_NL,
    GGMLType.IQ4_XS: LlamaFileType.IQ4_XS,
    GGMLType.IQ3_S: LlamaFileType.IQ3_S,
    GGMLType.NVFP4: LlamaFileType.NVFP4,
    GGMLType.Q1_0: LlamaFileType.Q1_0,
    GGMLType.Q2_0: LlamaFileType.Q2_0,
}


def file_type_from_dominant(tensor_type: GGMLType) -> LlamaFileType:
    """The file type llama.cpp reports for a file without ``general.file_type``."""
    return _FTYPE_FROM_DOMINANT.get(tensor_type, LlamaFileType.F32)


# Longest names first, so "Q4_K_M" wins over "Q4_K" and "IQ2_XXS" over "IQ2_XS".
_FILE_NAME_TOKENS = sorted(
    [*(m.name for m in LlamaFileType), *_FTYPE_ALIASES], key=len, reverse=True
)
_FILE_NAME_RE = re.compile(
    r"(?<![A-Za-z0-9])(" + "|".join(re.escape(t) for t in _FILE_NAME_TOKENS) + r")(?![A-Za-z0-9_])",
    re.IGNORECASE,
)


def file_type_from_filename(filename: str) -> LlamaFileType | None:
    """The file type a GGUF's name announces ("Qwen2.5-7B-Q4_K_M.gguf" → Q4_K_M).

    Only whole tokens count: "Q4_K_XL" (not a llama.cpp type) gives None, not Q4_K.
    The last match wins, since names end with the type ("Llama-3-8B-Q8_0.gguf").
    """
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    matches = _FILE_NAME_RE.findall(base)
    if not matches:
        return None
    return LlamaFileType.from_name(matches[-1])
