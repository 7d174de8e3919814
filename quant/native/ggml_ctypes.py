"""The few ggml declarations the importance-matrix collector needs, bound with ctypes.

llama-cpp-python binds llama.cpp's C API but not ggml's tensor struct. The
scheduler's eval callback hands us a ``struct ggml_tensor *``, so this module
declares that struct (mirroring ``ggml/include/ggml.h`` of the llama.cpp that
llama-cpp-python bundles) and binds the handful of ggml functions used to read
a tensor: ``ggml_backend_tensor_get`` (works wherever the tensor lives, GPU
included), ``ggml_nbytes``, ``ggml_op_name`` and ``ggml_type_name``. The mix
search also quantizes and expands rows with ggml's own code
(``ggml_quantize_chunk`` and the type's ``to_float`` from
``ggml_get_type_traits``), so the error it measures is the error llama.cpp's
quantizer makes, importance matrix included.

A struct declared by hand silently breaks if upstream changes it, so
:func:`ggml` checks the layout against the loaded library before first use:
the struct size against ``ggml_tensor_overhead()`` and the field offsets
against a tensor created by ggml itself. Op numbers are looked up by name at
run time, never hard-coded.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quant.errors import QuantError

logger = logging.getLogger(__name__)

# Mirrors ggml/include/ggml.h (GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME).
GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_MAX_NAME = 64

# Mirrors enum ggml_type in ggml/include/ggml.h; these values are fixed by the GGUF format.
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_I32 = 26

# sizeof(struct ggml_object) in ggml/src/ggml.c on 64-bit platforms:
# size_t offs, size_t size, pointer next, enum type, char padding[4].
_GGML_OBJECT_SIZE = 2 * ctypes.sizeof(ctypes.c_size_t) + ctypes.sizeof(ctypes.c_void_p) + 4 + 4


class GgmlLayoutError(QuantError):
    """The installed ggml does not match the tensor struct this module declares."""


class GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` from ggml/include/ggml.h."""


GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


class _GgmlInitParams(ctypes.Structure):
    """``struct ggml_init_params`` from ggml/include/ggml.h."""

    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


