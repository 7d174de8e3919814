"""The local OpenAI-compatible server (``quantdesk serve``, the GUI's Server page).

:mod:`.catalog` names the library's models, :mod:`.pool` loads them on demand
within the memory model's budget and queues requests per model,
:mod:`.engine` turns one OpenAI request into a generation and back,
:mod:`.app` is the HTTP side (FastAPI, served by uvicorn; SSE through
sse-starlette), and :mod:`.server` starts and stops it and keeps the request log.
"""

# Where ``quantdesk serve`` listens unless told otherwise (this machine only).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
