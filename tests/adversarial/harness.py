"""The attack harness: cases, how each runs, and what counts as a clean outcome.

An attack family is a list of :class:`Case`. Running a case gives an
:class:`Outcome`: clean, or a failure with a one-line reason and what was observed.

Clean means one of:

* success with valid output (strict JSON where JSON is promised, terminal text free
  of raw control characters, a readable GGUF where a GGUF is promised);
* an expected failure: exit status 2 with exactly one line on stderr (the CLI),
  a final ``{"error", "kind"}`` line from a child job, or an exception of
  :class:`quant.errors.QuantError` / :class:`app.core.errors.AppError` in process,
  each one sentence of bounded length;

and in every case: no traceback, no hang (each case has a deadline), no death by a
signal, nothing written outside the case's own folder (a sentinel folder is
compared before and after), and no half-written output (no final output from a
failed job, no ``*.partial``/temp file left beside an output).

Cases that may crash the process (anything that loads a model in llama.cpp) run as
subprocesses: ``python -m app …`` for the CLI, ``python -m quant …`` for child jobs.
Pure-Python parsing runs in this process on a worker thread with a deadline; those
cases run one at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# An error sentence longer than this is not "one sentence" any more.
MAX_SENTENCE = 600
# Terminal output lines longer than this are not bounded (a path is at most ~4096,
# but the attacks here use short folders and names of at most 255 bytes).
MAX_LINE = 1000
# Address space of every subprocess: a case that reads /dev/zero into memory ends in
# a MemoryError instead of taking the machine down.
MEMORY_LIMIT = 6 << 30

# Raw characters a terminal acts on: C0 (but tab and newline), DEL, C1, the bidi
# controls that reorder text, and lone surrogates (bytes that were not UTF-8).
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_CHAR_NAMES = {
    0x07: "BEL",
    0x08: "BS",
    0x0D: "CR",
    0x1B: "ESC",
    0x7F: "DEL",
    0x9B: "CSI",
    0x9D: "OSC",
}
# Lines a native crash handler prints through gdb: addresses and missing sources.
_DEBUGGER_NOISE = re.compile(
    r"^(#\d+ |\d+\s|\[New LWP|\[Thread |\[Inferior |warning: |Using host libthread|"
    r".*No such file or directory\.$)"
)
_TRACEBACK_MARKS = ("Traceback (most recent call last)", "--- Logging error ---")
# A Python warning printed on stderr ("…/file.py:552: RuntimeWarning: divide by zero").
_PY_WARNING = re.compile(r"^\S+\.py:\d+: \w*Warning: .*$", re.MULTILINE)
# Half-written files: quant.atomic's ".NAME.partial" and ".NAME.XXXX.tmp", HF's ".incomplete".
_LEFTOVER = re.compile(r"\.partial|\.tmp$|\.incomplete$")


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    clean: bool
    reason: str = ""
    observed: str = ""
    skipped: bool = False


CLEAN = Outcome(True)


class CaseFailure(Exception):  # noqa: N818 - a verdict, raised by the checks below
    """A check found the case not clean; ``reason`` is one line."""

    def __init__(self, reason: str, observed: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.observed = observed


class CaseSkipped(Exception):  # noqa: N818
    """The case cannot run on this machine (said why); counted apart, never as clean."""


@dataclass
class CaseContext:
    """What a running case gets: its own folder, the sentinel, and how to run commands."""

    folder: Path
    sentinel: Path
    deadline_s: float
    base_env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def env(self) -> dict[str, str]:
        """Environment of the case's subprocesses: app data and HF cache in its folder."""
        env = dict(self.base_env)
        env.update(
            QUANTDESK_HOME=str(self.home),
            HF_HOME=str(self.folder / "hf-home"),
            HF_HUB_CACHE=str(self.folder / "hf-cache"),
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            TMPDIR=str(self.folder / "tmp"),
        )
        (self.folder / "tmp").mkdir(exist_ok=True)
        return env

    def cli(self, *args: str | Path, timeout: float | None = None, env: Any = None) -> Ran:
        """``python -m app ARGS``: the quantdesk CLI in a fresh process."""
        return run_process(
            [PYTHON, "-m", "app", *map(os.fsdecode, args)],
            cwd=self.folder,
            env=env or self.env,
            timeout=timeout or self.deadline_s,
        )

    def job(self, *args: str | Path, timeout: float | None = None, env: Any = None) -> Ran:
        """``python -m quant ARGS``: a child-process job."""
        return run_process(
            [PYTHON, "-m", "quant", *map(os.fsdecode, args)],
            cwd=self.folder,
            env=env or self.env,
            timeout=timeout or self.deadline_s,
        )


