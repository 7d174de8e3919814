"""The first load of an unknown model file happens in a throwaway child process.

A GGUF that passes every header check can still abort the whole process inside
llama.cpp (a ``GGML_ASSERT`` on a hyper-parameter, a vocabulary its tokenizer
cannot spell with). Before chat loads a file it has not seen — by path, size and
modification time — ``python -m quant probe-load FILE`` exercises it in a child
(:mod:`quant.native.probe`); a file that kills the child is refused with one
sentence, and the window or the CLI stays up. Verdicts are kept in the app's
cache, so a file is probed once (until it changes or llama.cpp is updated).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.engine_jobs import job_command, job_environment
from app.core.paths import app_paths, private_dir
from quant.atomic import atomic_write_text
from quant.untrusted import UntrustedValueError, read_json_file, terminal_text

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 300.0
_MAX_ENTRIES = 500
_lock = threading.Lock()
_REASON = re.compile(
    r"(GGML_ASSERT\(.*?\) failed|what\(\):[^\n]{0,200}|error[^\n]{0,200}|Assertion .* failed)",
    re.I,
)


@dataclass(frozen=True)
class ProbeVerdict:
    ok: bool
    reason: str = ""
    seconds: float = 0.0


def _runtime_version() -> str:
    try:
        import llama_cpp

        return str(getattr(llama_cpp, "__version__", ""))
    except Exception:  # an unloadable runtime: the probe itself will say so
        return ""


def _key(path: Path) -> tuple[str, dict[str, Any]]:
    st = path.stat()
    real = str(path.resolve())
    return real, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "llama_cpp": _runtime_version()}


def _cache_file() -> Path:
    return app_paths().cache_dir / "load-probe.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = read_json_file(_cache_file())
    except (OSError, UntrustedValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(real: str, stamp: dict[str, Any], verdict: ProbeVerdict) -> None:
    with _lock:
        data = _read_cache()
        data.pop(real, None)
        data[real] = {**stamp, "ok": verdict.ok, "reason": verdict.reason}
        while len(data) > _MAX_ENTRIES:
            data.pop(next(iter(data)))
        try:
            private_dir(_cache_file().parent)
            atomic_write_text(_cache_file(), json.dumps(data))
        except OSError as exc:
            logger.info("load-probe verdicts not saved: %s", exc)


def known_verdict(path: Path) -> ProbeVerdict | None:
    """The verdict for ``path`` as it is now, if it was probed before."""
    try:
        real, stamp = _key(path)
    except OSError:
        return None
    entry = _read_cache().get(real)
    if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in stamp.items()):
        return None
    return ProbeVerdict(bool(entry.get("ok")), str(entry.get("reason") or ""))


def _crash_reason(returncode: int, output: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        what = f"llama.cpp stopped the process with {name}"
    else:
        what = f"the test load ended with status {returncode}"
    found = _REASON.findall(output)
    detail = terminal_text(found[-1], 200) if found else ""
    return f"{what} ({detail})" if detail else what


def probe(path: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeVerdict:
    """Load ``path`` once in a child process (unless a verdict is known); never raises for
    what the file does to llama.cpp."""
    known = known_verdict(path)
    if known is not None:
        return known
    real, stamp = _key(path)
    cmd = [*job_command(), "probe-load", str(path)]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            # ggml would start a debugger to print a backtrace on abort; the verdict is enough.
            env={**job_environment(), "GGML_NO_BACKTRACE": "1"},
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # Not a verdict on the file: a busy machine. Let the real load go ahead.
        logger.warning("load probe of %s took longer than %.0f s", path.name, timeout_s)
        return ProbeVerdict(True, "the test load did not finish in time")
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode == 0:
        seconds = 0.0
        for line in output.splitlines():
            if line.startswith("{"):
                try:
                    seconds = float(json.loads(line).get("seconds", 0.0))
                except (ValueError, AttributeError, TypeError):
                    seconds = 0.0
        verdict = ProbeVerdict(True, seconds=seconds)
    elif proc.returncode > 0 and "Traceback" in output:
        # Python raised in the child (a load error llama-cpp-python reports): the real
        # load will raise the same error, with the app's own sentence for it.
        logger.info("load probe of %s raised: %s", path.name, output.strip()[-300:])
        return ProbeVerdict(True, "the test load raised an error")
    else:
        verdict = ProbeVerdict(False, _crash_reason(proc.returncode, output))
    _remember(real, stamp, verdict)
    return verdict
