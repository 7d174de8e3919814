"""Independent numpy forward passes of the supported Hugging Face architectures.

Written from the Hugging Face model definitions (not from llama.cpp and not from
the converter): weights are used exactly as the checkpoint stores them, with the
"rotate half" RoPE, Gemma's ``1 + weight`` norms, and each family's attention,
MLP and routing rules. Everything runs in float64, so differences against
llama.cpp come from llama.cpp's arithmetic and the conversion only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Array = np.ndarray

MOE = {"MixtralForCausalLM", "Qwen3MoeForCausalLM"}


def _cfg(config: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(config)
    if isinstance(config.get("text_config"), dict):
        cfg.update(config["text_config"])
    return cfg


def rms_norm(x: Array, w: Array, eps: float, *, gemma: bool = False) -> Array:
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if gemma else w)


def silu(x: Array) -> Array:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: Array) -> Array:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax(x: Array, axis: int = -1) -> Array:
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def inv_freq(
    cfg: Mapping[str, Any], dim: int, base: float, seq_len: int, *, scaled: bool = True
) -> tuple[Array, float]:
    """RoPE inverse frequencies and the cos/sin multiplier, as transformers computes them."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    rs = cfg.get("rope_scaling") if scaled else None
    if not rs:
        return freqs, 1.0
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return freqs / rs["factor"], 1.0
    if kind == "llama3":
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / freqs
        out = np.where(wavelen > old / low, freqs / factor, freqs)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return np.where(medium, smoothed, out), 1.0
    if kind == "longrope":
        orig = cfg["original_max_position_embeddings"]
        ext = np.asarray(rs["long_factor"] if seq_len > orig else rs["short_factor"], np.float64)
        factor = cfg["max_position_embeddings"] / orig
        attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        return freqs / ext, attn
    raise ValueError(f"reference has no RoPE type {kind}")


def rotate_half(x: Array) -> Array:
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x: Array, pos: Array, freqs: Array, mscale: float, rot_dim: int) -> Array:
    """x: (heads, T, head_dim). Rotates the first ``rot_dim`` dims, half-split layout."""
    angles = pos[:, None] * freqs[None, :]  # (T, rot/2)
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(emb) * mscale, np.sin(emb) * mscale
    xr, xp = x[..., :rot_dim], x[..., rot_dim:]
    return np.concatenate([xr * cos + rotate_half(xr) * sin, xp], axis=-1)


def attention(
    q: Array, k: Array, v: Array, *, scale: float, softcap: float | None, window: int | None
) -> Array:
    """q: (H, T, d); k, v: (Hkv, T, d); causal, optional sliding window and soft-cap."""
    n_head, t, _ = q.shape
    rep = n_head // k.shape[0]
    k = np.repeat(k, rep, axis=0)
    v = np.repeat(v, rep, axis=0)
    scores = q @ k.transpose(0, 2, 1) * scale
    if softcap:
        scores = np.tanh(scores / softcap) * softcap
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    allowed = j <= i
    if window:
        allowed &= (i - j) < window
    scores = np.where(allowed[None], scores, -np.inf)
    return softmax(scores) @ v