@dataclass(frozen=True)
class Case:
    """One attack: ``run`` does it in ``CaseContext.folder`` and raises CaseFailure if unclean.

    ``repro`` says, in words, what the input is and which command it was given to.
    ``isolated`` cases run subprocesses and may run side by side; the others run in
    this process, one at a time, on a worker thread with ``deadline_s``.
    """

    family: str
    name: str
    run: Callable[[CaseContext], None]
    repro: str
    isolated: bool = True
    deadline_s: float = 90.0


@dataclass(frozen=True)
class Result:
    case: Case
    outcome: Outcome
    seconds: float
    folder: Path | None = None  # the case's folder, when kept


# --------------------------------------------------------------------------- subprocesses


@dataclass(frozen=True)
class Ran:
    """A finished subprocess."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str  # decoded with surrogateescape: undecodable bytes stay visible
    stderr: str
    seconds: float
    timed_out: bool

    def describe(self) -> str:
        """Exit status and the end of stderr (or stdout), for the report."""
        status = (
            "no exit before the deadline"
            if self.timed_out
            else f"killed by {signal_name(-self.returncode)}"
            if self.returncode < 0
            else f"exit status {self.returncode}"
        )
        tail = self.stderr.strip() or self.stdout.strip()
        lines = [line for line in tail.splitlines() if not _DEBUGGER_NOISE.match(line)][-6:]
        shown = " | ".join(visible(line, 300) for line in lines)
        return f"{status}; {shown}" if shown else status


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def visible(text: str, limit: int = 300) -> str:
    """``text`` with control characters escaped, cut to ``limit`` characters (for reports)."""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _limit(pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        resource.prlimit(pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    with contextlib.suppress(OSError, ValueError):
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))


def spawn(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str], stderr: Any = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """Start a subprocess in its own session (so a signal to its group reaches only it)."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    _limit(proc.pid)
    return proc


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def run_process(argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float) -> Ran:
    t0 = time.monotonic()
    proc = spawn(argv, cwd=cwd, env=env)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        out, err = proc.communicate()
    return Ran(
        tuple(argv),
        proc.returncode,
        decode(out),
        decode(err),
        time.monotonic() - t0,
        timed_out,
    )


# --------------------------------------------------------------------------- checks


def text_problem(text: str, what: str, *, max_line: int = MAX_LINE) -> str | None:
    """Why ``text`` is not safe to show on a terminal, or None."""
    m = _CONTROL.search(text)
    if m:
        code = ord(m.group(0))
        if 0xD800 <= code <= 0xDFFF:
            label = f"the undecodable byte 0x{code - 0xDC00:02x}"
        else:
            name = _CHAR_NAMES.get(code) or unicodedata.name(m.group(0), f"U+{code:04X}")
            label = f"the raw control character U+{code:04X} ({name})"
        line_no = text.count("\n", 0, m.start()) + 1
        line = text.splitlines()[line_no - 1] if text.splitlines() else text
        return f"{what} holds {label} on line {line_no}: {visible(line, 160)}"
    for i, line in enumerate(text.splitlines(), 1):
        if len(line) > max_line:
            return f"{what} line {i} is {len(line):,} characters long"
    return None


def expect_terminal_text(text: str, what: str, *, max_line: int = MAX_LINE) -> None:
    problem = text_problem(text, what, max_line=max_line)
    if problem:
        raise CaseFailure(problem)


