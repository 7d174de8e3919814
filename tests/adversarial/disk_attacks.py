"""A full disk: outputs (and the app's own folder) on a tiny tmpfs.

Needs root to mount (``mount -t tmpfs -o size=… tmpfs DIR``, unmounted after); as
any other user every case is reported skipped with that reason. Each failure must
be one sentence that says the disk is full (it names the disk, space or free room),
leave no output and nothing half-written on the small disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.adversarial.assets import Assets
from tests.adversarial.harness import (
    Case,
    CaseContext,
    CaseFailure,
    CaseSkipped,
    Ran,
    expect_cli,
    expect_job,
    job_lines,
    leftovers,
    visible,
)

FAMILY = "disk"
_NAMES_DISK = re.compile(r"disk|space|free|full", re.IGNORECASE)


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, fill: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where`` (filled to the last byte with ``fill``)."""
    if os.geteuid() != 0:
        raise CaseSkipped("needs root to mount a small tmpfs (mount -t tmpfs)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CaseSkipped(f"cannot mount a tmpfs here ({done.stderr.strip()[:120]})")
    try:
        if fill:
            with contextlib.suppress(OSError), (where / "filler").open("wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _small_disk_files(disk: Path) -> list[str]:
    return sorted(p.name for p in disk.rglob("*") if p.name != "filler")


def _says_disk(message: str, observed: str) -> None:
    if not _NAMES_DISK.search(message):
        raise CaseFailure(
            f"the error does not say the disk is full: {visible(message, 200)}", observed
        )


@dataclass(frozen=True)
class DiskAttack:
    name: str
    what: str
    size: str
    run: Callable[[Assets, CaseContext, Path], tuple[Ran, list[Path], str]]
    # "cli", "job", or "home" (the app folder itself on the small disk)
    kind: str
    fill: bool = False


def _convert_cli(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    out = disk / "model.gguf"
    return c.cli("convert-hf", a.tiny_hf, out), [out], "cli"


def _convert_job(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    out = disk / "model.gguf"
    return c.job("convert-hf", a.tiny_hf, out, "--json-progress"), [out], "job"


def _quantize_job(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    out = disk / "q.gguf"
    return c.job("quantize", a.tiny_gguf, out, "Q8_0", "--json-progress"), [out], "job"


def _imatrix_job(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    out = disk / "m.imatrix.gguf"
    ran = c.job(
        "imatrix", a.tiny_gguf, out, "--chunk-size", "32", "--chunks", "2", "--json-progress"
    )
    return ran, [out], "job"


def _dequantize_job(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    out = disk / "f16.gguf"
    return c.job("dequantize", a.tiny_gguf, out, "--json-progress"), [out], "job"


def _pipeline_job(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    spec = {
        "source": str(a.tiny_gguf),
        "types": ["Q8_0"],
        "imatrix": "none",
        "eval_text": "none",
        "out_dir": str(disk),
        "cache_dir": str(c.folder / "cache"),
    }
    ran = c.job("pipeline", "--json-progress", "--spec", json.dumps(spec))
    return ran, [disk / "tiny-Q8_0.gguf"], "job"


def _pipeline_cache_job(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    spec = {
        "source": str(a.tiny_hf),
        "types": ["Q8_0"],
        "imatrix": "none",
        "eval_text": "none",
        "out_dir": str(c.folder / "out"),
        "cache_dir": str(disk),
    }
    ran = c.job("pipeline", "--json-progress", "--spec", json.dumps(spec))
    return ran, list((c.folder / "out").glob("*.gguf")), "job"


def _convert_one_click(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    ran = c.cli(
        "convert", a.tiny_gguf, "--to", "Q8_0", "--imatrix", "none", "--eval", "none", "--out", disk
    )
    return ran, list(disk.glob("*.gguf")), "cli"


def _home_models(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    env = {**c.env, "QUANTDESK_HOME": str(disk / "home")}
    ran = c.cli("models", "--add", a.tiny_gguf, "--no-fit", "--no-other-apps", env=env)
    return ran, [], "cli"


def _home_chat(a: Assets, c: CaseContext, disk: Path) -> tuple[Ran, list[Path], str]:
    env = {**c.env, "QUANTDESK_HOME": str(disk / "home")}
    ran = c.cli("chat", a.tiny_gguf, "--prompt", "hi", "--max-tokens", "4", "--save", env=env)
    return ran, [], "chat"


ATTACKS = (
    DiskAttack(
        "convert-hf CLI",
        "quantdesk convert-hf TINY_LLAMA DISK/model.gguf",
        "64k",
        _convert_cli,
        "cli",
    ),
    DiskAttack(
        "convert-hf job",
        "python -m quant convert-hf TINY_LLAMA DISK/model.gguf --json-progress",
        "64k",
        _convert_job,
        "job",
    ),
    DiskAttack(
        "quantize job",
        "python -m quant quantize TINY.gguf DISK/q.gguf Q8_0 --json-progress",
        "64k",
        _quantize_job,
        "job",
    ),
    DiskAttack(
        "imatrix job",
        "python -m quant imatrix TINY.gguf DISK/m.imatrix.gguf "
        "--chunk-size 32 --chunks 2 --json-progress",
        "4k",
        _imatrix_job,
        "job",
    ),
    DiskAttack(
        "dequantize job",
        "python -m quant dequantize TINY.gguf DISK/f16.gguf --json-progress",
        "64k",
        _dequantize_job,
        "job",
    ),
    DiskAttack(
        "pipeline out_dir",
        "python -m quant pipeline --json-progress --spec "
        "'{source: TINY.gguf, types: [Q8_0], imatrix: none, eval_text: none, "
        "out_dir: DISK}'",
        "64k",
        _pipeline_job,
        "job",
    ),
    DiskAttack(
        "pipeline cache_dir",
        "python -m quant pipeline --json-progress --spec "
        "'{source: TINY_LLAMA folder, types: [Q8_0], imatrix: none, eval_text: none, "
        "cache_dir: DISK}' (the F16 conversion goes to the cache)",
        "64k",
        _pipeline_cache_job,
        "job",
    ),
    DiskAttack(
        "convert one-click",
        "quantdesk convert TINY.gguf --to Q8_0 --imatrix none --eval none --out DISK",
        "64k",
        _convert_one_click,
        "cli",
    ),
    DiskAttack(
        "app folder full (models)",
        "QUANTDESK_HOME on a full disk; quantdesk models --add TINY.gguf --no-fit --no-other-apps",
        "64k",
        _home_models,
        "home",
        fill=True,
    ),
    DiskAttack(
        "app folder full (chat --save)",
        "QUANTDESK_HOME on a full disk; quantdesk chat TINY.gguf --prompt hi --max-tokens 4 --save",
        "64k",
        _home_chat,
        "home",
        fill=True,
    ),
    DiskAttack(
        "everything full (convert-hf)",
        "a disk with no byte free; quantdesk convert-hf TINY_LLAMA DISK/model.gguf",
        "64k",
        _convert_cli,
        "cli",
        fill=True,
    ),
)


def make_case(assets: Assets, attack: DiskAttack) -> Case:
    def run(ctx: CaseContext) -> None:
        with tmpfs(ctx.folder / "disk", attack.size, fill=attack.fill) as disk:
            before = _small_disk_files(disk)
            ran, outputs, kind = attack.run(assets, ctx, disk)
            after = _small_disk_files(disk)
            left = leftovers(disk)
        observed = ran.describe()
        if kind == "job":
            result = expect_job(ran, outputs=outputs)
            if result is not None:
                raise CaseFailure("reported success on a disk too small for it", observed)
            _says_disk(str(job_lines(ran.stdout)[-1].get("error")), observed)
        else:
            expect_cli(ran, outputs=outputs, stdout_is_terminal_text=kind != "chat")
            if ran.returncode == 0 and kind == "cli":
                raise CaseFailure("reported success on a disk too small for it", observed)
            if ran.returncode != 0:
                _says_disk(ran.stderr.strip(), observed)
        if left:
            raise CaseFailure(f"half-written files on the full disk: {left[0].name}", observed)
        if attack.kind != "home" and after != before:
            raise CaseFailure(
                "files left on the full disk: " + ", ".join(visible(n, 60) for n in after[:3]),
                observed,
            )

    return Case(
        FAMILY,
        attack.name,
        run,
        f"a {attack.size} tmpfs as DISK{' (filled)' if attack.fill else ''}; {attack.what}",
        deadline_s=120,
    )


def cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    if long:
        return [make_case(assets, a) for a in ATTACKS]
    picks = ("convert-hf CLI", "quantize job", "app folder full (models)")
    return [make_case(assets, a) for a in ATTACKS if a.name in picks]
