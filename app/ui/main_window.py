"""The main window: a navigation sidebar and one page per task.

The window shows before any slow work starts: the hardware probe and the library
scan (which may assemble the starter model on first launch) begin once it is on
screen, and the pages fill in as their results arrive. Pages other than Machine
and Models are built the first time they are opened. The sidebar's foot opens the
About box (version, llama.cpp build and backends, :mod:`app.ui.about`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.library import ModelLibrary
from app.core.settings import Settings
from app.ui.pages.machine_page import MachinePage, ProbeFn
from app.ui.pages.models_page import ModelsPage
from app.ui.theme import current_theme
from app.ui.widgets.cards import Card, muted
from app.ui.widgets.icons import icon
from app.workers.download_manager import DownloadManager
from app.workers.tasks import cancel_all
from quant.hardware.profile import HardwareProfile
from quant.units import human_bytes

logger = logging.getLogger(__name__)

DEFAULT_SIZE = QSize(1360, 840)


@dataclass(frozen=True)
class PageSpec:
    key: str
    label: str
    icon: str
    tooltip: str


PAGES = (
    PageSpec("machine", "Machine", "machine", "What this machine is and what it can run"),
    PageSpec(
        "models",
        "Models",
        "models",
        "Your models: the starter model, files you added, other apps' downloads",
    ),
    PageSpec("advisor", "Advisor", "advisor", "Which format to run a model in, and why"),
    PageSpec("chat", "Chat", "chat", "Chat offline with a model"),
    PageSpec("convert", "Convert", "convert", "Turn a Hugging Face model into GGUF files"),
    PageSpec(
        "server",
        "Server",
        "server",
        "Serve your models over an OpenAI-compatible API; chat with models served elsewhere",
    ),
)


def convert_page_available() -> bool:
    try:
        return importlib.util.find_spec("app.ui.pages.convert_page") is not None
    except (ImportError, ValueError):
        return False


class UnavailablePage(QWidget):
    """Stands in for a page that cannot work in this installation, and says why."""

    def __init__(self, title: str, reason: str, remedy: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("unavailablePage")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(28, 24, 28, 24)
        card = Card(title, "info")
        self.reason_label = QLabel(reason)
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.remedy_label = muted(remedy)
        self.remedy_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        card.body.addWidget(self.reason_label)
        card.body.addWidget(self.remedy_label)
        lay.addWidget(card)
        lay.addStretch(1)

    @property
    def message(self) -> str:
        return f"{self.reason_label.text()} {self.remedy_label.text()}"


class MainWindow(QMainWindow):
    """Sidebar + stacked pages + status bar; remembers its geometry and last page."""

    #: Emitted once, when the window is first on screen (start-up timing hooks onto it).
    first_shown = Signal()

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        library: ModelLibrary | None = None,
        probe_fn: ProbeFn | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else Settings()
        self.library = library if library is not None else ModelLibrary(self.settings)
        self.setWindowTitle("Quantdesk")
        self.setAcceptDrops(True)
        self._shown_once = False
        self._background_started = False
        self._machine_profile: HardwareProfile | None = None
        self._pages: dict[str, QWidget] = {}
        self._holders: dict[str, QWidget] = {}
        self._specs = [p for p in PAGES if p.key != "convert" or convert_page_available()]

        central = QWidget()
        root = QHBoxLayout(central)
        root.setContentsMargins(0, 0, 0, 0)
        root.setSpacing(0)
        root.addWidget(self._build_sidebar())
        self.stack = QStackedWidget()
        root.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        for spec in self._specs:
            holder = QWidget()
            holder.setObjectName(f"holder_{spec.key}")
            hl = QVBoxLayout(holder)
            hl.setContentsMargins(0, 0, 0, 0)
            self._holders[spec.key] = holder
            self.stack.addWidget(holder)

        self.machine_page = MachinePage(self.settings, probe_fn=probe_fn)
        # One download queue for the app: the Hub tab and the Advisor both use it.
        self.downloads = DownloadManager(parent=self)
        self.models_page = ModelsPage(self.settings, self.library, downloads=self.downloads)
        self._install("machine", self.machine_page)
        self._install("models", self.models_page)
        self.machine_page.profile_changed.connect(self._on_profile)
        self.machine_page.status_message.connect(self.show_status)
        self.models_page.status_message.connect(self.show_status)
        self.models_page.entries_changed.connect(self._on_entries)
        self.models_page.chat_requested.connect(self.open_chat)
        self.models_page.advise_requested.connect(self.open_advisor)
        self.models_page.convert_requested.connect(lambda path: self.open_convert(str(path), []))

        self._machine_label = QLabel("Probing this machine…")
        self._library_label = QLabel("")
        self.statusBar().addPermanentWidget(self._library_label)
        self.statusBar().addPermanentWidget(self._machine_label)
        self.statusBar().setSizeGripEnabled(True)

        self.nav.currentRowChanged.connect(self._on_nav)
        self._restore_state()

    # ------------------------------------------------------------------ building
    def _build_sidebar(self) -> QWidget:
        pane = QWidget()
        pane.setObjectName("sidebarPane")
        pane.setFixedWidth(196)
        lay = QVBoxLayout(pane)
        lay.setContentsMargins(0, 8, 0, 8)
        lay.setSpacing(0)
        title = QLabel("Quantdesk")
        title.setObjectName("appTitle")
        sub = QLabel("Local models, measured")
        sub.setObjectName("appSubtitle")
        lay.addWidget(title)
        lay.addWidget(sub)
        self.nav = QListWidget()
        self.nav.setObjectName("sidebar")
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.nav.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        for spec in self._specs:
            item = QListWidgetItem(spec.label)
            item.setData(Qt.ItemDataRole.UserRole, spec.key)
            item.setToolTip(spec.tooltip)
            item.setSizeHint(QSize(170, 40))
            self.nav.addItem(item)
        lay.addWidget(self.nav, 1)
        self.about_button = QToolButton()
        self.about_button.setObjectName("aboutButton")
        self.about_button.setText("About Quantdesk")
        self.about_button.setToolTip("Version, llama.cpp build and backends")
        self.about_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.about_button.setAutoRaise(True)
        self.about_button.setIconSize(QSize(18, 18))
        self.about_button.clicked.connect(self.show_about)
        about_row = QHBoxLayout()
        about_row.setContentsMargins(12, 4, 12, 4)
        about_row.addWidget(self.about_button)
        about_row.addStretch(1)
        lay.addLayout(about_row)
        self.about_dialog: QDialog | None = None
        self.retint()
        return pane

    def retint(self) -> None:
        """Draw the sidebar icons in the current theme's colours (after a theme change)."""
        t = current_theme()
        for row, spec in enumerate(self._specs):
            item = self.nav.item(row)
            if item is not None:
                item.setIcon(icon(spec.icon, t.text, selected_color=t.accent_text))
        self.about_button.setIcon(icon("info", t.text_muted))

    def _install(self, key: str, page: QWidget) -> None:
        status = getattr(page, "status_message", None)
        if key not in ("machine", "models", "advisor") and status is not None:
            status.connect(self.show_status)
        holder = self._holders[key]
        layout = holder.layout()
        assert layout is not None
        layout.addWidget(page)
        self._pages[key] = page

    def _make_page(self, key: str) -> QWidget:
        if key == "advisor":
            from app.ui.pages.advisor_page import AdvisorPage

            adv = AdvisorPage(self.settings, self.library, downloads=self.downloads)
            adv.status_message.connect(self.show_status)
            adv.convert_requested.connect(self.open_convert)
            adv.mix_requested.connect(self.open_convert_budget)
            adv.chat_requested.connect(self.open_chat)
            adv.model_downloaded.connect(lambda _entry: self.models_page.reload())
            adv.remote_requested.connect(self.open_remote)
            if self._machine_profile is not None:
                adv.set_machine_profile(self._machine_profile)
            adv.set_entries(self.models_page.entries())
            return adv
        if key == "chat":
            return self._make_chat_page()
        if key == "convert":
            return self._make_convert_page()
        if key == "server":
            from app.ui.pages.server_page import ServerPage

            server = ServerPage(self.settings)
            reload_chat = getattr(self._pages.get("chat"), "reload_models", None)
            if reload_chat is not None:
                server.remotes_changed.connect(reload_chat)
            return server
        raise KeyError(key)

    def _make_chat_page(self) -> QWidget:
        from app.core.runtime import import_llama_first

        if import_llama_first() is None:
            reason = _import_failure("llama_cpp")
            return UnavailablePage(
                "Chat is unavailable",
                f"Chat is unavailable because llama_cpp failed to import ({reason}).",
                "Reinstall the runtime with “.venv/bin/pip install --force-reinstall "
                "llama-cpp-python” (it compiles llama.cpp and needs a C/C++ compiler and "
                "CMake), then restart Quantdesk. Everything else works without it.",
            )
        try:
            module = importlib.import_module("app.ui.pages.chat_page")
            chat = module.ChatPage(self.settings, library=self.library)
            # The library shows when each model was last opened in chat.
            chat.model_loaded.connect(lambda info: self.models_page.mark_used(info.path))
            page: QWidget = chat
        except Exception as exc:  # a page that fails to build must not take the window down
            logger.exception("chat page could not be built")
            return UnavailablePage(
                "Chat is unavailable",
                f"The chat page could not be opened ({type(exc).__name__}: {exc}).",
                "See the log file for details; the other pages still work.",
            )
        return page

    def _make_convert_page(self) -> QWidget:
        try:
            module = importlib.import_module("app.ui.pages.convert_page")
            convert = module.ConvertPage(self.settings)
            convert.chat_requested.connect(self.open_chat)
            page: QWidget = convert
        except Exception as exc:  # a page that fails to build must not take the window down
            logger.exception("convert page could not be built")
            return UnavailablePage(
                "Convert is unavailable",
                f"The convert page could not be opened ({type(exc).__name__}: {exc}).",
                "See the log file for details; the other pages still work.",
            )
        return page

    # ------------------------------------------------------------------ pages
    def page_keys(self) -> list[str]:
        return [s.key for s in self._specs]

    def page(self, key: str) -> QWidget:
        """The page for ``key``, built now if it was not yet."""
        if key not in self._pages:
            if key not in self._holders:
                raise KeyError(f"no page {key!r}")
            try:
                page = self._make_page(key)
            except Exception as exc:  # a page that fails to build must not take the window down
                logger.exception("page %s could not be built", key)
                label = next(s.label for s in self._specs if s.key == key)
                page = UnavailablePage(
                    f"{label} is unavailable",
                    f"The {label} page could not be opened ({type(exc).__name__}: {exc}).",
                    "See the log file for details; the other pages still work.",
                )
            self._install(key, page)
        return self._pages[key]

    def current_page_key(self) -> str:
        item = self.nav.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item else self._specs[0].key

    def switch_to(self, key: str) -> QWidget:
        keys = self.page_keys()
        if key not in keys:
            raise KeyError(f"no page {key!r}")
        self.nav.setCurrentRow(keys.index(key))
        return self.page(key)

    def _on_nav(self, row: int) -> None:
        if row < 0:
            return
        key = self._specs[row].key
        self.page(key)
        self.stack.setCurrentWidget(self._holders[key])

    # ------------------------------------------------------------------ actions
    def open_chat(self, path: Path) -> None:
        page = self.switch_to("chat")
        opener: Callable[[Path], Any] | None = getattr(page, "open_model", None)
        if opener is not None:
            opener(Path(path))
        else:
            self.show_status("Chat is unavailable; see the Chat page for why")

    def open_remote(self, url: str, name: str) -> None:
        """The Server page's dialog to add a remote server, filled in."""
        page = self.switch_to("server")
        ask: Callable[..., Any] | None = getattr(page, "ask_remote", None)
        if ask is not None:
            ask(url=url, name=name)

    def open_advisor(self, path: Path) -> None:
        """The advisor's plan for a library model on this machine."""
        page = self.switch_to("advisor")
        set_source: Callable[[str], Any] | None = getattr(page, "set_source", None)
        run: Callable[[], Any] | None = getattr(page, "run", None)
        if set_source is not None and run is not None:
            set_source(str(path))
            run()

    def open_convert(self, source: str, types: list[str]) -> None:
        if "convert" not in self.page_keys():
            self.show_status("Conversion is not available in this build")
            return
        page = self.switch_to("convert")
        preset: Callable[..., Any] | None = getattr(page, "preset", None)
        if preset is not None:
            preset(source, types)

    def open_convert_budget(self, source: str, budget_bytes: int) -> None:
        """The Convert page in size-budget mode for ``source`` (the advisor's mix offer)."""
        self.open_convert(source, [])
        page = self._pages.get("convert")
        set_budget: Callable[..., Any] | None = getattr(page, "set_budget", None)
        if set_budget is not None:
            set_budget(str(budget_bytes))

    def show_about(self) -> QDialog:
        """Open the About box (window-modal, not blocking) and return it.

        The runtime part comes from the machine page's probe when it has finished.
        """
        from app.ui.about import AboutDialog, collect_build_info

        profile = self._machine_profile
        info = (
            collect_build_info(profile.runtime, profile.backends)
            if profile is not None
            else collect_build_info()
        )
        if self.about_dialog is not None:
            self.about_dialog.close()
            self.about_dialog.deleteLater()
        dialog = AboutDialog(info, self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.about_dialog = dialog
        dialog.open()
        return dialog

    def show_status(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    def _on_profile(self, profile: HardwareProfile) -> None:
        self._machine_profile = profile
        parts = [
            f"{profile.cpu.logical_cores} threads",
            f"{human_bytes(profile.memory.total_bytes)} RAM",
        ]
        if profile.gpus:
            g = profile.best_gpu
            assert g is not None
            parts.append(f"{g.name} {human_bytes(g.memory_total_bytes)}")
        elif profile.apple:
            parts.append(profile.apple.chip)
        else:
            parts.append("no GPU")
        self._machine_label.setText(" · ".join(parts))
        self.models_page.set_profile(profile)
        adv = self._pages.get("advisor")
        setter = getattr(adv, "set_machine_profile", None)
        if setter is not None:
            setter(profile)

    def _on_entries(self, entries: list[Any]) -> None:
        n = len(entries)
        self._library_label.setText(f"{n} model{'s' if n != 1 else ''} in the library")
        adv = self._pages.get("advisor")
        setter = getattr(adv, "set_entries", None)
        if setter is not None:
            setter(entries)
        reload_models = getattr(self._pages.get("chat"), "reload_models", None)
        if reload_models is not None:
            reload_models()

    # ------------------------------------------------------------------ background work
    def start_background_work(self) -> None:
        """Probe the machine and list the library (both off the GUI thread); once only."""
        if self._background_started:
            return
        self._background_started = True
        self.machine_page.start_probe()
        self.models_page.reload()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            # Let the first frame reach the screen before starting work.
            QTimer.singleShot(0, self.first_shown.emit)
            QTimer.singleShot(0, self.start_background_work)

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _local_files(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:
        if _local_files(event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        files = _local_files(event.mimeData().urls())
        if not files:
            event.ignore()
            return
        event.acceptProposedAction()
        self.switch_to("models")
        self.models_page.add_files(files)

    # ------------------------------------------------------------------ state
    def _restore_state(self) -> None:
        state = self.settings.section("window")
        geometry = state.get("geometry")
        restored = False
        if isinstance(geometry, str) and geometry:
            restored = self.restoreGeometry(QByteArray.fromBase64(geometry.encode("ascii")))
        if not restored:
            screen = self.screen().availableGeometry()
            self.resize(
                min(DEFAULT_SIZE.width(), int(screen.width() * 0.92)),
                min(DEFAULT_SIZE.height(), int(screen.height() * 0.92)),
            )
        page = state.get("page")
        keys = self.page_keys()
        self.switch_to(page if page in keys else "machine")

    def save_state(self) -> None:
        state = self.settings.section("window")
        state["geometry"] = bytes(self.saveGeometry().toBase64().data()).decode("ascii")
        state["page"] = self.current_page_key()
        try:
            self.settings.save()
        except OSError as exc:
            logger.warning("window state not saved: %s", exc)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_state()
        for page in self._pages.values():
            closer = getattr(page, "shutdown", None)
            if callable(closer):
                try:
                    closer()
                except Exception:  # closing must always finish
                    logger.exception("page shutdown failed")
        cancel_all()  # ask every task to stop; run_gui waits for them after the loop ends
        super().closeEvent(event)


def drain_tasks(timeout_s: float = 15.0) -> bool:
    """Cancel every background task and wait for its thread; True when none is left.

    Events are processed while waiting so the tasks' last queued results are
    delivered (and their handles cleaned up) before the caller goes on.
    """
    from PySide6.QtCore import QCoreApplication

    from app.workers import tasks

    deadline = time.monotonic() + timeout_s
    while tasks.running_count():
        if time.monotonic() >= deadline:
            left = tasks.running_count()
            logger.warning("%d background task(s) still running at exit", left)
            return False
        tasks.wait_all(20)
        QCoreApplication.processEvents()
    QCoreApplication.processEvents()
    return True


def _local_files(urls: list[Any]) -> list[Path]:
    return [Path(u.toLocalFile()) for u in urls if u.isLocalFile() and u.toLocalFile()]


def _import_failure(module: str) -> str:
    try:
        importlib.import_module(module)
    except Exception as exc:  # report whatever stopped the import
        return f"{type(exc).__name__}: {exc}"
    return "unknown reason"