def expect_no_traceback(ran: Ran) -> None:
    for stream, text in (("stderr", ran.stderr), ("stdout", ran.stdout)):
        for mark in _TRACEBACK_MARKS:
            if mark in text:
                raise CaseFailure(
                    f"a traceback on {stream}: {_traceback_summary(text)}", ran.describe()
                )
    warning = _PY_WARNING.search(ran.stderr)
    if warning:
        raise CaseFailure(
            f"a Python warning on stderr: {visible(_short(warning.group(0)), 200)}",
            ran.describe(),
        )


def _traceback_summary(text: str) -> str:
    """The exception line of the last traceback in ``text`` and the project frame it left."""
    where = ""
    last = ""
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r'File "(.*?)", line (\d+), in (\S+)', s)
        if m:
            if m.group(1).startswith(str(ROOT)) or not where:
                where = f"{_short(m.group(1))}:{m.group(2)} in {m.group(3)}"
        elif s and not line.startswith(" ") and ("Error" in s or "Exception" in s):
            last = s
    return visible(f"{last or 'exception'} (at {where})", 400)


def _short(filename: str) -> str:
    return filename.rsplit("/site-packages/", maxsplit=1)[-1].replace(str(ROOT) + "/", "")


def expect_alive_and_on_time(ran: Ran) -> None:
    if ran.timed_out:
        raise CaseFailure(f"hung: no exit within {ran.seconds:.0f} s", ran.describe())
    if ran.returncode < 0:
        raise CaseFailure(f"died by {signal_name(-ran.returncode)}", ran.describe())


def expect_sentence(message: str, what: str) -> None:
    """One sentence: one line, bounded, nothing a terminal acts on."""
    if "\n" in message.strip():
        raise CaseFailure(f"{what} spans {len(message.strip().splitlines())} lines", message)
    if len(message) > MAX_SENTENCE:
        raise CaseFailure(f"{what} is {len(message):,} characters long", visible(message))
    expect_terminal_text(message, what)
    if not message.strip():
        raise CaseFailure(f"{what} is empty")


