"""The engine's exception tree.

Every error the engine raises on purpose derives from :class:`QuantError`, and
its message is a sentence a user can act on: it names the file or value and
what was expected. :class:`Cancelled` is not an error and stands outside that
tree: it is the normal end of a job the user stopped, so a handler for
``QuantError`` never mistakes it for a failure to report.
"""

from __future__ import annotations

import errno
import os
from pathlib import PurePath


class QuantError(Exception):
    """Root of the engine's expected failures."""


class Cancelled(Exception):  # noqa: N818 - a state, not a failure
    """The user cancelled the job; never shown as an error (exit status 130 in a CLI)."""


class ModelFormatError(QuantError):
    """A model file is not what it claims to be (bad magic, truncated, absurd header)."""


class ModelFileMissingError(ModelFormatError):
    """The path names no model file (nor folder, nor hub repo id where one would do)."""


class NotGGUFError(ModelFormatError):
    """The file is not a GGUF at all (its first bytes are not the GGUF magic)."""


class UnsupportedArchitectureError(QuantError):
    """The model's architecture is not one Quantdesk can handle."""


class HardwareProfileError(QuantError):
    """A saved hardware profile could not be read."""


class InsufficientResourcesError(QuantError):
    """Not enough memory or disk for the requested job."""


class HubError(QuantError):
    """A model hub request failed (offline, unknown repo, network error)."""


class DiskWriteError(InsufficientResourcesError):
    """The system refused a write: the disk is full, over quota or read-only, or access
    was denied. Made from the ``OSError`` by :func:`refused_write`."""


# errno → what the user is told, and what to do about it.
_REFUSED: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free some space or choose another folder"),
    getattr(errno, "EDQUOT", errno.ENOSPC): (
        "the disk quota is used up",
        "free some space or choose another folder",
    ),
    errno.EROFS: ("the disk is read-only", "choose another folder"),
}
_DENIED = (errno.EACCES, errno.EPERM)


def refused_write(exc: BaseException) -> DiskWriteError | None:
    """``exc`` as one sentence when it is the system refusing a file; else None.

    The entry points (the CLI, ``python -m quant`` and its JSON lines) use it, so a
    full disk in any command is the same sentence naming the folder, never a
    traceback. :mod:`quant.atomic` makes sure the ``OSError`` names its file.
    """
    if not isinstance(exc, OSError):
        return None
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, str | bytes) else ""
    if exc.errno in _DENIED:
        what = f" for {name}" if name else ""
        return DiskWriteError(
            f"permission denied{what}; check that you may read and write it and its folder"
        )
    said = _REFUSED.get(exc.errno) if exc.errno is not None else None
    if said is None:
        return None
    problem, remedy = said
    folder = PurePath(name).parent if name else None
    where = (
        f"cannot write in {folder}"
        if folder is not None and folder.name
        else f"cannot write {name}"
        if name
        else "cannot write a file"
    )
    return DiskWriteError(f"{where}: {problem}; {remedy}, then try again")
