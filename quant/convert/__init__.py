"""Hugging Face safetensors checkpoints → GGUF files that llama.cpp runs correctly.

``convert_hf(src_dir, out_path, outtype="f16")`` is the entry point; see
:mod:`quant.convert.pipeline` for the order of checks and
:mod:`quant.convert.architectures` for what each model family needs
(the families themselves are listed in :mod:`quant.facts.families`).
"""

from quant.convert.errors import CheckpointError, TokenizerError, UnsupportedDtypeError
from quant.convert.pipeline import ConvertResult, convert_hf
from quant.convert.writer import OutType
from quant.facts.families import CONVERTIBLE_ARCHITECTURES as SUPPORTED_ARCHITECTURES

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "CheckpointError",
    "ConvertResult",
    "OutType",
    "TokenizerError",
    "UnsupportedDtypeError",
    "convert_hf",
]
