"""Quantdesk application: Qt GUI (``app.ui``), the Qt bridge (``app.workers``) and
the Qt-free services and CLI (``app.core``)."""

__version__ = "0.1.0"
