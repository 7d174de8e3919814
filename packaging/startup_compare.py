"""Start-up time of the built bundle against the same code run from source.

Each round starts ``python -m app --report-startup --quit-after MS`` and then
``dist/quantdesk/quantdesk --report-startup --quit-after MS`` (each in a fresh
Quantdesk home, offscreen unless ``--display``), and reads the time from process
start to the ``window-shown`` line each prints, and to process exit. One warm-up
round is left out (it fills the page cache with either side's files). Prints the
medians and the bundle/source ratio of the same run; nothing passes or fails.

    .venv/bin/python packaging/startup_compare.py [--runs 3] [--display]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_EXE = ROOT / "dist" / "quantdesk" / "quantdesk"
QUIT_AFTER_MS = 500


def measure(command: list[str], *, display: bool) -> tuple[float, float]:
    """(seconds to the window on screen, seconds to exit) for one start."""
    with tempfile.TemporaryDirectory(prefix="qd-startup-") as home:
        env = dict(os.environ)
        env["QUANTDESK_HOME"] = home
        if not display:
            env["QT_QPA_PLATFORM"] = "offscreen"
        started = time.time()
        done = subprocess.run(
            [*command, "--report-startup", "--quit-after", str(QUIT_AFTER_MS)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} exited with {done.returncode}: {done.stderr[-500:]}")
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "window-shown":
            return float(parts[1]) - started, ended - started
    raise SystemExit(f"{command[0]} printed no window-shown line")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--display", action="store_true", help="use the real display")
    parser.add_argument("--bundle", type=Path, default=BUNDLE_EXE, help="the bundle's executable")
    args = parser.parse_args(argv)
    if not args.bundle.is_file():
        raise SystemExit(f"{args.bundle}: no bundle there; build it first with `make package`")
    sides = {"source": [sys.executable, "-m", "app"], "bundle": [str(args.bundle)]}
    shown: dict[str, list[float]] = {k: [] for k in sides}
    total: dict[str, list[float]] = {k: [] for k in sides}
    for round_no in range(args.runs + 1):
        for name, command in sides.items():
            window_s, exit_s = measure(command, display=args.display)
            if round_no == 0:
                continue  # warm-up
            shown[name].append(window_s)
            total[name].append(exit_s)
    print(f"median of {args.runs} runs (after one warm-up), quit {QUIT_AFTER_MS} ms after shown")
    print(f"{'':8} {'window shown':>14} {'process exit':>14}")
    for name in sides:
        print(
            f"{name:8} {statistics.median(shown[name]):>13.3f}s "
            f"{statistics.median(total[name]):>13.3f}s   "
            f"(runs: {', '.join(f'{x:.3f}' for x in shown[name])})"
        )
    ratio = statistics.median(shown["bundle"]) / statistics.median(shown["source"])
    print(f"bundle / source, window shown: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
