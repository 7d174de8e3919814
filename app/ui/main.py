"""Start the GUI: application object, logging, theme, main window, event loop.

Hidden options for tests and benchmarks (``quantdesk gui --quit-after 500``):
``--quit-after MS`` closes the window MS milliseconds after it is first shown;
``--report-startup`` prints ``window-shown <epoch seconds>`` (and ``probe-done …``
when the probe finishes) on stdout; ``--page KEY`` opens that page. The
environment variables ``QUANTDESK_QUIT_AFTER_MS``, ``QUANTDESK_REPORT_STARTUP=1``
and ``QUANTDESK_PAGE`` do the same for a bare ``quantdesk`` / ``python -m app``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from app import __version__

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

logger = logging.getLogger(__name__)

#: The base name of the installed launcher entry (packaging/quantdesk.desktop). Wayland
#: compositors match windows to it for their icon and name; X11 uses WM_CLASS, which
#: Qt takes from the executable's name (``quantdesk``, the desktop file's StartupWMClass).
DESKTOP_FILE_NAME = "quantdesk"


def configure_application(qapp: QApplication) -> None:
    """Name and icon for every window of ``qapp``: title suffix, dock, task bar, dialogs."""
    from app.ui.widgets.icons import app_icon
    from quant.resources import resources_dir

    qapp.setApplicationName("Quantdesk")
    qapp.setOrganizationName("Quantdesk")
    qapp.setApplicationDisplayName("Quantdesk")
    qapp.setApplicationVersion(__version__)
    qapp.setDesktopFileName(DESKTOP_FILE_NAME)
    icon = app_icon()
    if icon.isNull():
        logger.warning(
            "app icon files missing from %s; windows get the default icon",
            resources_dir() / "icons",
        )
    else:
        qapp.setWindowIcon(icon)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="quantdesk", add_help=True)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument("--quit-after", type=int, metavar="MS", help=argparse.SUPPRESS)
    parser.add_argument("--report-startup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--page", help=argparse.SUPPRESS)
    args, _qt_args = parser.parse_known_args(argv)
    env_quit = os.environ.get("QUANTDESK_QUIT_AFTER_MS")
    if args.quit_after is None and env_quit and env_quit.strip().isdigit():
        args.quit_after = int(env_quit)
    if os.environ.get("QUANTDESK_REPORT_STARTUP") == "1":
        args.report_startup = True
    if not args.page and os.environ.get("QUANTDESK_PAGE"):
        args.page = os.environ["QUANTDESK_PAGE"]
    return args


def run_gui(argv: list[str]) -> int:
    """Run the GUI until its window closes; returns the process exit code."""
    args = _parse(argv)
    from app.core.platform_check import EXIT_NO_DISPLAY, check_gui_platform

    platform = check_gui_platform()
    if platform.problem:
        print(f"quantdesk: {platform.problem}", file=sys.stderr)
        return EXIT_NO_DISPLAY
    if platform.platform:
        os.environ["QT_QPA_PLATFORM"] = platform.platform
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.core.logging_setup import setup_logging
    from app.core.settings import Settings
    from app.ui.main_window import MainWindow, drain_tasks
    from app.ui.theme import apply_theme, choose_theme

    setup_logging(verbose=args.verbose)
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    assert isinstance(app, QApplication)
    configure_application(app)
    settings = Settings()
    apply_theme(app, choose_theme(str(settings.get("theme", "system"))))

    window = MainWindow(settings)
    if args.page:
        try:
            window.switch_to(args.page)
        except KeyError:
            logger.warning("no page %r; opening the default page", args.page)

    def on_first_shown() -> None:
        if args.report_startup:
            print(f"window-shown {time.time():.6f}", flush=True)
        if args.quit_after is not None:
            QTimer.singleShot(max(0, args.quit_after), window.close)

    def follow_system(_scheme: object) -> None:
        apply_theme(app, choose_theme(str(settings.get("theme", "system"))))
        window.retint()

    hints = app.styleHints()
    if hasattr(hints, "colorSchemeChanged"):  # Qt ≥ 6.5
        hints.colorSchemeChanged.connect(follow_system)

    window.first_shown.connect(on_first_shown)
    if args.report_startup:
        window.machine_page.profile_changed.connect(
            lambda _p: print(f"probe-done {time.time():.6f}", flush=True)
        )
    window.show()
    rc = int(app.exec())
    logger.info("GUI exited with %s", rc)
    if not drain_tasks(15.0):
        # A native call that ignores cancellation: leave without running Qt's
        # destructors, which abort on a thread that is still running.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(rc)
    return rc
