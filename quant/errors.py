"""The engine's exception tree.

Every error the engine raises on purpose derives from :class:`QuantError`, and
its message is a sentence a user can act on: it names the file or value and
what was expected. :class:`Cancelled` is not an error and stands outside that
tree: it is the normal end of a job the user stopped, so a handler for
``QuantError`` never mistakes it for a failure to report.
"""

from __future__ import annotations


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
