"""A running local server over the starter model, shared by the server tests.

The server binds 127.0.0.1 on a free port, lists a library that holds only the
starter model (no other apps' folders), loads it with one thread and a short
context (a busy two-core machine must not make the tests crawl), and requires
an API key. Tests talk to it with the official ``openai`` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.core.library import ModelLibrary, StarterModel
from app.core.library_index import LibraryIndex, ModelRow, describe_library
from app.core.serve.catalog import Catalog
from app.core.serve.pool import PoolOptions
from app.core.serve.server import LocalServer, ServerConfig
from app.core.settings import Settings

API_KEY = "test-key-0123"


def starter_catalog(starter: Path, home: Path, *, extra: tuple[Path, ...] = ()) -> Catalog:
    """A catalog of a library holding the starter model and the ``extra`` files."""
    settings = Settings(home / "settings.json")
    library = ModelLibrary(settings, external_roots=(), models_dir=home / "models")
    st = starter.stat()
    library.remember_starter(StarterModel(starter, st.st_size, st.st_mtime_ns))
    for path in extra:
        library.add(path)
    index = LibraryIndex(home / "index.json")

    def lister() -> list[ModelRow]:
        return describe_library(library, None, index=index)

    return Catalog(lister)


@dataclass
class Running:
    server: LocalServer
    url: str
    model_id: str


def start_server(
    starter: Path,
    home: Path,
    *,
    api_key: str | None = API_KEY,
    max_queue: int = 32,
    extra: tuple[Path, ...] = (),
    **pool: object,
) -> LocalServer:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        api_key=api_key,
        pool=PoolOptions(n_ctx=1024, n_threads=1, max_queue=max_queue, **pool),  # type: ignore[arg-type]
    )
    server = LocalServer(
        config,
        catalog=starter_catalog(starter, home, extra=extra),
        settings=Settings(home / "chat.json"),
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def running(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("serve")
    server = start_server(starter_model, home)
    model_id = server.catalog.models()[0].id
    try:
        yield Running(server, server.url, model_id)
    finally:
        server.stop()


@pytest.fixture
def client(running: Running) -> object:
    import openai

    return openai.OpenAI(base_url=running.url, api_key=API_KEY, max_retries=0, timeout=300)
