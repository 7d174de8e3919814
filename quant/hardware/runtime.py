"""The llama.cpp runtime part of the hardware probe: what the installed build can use.

A CUDA card is no use to chat if llama-cpp-python was built for the CPU only, so
the probe asks the installed runtime itself: its version, whether it can offload
to a GPU, its system-info line, and the ggml backend devices it registered
(``CPU``, ``CUDA0``, ``MTL0`` …). llama-cpp-python binds no ggml device API, so
those few functions are declared here with ctypes against the ggml libraries the
binding has already loaded (``ggml/include/ggml-backend.h`` of the bundled
llama.cpp gives their signatures).

``llama_cpp`` is imported inside :func:`probe_runtime` only: importing
``quant.hardware`` must stay cheap and must not load native code.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from quant.hardware.profile import RuntimeInfo

logger = logging.getLogger(__name__)

# ggml backend registry names (each backend's ``*_reg_get_name``) -> backend id.
_BACKEND_IDS: dict[str, str] = {
    "cpu": "cpu",
    "cuda": "cuda",
    "mtl": "metal",
    "metal": "metal",
    "rocm": "rocm",
    "hip": "rocm",
    "musa": "musa",
    "vulkan": "vulkan",
    "sycl": "sycl",
    "opencl": "opencl",
    "blas": "blas",
    "cann": "cann",
    "rpc": "rpc",
    "webgpu": "webgpu",
    "zendnn": "zendnn",
}

# enum ggml_backend_dev_type (ggml/include/ggml-backend.h).
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class GgmlDevice:
    name: str
    description: str
    kind: str
    backend: str


def backend_id(registry_name: str) -> str:
    """ggml registry name ("CUDA", "MTL", "Vulkan") -> Quantdesk backend id ("cuda", "metal")."""
    key = registry_name.strip().lower()
    return _BACKEND_IDS.get(key, key)


def backends_from_devices(devices: list[GgmlDevice]) -> tuple[str, ...]:
    """Backends that have at least one device, ``cpu`` first."""
    found = ["cpu"]
    for dev in devices:
        if dev.backend not in found:
            found.append(dev.backend)
    return tuple(found)


def backends_from_system_info(text: str, *, gpu_offload: bool) -> tuple[str, ...]:
    """Backends named in ``llama_print_system_info()`` ("CPU : AVX2 = 1 | … CUDA : …").

    The line lists every compiled-in backend even without a device, so GPU
    backends are kept only when the runtime says it can offload.
    """
    found = ["cpu"]
    for match in re.finditer(r"(?:^|\|)\s*([A-Za-z][A-Za-z0-9_-]*)\s*:", text):
        backend = backend_id(match.group(1))
        if backend in _BACKEND_IDS.values() and backend not in found:
            found.append(backend)
    if not gpu_offload:
        found = [b for b in found if b in ("cpu", "blas", "zendnn")]
    return tuple(found)


def probe_runtime() -> tuple[RuntimeInfo, tuple[str, ...], tuple[str, ...]]:
    """Ask the installed llama.cpp what it can do: ``(runtime, backends, notes)``.

    Without llama-cpp-python the result is an empty runtime, ``("cpu",)`` and a note.
    """
    try:
        llama_cpp = importlib.import_module("llama_cpp")
    except ImportError as exc:
        logger.info("llama_cpp not importable: %s", exc)
        return (
            RuntimeInfo(),
            ("cpu",),
            (
                "llama.cpp runtime not installed (llama-cpp-python); chat and "
                "quantization are unavailable until it is installed",
            ),
        )
    except OSError as exc:
        return (
            RuntimeInfo(),
            ("cpu",),
            (f"llama.cpp runtime failed to load its library ({exc}); reinstall llama-cpp-python",),
        )

    notes: list[str] = []
    version = getattr(llama_cpp, "__version__", None)
    # Also loads the backends of builds that load them dynamically.
    gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
    raw = llama_cpp.llama_print_system_info()
    system_info = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    system_info = system_info.strip().rstrip("|").strip()

    try:
        devices = list_ggml_devices(llama_cpp)
    except (OSError, AttributeError) as exc:
        logger.debug("ggml device list unavailable", exc_info=True)
        notes.append(f"ggml device list unavailable ({exc}); backends read from system info")
        devices = None
    if devices:
        backends = backends_from_devices(devices)
        device_names = tuple(
            f"{d.name} ({d.description})" if d.description else d.name for d in devices
        )
    else:
        backends = backends_from_system_info(system_info, gpu_offload=gpu_offload)
        device_names = ()
    runtime = RuntimeInfo(
        llama_cpp_version=str(version) if version else None,
        supports_gpu_offload=gpu_offload,
        devices=device_names,
        system_info=system_info,
    )
    return runtime, backends, tuple(notes)


def list_ggml_devices(llama_cpp: ModuleType) -> list[GgmlDevice]:
    """Every device in ggml's backend registry, via ctypes on the loaded libraries."""
    libs = _ggml_handles(llama_cpp)

    def fn(name: str, restype: Any, argtypes: list[Any]) -> Any:
        for lib in libs:
            try:
                f = getattr(lib, name)
            except AttributeError:
                continue
            f.restype = restype
            f.argtypes = argtypes
            return f
        raise AttributeError(f"{name} is not exported by the llama.cpp libraries")

    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    dev_count = fn("ggml_backend_dev_count", sz, [])
    dev_get = fn("ggml_backend_dev_get", vp, [sz])
    dev_name = fn("ggml_backend_dev_name", ctypes.c_char_p, [vp])
    dev_desc = fn("ggml_backend_dev_description", ctypes.c_char_p, [vp])
    dev_type = fn("ggml_backend_dev_type", ctypes.c_int, [vp])
    dev_reg = fn("ggml_backend_dev_backend_reg", vp, [vp])
    reg_name = fn("ggml_backend_reg_name", ctypes.c_char_p, [vp])

    devices = []
    for i in range(int(dev_count())):
        dev = dev_get(i)
        if not dev:
            continue
        reg = dev_reg(dev)
        registry = _decode(reg_name(reg)) if reg else ""
        name = _decode(dev_name(dev))
        devices.append(
            GgmlDevice(
                name=name,
                description=_decode(dev_desc(dev)),
                kind=_DEVICE_TYPES.get(int(dev_type(dev)), "unknown"),
                backend=backend_id(registry or re.sub(r"\d+$", "", name)),
            )
        )
    return devices


def _ggml_handles(llama_cpp: ModuleType) -> list[ctypes.CDLL]:
    """libllama (whose symbol lookup also reaches its ggml dependencies on Linux and
    macOS), then libggml and libggml-base from the binding's folder (needed on Windows)."""
    handles: list[ctypes.CDLL] = []
    inner = getattr(llama_cpp, "llama_cpp", None)
    lib = getattr(inner, "_lib", None)
    if isinstance(lib, ctypes.CDLL):
        handles.append(lib)
    package_dir = Path(str(llama_cpp.__file__)).parent
    lib_dirs = [package_dir / "lib", package_dir]
    if sys.platform == "win32":
        names = ["ggml.dll", "ggml-base.dll"]
    elif sys.platform == "darwin":
        names = ["libggml.dylib", "libggml-base.dylib"]
    else:
        names = ["libggml.so", "libggml-base.so"]
    for folder in lib_dirs:
        for name in names:
            path = folder / name
            if path.exists():
                try:
                    handles.append(ctypes.CDLL(str(path)))
                except OSError as exc:
                    logger.debug("could not open %s: %s", path, exc)
    if not handles:
        raise OSError("no llama.cpp library found beside the llama_cpp package")
    return handles


def _decode(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""
