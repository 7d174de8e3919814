"""Child-process entry of the engine: ``python -m quant JOB …``.

Long jobs run in their own process so Cancel really stops them, memory returns
to the system when they end, and a native crash cannot take the window down.

Jobs are registered in :data:`COMMANDS`: name → ``"module"`` or
``"module:attribute"``, where the module (or attribute) has
``add_arguments(parser)`` and ``run(args) -> int``. Adding a job is one line.

With ``--json-progress`` a job writes the JSON-lines protocol of
:mod:`quant.protocol` on stdout and nothing else: progress, its stages, events,
log records, and last its result or its error (``"cancelled": true`` when stopped).

SIGTERM (the GUI's Cancel) and Ctrl-C stop a job at once, even inside llama.cpp:
the files it was writing are removed and it exits with status 130
(:mod:`quant.stopping`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quant.native import import_llama_first

# Before anything that may import gguf (and through it sentencepiece): on CUDA
# builds the other order crashes the first model load of this job.
import_llama_first()

from quant.errors import Cancelled, QuantError, refused_write  # noqa: E402
from quant.protocol import EXIT_CANCELLED, JsonLines, write_json  # noqa: E402
from quant.stopping import stop_on_signals  # noqa: E402
from quant.untrusted import terminal_text  # noqa: E402

logger = logging.getLogger(__name__)

# Job name → module (or module:attribute) with add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, str] = {
    "convert-hf": "quant.convert.cli",
    "pipeline": "quant.__main__:PipelineJob",
    "quantize": "quant.__main__:QuantizeJob",
    "imatrix": "quant.__main__:ImatrixJob",
    "dequantize": "quant.__main__:DequantizeJob",
    "quality": "quant.__main__:QualityJob",
    "probe-load": "quant.native.probe",
}


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if module_name == "quant.__main__":
        module: Any = sys.modules[__name__]
    else:
        module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


# -- jobs ----------------------------------------------------------------------------


def _add_json_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json-progress",
        action="store_true",
        help="write progress and the result as JSON lines on stdout",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _run_native(args: argparse.Namespace, fn: Any) -> int:
    """Run ``fn(on_progress, on_event) -> dict`` with the JSON protocol or plain output."""
    import llama_cpp  # noqa: F401  - before gguf (CUDA builds: see app/core/runtime.py)

    from quant.progress import Progress

    if not args.json_progress:

        def show(p: Progress) -> None:
            if sys.stderr.isatty():
                eta = f" ETA {p.eta_s:.0f}s" if p.eta_s else ""
                sys.stderr.write(f"\r{p.stage}: {p.done}/{p.total} {p.message[:60]}{eta}\033[K")
                sys.stderr.flush()

        result = fn(show, None)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        write_json(result, indent=2 if args.json else None)
        return 0

    lines = JsonLines()
    with lines.forwarding_logs():
        return lines.run(lambda: fn(lines.progress, lines.on_event))


class PipelineJob:
    """imatrix → quantize → evaluate → report, from a JSON job spec."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--spec", required=True, help="job spec as JSON text, or @FILE to read it from a file"
        )
        _add_json_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from quant.jobs.pipeline import JobSpec, run_pipeline

        raw = args.spec
        if raw.startswith("@"):
            raw = Path(raw[1:]).read_text(encoding="utf-8")
        try:
            spec = JobSpec.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise QuantError(f"unreadable job spec ({exc}).") from exc
        return _run_native(
            args, lambda p, e: run_pipeline(spec, on_progress=p, on_event=e).as_dict()
        )


class QuantizeJob:
    """Quantize one GGUF to one type with llama.cpp's mix."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("src", help="F16/BF16/F32/Q8_0 GGUF")
        parser.add_argument("dst", help="output .gguf")
        parser.add_argument("type", help="file type, e.g. Q4_K_M")
        parser.add_argument("--imatrix", help="importance matrix (.gguf or .dat)")
        parser.add_argument("--threads", type=int)
        _add_json_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from quant.jobs.imatrix import load_imatrix
        from quant.jobs.quantize import QuantizeOptions, parse_file_type, quantize

        options = QuantizeOptions(parse_file_type(args.type), threads=args.threads)
        im = load_imatrix(args.imatrix) if args.imatrix else None

        def job(p: Any, e: Any) -> dict[str, Any]:
            from quant.atomic import partial_of
            from quant.jobs.pipeline import _producing

            with _producing(partial_of(Path(args.dst)), e):
                return quantize(args.src, args.dst, options, imatrix=im, on_progress=p).as_dict()

        return _run_native(args, job)


class ImatrixJob:
    """Collect an importance matrix and save it in llama.cpp's format."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="F16/BF16/F32/Q8_0 GGUF")
        parser.add_argument("out", help="output .gguf (or .dat for the legacy format)")
        parser.add_argument(
            "--calibration",
            default=None,
            help="FILE or DIR of text, 'self', or omit for the default mix",
        )
        parser.add_argument("--chunk-size", type=int, default=512)
        parser.add_argument("--chunks", type=int, default=None)
        parser.add_argument("--threads", type=int)
        _add_json_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from quant.jobs.calibration import resolve, self_generated
        from quant.jobs.imatrix import collect_imatrix

        def job(p: Any, e: Any) -> dict[str, Any]:
            from quant.atomic import partial_of
            from quant.jobs.pipeline import _producing

            cal = resolve(args.calibration)
            if cal is None:
                cal = self_generated(args.model, threads=args.threads, on_progress=p)
            data = collect_imatrix(
                args.model,
                cal,
                chunk_size=args.chunk_size,
                max_chunks=args.chunks,
                threads=args.threads,
                on_progress=p,
            )
            out = Path(args.out)
            with _producing(partial_of(out), e):
                data.save(out)
            return {**data.with_source(out.name).summary(), "path": str(out)}

        return _run_native(args, job)