def strict_json(text: str, what: str) -> Any:
    """Parse ``text`` as JSON that strict parsers accept (no NaN, no Infinity)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        raise CaseFailure(f"{what} is not strict JSON ({visible(str(exc), 160)})") from None


def expect_cli(
    ran: Ran,
    *,
    json_out: bool = False,
    outputs: Iterable[Path] = (),
    prefix: str = "quantdesk: error:",
    stdout_is_terminal_text: bool = True,
    status_line: str | None = None,
) -> Any:
    """The CLI's promise: success with valid output, or exit 2 and one line on stderr.

    Returns the parsed JSON on success with ``json_out``. On failure, ``outputs`` must
    not exist and nothing half-written may lie beside them. ``stdout_is_terminal_text``
    is False where stdout is a model's answer (its text is the model's, not the app's).
    ``status_line``: a regular expression for the progress lines a command prints on
    stderr before it fails (``pull``'s "Asking the hub about X…"); they are not errors.
    """
    expect_alive_and_on_time(ran)
    expect_no_traceback(ran)
    expect_terminal_text(ran.stderr, "stderr")
    outputs = list(outputs)
    if ran.returncode == 0:
        if json_out:
            value = strict_json(ran.stdout, "stdout")
        else:
            if stdout_is_terminal_text:
                expect_terminal_text(ran.stdout, "stdout")
            value = ran.stdout
        expect_no_leftovers(*{p.parent for p in outputs})
        return value
    if ran.returncode != 2:
        raise CaseFailure(f"exit status {ran.returncode} (expected 0 or 2)", ran.describe())
    lines = [
        line
        for line in ran.stderr.splitlines()
        if line.strip() and not (status_line and re.search(status_line, line))
    ]
    if len(lines) != 1:
        raise CaseFailure(f"{len(lines)} lines on stderr (expected one sentence)", ran.describe())
    if not lines[0].startswith(prefix):
        raise CaseFailure(f"the error line does not start with {prefix!r}", ran.describe())
    expect_sentence(lines[0], "the error line")
    for p in outputs:
        if os.path.lexists(p):
            raise CaseFailure(f"a failed run left its output {p.name}", ran.describe())
    expect_no_leftovers(*{p.parent for p in outputs})
    return None


def job_lines(ran_stdout: str) -> list[dict[str, Any]]:
    """The JSON objects a ``--json-progress`` job wrote (each line strict JSON)."""
    objs = []
    for i, line in enumerate(ran_stdout.splitlines(), 1):
        if not line.strip():
            continue
        obj = strict_json(line, f"stdout line {i}")
        if not isinstance(obj, dict):
            raise CaseFailure(f"stdout line {i} is not a JSON object")
        objs.append(obj)
    return objs


def expect_job(ran: Ran, *, outputs: Iterable[Path] = ()) -> dict[str, Any] | None:
    """A ``--json-progress`` job's promise: a result, or one ``{"error", "kind"}`` sentence.

    Returns the result object on success.
    """
    expect_alive_and_on_time(ran)
    expect_no_traceback(ran)
    expect_terminal_text(ran.stderr, "stderr")
    objs = job_lines(ran.stdout)
    outputs = list(outputs)
    if not objs:
        raise CaseFailure("the job wrote no JSON line", ran.describe())
    last = objs[-1]
    if ran.returncode == 0:
        if "result" not in last:
            raise CaseFailure("exit status 0 without a result line", ran.describe())
        expect_no_leftovers(*{p.parent for p in outputs})
        result: dict[str, Any] = last["result"]
        return result
    if "error" not in last:
        raise CaseFailure(
            f"exit status {ran.returncode} without an error line last", ran.describe()
        )
    error = str(last["error"])
    if last.get("kind") == "internal" or error.startswith("Unexpected error"):
        raise CaseFailure(f"an unexpected error: {visible(error, 300)}", ran.describe())
    if ran.returncode != 2:
        raise CaseFailure(f"exit status {ran.returncode} (expected 0 or 2)", ran.describe())
    expect_sentence(error, "the error")
    for p in outputs:
        if os.path.lexists(p):
            raise CaseFailure(f"a failed job left its output {p.name}", ran.describe())
    expect_no_leftovers(*{p.parent for p in outputs})
    return None


def leftovers(*folders: Path) -> list[Path]:
    """Half-written files (``.X.partial``, temp files) in ``folders``, recursively."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.rglob("*"):
            if _LEFTOVER.search(p.name):
                found.append(p)
    return sorted(found)


def expect_no_leftovers(*folders: Path) -> None:
    left = leftovers(*folders)
    if left:
        names = ", ".join(visible(p.name, 80) for p in left[:4])
        raise CaseFailure(f"half-written files left behind: {names}")


def expect_expected_error(exc: BaseException, what: str = "the error") -> None:
    """An exception from product code in this process: QuantError/AppError, one sentence."""
    from app.core.errors import AppError
    from quant.errors import QuantError

    if isinstance(exc, QuantError | AppError):
        expect_sentence(str(exc), f"{what} ({type(exc).__name__})")
        return
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(ROOT))] or frames
    where = f" at {_short(ours[-1].filename)}:{ours[-1].lineno} in {ours[-1].name}" if ours else ""
    raise CaseFailure(
        f"{type(exc).__name__} escaped{where}: {visible(str(exc), 200)}",
        "".join(traceback.format_exception_only(type(exc), exc)).strip()[:400],
    )


def in_process(fn: Callable[[], Any]) -> tuple[Any, bool]:
    """Call product code; return (value, True), or (None, False) after an expected error."""
    try:
        return fn(), True
    except CaseFailure:
        raise
    except Exception as exc:  # judged: anything but QuantError/AppError is a failure
        expect_expected_error(exc)
        return None, False


