"""The engine and the core services stay Qt-free, and llama_cpp is imported first.

import-linter checks the static imports in CI (`make contracts`); these tests check
what really ends up in ``sys.modules`` when the packages are imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_engine_and_core_import_no_qt() -> None:
    code = """
import importlib, json, pkgutil, sys
import quant, app.core
names = []
for pkg in (quant, app.core):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name.endswith("__main__"):
            continue
        importlib.import_module(m.name)
        names.append(m.name)
qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph"))
print(json.dumps({"modules": names, "qt": qt}))
"""
    result = _run(code)
    assert result["qt"] == [], f"Qt pulled in below the UI layer: {result['qt']}"
    assert len(result["modules"]) >= 10  # type: ignore[arg-type]


def test_job_entry_point_imports_llama_cpp_before_gguf() -> None:
    # The child process that runs conversion, imatrix and quantization jobs loads
    # models too; on an H100 the reverse order crashed its first load.
    code = """
import json, runpy, sys
sys.argv = ["quant", "--help"]
try:
    runpy.run_module("quant", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
import gguf
mods = list(sys.modules)
print(json.dumps({"llama": mods.index("llama_cpp"), "gguf": mods.index("gguf")}))
"""
    result = _run(code)
    assert result["llama"] < result["gguf"]  # type: ignore[operator]


def test_entry_point_imports_llama_cpp_before_gguf() -> None:
    # On CUDA builds, sentencepiece (pulled in by gguf) loaded before llama_cpp crashes
    # the next model load; the entry point must import llama_cpp first.
    code = """
import json, sys
import app.__main__
import quant.facts, gguf
mods = list(sys.modules)
print(json.dumps({"llama": mods.index("llama_cpp"), "gguf": mods.index("gguf"),
                  "sp": mods.index("sentencepiece") if "sentencepiece" in mods else None}))
"""
    result = _run(code)
    assert result["llama"] < result["gguf"]  # type: ignore[operator]
    if result["sp"] is not None:
        assert result["llama"] < result["sp"]  # type: ignore[operator]
