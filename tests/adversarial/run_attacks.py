"""Run the attack families and print a table: family, cases, clean, failures.

    python tests/adversarial/run_attacks.py                 # the fast subset (as in pytest)
    python tests/adversarial/run_attacks.py --long          # about 2,000 cases
    python tests/adversarial/run_attacks.py --family gguf --seed 7 --match chat
    python tests/adversarial/run_attacks.py --family folders --keep /tmp/attacks

Random cases come from ``--seed`` (default 0): the same seed gives the same cases.
``--keep DIR`` runs under DIR and keeps every case's folder (its input files), so a
failing case can be reproduced by hand. The exit status is 1 when any case failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402, F401  - before gguf (CUDA builds: see app/core/runtime.py)

from tests.adversarial.families import FAMILIES, run_families  # noqa: E402
from tests.adversarial.harness import Result, failure_lines, table, tally  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long run (about 2,000 cases)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cases")
    parser.add_argument(
        "--family",
        action="append",
        choices=list(FAMILIES),
        help="run only this family (repeatable; default: all)",
    )
    parser.add_argument("--match", help="run only cases whose name contains this text")
    parser.add_argument("--jobs", type=int, default=2, help="subprocess cases run side by side")
    parser.add_argument(
        "--keep", type=Path, help="run under this folder and keep each case's files"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the table and failures")
    args = parser.parse_args(argv)

    names = args.family or list(FAMILIES)
    # Product code run in this process logs as it refuses things; the verdicts say enough.
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="quantdesk-attacks-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        # Product code run in this process keeps its settings and caches here.
        os.environ["QUANTDESK_HOME"] = str(root / "home-in-process")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        done = [0]
        started = time.monotonic()

        def show(r: Result) -> None:
            done[0] += 1
            if args.quiet:
                return
            mark = "skip" if r.outcome.skipped else "ok  " if r.outcome.clean else "FAIL"
            print(
                f"[{done[0]:5d}] {mark} {r.case.family:9s} {r.case.name[:90]} ({r.seconds:.1f} s)",
                flush=True,
            )

        results = run_families(
            names,
            root,
            seed=args.seed,
            long=args.long,
            jobs=args.jobs,
            keep=args.keep is not None,
            select=(lambda c: args.match in c.name) if args.match else None,
            on_result=show,
        )
    rows = tally(results, order=names)
    mode = "long" if args.long else "fast"
    print(f"\n{mode} run, seed {args.seed}, {time.monotonic() - started:.0f} s wall\n")
    print(table(rows))
    failed = [r for t in rows for r in t.failed]
    skipped = [r for r in results if r.outcome.skipped]
    if skipped:
        reasons = sorted({r.outcome.reason for r in skipped})
        print(f"\nskipped ({len(skipped)}): " + "; ".join(reasons))
    if failed:
        print(f"\nfailing cases ({len(failed)}):")
        for r in failed:
            print(failure_lines(r))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
