"""Tiny but complete GGUF files built on the spot, for tests of anything that reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_tiny_gguf(
    path: Path,
    *,
    name: str = "tiny-test",
    n_layers: int = 2,
    context: int = 2048,
    seed: int = 0,
    chat_template: str | None = None,
    byte_tokens: bool = False,
    pooling_type: int | None = None,
    rms_eps: float = 1e-5,
    empty_tokens: bool = False,
    rope_freq_base: float | None = None,
) -> Path:
    """A small but complete llama-architecture GGUF (F32 weights, a 32-token vocabulary).

    ``seed`` changes the weights but not the size; ``chat_template`` and
    ``rope_freq_base`` are stored when given.
    ``byte_tokens`` gives the vocabulary an unknown token and SentencePiece's 256 byte
    tokens, so llama.cpp can tokenize any text with it (without them its tokenizer
    aborts on the first character it cannot spell). ``pooling_type`` (llama.cpp's
    enum: 1 mean, 2 CLS, 3 last) marks it as an embedding model.
    """
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    emb, ff, heads, kv_heads = 64, 128, 4, 2
    tokens = [f"<t{i}>" for i in range(32)]
    types = [1] * 32
    if byte_tokens:
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + tokens[3:]
        types = [2, 3, 3] + [6] * 256 + [1] * 29
    if empty_tokens:
        tokens = [""] * len(tokens)
    vocab = len(tokens)
    head_dim = emb // heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(context)
    w.add_embedding_length(emb)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    if byte_tokens:
        w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if pooling_type is not None:
        w.add_pooling_type(gguf.PoolingType(pooling_type))
    if rope_freq_base is not None:
        w.add_rope_freq_base(rope_freq_base)
    rng = np.random.default_rng(seed)

    def t(*shape: int) -> Any:
        return rng.standard_normal(shape).astype(np.float32) * 0.02

    w.add_tensor("token_embd.weight", t(vocab, emb))
    w.add_tensor("output_norm.weight", np.ones(emb, dtype=np.float32))
    w.add_tensor("output.weight", t(vocab, emb))
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(emb, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", t(emb, emb))
        w.add_tensor(f"blk.{i}.attn_k.weight", t(kv_heads * head_dim, emb))
        w.add_tensor(f"blk.{i}.attn_v.weight", t(kv_heads * head_dim, emb))
        w.add_tensor(f"blk.{i}.attn_output.weight", t(emb, emb))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(emb, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(ff, emb))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(ff, emb))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(emb, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
