"""The one shape in which a failure reaches the GUI.

Background work fails in two places: a function run by
:func:`app.workers.tasks.start_task` raises, or a child-process job
(:class:`app.workers.process_job.ProcessJob`) reports an error or dies. Both
hand the page a :class:`Failure`, and :func:`app.ui.errors.show_error` shows one.

``expected`` separates the errors the engine and the app raise on purpose (a
sentence written for the user, shown as is) from bugs (shown as "Unexpected
error" with ``details`` folded). A cancelled job is not a failure and never
becomes one.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from app.core.errors import AppError
from quant.errors import QuantError

#: The ``kind`` of a failure nobody raised on purpose (a child job's own word for it).
INTERNAL = "internal"


@dataclass(frozen=True)
class Failure:
    """Why some background work failed.

    ``message`` is the sentence for the user; ``kind`` names the error (an
    exception class name, or :data:`INTERNAL`); ``details`` is for a bug
    report (a traceback, or the end of a child's stderr). ``error`` is the
    exception itself when there was one in this process, for the few callers
    that act on its type (a chat load error carries a plan to retry with).
    """

    message: str
    expected: bool
    kind: str = INTERNAL
    details: str = ""
    error: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        """The failure ``exc`` stands for: its sentence when raised on purpose, else a bug."""
        kind = type(exc).__name__
        if isinstance(exc, QuantError | AppError):
            return cls(str(exc).strip() or kind, True, kind, "", exc)
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = f"{kind}: {exc}" if str(exc) else kind
        return cls(message, False, kind, details, exc)

    @classmethod
    def from_job_error(cls, message: str, kind: str, details: str = "") -> Failure:
        """A child job's ``{"error": …, "kind": …}``: expected unless its kind is internal."""
        kind = kind or INTERNAL
        return cls(message, kind != INTERNAL, kind, details)

    @classmethod
    def unexpected(cls, message: str, details: str = "") -> Failure:
        """A failure no code raised on purpose (a process that died, a start that failed)."""
        return cls(message, False, INTERNAL, details)
