"""The engine's exception tree.

Every error the engine raises on purpose derives from :class:`QuantError`, and
its message is a sentence a user can act on: it names the file or value and
what was expected. ``Cancelled`` is not an error to show; callers treat it as
the normal end of a job the user stopped.
"""

from __future__ import annotations


class QuantError(Exception):
    """Root of the engine's expected failures."""


class Cancelled(QuantError):  # noqa: N818 - a state, not a failure
    """The user cancelled the job; never shown as an error."""


class ModelFormatError(QuantError):
    """A model file is not what it claims to be (bad magic, truncated, absurd header)."""


class ModelFileMissingError(ModelFormatError):
    """The path names no model file (nor folder, nor hub repo id where one would do)."""


class UnsupportedArchitectureError(QuantError):
    """The model's architecture is not one Quantdesk can handle."""


class HardwareProfileError(QuantError):
    """A saved hardware profile could not be read."""


class InsufficientResourcesError(QuantError):
    """Not enough memory or disk for the requested job."""


class HubError(QuantError):
    """A model hub request failed (offline, unknown repo, network error)."""
