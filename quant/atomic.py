"""Files that appear whole or not at all: temp file beside the target, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            # mkstemp makes the file private (0600); give it the mode an ordinary
            # write would: the old file's, else private in a private folder, else
            # 0644 less the process umask.
            os.fchmod(fh.fileno(), _target_mode(path))
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


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


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; rename it to ``path`` only on success.

    For native writers (llama.cpp, gguf-py) that take a file name. On any
    exception, cancellation included, the temp file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        if tmp.exists():
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