class DequantizeJob:
    """Expand any GGUF to F16 (norms F32) with gguf-py."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("src")
        parser.add_argument("dst")
        _add_json_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from quant.jobs.dequantize import dequantize_gguf

        return _run_native(
            args, lambda p, e: {"path": str(dequantize_gguf(args.src, args.dst, on_progress=p))}
        )


class QualityJob:
    """Measure a GGUF's quality against a more precise file of the same model."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", help="the GGUF to measure")
        parser.add_argument(
            "--reference",
            default="auto",
            help="the reference GGUF, or 'auto' to pick the best of the --candidate files",
        )
        parser.add_argument(
            "--candidate",
            action="append",
            default=[],
            metavar="PATH",
            help="a file 'auto' may pick (repeat for each)",
        )
        parser.add_argument(
            "--text", help="evaluation text (FILE or DIR); default: the built-in held-out text"
        )
        parser.add_argument("--chunk-size", type=int, default=512)
        parser.add_argument("--chunks", type=int, default=16)
        parser.add_argument("--cache-dir", help="where reference log-probabilities are cached")
        parser.add_argument("--threads", type=int)
        _add_json_flags(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from quant.jobs.calibration import Split, default_mix, from_path
        from quant.jobs.evaluate import (
            DEFAULT_MAX_BYTES,
            DEFAULT_TOP_K,
            partial_path,
            reference_cache_path,
        )
        from quant.jobs.quality import find_reference, measure_quality

        def job(p: Any, e: Any) -> dict[str, Any]:
            from quant.jobs.pipeline import _producing

            file = Path(args.file)
            if args.reference == "auto":
                choice = find_reference(file, [Path(c) for c in args.candidate], on_progress=p)
            else:
                choice = find_reference(file, [Path(args.reference)], named=True)
            text = from_path(args.text) if args.text else default_mix(Split.HELD_OUT)
            cache = Path(args.cache_dir) if args.cache_dir else None
            kw: dict[str, Any] = {
                "chunk_size": args.chunk_size,
                "max_chunks": args.chunks,
                "cache_dir": cache,
                "threads": args.threads,
                "on_progress": p,
            }
            if cache is None:
                m = measure_quality(file, choice, text, **kw)
            else:
                ref_path = reference_cache_path(
                    cache / "reference",
                    choice.path,
                    text,
                    chunk_size=args.chunk_size,
                    max_chunks=args.chunks,
                    top_k=DEFAULT_TOP_K,
                    max_bytes=DEFAULT_MAX_BYTES,
                )
                with _producing(partial_path(ref_path), e):
                    m = measure_quality(file, choice, text, **kw)
            return {
                **m.to_dict(),
                "reference_path": str(choice.path),
                "reference_why": choice.why,
            }

        return _run_native(args, job)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quant", description="Run one engine job in this process."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, target in COMMANDS.items():
        try:
            job = _resolve(target)
        except ImportError as exc:  # an optional engine part is absent
            logger.debug("job %s unavailable: %s", name, exc)
            continue
        p = sub.add_parser(name, help=(job.__doc__ or "").strip().splitlines()[0])
        job.add_arguments(p)
        p.set_defaults(run=job.run)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with stop_on_signals(json_lines=bool(getattr(args, "json_progress", False))):
            rc: int = args.run(args)
        return rc
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except QuantError as exc:
        print(f"error: {terminal_text(exc, 1000)}", file=sys.stderr)
        return 2
    except OSError as exc:
        said = refused_write(exc)  # a full disk or a read-only folder: one sentence
        if said is None:
            raise
        print(f"error: {terminal_text(said, 1000)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
