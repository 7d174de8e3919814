"""Tiny Hugging Face checkpoints built on the spot, one per supported architecture.

Random weights with the shape relationships of the real families (GQA, explicit
head_dim, fused Phi-3 projections, per-expert MoE matrices, Gemma's extra
norms), a tokenizer trained here (byte-level BPE with the ``tokenizers``
library, or SentencePiece), and the config and tokenizer files a hub download
would have. Weight scales keep activations of order one, so attention patterns
and RoPE positions matter to the logits.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Split regexes as published in the tokenizer.json files of these families.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
    r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Pre-tokenizer styles: split regex (None = GPT-2 byte-level regex) and ignore_merges.
BPE_STYLES: dict[str, tuple[str | None, bool]] = {
    "llama3": (LLAMA3_SPLIT, True),  # Llama 3.x
    "cl100k": (LLAMA3_SPLIT, False),  # Phi-4, DBRX
    "qwen2": (QWEN2_SPLIT, False),  # Qwen 2, 2.5, 3
    "tekken": (TEKKEN_SPLIT, False),  # Mistral Nemo
    "o200k": (O200K_SPLIT, False),  # Phi-4-mini
    "gpt2": (None, False),
}

MIXED_TEXT = (
    "Hello world! The quick brown fox jumps over the lazy dog.\n"
    "def add(a, b):\n    return a + b  # sum\n\n"
    "Café, naïve façade, São Paulo, Zürich — déjà vu.\n"
    "日本語のテキストと中文字符，한국어 문장.\n"
    "Emoji: 🦙🚀✨ 👍🏽 and digits 1234567890, 3.14159, 2024-06-01.\n"
    "Whitespace:   three spaces,\ttab,\n\n\nnewlines     and    runs.   "
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there, world of models and tokens.",
    "def main():\n    print('hello')\n    return 0\n",
    "for i in range(10):\n    total += i * 2\n",
    "Café crème, naïve résumé, façade, São Paulo, Zürich, déjà vu, Ærøskøbing.",
    "日本語のテキストです。中文字符和标点。한국어 문장입니다.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1e-5",
    "Emoji 🦙 🚀 ✨ 👍 and symbols @#$%^&*()[]{}<>",
    "   indented line\n\ttabbed line\n\n\nblank lines above",
    "Language models predict the next token from the previous tokens.",
    "A converter writes GGUF files that llama.cpp reads and runs.",
    "the and of to in is that it for on with as was be by this are",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}"
)


def corpus(repeat: int = 20) -> list[str]:
    out = []
    for r in range(repeat):
        for line in CORPUS:
            out.append(line if r % 2 == 0 else line.upper() if r % 5 == 1 else line.lower())
    out.append(MIXED_TEXT)
    return out


# --- tokenizers -----------------------------------------------------------------------


def train_bpe(style: str, vocab_size: int = 600, specials: tuple[str, ...] = ()) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` in one of :data:`BPE_STYLES`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    regex, ignore_merges = BPE_STYLES[style]
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    if specials:
        tok.add_special_tokens(list(specials))
    return tok


def with_bos(tok: Any, bos: str) -> Any:
    from tokenizers import processors

    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    return tok


def train_spm(*, vocab_size: int = 500, dummy_prefix: bool = True) -> bytes:
    """A SentencePiece BPE model with byte fallback (Llama 2 / Mistral / Gemma style)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=dummy_prefix,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        minloglevel=2,
    )
    return out.getvalue()


# --- safetensors ----------------------------------------------------------------------


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even) and return the 16-bit patterns."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def save_safetensors(path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    """Write a safetensors file from (dtype, shape, raw bytes) entries."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for _dtype, _shape, raw in tensors.values():
            fh.write(raw)


def encode_tensor(a: np.ndarray, dtype: str) -> tuple[str, tuple[int, ...], bytes, np.ndarray]:
    """Stored bytes of ``a`` in ``dtype`` and the float32 values they represent."""
    if dtype == "BF16":
        bits = to_bf16_bits(a)
        return dtype, a.shape, bits.tobytes(), from_bf16_bits(bits)
    if dtype == "F16":
        h = a.astype(np.float16)
        return dtype, a.shape, h.tobytes(), h.astype(np.float32)
    f = a.astype(np.float32)
    return "F32", a.shape, f.tobytes(), f