class _GgmlTypeTraits(ctypes.Structure):
    """``struct ggml_type_traits`` from ggml/include/ggml.h."""

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        # ggml_to_float_t: void (*)(const void * x, float * y, int64_t k)
        ("to_float", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)),
        ("from_float_ref", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class TensorView:
    """What the collector needs to know about one graph tensor, copied out of C memory."""

    name: str
    type: int
    op: int
    ne: tuple[int, int, int, int]
    nb: tuple[int, int, int, int]


def llama_cpp_lib_dir() -> Path:
    """The folder holding the shared libraries of the installed llama-cpp-python."""
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def _library_candidates(lib_dir: Path) -> list[Path]:
    if sys.platform == "win32":
        names = ["ggml-base.dll", "libggml-base.dll"]
    elif sys.platform == "darwin":
        names = ["libggml-base.dylib"]
    else:
        names = ["libggml-base.so"]
    return [lib_dir / n for n in names]


class Ggml:
    """The bound ggml functions, loaded from llama-cpp-python's own ``libggml-base``."""

    def __init__(self, lib_dir: Path | None = None) -> None:
        folder = lib_dir or llama_cpp_lib_dir()
        path = next((p for p in _library_candidates(folder) if p.exists()), None)
        if path is None:
            raise GgmlLayoutError(
                f"{folder}: libggml-base not found next to llama-cpp-python's libraries; "
                "reinstall llama-cpp-python (0.3.20 or newer)."
            )
        # The library is already loaded by llama_cpp; this returns the same handle.
        lib = ctypes.CDLL(str(path))
        self._lib = lib
        self.path = path

        lib.ggml_op_name.argtypes = [ctypes.c_int]
        lib.ggml_op_name.restype = ctypes.c_char_p
        lib.ggml_type_name.argtypes = [ctypes.c_int]
        lib.ggml_type_name.restype = ctypes.c_char_p
        lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
        lib.ggml_nbytes.restype = ctypes.c_size_t
        lib.ggml_nelements.argtypes = [ctypes.c_void_p]
        lib.ggml_nelements.restype = ctypes.c_int64
        lib.ggml_get_name.argtypes = [ctypes.c_void_p]
        lib.ggml_get_name.restype = ctypes.c_void_p
        lib.ggml_tensor_overhead.argtypes = []
        lib.ggml_tensor_overhead.restype = ctypes.c_size_t
        lib.ggml_backend_tensor_get.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
        ]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_backend_tensor_set.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
        ]
        lib.ggml_backend_tensor_set.restype = None
        lib.ggml_init.argtypes = [_GgmlInitParams]
        lib.ggml_init.restype = ctypes.c_void_p
        lib.ggml_free.argtypes = [ctypes.c_void_p]
        lib.ggml_free.restype = None
        lib.ggml_new_tensor_2d.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int64,
            ctypes.c_int64,
        ]
        lib.ggml_new_tensor_2d.restype = ctypes.c_void_p
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_GgmlTypeTraits)
        lib.ggml_fp16_to_fp32_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        lib.ggml_fp16_to_fp32_row.restype = None

        self.check_layout()
        self.op_mul_mat = self.op_by_name("MUL_MAT")
        self.op_mul_mat_id = self.op_by_name("MUL_MAT_ID")

    # -- checks -------------------------------------------------------------

    def check_layout(self) -> None:
        """Fail loudly when the declared struct does not match the loaded ggml."""
        ours = ctypes.sizeof(GgmlTensor)
        theirs = int(self._lib.ggml_tensor_overhead()) - _GGML_OBJECT_SIZE
        if ours != theirs:
            raise GgmlLayoutError(
                f"{self.path.name}: struct ggml_tensor is {theirs} bytes but Quantdesk "
                f"declares {ours}; this llama-cpp-python is not supported for imatrix "
                "collection, install the version pinned in pyproject.toml."
            )
        params = _GgmlInitParams(
            mem_size=4 * int(self._lib.ggml_tensor_overhead()), mem_buffer=None, no_alloc=True
        )
        ctx = self._lib.ggml_init(params)
        if not ctx:
            raise GgmlLayoutError("ggml_init failed while checking the tensor layout.")
        try:
            ptr = self._lib.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 3, 5)
            t = ctypes.cast(ptr, ctypes.POINTER(GgmlTensor)).contents
            name_addr = int(self._lib.ggml_get_name(ptr))
            ok = (
                t.type == GGML_TYPE_F32
                and tuple(t.ne) == (3, 5, 1, 1)
                and tuple(t.nb)[:2] == (4, 12)
                and name_addr == ctypes.addressof(t) + GgmlTensor.name.offset
                and int(self._lib.ggml_nelements(ptr)) == 15
            )
        finally:
            self._lib.ggml_free(ctx)
        if not ok:
            raise GgmlLayoutError(
                f"{self.path.name}: the fields of struct ggml_tensor moved; this "
                "llama-cpp-python is not supported for imatrix collection."
            )

    def op_by_name(self, name: str) -> int:
        """The number of ggml op ``name`` (e.g. ``"MUL_MAT"``) in the loaded library.

        ``ggml_op_name`` does not bounds-check, so the scan stops at the first
        match; the ops we look up sit early in the enum in every ggml version.
        """
        target = name.encode()
        for op in range(1, 96):
            if self._lib.ggml_op_name(op) == target:
                return op
        raise GgmlLayoutError(f"ggml op {name} not found in {self.path.name}.")

    # -- reading tensors ----------------------------------------------------

    def op_name(self, op: int) -> str:
        raw = self._lib.ggml_op_name(op)
        return raw.decode() if raw else "?"

    def type_name(self, type_: int) -> str:
        raw = self._lib.ggml_type_name(type_)
        return raw.decode() if raw else "?"

    @staticmethod
    def view(ptr: ctypes._Pointer[GgmlTensor]) -> TensorView:
        t = ptr.contents
        ne = tuple(int(v) for v in t.ne)
        nb = tuple(int(v) for v in t.nb)
        return TensorView(
            name=t.name.decode("utf-8", "replace"),
            type=int(t.type),
            op=int(t.op),
            ne=(ne[0], ne[1], ne[2], ne[3]),
            nb=(nb[0], nb[1], nb[2], nb[3]),
        )

    def read(self, ptr: ctypes._Pointer[GgmlTensor], dtype: type[np.generic]) -> np.ndarray:
        """Copy a tensor's data to host memory as an array of shape ``(ne3, ne2, ne1, ne0)``.

        The copy goes through ``ggml_backend_tensor_get``, which handles host
        and device buffers alike; strides (``nb``) are honoured, so views and
        permuted tensors read correctly.
        """
        t = ptr.contents
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        nbytes = int(self._lib.ggml_nbytes(addr))
        raw = np.empty(nbytes, dtype=np.uint8)
        if nbytes:
            self._lib.ggml_backend_tensor_get(addr, raw.ctypes.data, 0, nbytes)
        itemsize = np.dtype(dtype).itemsize
        if int(t.nb[0]) != itemsize:
            raise GgmlLayoutError(
                f"tensor {t.name.decode(errors='replace')}: element stride {t.nb[0]} is not "
                f"{itemsize}; only plain float/int tensors can be read."
            )
        shape = (int(t.ne[3]), int(t.ne[2]), int(t.ne[1]), int(t.ne[0]))
        strides = (int(t.nb[3]), int(t.nb[2]), int(t.nb[1]), int(t.nb[0]))
        return np.lib.stride_tricks.as_strided(
            raw.view(dtype),
            shape=shape,
            strides=strides,
            writeable=False,
        )

    def read_f32(self, ptr: ctypes._Pointer[GgmlTensor]) -> np.ndarray:
        """A writable copy of a contiguous F32 tensor, shape ``(ne3, ne2, ne1, ne0)``.

        One copy only (a large result, such as an output layer's logits, is not
        duplicated); give it back with :meth:`write`.
        """
        t = ptr.contents
        ne = [int(v) for v in t.ne]
        if t.type != GGML_TYPE_F32 or int(t.nb[0]) != 4 or int(t.nb[1]) != 4 * ne[0]:
            raise GgmlLayoutError(
                f"tensor {t.name.decode(errors='replace')}: not a contiguous F32 tensor."
            )
        out = np.empty((ne[3], ne[2], ne[1], ne[0]), dtype=np.float32)
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        self._lib.ggml_backend_tensor_get(addr, out.ctypes.data, 0, out.nbytes)
        return out

    def write(self, ptr: ctypes._Pointer[GgmlTensor], values: np.ndarray) -> None:
        """Overwrite a contiguous F32 graph tensor with ``values`` (same number of elements).

        Used from the eval callback to change a node's result before the nodes
        after it read it; ``ggml_backend_tensor_set`` writes wherever the tensor
        lives.
        """
        t = ptr.contents
        n = int(t.ne[0]) * int(t.ne[1]) * int(t.ne[2]) * int(t.ne[3])
        contiguous = int(t.nb[0]) == 4 and int(t.nb[1]) == 4 * int(t.ne[0])
        if t.type != GGML_TYPE_F32 or not contiguous or values.size != n:
            raise GgmlLayoutError(
                f"tensor {t.name.decode(errors='replace')}: only contiguous F32 results of the "
                "same size can be overwritten."
            )
        data = np.ascontiguousarray(values, dtype=np.float32)
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        self._lib.ggml_backend_tensor_set(addr, data.ctypes.data, 0, data.nbytes)

    # -- quantizing rows ------------------------------------------------------

    def requires_imatrix(self, type_: int) -> bool:
        """Whether ggml refuses to quantize ``type_`` without an importance matrix."""
        return bool(self._lib.ggml_quantize_requires_imatrix(type_))

    def row_size(self, type_: int, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` values in ``type_`` (``ggml_row_size``)."""
        return int(self._lib.ggml_row_size(type_, n_per_row))

    def quantize_rows(
        self, type_: int, rows: np.ndarray, imatrix: np.ndarray | None = None
    ) -> np.ndarray:
        """``rows`` (n_rows, n_per_row) float32 quantized to ``type_``: the raw blocks, uint8.

        ``imatrix`` (n_per_row float32, the per-column mean of x²) weighs the
        error the quantizer minimises, as ``llama_model_quantize`` passes it.
        The call holds no Python lock, so several threads quantize in parallel.
        """
        src = np.ascontiguousarray(rows, dtype=np.float32)
        if src.ndim != 2:
            raise GgmlLayoutError(f"quantize_rows takes a 2-D array, not shape {src.shape}.")
        n_rows, n_per_row = src.shape
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            if imatrix.shape != (n_per_row,):
                raise GgmlLayoutError(
                    f"importance values of length {imatrix.size} for rows of {n_per_row}."
                )
        elif self.requires_imatrix(type_):
            raise GgmlLayoutError(
                f"{self.type_name(type_)} needs an importance matrix to be quantized."
            )
        out = np.empty(n_rows * self.row_size(type_, n_per_row), dtype=np.uint8)
        written = self._lib.ggml_quantize_chunk(
            type_,
            src.ctypes.data,
            out.ctypes.data,
            0,
            n_rows,
            n_per_row,
            None if imatrix is None else imatrix.ctypes.data,
        )
        if int(written) != out.size:
            raise GgmlLayoutError(
                f"ggml wrote {written} bytes of {self.type_name(type_)} where {out.size} were "
                "expected; this llama-cpp-python does not match Quantdesk's declarations."
            )
        return out

    def dequantize(self, type_: int, data: np.ndarray, n_elements: int) -> np.ndarray:
        """``n_elements`` values of ``type_`` stored in ``data`` (uint8), as float32."""
        raw = np.ascontiguousarray(data, dtype=np.uint8)
        out = np.empty(n_elements, dtype=np.float32)
        if type_ == GGML_TYPE_F32:
            out[:] = raw.view(np.float32)[:n_elements]
            return out
        if type_ == GGML_TYPE_F16:
            self._lib.ggml_fp16_to_fp32_row(raw.ctypes.data, out.ctypes.data, n_elements)
            return out
        traits = self._lib.ggml_get_type_traits(type_).contents
        if not traits.to_float:
            raise GgmlLayoutError(f"ggml cannot expand {self.type_name(type_)} values.")
        traits.to_float(raw.ctypes.data, out.ctypes.data, n_elements)
        return out


_instances: dict[str, Ggml] = {}
_lock = threading.Lock()


def ggml() -> Ggml:
    """The process-wide :class:`Ggml`, loaded and checked on first use."""
    with _lock:
        if "lib" not in _instances:
            _instances["lib"] = Ggml()
        return _instances["lib"]
