"""The About box: what this Quantdesk is, and which llama.cpp it runs on.

A bug report needs the app version, how it was installed (a bundle or a Python
environment), the Qt and Python versions, and above all the llama.cpp build:
the llama-cpp-python version, the ggml version and commit, the system-info line
(which CPU features and backends were compiled in) and the ggml devices. The
dialog shows them and copies them as plain text.

:func:`collect_build_info` is Qt-free and also feeds ``quantdesk --self-test``.
It takes the runtime part from the machine page's probe when there is one;
otherwise it asks the runtime itself (milliseconds: ``llama_cpp`` is already
imported by the entry point).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import platform
import sys
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

import app
from quant.hardware.profile import RuntimeInfo

logger = logging.getLogger(__name__)

APP_NAME = "Quantdesk"
TAGLINE = "Pick, convert and chat with local language models, measured on your machine."


@dataclass(frozen=True)
class BuildInfo:
    """Everything the About box and the self-test report about this installation."""

    app_version: str
    install: str  # "bundle (/path)" or "Python environment (/path)"
    python: str
    qt: str
    platform: str
    llama_cpp_version: str | None
    ggml_version: str | None
    ggml_commit: str | None
    system_info: str
    gpu_offload: bool
    devices: tuple[str, ...]
    backends: tuple[str, ...]
    runtime_note: str = ""

    @property
    def llama_build(self) -> str:
        """One line naming the llama.cpp build, e.g. ``llama-cpp-python 0.3.36 · ggml 0.25.3 …``."""
        if not self.llama_cpp_version:
            return "not installed"
        parts = [f"llama-cpp-python {self.llama_cpp_version}"]
        if self.ggml_version:
            commit = f" ({self.ggml_commit})" if self.ggml_commit else ""
            parts.append(f"ggml {self.ggml_version}{commit}")
        return " · ".join(parts)

    def as_text(self) -> str:
        """Plain text for a bug report (the About box's Copy button)."""
        lines = [
            f"{APP_NAME} {self.app_version}",
            f"Installed as: {self.install}",
            f"llama.cpp: {self.llama_build}",
            f"Backends: {', '.join(self.backends) or 'none'}"
            f" (GPU offload: {'yes' if self.gpu_offload else 'no'})",
            f"Devices: {'; '.join(self.devices) or 'none listed'}",
            f"System info: {self.system_info or 'unavailable'}",
            f"Qt: {self.qt}",
            f"Python: {self.python}",
            f"Platform: {self.platform}",
        ]
        if self.runtime_note:
            lines.append(f"Note: {self.runtime_note}")
        return "\n".join(lines)


def ggml_build() -> tuple[str | None, str | None]:
    """``(version, commit)`` of the loaded ggml library, or Nones when it cannot be asked."""
    try:
        llama_cpp = importlib.import_module("llama_cpp")
        from quant.hardware.runtime import _ggml_handles

        handles = _ggml_handles(llama_cpp)
    except (ImportError, OSError, AttributeError) as exc:
        logger.debug("ggml build unavailable: %s", exc)
        return None, None
    for lib in handles:
        try:
            version_fn, commit_fn = lib.ggml_version, lib.ggml_commit
        except AttributeError:
            continue
        version_fn.restype = commit_fn.restype = ctypes.c_char_p
        version_fn.argtypes = commit_fn.argtypes = []
        raw_version, raw_commit = version_fn(), commit_fn()
        return (
            raw_version.decode("utf-8", "replace") if raw_version else None,
            raw_commit.decode("utf-8", "replace") if raw_commit else None,
        )
    return None, None


def install_kind() -> str:
    """How this copy runs: from a frozen bundle or from a Python environment."""
    if getattr(sys, "frozen", False):
        return f"bundle ({sys.executable})"
    return f"Python environment ({sys.prefix})"


def collect_build_info(
    runtime: RuntimeInfo | None = None, backends: tuple[str, ...] | None = None
) -> BuildInfo:
    """This installation's :class:`BuildInfo`.

    ``runtime`` and ``backends`` come from an earlier hardware probe when the caller
    has one; without them the runtime is asked now.
    """
    note = ""
    if runtime is None or backends is None:
        from quant.hardware.runtime import probe_runtime

        runtime, backends, notes = probe_runtime()
        note = "; ".join(notes)
    try:
        from PySide6 import __version__ as pyside_version
        from PySide6.QtCore import qVersion

        qt = f"Qt {qVersion()}, PySide6 {pyside_version}"
    except ImportError:
        qt = "not loaded"
    ggml_version, ggml_commit = ggml_build() if runtime.llama_cpp_version else (None, None)
    return BuildInfo(
        app_version=app.__version__,
        install=install_kind(),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        qt=qt,
        platform=f"{platform.system()} {platform.release()} ({platform.machine()})",
        llama_cpp_version=runtime.llama_cpp_version,
        ggml_version=ggml_version,
        ggml_commit=ggml_commit,
        system_info=runtime.system_info,
        gpu_offload=runtime.supports_gpu_offload,
        devices=tuple(runtime.devices),
        backends=tuple(backends),
        runtime_note=note,
    )


class AboutDialog(QDialog):
    """Version, llama.cpp build and backends, with a button that copies them all."""

    def __init__(self, info: BuildInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = info
        self.setObjectName("aboutDialog")
        self.setWindowTitle(f"About {APP_NAME}")
        self.setModal(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(24, 20, 24, 16)
        lay.setSpacing(12)

        head = QHBoxLayout()
        head.setSpacing(16)
        self.icon_label = QLabel()
        app_icon = QGuiApplication.windowIcon()
        if not app_icon.isNull():
            self.icon_label.setPixmap(app_icon.pixmap(64, 64))
        head.addWidget(self.icon_label, 0, Qt.AlignmentFlag.AlignTop)
        title_box = QVBoxLayout()
        title = QLabel(APP_NAME)
        title.setObjectName("pageTitle")
        self.version_label = QLabel(f"Version {info.app_version}")
        tagline = QLabel(TAGLINE)
        tagline.setWordWrap(True)
        tagline.setProperty("muted", True)
        title_box.addWidget(title)
        title_box.addWidget(self.version_label)
        title_box.addWidget(tagline)
        head.addLayout(title_box, 1)
        lay.addLayout(head)

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.llama_label = self._value(info.llama_build)
        self.backends_label = self._value(
            f"{', '.join(info.backends) or 'none'}"
            f" — GPU offload {'available' if info.gpu_offload else 'not built in'}"
        )
        self.devices_label = self._value("\n".join(info.devices) or "none listed")
        form.addRow("llama.cpp", self.llama_label)
        form.addRow("Backends", self.backends_label)
        form.addRow("Devices", self.devices_label)
        form.addRow("Qt", self._value(info.qt))
        form.addRow("Python", self._value(info.python))
        form.addRow("Installed as", self._value(info.install))
        lay.addLayout(form)

        sys_title = QLabel("llama.cpp system info")
        sys_title.setObjectName("sectionTitle")
        self.system_info = QPlainTextEdit(info.system_info or "unavailable")
        self.system_info.setReadOnly(True)
        self.system_info.setMaximumHeight(84)
        self.system_info.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        lay.addWidget(sys_title)
        lay.addWidget(self.system_info)
        if info.runtime_note:
            lay.addWidget(self._value(info.runtime_note))

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy details")
        self.copy_button.setToolTip("Copy these details for a bug report")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy_details)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(560, self.sizeHint().height())

    @staticmethod
    def _value(text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label

    def copy_details(self) -> None:
        clipboard = QGuiApplication.clipboard()
        clipboard.setText(self.info.as_text())
        self.copy_button.setText("Copied")
