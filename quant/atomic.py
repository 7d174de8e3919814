"""Files that appear whole or not at all: temp file beside the target, fsync, rename.

Every temporary file or folder being written is registered while it is in flight
(:func:`writing`; :func:`atomic_write` and :func:`atomic_output` do it
themselves), so that a job told to stop — a SIGTERM from the GUI's Cancel, a
Ctrl-C — can remove all of them at once (:func:`remove_in_flight`, used by
:mod:`quant.stopping`) even when it is stopped inside native code that cannot
unwind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

_in_flight_lock = threading.Lock()
_in_flight: set[Path] = set()


@contextlib.contextmanager
def writing(partial: Path) -> Iterator[Path]:
    """Register ``partial`` (a temp file or folder) as half-written while the block runs."""
    with _in_flight_lock:
        _in_flight.add(partial)
    try:
        yield partial
    finally:
        with _in_flight_lock:
            _in_flight.discard(partial)


def in_flight() -> list[Path]:
    """The half-written files and folders of this process, now."""
    with _in_flight_lock:
        return sorted(_in_flight)


def remove_in_flight(*, from_signal: bool = False) -> None:
    """Delete every half-written file and folder of this process.

    ``from_signal``: called from a signal handler, which may have interrupted this
    thread while it held the lock, so take no lock and log nothing.
    """
    if from_signal:
        try:
            paths = list(_in_flight)
        except RuntimeError:  # changed while copying; a second try sees it settled
            paths = list(_in_flight)
    else:
        paths = in_flight()
    for p in paths:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        except OSError as exc:
            if not from_signal:
                logger.warning("could not remove partial output %s: %s", p, exc)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with writing(tmp):
            with os.fdopen(fd, mode, encoding=encoding) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
                # mkstemp makes the file private (0600); give it the mode an ordinary
                # write would: the old file's, else private in a private folder, else
                # 0644 less the process umask.
                os.fchmod(fh.fileno(), _target_mode(path))
            tmp.replace(path)
    except BaseException as exc:
        said = _naming(exc, tmp)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if said is exc:
            raise
        raise said from exc


# Below this much free room, a short write with no errno is the disk filling up.
_NEARLY_FULL = 1 << 20


def _naming(exc: BaseException, tmp: Path) -> BaseException:
    """``exc`` naming the file it failed to write, for the sentence the user reads
    (:func:`quant.errors.refused_write`).

    A write through a file object raises ``ENOSPC`` without a file name; numpy's
    and gguf-py's writers report a short write on a full disk with no errno at
    all ("18432 requested and 14304 written"), which is told apart by the room
    left on the disk, checked before the partial file is removed.
    """
    if not isinstance(exc, OSError):
        return exc
    if exc.errno is None:
        try:
            full = shutil.disk_usage(tmp.parent).free < _NEARLY_FULL
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    elif exc.filename is None:
        exc.filename = str(tmp)
    return exc


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _target_mode(path: Path) -> int:
    """The old file's mode; else private (0600) in a private folder, 0644 less umask elsewhere."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        pass
    try:
        if not path.parent.stat().st_mode & 0o077:
            return 0o600
    except OSError:
        pass
    return 0o644 & ~_UMASK


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def partial_of(path: Path) -> Path:
    """The temp name :func:`atomic_output` writes ``path`` under until it is complete."""
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; rename it to ``path`` only on success.

    For native writers (llama.cpp, gguf-py) that take a file name. On any
    exception, cancellation included, the temp file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_of(path)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        with writing(tmp):
            yield tmp
            if tmp.exists():
                with tmp.open("rb+") as fh:
                    os.fsync(fh.fileno())
            tmp.replace(path)
    except BaseException as exc:
        said = _naming(exc, tmp)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if said is exc:
            raise
        raise said from exc