def read_gguf_ok(path: Path, what: str) -> None:
    """A promised GGUF output is readable by the engine's header reader."""
    from quant.errors import QuantError
    from quant.gguf.header import read_gguf_header

    try:
        header = read_gguf_header(path)
    except QuantError as exc:
        raise CaseFailure(f"{what} is not a readable GGUF ({visible(str(exc), 200)})") from None
    for key, value in header.metadata.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise CaseFailure(f"{what} holds a non-finite {key} ({values[0]})")


# --------------------------------------------------------------------------- sentinel


def snapshot(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``folder``: kind, size, mtime, link target, content digest."""
    seen: dict[str, tuple[Any, ...]] = {}
    for here, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            p = Path(here) / name
            st = p.lstat()
            target = str(p.readlink()) if stat.S_ISLNK(st.st_mode) else ""
            digest = ""
            if stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 20:
                digest = hashlib.sha1(p.read_bytes()).hexdigest()
            seen[str(p.relative_to(folder))] = (
                stat.S_IFMT(st.st_mode),
                st.st_size,
                st.st_mtime_ns,
                target,
                digest,
                stat.S_IMODE(st.st_mode),
            )
    return seen


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    added = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = []
    for label, names in (("created", added), ("removed", gone), ("changed", changed)):
        if names:
            parts.append(f"{label} " + ", ".join(visible(n, 80) for n in names[:3]))
    return "; ".join(parts)


SENTINEL_FILES = {
    "victim.gguf": b"GGUF the user's own model",
    "notes.txt": b"the user's notes\n",
}


def make_sentinel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in SENTINEL_FILES.items():
        if not (folder / name).exists():
            (folder / name).write_bytes(data)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "keep.txt").write_bytes(b"keep")
    return folder


# --------------------------------------------------------------------------- running


_IN_PROCESS = threading.Lock()


def _call(case: Case, ctx: CaseContext) -> Outcome:
    try:
        case.run(ctx)
    except CaseFailure as f:
        return Outcome(False, f.reason, f.observed)
    except CaseSkipped as s:
        return Outcome(False, str(s), skipped=True)
    except Exception as exc:  # the harness itself broke: say so, never count it clean
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        return Outcome(False, f"harness error: {type(exc).__name__}: {exc} ({where})")
    return CLEAN


def _on_thread(case: Case, ctx: CaseContext) -> Outcome:
    box: dict[str, Outcome] = {}

    def work() -> None:
        box["outcome"] = _call(case, ctx)

    worker = threading.Thread(target=work, name=f"case {case.name}", daemon=True)
    worker.start()
    worker.join(case.deadline_s)
    if worker.is_alive():
        _unblock_fifos(ctx.folder)
        return Outcome(False, f"hung: no answer within {case.deadline_s:.0f} s")
    return box["outcome"]


def _unblock_fifos(folder: Path) -> None:
    """Give any reader blocked on a FIFO of the case its end of file."""
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(p.lstat().st_mode):
                fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)


class Runner:
    """Runs cases under ``root``: one folder per case, a shared sentinel folder."""

    def __init__(
        self,
        root: Path,
        *,
        jobs: int = 2,
        keep: bool = False,
        fill_sentinel: Callable[[Path], None] | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._fill_sentinel = fill_sentinel
        self.sentinel = self._make_sentinel()
        self.jobs = max(1, jobs)
        self.keep = keep
        self._count = 0
        self._lock = threading.Lock()
        self.base_env = _base_env()

    def _make_sentinel(self) -> Path:
        folder = make_sentinel(self.root / "sentinel")
        if self._fill_sentinel is not None:
            self._fill_sentinel(folder)
        return folder

    def _folder(self) -> Path:
        with self._lock:
            self._count += 1
            n = self._count
        folder = self.root / f"case-{n:05d}"
        folder.mkdir()
        return folder

    def _outside(self) -> dict[str, Any]:
        return {
            "sentinel": snapshot(self.sentinel),
            "root": sorted(
                p.name
                for p in self.root.iterdir()
                if not p.name.startswith("case-") and p.name not in ("sentinel", "assets")
            ),
        }

    def run_one(self, case: Case) -> Result:
        folder = self._folder()
        ctx = CaseContext(folder, self.sentinel, case.deadline_s, self.base_env)
        t0 = time.monotonic()
        if case.isolated:
            before = self._outside()
            outcome = _call(case, ctx)
            after = self._outside()
        else:
            with _IN_PROCESS:
                before = self._outside()
                outcome = _on_thread(case, ctx)
                after = self._outside()
        seconds = time.monotonic() - t0
        if before != after and not outcome.skipped:
            where = _diff(before["sentinel"], after["sentinel"]) or (
                f"{self.root.name}/: " + ", ".join(set(after["root"]) ^ set(before["root"]))
            )
            reason = f"wrote outside its folder: {where}"
            outcome = Outcome(False, reason, outcome.reason or outcome.observed)
            # Put the sentinel back for the next case.
            shutil.rmtree(self.sentinel, ignore_errors=True)
            self._make_sentinel()
        if not self.keep:
            shutil.rmtree(folder, ignore_errors=True)
        return Result(case, outcome, seconds, folder if self.keep else None)

    def run(
        self, cases: Sequence[Case], on_result: Callable[[Result], None] | None = None
    ) -> list[Result]:
        """Run ``cases`` (isolated ones ``jobs`` at a time); results in case order."""
        results: list[Result | None] = [None] * len(cases)

        def one(i: int) -> None:
            r = self.run_one(cases[i])
            results[i] = r
            if on_result is not None:
                on_result(r)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(one, range(len(cases))))
        return [r for r in results if r is not None]


def _base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "QUANTDESK_", "PYTEST", "HUGGING"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        LC_ALL="C.UTF-8",
        LANG="C.UTF-8",
        QT_QPA_PLATFORM="offscreen",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("PYTHONIOENCODING", None)
    env.pop("PYTHONUTF8", None)
    return env


# --------------------------------------------------------------------------- reporting


@dataclass
class Tally:
    family: str
    cases: int = 0
    clean: int = 0
    failures: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failed: list[Result] = field(default_factory=list)


def tally(results: Sequence[Result], order: Sequence[str] = ()) -> list[Tally]:
    rows: dict[str, Tally] = {name: Tally(name) for name in order}
    for r in results:
        t = rows.setdefault(r.case.family, Tally(r.case.family))
        t.cases += 1
        t.seconds += r.seconds
        if r.outcome.skipped:
            t.skipped += 1
        elif r.outcome.clean:
            t.clean += 1
        else:
            t.failures += 1
            t.failed.append(r)
    return [t for t in rows.values() if t.cases]


def table(rows: Sequence[Tally]) -> str:
    head = ("family", "cases", "clean", "failures", "skipped", "case-seconds")
    body = [
        (t.family, str(t.cases), str(t.clean), str(t.failures), str(t.skipped), f"{t.seconds:.0f}")
        for t in rows
    ]
    total = (
        "total",
        str(sum(t.cases for t in rows)),
        str(sum(t.clean for t in rows)),
        str(sum(t.failures for t in rows)),
        str(sum(t.skipped for t in rows)),
        f"{sum(t.seconds for t in rows):.0f}",
    )
    cells = [head, *body, total]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]

    def line(c: Sequence[str]) -> str:
        return "  ".join(
            c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(c))
        )

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in body]
    out += ["  ".join("-" * w for w in widths), line(total)]
    return "\n".join(out)


def failure_lines(r: Result) -> str:
    o = r.outcome
    text = f"[{r.case.family}] {r.case.name}: {o.reason}\n    input/command: {r.case.repro}"
    if o.observed:
        text += f"\n    observed: {visible(o.observed.replace(chr(10), ' | '), 600)}"
    if r.folder is not None:
        text += f"\n    kept in: {r.folder}"
    return text


def summary(results: Sequence[Result]) -> str:
    """The failing cases, one block each (for an assertion message or a report)."""
    bad = [r for r in results if not r.outcome.clean and not r.outcome.skipped]
    return "\n".join(failure_lines(r) for r in bad)
