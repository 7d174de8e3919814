"""Hugging Face safetensors checkpoints → GGUF files that llama.cpp runs correctly.

``convert_hf(src_dir, out_path, outtype="f16")`` is the entry point; see
:mod:`quant.convert.pipeline` for the order of checks and
:mod:`quant.convert.architectures` for what each model family needs.
"""

from quant.convert.architectures import SUPPORTED_ARCHITECTURES
from quant.convert.errors import CheckpointError, TokenizerError, UnsupportedDtypeError
from quant.convert.pipeline import ConvertResult, convert_hf
from quant.convert.writer import OutType

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "CheckpointError",
    "ConvertResult",
    "OutType",
    "TokenizerError",
    "UnsupportedDtypeError",
    "convert_hf",
]
