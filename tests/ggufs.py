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
    architecture: str = "llama",
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
    w = gguf.GGUFWriter(str(path), architecture)
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


def write_many_tensor_gguf(
    path: Path, n_tensors: int, *, per_layer: int = 1000, unique_names: bool = False
) -> Path:
    """A llama GGUF whose header lists ``n_tensors`` small F32 tensors (data left sparse).

    Layers hold ``per_layer`` tensors each (``blk.N.attn_norm.weight`` and
    ``blk.N.ffn_up.E.weight``), as an old-style MoE file with one tensor per expert
    would; ``unique_names`` names every tensor apart instead (no two layers alike),
    the worst case for anything that summarises a tensor list. Written with
    ``struct`` rather than gguf-py, which takes minutes for a million tensors.
    """
    import os
    import struct

    emb, vocab = 32, 16
    n_layers = max(1, (n_tensors - 2) // per_layer)

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kv = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("general.name") + struct.pack("<I", 8) + s("many tensors"),
        s("llama.block_count") + struct.pack("<II", 4, n_layers),
        s("llama.context_length") + struct.pack("<II", 4, 2048),
        s("llama.embedding_length") + struct.pack("<II", 4, emb),
        s("llama.feed_forward_length") + struct.pack("<II", 4, emb),
        s("llama.attention.head_count") + struct.pack("<II", 4, 4),
        s("llama.attention.head_count_kv") + struct.pack("<II", 4, 4),
        s("llama.attention.layer_norm_rms_epsilon") + struct.pack("<If", 6, 1e-5),
        s("general.file_type") + struct.pack("<II", 4, 0),
        s("tokenizer.ggml.model") + struct.pack("<I", 8) + s("llama"),
        s("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, vocab)
        + b"".join(s(f"<t{i}>") for i in range(vocab)),
    ]
    names = ["token_embd.weight", "output_norm.weight"]
    shapes = [(emb, vocab), (emb,)]
    for i in range(n_tensors - 2):
        layer, k = divmod(i, per_layer)
        if layer >= n_layers:  # the remainder joins the last layer
            layer, k = n_layers - 1, 1
        if unique_names:
            names.append(f"blk.{layer}.t{i}.weight")
        elif k == 0:
            names.append(f"blk.{layer}.attn_norm.weight")
        else:
            names.append(f"blk.{layer}.ffn_up.{i}.weight")
        shapes.append((emb,))
    infos = bytearray()
    offset = 0
    for name, shape in zip(names, shapes, strict=True):
        infos += s(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        infos += struct.pack("<IQ", 0, offset)
        n_bytes = 4
        for d in shape:
            n_bytes *= d
        offset += -(-n_bytes // 32) * 32
    head = b"GGUF" + struct.pack("<IQQ", 3, len(names), len(kv)) + b"".join(kv) + bytes(infos)
    head += b"\0" * (-len(head) % 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head)
    os.truncate(path, len(head) + offset)
    return path
