"""Start-up time: process start to the main window on screen, and the hardware probe.

Each run starts ``python -m app gui --report-startup --quit-after MS`` in a fresh
Quantdesk home (offscreen unless ``--display`` is given), and reads the
``window-shown`` and ``probe-done`` times it prints. Two baselines are measured in
the same run: a bare PySide6 window (what any Qt app pays) and the probe alone in
its own process, with and without its cached bandwidth figure. Prints medians and
ratios; nothing here passes or fails.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--display]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE_WINDOW = """
import sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication(sys.argv)
w = QLabel("baseline")
w.resize(1200, 800)
def shown():
    print(f"window-shown {time.time():.6f}", flush=True)
    QTimer.singleShot(100, app.quit)
QTimer.singleShot(0, shown)
w.show()
app.exec()
"""

PROBE_ONLY = """
import json, time
t0 = time.perf_counter()
from quant.hardware.probe import probe
t1 = time.perf_counter()
probe(measure_bandwidth=True, use_cache=False)
t2 = time.perf_counter()
probe(measure_bandwidth=True, use_cache=True)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "measured_s": t2 - t1, "cached_s": t3 - t2}))
"""


def _env(home: str, display: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["QUANTDESK_HOME"] = home
    if not display:
        env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def _times(stdout: str) -> dict[str, float]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("window-shown", "probe-done"):
            out[parts[0]] = float(parts[1])
    return out


def run_app(display: bool, warm_home: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="qd-bench-") as fresh:
        home = warm_home or fresh
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "app", "gui", "--report-startup", "--quit-after", "1500"],
            cwd=ROOT,
            env=_env(home, display),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"the app exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    t = _times(proc.stdout)
    if "window-shown" not in t:
        raise SystemExit(f"the app printed no window-shown line:\n{proc.stdout}")
    result = {"window_s": t["window-shown"] - started}
    if "probe-done" in t:
        result["probe_shown_s"] = t["probe-done"] - started
    return result


def run_bare(display: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="qd-bench-") as home:
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", BARE_WINDOW],
            cwd=ROOT,
            env=_env(home, display),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    return _times(proc.stdout)["window-shown"] - started


def run_probe() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="qd-bench-") as home:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE_ONLY],
            cwd=ROOT,
            env=_env(home, False),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    data: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--display",
        action="store_true",
        help="use the real display instead of the offscreen platform",
    )
    args = parser.parse_args()

    # One unmeasured start to warm the OS file cache and create a settled home
    # (starter model verified, bandwidth measured), like a user's second launch.
    with tempfile.TemporaryDirectory(prefix="qd-bench-home-") as warm:
        run_app(args.display, warm)
        cold = [run_app(args.display, None) for _ in range(args.runs)]
        warm_runs = [run_app(args.display, warm) for _ in range(args.runs)]
    bare = [run_bare(args.display) for _ in range(args.runs)]
    probes = [run_probe() for _ in range(args.runs)]

    def med(values: list[float]) -> float:
        return statistics.median(values)

    window_first = med([r["window_s"] for r in cold])
    window_again = med([r["window_s"] for r in warm_runs])
    probe_shown = med([r["probe_shown_s"] for r in warm_runs if "probe_shown_s" in r])
    bare_s = med(bare)
    probe_measured = med([p["measured_s"] for p in probes])
    probe_cached = med([p["cached_s"] for p in probes])
    probe_import = med([p["import_s"] for p in probes])

    platform = "display" if args.display else "offscreen"
    print(f"Quantdesk start-up, median of {args.runs} runs ({platform}, {os.cpu_count()} CPUs)")
    print(f"  process start → window shown, first launch   {window_first:6.3f} s")
    print(f"  process start → window shown, later launch   {window_again:6.3f} s")
    print(f"  bare PySide6 window (baseline)               {bare_s:6.3f} s")
    print(f"  process start → probe shown on Machine page  {probe_shown:6.3f} s")
    print(f"  probe, measuring bandwidth (first launch)    {probe_measured:6.3f} s")
    print(f"  probe, cached bandwidth (later launches)     {probe_cached:6.3f} s")
    print(f"  importing the probe                          {probe_import:6.3f} s")
    print("ratios")
    print(f"  window (later launch) / bare Qt window       {window_again / bare_s:6.2f}")
    print(f"  probe measuring / window (later launch)      {probe_measured / window_again:6.2f}")
    print(f"  probe cached / window (later launch)         {probe_cached / window_again:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