def forward(
    config: Mapping[str, Any],
    weights: Mapping[str, Array],
    tokens: Sequence[int],
    *,
    rope_context: int | None = None,
) -> Array:
    """Logits (T, vocab) of the causal LM described by ``config`` for ``tokens``.

    ``rope_context`` is the sequence length LongRoPE chooses its factors by
    (transformers uses the current length; llama.cpp uses the context size).
    """
    cfg = _cfg(config)
    arch = cfg["architectures"][0]
    gemma = arch.startswith("Gemma")
    w = {
        k.replace("language_model.model.", "model."): v.astype(np.float64)
        for k, v in weights.items()
    }
    n_embd = cfg["hidden_size"]
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or n_embd // n_head
    eps = cfg["rms_norm_eps"]
    n_layer = cfg["num_hidden_layers"]
    t = len(tokens)
    pos = np.arange(t, dtype=np.float64)

    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    if gemma:
        x = x * math.sqrt(n_embd)

    rot_dim = int(head_dim * cfg.get("partial_rotary_factor", 1.0))
    base = cfg.get("rope_theta", 10000.0)
    global_freqs, global_mscale = inv_freq(cfg, rot_dim, base, rope_context or t)

    for layer in range(n_layer):
        p = f"model.layers.{layer}."

        def lin(name: str, h: Array, prefix: str = p) -> Array:
            out = h @ w[prefix + name + ".weight"].T
            bias = w.get(prefix + name + ".bias")
            return out if bias is None else out + bias

        # which attention this layer uses
        window = None
        freqs, mscale = global_freqs, global_mscale
        if arch == "Gemma2ForCausalLM":
            if layer % 2 == 0:
                window = cfg["sliding_window"]
        elif gemma:
            types = cfg.get("layer_types")
            sliding = (
                (types[layer] == "sliding_attention")
                if types
                else ((layer + 1) % cfg["sliding_window_pattern"] != 0)
            )
            if sliding:
                window = cfg["sliding_window"]
                freqs, mscale = inv_freq(cfg, rot_dim, cfg["rope_local_base_freq"], t, scaled=False)

        residual = x
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps, gemma=gemma)
        if arch == "Phi3ForCausalLM":
            qkv = lin("self_attn.qkv_proj", h)
            q_end, k_end = n_head * head_dim, (n_head + n_kv) * head_dim
            q, k, v = qkv[:, :q_end], qkv[:, q_end:k_end], qkv[:, k_end:]
        else:
            q = lin("self_attn.q_proj", h)
            k = lin("self_attn.k_proj", h)
            v = lin("self_attn.v_proj", h)
        q = q.reshape(t, n_head, head_dim).transpose(1, 0, 2)
        k = k.reshape(t, n_kv, head_dim).transpose(1, 0, 2)
        v = v.reshape(t, n_kv, head_dim).transpose(1, 0, 2)
        if p + "self_attn.q_norm.weight" in w:
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps, gemma=gemma)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps, gemma=gemma)
        q = apply_rope(q, pos, freqs, mscale, rot_dim)
        k = apply_rope(k, pos, freqs, mscale, rot_dim)
        scale = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else head_dim**-0.5
        softcap = cfg.get("attn_logit_softcapping") if gemma else None
        a = attention(q, k, v, scale=scale, softcap=softcap, window=window)
        a = a.transpose(1, 0, 2).reshape(t, n_head * head_dim)
        h = lin("self_attn.o_proj", a)
        if gemma:
            h = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps, gemma=True)
        x = residual + h

        residual = x
        if gemma:
            h = rms_norm(x, w[p + "pre_feedforward_layernorm.weight"], eps, gemma=True)
        else:
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        if arch in MOE:
            h = _moe(cfg, arch, w, p, h)
        elif arch == "Phi3ForCausalLM":
            gate_up = lin("mlp.gate_up_proj", h)
            gate, up = np.split(gate_up, 2, axis=-1)
            h = lin("mlp.down_proj", up * silu(gate))
        else:
            act = gelu_tanh if gemma else silu
            h = lin("mlp.down_proj", act(lin("mlp.gate_proj", h)) * lin("mlp.up_proj", h))
        if gemma:
            h = rms_norm(h, w[p + "post_feedforward_layernorm.weight"], eps, gemma=True)
        x = residual + h

    x = rms_norm(x, w["model.norm.weight"], eps, gemma=gemma)
    head = w.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings", gemma):
        head = w["model.embed_tokens.weight"]
    logits = x @ head.T
    cap = cfg.get("final_logit_softcapping") if gemma else None
    if cap:
        logits = np.tanh(logits / cap) * cap
    return logits


def _moe(cfg: Mapping[str, Any], arch: str, w: Mapping[str, Array], p: str, h: Array) -> Array:
    if arch == "MixtralForCausalLM":
        router, experts = p + "block_sparse_moe.gate.weight", p + "block_sparse_moe.experts."
        names, renorm = ("w1", "w3", "w2"), True
    else:
        router, experts = p + "mlp.gate.weight", p + "mlp.experts."
        names = ("gate_proj", "up_proj", "down_proj")
        renorm = cfg["norm_topk_prob"]
    k = cfg["num_experts_per_tok"]
    probs = softmax(h @ w[router].T)
    out = np.zeros_like(h)
    for i in range(h.shape[0]):
        top = np.argsort(-probs[i])[:k]
        weights = probs[i, top]
        if renorm:
            weights = weights / weights.sum()
        for e, we in zip(top, weights, strict=True):
            gate = w[f"{experts}{e}.{names[0]}.weight"] @ h[i]
            up = w[f"{experts}{e}.{names[1]}.weight"] @ h[i]
            out[i] += we * (w[f"{experts}{e}.{names[2]}.weight"] @ (silu(gate) * up))
    return out
