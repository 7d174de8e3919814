"""Quantdesk's engine: hardware probe, model facts, format advice, conversion.

Nothing in this package imports Qt; it is used from the CLI, from scripts and
from the GUI through ``app.workers``.
"""

__version__ = "0.1.0"