def write_weights(
    folder: Path, weights: Mapping[str, np.ndarray], dtype: str = "F32", shards: int = 1
) -> dict[str, np.ndarray]:
    """Save ``weights`` as safetensors (with an index when sharded); return stored values."""
    names = list(weights)
    stored: dict[str, np.ndarray] = {}
    groups = [names[i::shards] for i in range(shards)]
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        fname = (
            "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        )
        entries = {}
        for n in group:
            dt, shape, raw, values = encode_tensor(weights[n], dtype)
            entries[n] = (dt, shape, raw)
            stored[n] = values
            weight_map[n] = fname
        save_safetensors(folder / fname, entries)
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
        )
    return stored


# --- models ---------------------------------------------------------------------------


@dataclass
class Built:
    """A tiny checkpoint on disk and what the reference needs to run it."""

    path: Path
    config: dict[str, Any]
    weights: dict[str, np.ndarray]  # float32 values as stored
    hf_tokenizer: Any = None  # tokenizers.Tokenizer for BPE models
    sp_model: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _base_config(arch: str, model_type: str, vocab: int, **kw: Any) -> dict[str, Any]:
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    cfg.update(kw)
    return cfg


def make_weights(config: Mapping[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in Hugging Face names and shapes for ``config``."""
    rng = np.random.default_rng(seed)
    cfg = dict(config)
    arch = cfg["architectures"][0]
    gemma = arch.startswith("Gemma")
    e = cfg["hidden_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or e // nh
    ff = cfg["intermediate_size"]
    v = cfg["vocab_size"]

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        # Gemma stores the offset from 1; the others store the multiplier.
        base = 0.0 if gemma else 1.0
        return (base + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def vec(n: int) -> np.ndarray:
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    w: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": (rng.standard_normal((v, e)) * (0.3 if gemma else 1.0)).astype(
            np.float32
        ),
        "model.norm.weight": norm(e),
    }
    if not cfg.get("tie_word_embeddings", gemma):
        w["lm_head.weight"] = mat(v, e)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(e)
        w[p + "post_attention_layernorm.weight"] = norm(e)
        if arch == "Phi3ForCausalLM":
            w[p + "self_attn.qkv_proj.weight"] = mat((nh + 2 * nkv) * hd, e)
            w[p + "mlp.gate_up_proj.weight"] = mat(2 * ff, e)
            w[p + "mlp.down_proj.weight"] = mat(e, ff)
        else:
            w[p + "self_attn.q_proj.weight"] = mat(nh * hd, e)
            w[p + "self_attn.k_proj.weight"] = mat(nkv * hd, e)
            w[p + "self_attn.v_proj.weight"] = mat(nkv * hd, e)
        if cfg.get("attention_bias") or arch == "Qwen2ForCausalLM":
            w[p + "self_attn.q_proj.bias"] = vec(nh * hd)
            w[p + "self_attn.k_proj.bias"] = vec(nkv * hd)
            w[p + "self_attn.v_proj.bias"] = vec(nkv * hd)
        w[p + "self_attn.o_proj.weight"] = mat(e, nh * hd)
        if cfg.get("attention_bias") and arch in ("LlamaForCausalLM", "MistralForCausalLM"):
            w[p + "self_attn.o_proj.bias"] = vec(e)
        if arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "Gemma3ForCausalLM"):
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        if gemma:
            w[p + "pre_feedforward_layernorm.weight"] = norm(e)
            w[p + "post_feedforward_layernorm.weight"] = norm(e)
        if arch == "MixtralForCausalLM":
            w[p + "block_sparse_moe.gate.weight"] = mat(cfg["num_local_experts"], e)
            for x in range(cfg["num_local_experts"]):
                q = f"{p}block_sparse_moe.experts.{x}."
                w[q + "w1.weight"] = mat(ff, e)
                w[q + "w2.weight"] = mat(e, ff)
                w[q + "w3.weight"] = mat(ff, e)
        elif arch == "Qwen3MoeForCausalLM":
            mff = cfg["moe_intermediate_size"]
            w[p + "mlp.gate.weight"] = mat(cfg["num_experts"], e)
            for x in range(cfg["num_experts"]):
                q = f"{p}mlp.experts.{x}."
                w[q + "gate_proj.weight"] = mat(mff, e)
                w[q + "up_proj.weight"] = mat(mff, e)
                w[q + "down_proj.weight"] = mat(e, mff)
        elif arch != "Phi3ForCausalLM":
            w[p + "mlp.gate_proj.weight"] = mat(ff, e)
            w[p + "mlp.up_proj.weight"] = mat(ff, e)
            w[p + "mlp.down_proj.weight"] = mat(e, ff)
    return w


def _write_bpe_tokenizer(
    folder: Path,
    tok: Any,
    *,
    bos: str | None,
    eos: str,
    extra_config: Mapping[str, Any] | None = None,
) -> None:
    tok.save(str(folder / "tokenizer.json"))
    tc: dict[str, Any] = {
        "bos_token": bos,
        "eos_token": eos,
        "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    tc.update(extra_config or {})
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))


def _write_spm_tokenizer(folder: Path, model: bytes, **extra: Any) -> None:
    (folder / "tokenizer.model").write_bytes(model)
    tc = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }
    tc.update(extra)
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))


def _finish(
    folder: Path, config: dict[str, Any], dtype: str, shards: int, seed: int
) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return write_weights(folder, make_weights(config, seed), dtype, shards)


LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start|>", "<|end|>")
QWEN_SPECIALS = ("<|endoftext|>", "<|start|>", "<|end|>")


def _bpe_vocab(tok: Any, pad_to: int = 16) -> int:
    n = tok.get_vocab_size(with_added_tokens=True)
    return n + (-n % pad_to) + pad_to  # leave unused embedding rows, like real models


def build_llama(
    folder: Path, tok: Any, *, dtype: str = "F32", shards: int = 1, seed: int = 1, **over: Any
) -> Built:
    """Llama 3.x: GQA, llama3 RoPE scaling, byte-level BPE with ignore_merges, BOS."""
    cfg = _base_config(
        "LlamaForCausalLM",
        "llama",
        _bpe_vocab(tok),
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        bos_token_id=tok.token_to_id("<|begin_of_text|>"),
        eos_token_id=tok.token_to_id("<|end_of_text|>"),
    )
    cfg.update(over)
    stored = _finish(folder, cfg, dtype, shards, seed)
    _write_bpe_tokenizer(folder, tok, bos="<|begin_of_text|>", eos="<|end_of_text|>")
    return Built(folder, cfg, stored, hf_tokenizer=tok)


def build_mistral(folder: Path, sp_model: bytes, *, seed: int = 2, **over: Any) -> Built:
    """Mistral 7B style: SentencePiece with dummy prefix, explicit head_dim, BF16 weights."""
    cfg = _base_config(
        "MistralForCausalLM",
        "mistral",
        512,
        head_dim=32,
        num_attention_heads=4,
        num_key_value_heads=1,
        sliding_window=4096,
        bos_token_id=1,
        eos_token_id=2,
        max_position_embeddings=8192,
    )
    dtype = over.pop("dtype", "BF16")
    cfg.update(over)
    stored = _finish(folder, cfg, dtype, 1, seed)
    _write_spm_tokenizer(folder, sp_model)
    return Built(folder, cfg, stored, sp_model=sp_model)


def build_mixtral(folder: Path, sp_model: bytes, *, seed: int = 3, **over: Any) -> Built:
    cfg = _base_config(
        "MixtralForCausalLM",
        "mixtral",
        512,
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=64,
        rope_theta=1e6,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "F16", 2, seed)
    _write_spm_tokenizer(folder, sp_model)
    return Built(folder, cfg, stored, sp_model=sp_model)


def build_qwen2(folder: Path, tok: Any, *, seed: int = 4, **over: Any) -> Built:
    """Qwen2.5: q/k/v biases, tied embeddings, Qwen2 pre-tokenizer, no BOS."""
    cfg = _base_config(
        "Qwen2ForCausalLM",
        "qwen2",
        _bpe_vocab(tok),
        tie_word_embeddings=True,
        rope_theta=1e6,
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|end|>"),
        use_sliding_window=False,
        sliding_window=32768,
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "BF16", 1, seed)
    _write_bpe_tokenizer(folder, tok, bos=None, eos="<|end|>")
    return Built(folder, cfg, stored, hf_tokenizer=tok)


def build_qwen3(folder: Path, tok: Any, *, seed: int = 5, **over: Any) -> Built:
    """Qwen3: q/k norms, head_dim larger than hidden/heads."""
    cfg = _base_config(
        "Qwen3ForCausalLM",
        "qwen3",
        _bpe_vocab(tok),
        head_dim=32,
        tie_word_embeddings=True,
        rope_theta=1e6,
        attention_bias=False,
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|end|>"),
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "F32", 1, seed)
    _write_bpe_tokenizer(folder, tok, bos=None, eos="<|end|>")
    return Built(folder, cfg, stored, hf_tokenizer=tok)


def build_qwen3_moe(folder: Path, tok: Any, *, seed: int = 6, **over: Any) -> Built:
    cfg = _base_config(
        "Qwen3MoeForCausalLM",
        "qwen3_moe",
        _bpe_vocab(tok),
        head_dim=16,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        rope_theta=1e6,
        attention_bias=False,
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|end|>"),
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "BF16", 2, seed)
    _write_bpe_tokenizer(folder, tok, bos=None, eos="<|end|>")
    return Built(folder, cfg, stored, hf_tokenizer=tok)


def build_gemma2(folder: Path, sp_model: bytes, *, seed: int = 7, **over: Any) -> Built:
    """Gemma 2: four norms per layer, alternating sliding window, soft-capping."""
    cfg = _base_config(
        "Gemma2ForCausalLM",
        "gemma2",
        512,
        head_dim=32,
        num_hidden_layers=3,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        sliding_window=6,
        query_pre_attn_scalar=24,
        attn_logit_softcapping=3.0,
        final_logit_softcapping=5.0,
        hidden_activation="gelu_pytorch_tanh",
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "F32", 1, seed)
    _write_spm_tokenizer(folder, sp_model)
    return Built(folder, cfg, stored, sp_model=sp_model)


def build_gemma3(folder: Path, sp_model: bytes, *, seed: int = 8, **over: Any) -> Built:
    """Gemma 3 (text): q/k norms, local/global layers with their own RoPE bases."""
    cfg = _base_config(
        "Gemma3ForCausalLM",
        "gemma3_text",
        512,
        head_dim=16,
        num_hidden_layers=4,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        sliding_window=5,
        rope_theta=1e6,
        rope_local_base_freq=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
        layer_types=[
            "sliding_attention",
            "sliding_attention",
            "full_attention",
            "sliding_attention",
        ],
        query_pre_attn_scalar=16,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh",
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "F32", 1, seed)
    _write_spm_tokenizer(folder, sp_model, add_bos_token=True)
    return Built(folder, cfg, stored, sp_model=sp_model)


def build_phi3(folder: Path, tok: Any, *, seed: int = 9, **over: Any) -> Built:
    """Phi-4-mini style: fused qkv and gate_up, partial rotary, LongRoPE, tied."""
    half = int(16 * 0.75) // 2
    rng = np.random.default_rng(99)
    cfg = _base_config(
        "Phi3ForCausalLM",
        "phi3",
        _bpe_vocab(tok),
        num_attention_heads=4,
        num_key_value_heads=2,
        partial_rotary_factor=0.75,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        original_max_position_embeddings=512,
        rope_scaling={
            "type": "longrope",
            "short_factor": [float(x) for x in 1 + rng.random(half)],
            "long_factor": [float(x) for x in 2 + 4 * rng.random(half)],
        },
        sliding_window=262144,
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|end|>"),
    )
    cfg.update(over)
    stored = _finish(folder, cfg, "F32", 1, seed)
    _write_bpe_tokenizer(folder, tok, bos=None, eos="<|end|>")
    return Built(folder, cfg, stored, hf_tokenizer=tok)


BUILDERS: dict[str, Callable[..., Built]] = {
    "llama": build_llama,
    "mistral": build_mistral,
    "mixtral": build_mixtral,
    "qwen2": build_qwen2,
    "qwen3": build_qwen3,
    "qwen3moe": build_qwen3_moe,
    "gemma2": build_gemma2,
    "gemma3": build_gemma3,
    "phi3": build_phi3,
}
