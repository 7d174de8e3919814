"""Qt-free services: chat sessions, model library, history, settings and the CLI."""
