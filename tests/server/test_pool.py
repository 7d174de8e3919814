"""Loading on demand within the memory budget, queues, and failures that leave the server up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from app.core.chat.session import estimate_fit
from app.core.serve.pool import ModelPool, PoolOptions, WontFitError
from app.core.settings import Settings
from tests.ggufs import write_tiny_gguf
from tests.server.conftest import API_KEY, start_server, starter_catalog

pytestmark = pytest.mark.slow


def _broken_architecture(path: Path) -> Path:
    """A complete GGUF whose architecture llama.cpp does not know: it fails to load."""
    tiny = write_tiny_gguf(path.with_name("tmp-tiny.gguf"), byte_tokens=True)
    data = bytearray(tiny.read_bytes())
    at = data.find(b"llama", data.find(b"general.architecture"))
    data[at : at + 5] = b"lxama"
    path.write_bytes(bytes(data))
    tiny.unlink()
    return path


def test_a_failed_load_is_an_error_and_the_server_goes_on(
    starter_model: Path, tmp_path: Path
) -> None:
    broken = _broken_architecture(tmp_path / "broken-arch.gguf")
    server = start_server(starter_model, tmp_path, extra=(broken,))
    try:
        client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
        ids = {m.id for m in client.models.list().data}
        assert "broken-arch" in ids
        with pytest.raises(openai.UnprocessableEntityError) as info:
            client.chat.completions.create(
                model="broken-arch", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert info.value.code == "model_load_failed"
        assert "does not know the 'lxama' architecture" in str(info.value)
        ok = client.chat.completions.create(
            model="starter", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert ok.choices[0].message.content is not None
    finally:
        server.stop()


def test_a_full_queue_answers_429_with_retry_after(starter_model: Path, tmp_path: Path) -> None:
    server = start_server(starter_model, tmp_path, max_queue=1)
    try:
        client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)

        def one(_i: int) -> Any:
            try:
                return client.chat.completions.create(
                    model="starter",
                    messages=[{"role": "user", "content": "Tell a story."}],
                    max_tokens=24,
                    temperature=0,
                )
            except openai.RateLimitError as exc:
                return exc

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(6)))
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        answered = [r for r in results if not isinstance(r, openai.RateLimitError)]
        assert refused and answered
        assert refused[0].status_code == 429
        assert int(refused[0].response.headers["retry-after"]) >= 1
        assert refused[0].code == "queue_full"
    finally:
        server.stop()


def _run(pool: ModelPool, model: Any) -> None:
    """Load ``model`` through the pool and wait for a job on it."""
    pool.submit(model, lambda s, _t: s.n_ctx).result(timeout=120)


def test_the_least_recently_used_model_makes_room(starter_model: Path, tmp_path: Path) -> None:
    tiny = write_tiny_gguf(tmp_path / "tiny-llama.gguf", byte_tokens=True)
    catalog = starter_catalog(starter_model, tmp_path, extra=(tiny,))
    models = {m.id: m for m in catalog.models()}
    starter = next(m for m in models.values() if m.source == "starter")
    small = models["tiny-llama"]
    probe = ModelPool(PoolOptions(n_ctx=512, n_threads=1), Settings(tmp_path / "chat.json"))
    need = {
        m.id: estimate_fit(m.path, probe.plan_for(m), available_ram=1 << 50).needed_bytes
        for m in (starter, small)
    }
    # Room for either model, not for both.
    budget = max(need.values()) + min(need.values()) // 2
    pool = ModelPool(
        PoolOptions(n_ctx=512, n_threads=1, memory_budget=budget), Settings(tmp_path / "c.json")
    )
    try:
        _run(pool, starter)
        assert [m.id for m in pool.loaded()] == [starter.id]
        _run(pool, small)
        assert [m.id for m in pool.loaded()] == [small.id]
    finally:
        pool.close()


def test_a_model_that_cannot_fit_is_refused_with_the_advisors_sentence(
    starter_model: Path, tmp_path: Path
) -> None:
    catalog = starter_catalog(starter_model, tmp_path)
    starter = catalog.models()[0]
    pool = ModelPool(
        PoolOptions(n_ctx=8192, n_threads=1, memory_budget=420 * 1024**2),
        Settings(tmp_path / "chat.json"),
    )
    with pytest.raises(WontFitError) as info:
        pool.submit(starter, lambda s, _t: None)
    text = str(info.value)
    assert "does not fit the server's memory budget" in text
    assert "needs about" in text
    assert "the advisor says" in text
    assert pool.loaded() == []


def test_an_embedding_model_embeds(starter_model: Path, tmp_path: Path) -> None:
    embedder = write_tiny_gguf(tmp_path / "tiny-embed.gguf", byte_tokens=True, pooling_type=1)
    server = start_server(starter_model, tmp_path, extra=(embedder,))
    try:
        client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
        out = client.embeddings.create(model="tiny-embed", input=["hello", "a longer text"])
        assert [d.index for d in out.data] == [0, 1]
        vectors = [d.embedding for d in out.data]
        assert len(vectors[0]) == len(vectors[1]) == 64  # the model's embedding width
        for v in vectors:
            assert abs(sum(x * x for x in v) - 1.0) < 1e-3  # normalised
        assert vectors[0] != vectors[1]
        assert out.usage.prompt_tokens > 0
    finally:
        server.stop()
