"""Turn a quantized GGUF back into an F16 one.

:func:`dequantize_gguf` rebuilds a full-precision model from any GGUF:
every tensor is expanded with ``gguf.quants.dequantize`` and written with
``gguf.GGUFWriter`` as F16 (one-dimensional tensors and norms stay F32, as
llama.cpp's converter writes them), with all metadata copied and
``general.file_type`` set to F16. Quality is capped by the quantized source,
of course; the result is a real model of the original architecture that the
imatrix, quantize and evaluate stages can start from (the test suite builds its
F16 reference from the bundled Q4_K_M starter model this way).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from quant.atomic import atomic_output
from quant.errors import ModelFormatError, QuantError
from quant.gguf.header import GGUFHeader, GGUFTensor, read_gguf_header
from quant.gguf.types import GGMLType, GGUFValueType, LlamaFileType
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel

logger = logging.getLogger(__name__)


def _writer_value(header: GGUFHeader, key: str) -> tuple[Any, Any, Any] | None:
    """(value, GGUFValueType, sub type) for GGUFWriter.add_key_value; None to skip."""
    import gguf

    vtype = header.metadata_types[key]
    value = header.get(key)
    if vtype != GGUFValueType.ARRAY:
        return value, gguf.GGUFValueType(vtype), None
    item_type = header.array_types[key]
    if not isinstance(value, list) or not value or item_type == GGUFValueType.ARRAY:
        return None  # GGUFWriter writes neither empty nor nested arrays
    return value, gguf.GGUFValueType(vtype), gguf.GGUFValueType(item_type)


def _target_dtype(t: GGUFTensor) -> type[np.floating[Any]]:
    # One-dimensional tensors (norms, biases) stay F32, like llama.cpp's converter writes them.
    if len(t.shape) <= 1 or t.type == GGMLType.F32:
        return np.float32
    return np.float16


def dequantize_gguf(
    src: Path | str,
    dst: Path | str,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write ``dst``: the model in ``src`` with every tensor expanded to F16 (norms F32).

    The output appears whole or not at all. Raises :class:`ModelFormatError` for
    a file that is not a GGUF, and :class:`QuantError` for a tensor type gguf-py
    cannot expand.
    """
    import gguf
    from gguf.quants import dequantize

    src, dst = Path(src), Path(dst)
    info = read_gguf_header(src)
    arch = info.architecture
    if not arch:
        raise ModelFormatError(f"{src.name}: no general.architecture key; is this a model GGUF?")
    stage = "dequantize"
    plans: list[tuple[GGUFTensor, type[np.floating[Any]]]] = [
        (t, _target_dtype(t)) for t in info.tensors
    ]
    total_bytes = sum(t.n_elements * np.dtype(dt).itemsize for t, dt in plans)
    eta = EtaEstimator()
    with atomic_output(dst) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.data_alignment = info.alignment
        try:
            for key in info.metadata:
                if key == "general.architecture":
                    continue
                if key == "general.file_type":
                    writer.add_uint32(key, int(LlamaFileType.F16))
                    continue
                packed = _writer_value(info, key)
                if packed is None:
                    logger.debug("%s: key %s not copied (empty or nested array)", src.name, key)
                    continue
                writer.add_key_value(key, *packed)
            if "general.file_type" not in info.metadata:
                writer.add_uint32("general.file_type", int(LlamaFileType.F16))
            for t, dt in plans:
                np_shape = tuple(reversed(t.shape))
                writer.add_tensor_info(
                    t.name, np_shape, np.dtype(dt), t.n_elements * np.dtype(dt).itemsize
                )
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            done_bytes = 0
            for i, (t, dt) in enumerate(plans):
                check_cancel(cancel)
                raw = info.tensor_data(t)
                try:
                    qtype = gguf.GGMLQuantizationType(t.type)
                    values = dequantize(np.asarray(raw), qtype)
                except (NotImplementedError, ValueError) as exc:
                    raise QuantError(
                        f"{src.name}: tensor {t.name} is stored as {t.type.name}, which gguf-py "
                        "cannot expand; start from an F16, BF16 or Q8_0 file instead."
                    ) from exc
                out = np.ascontiguousarray(values.reshape(tuple(reversed(t.shape))).astype(dt))
                if dt is np.float16 and not np.isfinite(out).all():
                    raise QuantError(
                        f"{src.name}: tensor {t.name} has values outside the F16 range; "
                        "this model needs BF16 or F32 as its full-precision form."
                    )
                writer.write_tensor_data(out)
                done_bytes += out.nbytes
                if on_progress is not None:
                    on_progress(
                        Progress(
                            stage,
                            i + 1,
                            len(plans),
                            t.name,
                            bytes_done=done_bytes,
                            bytes_total=total_bytes,
                            eta_s=eta.eta(done_bytes, total_bytes),
                        )
                    )
        finally:
            writer.close()
    logger.info("dequantized %s to %s (%d tensors)", src.name, dst, len(plans))
    return dst
