"""Embeddings for ``POST /v1/embeddings``, from models made to produce them.

A GGUF can embed when its header names a pooling type (``<arch>.pooling_type``,
written for embedding models such as BERT, nomic-bert or EmbeddingGemma) or
its architecture is an encoder llama.cpp runs for embeddings. A chat model has
neither: its hidden states are not trained as sentence embeddings, so the
server says so plainly instead of returning numbers that look like embeddings.

Embedding models are small; each request opens the model with llama.cpp's
embedding mode (pooled, normalised vectors) and closes it afterwards, one at a
time, outside the chat pool.
"""

from __future__ import annotations

import threading
from typing import Any

from app.core.runtime import import_llama_first
from app.core.serve.catalog import ServedModel
from quant.gguf.header import read_gguf_header
from quant.native.llama_model import open_llama

# Architectures llama.cpp runs as encoders for embeddings (src/llama-arch.cpp names).
EMBEDDING_ARCHITECTURES = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "jina-bert-v3",
        "neo-bert",
        "modern-bert",
        "gemma-embedding",
        "t5encoder",
    }
)
_LOCK = threading.Lock()


def embedding_refusal(model: ServedModel) -> str | None:
    """None when ``model`` can embed; otherwise the sentence that says why not."""
    try:
        header = read_gguf_header(model.path)
    except Exception as exc:  # an unreadable file cannot embed either
        return f"{model.id} cannot be read ({exc})"
    arch = str(header.get("general.architecture", "") or "")
    if arch in EMBEDDING_ARCHITECTURES or header.get(f"{arch}.pooling_type") is not None:
        return None
    return (
        f"{model.id} is a text-generation model ({arch or 'unknown architecture'}) and does not "
        "produce embeddings; serve an embedding model (a GGUF of, for example, nomic-embed-text, "
        "bge or EmbeddingGemma) and ask that one"
    )


def embed_texts(model: ServedModel, texts: list[str]) -> tuple[list[list[float]], int]:
    """One normalised vector per text, and the tokens they took."""
    llama_lib: Any = import_llama_first()
    if llama_lib is None:
        raise RuntimeError("llama-cpp-python is not available")
    with _LOCK:
        llm = open_llama(
            llama_lib, model_path=str(model.path), embedding=True, n_ctx=0, verbose=False
        )
        try:
            n_tokens = sum(len(llm.tokenize(t.encode("utf-8"))) for t in texts)
            vectors = llm.embed(texts, normalize=True)
        finally:
            llm.close()
    return [list(map(float, v)) for v in vectors], n_tokens
