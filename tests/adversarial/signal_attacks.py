"""SIGTERM, SIGINT and SIGKILL sent to real child jobs at each stage they report.

Jobs: ``python -m quant convert-hf`` on a 100 MB Llama folder, ``quantize``,
``imatrix`` and ``pipeline`` on a 50 MB F16 llama GGUF (and, in long runs, on the
F16 expansion of the starter model, plus ``dequantize`` of the starter). Each case
starts the job with ``--json-progress``, waits for the first line of one stage (or
for the first ``{"event": "writing"}``), and signals the job's process group.

SIGTERM/SIGINT: the job must stop within :data:`PROMPT_S` seconds with exit status
130 and a last line ``{"error": …, "cancelled": true}``, no traceback, no final
output it had not finished before the signal, and no ``.partial`` file.
SIGKILL: no final output it had not finished; then the same command run again must
succeed and leave no stale partial file.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.adversarial.assets import Assets
from tests.adversarial.harness import (
    PYTHON,
    Case,
    CaseContext,
    CaseFailure,
    decode,
    expect_job,
    kill_group,
    leftovers,
    read_gguf_ok,
    run_process,
    signal_name,
    spawn,
    strict_json,
    visible,
)

FAMILY = "signals"
PROMPT_S = 10.0
WRITING = "writing"  # pseudo-stage: the first {"event": "writing"} line


@dataclass(frozen=True)
class Job:
    """A child job: how to build its argv in a case folder, and its final outputs."""

    name: str
    model: str  # "medium" or "starter"
    argv: Callable[[Assets, CaseContext], list[str]]
    outputs: Callable[[CaseContext], list[Path]]  # final files (globs resolved after)
    folders: Callable[[CaseContext], list[Path]]  # where partial files may be left
    stages: tuple[str, ...]
    what: str


def _out(ctx: CaseContext) -> Path:
    return ctx.folder / "out"


def _pipeline_spec(assets: Assets, ctx: CaseContext, model: str) -> str:
    src = assets.medium_gguf if model == "medium" else assets.starter_f16
    chunk = 64 if model == "medium" else 128
    spec = {
        "source": str(src),
        "types": ["Q4_K_M"],
        "out_dir": str(_out(ctx)),
        "cache_dir": str(ctx.folder / "cache"),
        "imatrix_chunk_size": chunk,
        "imatrix_chunks": 8 if model == "medium" else 3,
        "eval_chunk_size": chunk,
        "eval_chunks": 3 if model == "medium" else 2,
    }
    return json.dumps(spec)


def _source(assets: Assets, model: str) -> Path:
    return assets.medium_gguf if model == "medium" else assets.starter_f16


def jobs(long: bool) -> list[Job]:
    out = [
        Job(
            "convert-hf",
            "medium",
            lambda a, c: [
                "convert-hf",
                str(a.medium_hf),
                str(_out(c) / "model.gguf"),
                "--json-progress",
            ],
            lambda c: [_out(c) / "model.gguf"],
            lambda c: [_out(c)],
            ("check", "convert"),
            "python -m quant convert-hf MEDIUM_LLAMA_DIR out/model.gguf --json-progress",
        )
    ]
    for model in ("medium", "starter") if long else ("medium",):
        label = "the 50 MB F16 llama" if model == "medium" else "the starter model's F16"

        def quantize_argv(a: Assets, c: CaseContext, model: str = model) -> list[str]:
            return [
                "quantize",
                str(_source(a, model)),
                str(_out(c) / "q.gguf"),
                "Q4_K_M",
                "--json-progress",
            ]

        def imatrix_argv(a: Assets, c: CaseContext, model: str = model) -> list[str]:
            chunks = "16" if model == "medium" else "4"
            return [
                "imatrix",
                str(_source(a, model)),
                str(_out(c) / "m.imatrix.gguf"),
                "--chunk-size",
                "64",
                "--chunks",
                chunks,
                "--json-progress",
            ]

        def pipeline_argv(a: Assets, c: CaseContext, model: str = model) -> list[str]:
            return ["pipeline", "--json-progress", "--spec", _pipeline_spec(a, c, model)]

        out += [
            Job(
                "quantize",
                model,
                quantize_argv,
                lambda c: [_out(c) / "q.gguf"],
                lambda c: [_out(c)],
                ("quantize", WRITING),
                f"python -m quant quantize ({label}) out/q.gguf Q4_K_M --json-progress",
            ),
            Job(
                "imatrix",
                model,
                imatrix_argv,
                lambda c: [_out(c) / "m.imatrix.gguf"],
                lambda c: [_out(c)],
                ("imatrix", WRITING),
                f"python -m quant imatrix ({label}) out/m.imatrix.gguf --chunk-size 64 "
                "--json-progress",
            ),
            Job(
                "pipeline",
                model,
                pipeline_argv,
                lambda c: [*_out(c).glob("*.gguf"), *_out(c).glob("*.json"), *_out(c).glob("*.md")],
                lambda c: [_out(c), c.folder / "cache"],
                # "report" is left out: its one progress line comes as the job ends.
                ("prepare", "imatrix", "quantize Q4_K_M", "reference", "evaluate Q4_K_M", WRITING),
                f"python -m quant pipeline --json-progress --spec "
                f"'{{source: {label}, types: [Q4_K_M], out_dir: out, cache_dir: cache, …}}'",
            ),
        ]
    if long:
        out.append(
            Job(
                "dequantize",
                "starter",
                lambda a, c: [
                    "dequantize",
                    str(a.starter_path),
                    str(_out(c) / "f16.gguf"),
                    "--json-progress",
                ],
                lambda c: [_out(c) / "f16.gguf"],
                lambda c: [_out(c)],
                ("dequantize",),
                "python -m quant dequantize STARTER out/f16.gguf --json-progress",
            )
        )
    return out


class _Lines:
    """The job's stdout lines, read on a thread so waiting has a deadline."""

    def __init__(self, stream: Any) -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue()
        self.all: list[str] = []
        self._t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._t.start()

    def _read(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.q.put(raw)
        self.q.put(None)

    def next(self, timeout: float) -> str | None:
        """The next line; None at end of output; raises queue.Empty on timeout."""
        raw = self.q.get(timeout=timeout)
        if raw is None:
            return None
        line = decode(raw)
        self.all.append(line)
        return line

    def rest(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.next(max(0.05, end - time.monotonic())) is None:
                    return
            except queue.Empty:
                return


def _trigger(stage: str) -> Callable[[dict[str, Any]], bool]:
    if stage == WRITING:
        return lambda o: o.get("event") == "writing"
    return lambda o: o.get("stage") == stage


def signal_case(assets: Assets, job: Job, stage: str, sig: signal.Signals) -> Case:
    def run(ctx: CaseContext) -> None:
        _out(ctx).mkdir(parents=True, exist_ok=True)
        argv = [PYTHON, "-m", "quant", *job.argv(assets, ctx)]
        err_path = ctx.folder / "stderr.txt"
        with err_path.open("wb") as err:
            proc = spawn(argv, cwd=ctx.folder, env=ctx.env, stderr=err)
            assert proc.stdout is not None
            lines = _Lines(proc.stdout)
            written: set[str] = set()
            hit = _trigger(stage)
            deadline = time.monotonic() + ctx.deadline_s
            sent_at = None
            try:
                while sent_at is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise CaseFailure(f"no {stage!r} line within {ctx.deadline_s:.0f} s")
                    line = lines.next(left)
                    if line is None:
                        rc = proc.wait()
                        raise CaseFailure(
                            f"the job ended (exit status {rc}) before reporting stage {stage!r}",
                            _tail(lines, err_path),
                        )
                    if not line.strip():
                        continue
                    obj = strict_json(line, "a progress line")
                    if obj.get("event") == "written":
                        written.add(str(obj.get("path")))
                    if hit(obj):
                        os.killpg(proc.pid, sig)
                        sent_at = time.monotonic()
                try:
                    rc = proc.wait(timeout=PROMPT_S)
                    stopped_s = time.monotonic() - sent_at
                except Exception:
                    kill_group(proc)
                    proc.wait()
                    raise CaseFailure(
                        f"still running {PROMPT_S:.0f} s after {sig.name}", _tail(lines, err_path)
                    ) from None
                lines.rest(5)
            finally:
                kill_group(proc)
        stderr = decode(err_path.read_bytes())
        observed = f"{_tail(lines, err_path)}; stopped {stopped_s:.1f} s after the signal"
        outputs = [p for p in job.outputs(ctx) if str(p) not in written]
        if sig is signal.SIGKILL:
            if rc != -signal.SIGKILL:
                raise CaseFailure(f"exit status {rc} after SIGKILL", observed)
            _expect_no_outputs(outputs, observed)
            _rerun(ctx, argv, job)
            return
        problems = []
        if rc == 0:
            problems.append(f"ran to the end (exit status 0) despite {sig.name}")
        elif rc < 0:
            problems.append(f"died by {signal_name(-rc)} after {sig.name}")
        elif rc != 130:
            problems.append(f"exit status {rc} after {sig.name} (expected 130)")
        if "Traceback (most recent call last)" in stderr:
            problems.append("a traceback on stderr")
        objs = [json.loads(x) for x in lines.all if x.strip() and _is_json(x)]
        if not objs or objs[-1].get("cancelled") is not True:
            last = visible(lines.all[-1].strip(), 80) if lines.all else "nothing"
            problems.append(f'no {{"cancelled": true}} line last (last: {last})')
        finished = [p.name for p in outputs if p.exists()]
        if finished:
            problems.append(f"the unfinished output {finished[0]} exists")
        partial = leftovers(*job.folders(ctx))
        if partial:
            problems.append(f"a partial file left: {partial[0].name}")
        if problems:
            raise CaseFailure("; ".join(problems), observed)

    return Case(
        FAMILY,
        f"{job.name} ({job.model}) {sig.name} at {stage}",
        run,
        f"{job.what}; {sig.name} to its process group at the first "
        + (
            '{"event": "writing"} line' if stage == WRITING else f"progress line of stage {stage!r}"
        ),
        deadline_s=600.0 if job.model == "starter" else 180.0,
    )


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _tail(lines: _Lines, err_path: Path) -> str:
    last = [x.strip() for x in lines.all if x.strip()][-2:]
    err = decode(err_path.read_bytes()).strip().splitlines()[-3:] if err_path.exists() else []
    return " | ".join(visible(x, 200) for x in [*last, *err])


def _expect_no_outputs(outputs: list[Path], observed: str) -> None:
    for p in outputs:
        if p.exists():
            raise CaseFailure(f"the unfinished output {p.name} exists after the signal", observed)


def _rerun(ctx: CaseContext, argv: list[str], job: Job) -> None:
    ran = run_process(argv, cwd=ctx.folder, env=ctx.env, timeout=ctx.deadline_s)
    result = expect_job(ran)
    if result is None:
        raise CaseFailure("the rerun after SIGKILL failed", ran.describe())
    left = leftovers(*job.folders(ctx))
    if left:
        raise CaseFailure(f"a stale partial file after the rerun: {left[0].name}", ran.describe())
    for p in job.outputs(ctx):
        if p.suffix == ".gguf":
            read_gguf_ok(p, f"the rerun's {p.name}")
    if not job.outputs(ctx):
        raise CaseFailure("the rerun reported success but wrote no output", ran.describe())


def cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
    with_starter = long and assets.starter_path is not None
    all_jobs = jobs(with_starter)
    # Made before any case runs, so no case waits for them inside its deadline.
    _ = assets.medium_gguf, assets.medium_hf
    if with_starter:
        _ = assets.starter_f16
    if long:
        return [signal_case(assets, j, st, s) for j in all_jobs for st in j.stages for s in sigs]
    by = {(j.name, j.model): j for j in all_jobs}
    picks = [
        (by["convert-hf", "medium"], "convert", signal.SIGTERM),
        (by["convert-hf", "medium"], "convert", signal.SIGINT),
        (by["quantize", "medium"], "quantize", signal.SIGTERM),
        (by["quantize", "medium"], "quantize", signal.SIGINT),
        (by["quantize", "medium"], "quantize", signal.SIGKILL),
        (by["imatrix", "medium"], "imatrix", rng.choice(sigs[:2])),
        (by["pipeline", "medium"], rng.choice(("imatrix", "reference", WRITING)), signal.SIGTERM),
    ]
    return [signal_case(assets, j, st, s) for j, st, s in picks]
