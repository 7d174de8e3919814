"""Entry point: ``quantdesk`` / ``python -m app``.

Without arguments the GUI starts; with arguments the CLI runs; ``--self-test``
checks the installation (:mod:`app.selftest`). ``llama_cpp`` is
imported before anything that may pull in ``gguf`` (and through it
``sentencepiece``): on CUDA builds the reverse order crashes the next model load.
``tests/test_layering.py`` pins this.
"""

from __future__ import annotations

import sys

from app.core.engine_jobs import JOB_FLAG
from app.core.runtime import import_llama_first

import_llama_first()


# Options of the GUI itself (app/ui/main.py), so `quantdesk --page chat` opens the GUI.
_GUI_FLAGS = frozenset({"--quit-after", "--report-startup", "--page"})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == JOB_FLAG:
        # The GUI's child-process jobs in a frozen bundle, where `python -m quant`
        # is not available (app/workers/process_job.py).
        from quant.__main__ import main as run_job

        return run_job(args[1:])
    if args and args[0] == "--self-test":
        from app.selftest import main as self_test

        return self_test(args[1:])
    if not args or args[0] in ("gui", "--gui") or args[0] in _GUI_FLAGS:
        from app.ui.main import run_gui

        return run_gui(args[1:] if args and args[0] in ("gui", "--gui") else args)
    from app.core.cli import run_cli

    return run_cli(args)


if __name__ == "__main__":
    raise SystemExit(main())
