"""What llama.cpp needs of a GGUF model's header, checked before it ever sees the file.

Some values a damaged or hostile header can hold make llama.cpp abort the whole
process (``GGML_ASSERT`` or an uncaught C++ exception → SIGABRT) rather than fail
the load: a block count of 0 or above ``LLAMA_MAX_LAYERS``, expert counts that
contradict each other, an unknown RoPE scaling type, a RoPE dimension count that
is odd or larger than a head, a vocabulary of empty strings, one whose tokens
repeat. Others load and then give garbage: NaN norm epsilons or RoPE bases,
tensors that do not match the hyper-parameters. :func:`validate_for_llama`
refuses them with one :class:`~quant.errors.ModelFormatError` sentence naming the
file, so the library and ``quantdesk inspect`` call such a file broken and chat
never hands it to llama.cpp. Repeated tokens are found only when asked
(``vocabulary=True``): it takes reading the whole vocabulary, which a listing
does not do.

The checks mirror llama.cpp as bundled with llama-cpp-python 0.3.36:
``llama_model_base::load_hparams`` in ``src/llama-model.cpp``, the limits in
``src/llama-hparams.h``, ``llama_vocab::impl::load`` in ``src/llama-vocab.cpp``
and the RoPE kernel's asserts in ``ggml/src/ggml-cpu/ops.cpp``. They apply to
model files (``general.type`` absent or ``model``) of architectures that
llama.cpp knows, not to adapters, importance matrices or vision projectors
(architecture ``clip``), which llama.cpp loads differently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from quant.errors import ModelFormatError
from quant.gguf.header import GGUFHeader, SkippedArray, TensorTable, _show
from quant.gguf.types import GGUFValueType

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS, src/llama-hparams.h
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS, src/llama-hparams.h
# Far above any real model; they keep sizes computed from them within reason.
MAX_EMBEDDING = 1 << 20
MAX_FEED_FORWARD = 1 << 22
MAX_HEADS = 1 << 14
MAX_HEAD_DIM = 1 << 16
MAX_CONTEXT = 1 << 27
MAX_VOCAB = 1 << 23
MAX_TOKEN_BYTES = 1 << 16
# LLAMA_ROPE_SCALING_TYPES in src/llama-model.cpp: any other name aborts the load.
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
# The model architectures llama.cpp loads (LLM_ARCH_NAMES in src/llama-arch.cpp, less
# "clip", which it loads only as a projector). It refuses any other name itself, with
# its own error, so the checks below are for these.
LLAMA_ARCHITECTURES = frozenset(
    {
        "llama", "llama4", "deci", "falcon", "grok", "gpt2", "gptj", "gptneox", "mpt", "baichuan",
        "starcoder", "refact", "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert",
        "jina-bert-v2", "jina-bert-v3", "eurobert", "bloom", "stablelm", "qwen", "qwen2",
        "qwen2moe", "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen35",
        "qwen35moe", "qwen4exp", "phi2", "phi3", "phimoe", "plamo", "plamo2", "plamo3",
        "codeshell", "orion", "internlm2", "minicpm", "minicpm3", "gemma", "gemma2", "gemma3",
        "gemma3n", "gemma4", "gemma4-assistant", "gemma-embedding", "starcoder2", "mamba",
        "mamba2", "maple", "jamba", "falcon-h1", "xverse", "command-r", "cohere2", "cohere2moe",
        "dbrx", "olmo", "olmo2", "olmoe", "muse-glimmer", "openelm", "arctic", "deepseek",
        "deepseek2", "deepseek2-ocr", "deepseek32", "deepseek4", "chatglm", "glm4", "glm4moe",
        "glm-dsa", "bitnet", "t5", "t5encoder", "jais", "jais2", "nemotron", "nemotron_h",
        "nemotron_h_moe", "exaone", "exaone4", "exaone-moe", "rwkv6", "rwkv6qwen2", "rwkv7",
        "arwkv7", "granite", "granitemoe", "granitehybrid", "graniteswitch", "granite_swa",
        "chameleon", "wavtokenizer-dec", "plm", "bailingmoe", "bailingmoe2", "bailingmoe3",
        "dots1", "dots3note", "arcee", "afmoe", "laguna", "ernie4_5", "ernie4_5-moe",
        "hunyuan-moe", "hunyuan-dense", "hunyuan_vl", "hy_v3", "hy_v4", "smollm3", "gpt-oss",
        "lfm2", "lfm2moe", "dream", "smallthinker", "llada", "llada-moe", "seed_oss", "grovemoe",
        "apertus", "minimax-01", "hrm_text", "minimax-m2", "minimax-m3", "cogvlm", "rnd1",
        "pangu-embedded", "mistral3", "eagle3", "dflash", "mistral4", "paddleocr", "mimo2",
        "step35", "spark2_5", "llama-embed", "maincoder", "kimi-linear", "kimi-k3", "glm5-next",
        "talkie", "mellum", "nanbeige", "qwen3tts", "pockettts",
    }
)  # fmt: skip
# Draft models whose embeddings follow their target model, not their own hyper-parameters.
_DRAFT_ARCHES = frozenset({"eagle3", "dflash"})
# Architectures where llama.cpp ignores an expert count of 0 or 1 (load_hparams).
_OPTIONAL_EXPERTS = frozenset({"hunyuan_vl", "hunyuan-dense"})

# "blk.N." at the start of a name (after a newline in the joined names), or inside it
# ("enc.blk.N." of T5); each starts with a literal, which the regex engine finds fast.
_LAYER_START = re.compile(rb"\nblk\.(\d{1,9})\.")
_LAYER_INSIDE = re.compile(rb"\.blk\.(\d{1,9})\.")


class _Checks:
    """One file's checks; every failure is one sentence."""

    def __init__(self, header: GGUFHeader, arch: str) -> None:
        self.header = header
        self.md = header.metadata
        self.arch = arch
        self.name = header.path.name

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(
            f"{self.name}: {what}; llama.cpp cannot run this file, download or convert it again"
        )

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def count(self, suffix: str, *, required: bool = False, low: int = 0, high: int) -> int | None:
        """``{arch}.{suffix}`` as an integer in ``low…high``; None when absent and optional."""
        key = self.key(suffix)
        value = self.md.get(key)
        if value is None:
            if required:
                raise self.fail(f"the header has no {key}")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key} is {_show(str(value))}, expected a whole number")
        if not low <= value <= high:
            raise self.fail(f"{key} is {value:,} (expected {low:,} to {high:,})")
        return value

    def per_layer(self, suffix: str, n_layers: int, *, high: int) -> list[int] | None:
        """A per-layer count: one value for every layer, or an array of one per layer."""
        key = self.key(suffix)
        value = self.md.get(key)
        if value is None:
            return None
        if isinstance(value, list | SkippedArray):
            length = value.length if isinstance(value, SkippedArray) else len(value)
            if length != n_layers:
                raise self.fail(f"{key} lists {length:,} layers but block_count is {n_layers}")
            assert isinstance(value, list)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise self.fail(f"{key} holds values that are not whole numbers")
            values: list[int] = [int(v) for v in value]  # type: ignore[arg-type]
        else:
            single = self.count(suffix, high=high)
            assert single is not None
            values = [single] * n_layers
        for layer, v in enumerate(values):
            if not 0 <= v <= high:
                raise self.fail(f"{key} is {v:,} for layer {layer} (expected 0 to {high:,})")
        return values

    def real(self, suffix: str, *, positive: bool) -> None:
        """``{arch}.{suffix}``, when present: a finite number, above 0 (or at least 0)."""
        key = self.key(suffix)
        value = self.md.get(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{key} is {_show(str(value))}, expected a number")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            want = "a finite number above 0" if positive else "a finite number of 0 or more"
            raise self.fail(f"{key} is {value}, expected {want}")


def _no_nan(checks: _Checks) -> None:
    """No float value of the header (scalars and the arrays it keeps) is NaN."""
    for key, value in checks.md.items():
        vtype = checks.header.metadata_types.get(key)
        if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
            if isinstance(value, float) and math.isnan(value):
                raise checks.fail(f"{_show(key)} is NaN")
        elif (
            vtype == GGUFValueType.ARRAY
            and isinstance(value, list)
            and any(isinstance(v, float) and math.isnan(v) for v in value)
        ):
            raise checks.fail(f"{_show(key)} holds NaN")


def _hyper_parameters(c: _Checks) -> tuple[int, int]:
    """Counts, heads, experts, norms and RoPE; returns (block count, embedding length)."""
    n_layers = c.count("block_count", required=True, low=1, high=MAX_LAYERS)
    assert n_layers is not None
    nextn = c.count("nextn_predict_layers", high=MAX_LAYERS) or 0
    if nextn > n_layers:
        raise c.fail(f"{c.key('nextn_predict_layers')} is {nextn} but block_count is {n_layers}")
    n_embd = c.count("embedding_length", required=True, low=1, high=MAX_EMBEDDING)
    assert n_embd is not None
    c.count("context_length", required=True, low=1, high=MAX_CONTEXT)
    c.per_layer("feed_forward_length", n_layers, high=MAX_FEED_FORWARD)

    heads = c.per_layer("attention.head_count", n_layers, high=MAX_HEADS) or [0] * n_layers
    kv = c.per_layer("attention.head_count_kv", n_layers, high=MAX_HEADS) or heads
    for layer, (h, k) in enumerate(zip(heads, kv, strict=True)):
        if k and not h:
            raise c.fail(f"layer {layer} has {k} KV heads but no attention heads")
        if h and k and h % k:
            raise c.fail(
                f"layer {layer} has {h} attention heads, not a multiple of its {k} KV heads"
            )
    head_k = c.count("attention.key_length", low=1, high=MAX_HEAD_DIM)
    c.count("attention.value_length", low=1, high=MAX_HEAD_DIM)
    n_head = max(heads)
    if n_head:
        head_dim = head_k or n_embd // n_head
        n_rot = c.count("rope.dimension_count", high=MAX_HEAD_DIM)
        if n_rot is not None and (n_rot > head_dim or n_rot % 2):
            raise c.fail(
                f"{c.key('rope.dimension_count')} is {n_rot}; RoPE needs an even count of at "
                f"most the head size {head_dim}"
            )

    n_expert = c.count("expert_count", high=MAX_EXPERTS) or 0
    used = max(c.per_layer("expert_used_count", n_layers, high=MAX_EXPERTS) or [0])
    groups = c.count("expert_group_count", high=MAX_EXPERTS) or 0
    group_used = c.count("expert_group_used_count", high=MAX_EXPERTS) or 0
    if c.arch in _OPTIONAL_EXPERTS and n_expert <= 1:
        n_expert = used = 0
    if used > n_expert:
        raise c.fail(f"{used} experts are used per token but the model has {n_expert}")
    if n_expert:
        if not used:
            raise c.fail(f"the model has {n_expert} experts but uses none per token")
        if groups >= n_expert:
            raise c.fail(f"{groups} expert groups for {n_expert} experts")
        if groups > 1 and (n_expert % groups or not 0 < group_used < groups):
            raise c.fail(
                f"{n_expert} experts in {groups} groups with {group_used} used do not add up"
            )
    elif groups:
        raise c.fail(f"{groups} expert groups but no experts")

    for suffix in (
        "attention.layer_norm_epsilon",
        "attention.layer_norm_rms_epsilon",
        "attention.group_norm_epsilon",
        "rope.freq_base",
        "rope.freq_base_swa",
        "rope.scaling.attn_factor",
    ):
        c.real(suffix, positive=True)
    for suffix in ("rope.scaling.factor", "rope.scale_linear"):
        c.real(suffix, positive=False)
    scaling = c.md.get(c.key("rope.scaling.type"))
    if scaling is not None and scaling not in ROPE_SCALING_TYPES:
        raise c.fail(
            f"{c.key('rope.scaling.type')} is {_show(str(scaling))} (llama.cpp knows "
            f"{', '.join(ROPE_SCALING_TYPES)})"
        )
    return n_layers, n_embd


def _token_list(c: _Checks, *, vocabulary: bool) -> int | None:
    """The vocabulary's size, its companion arrays checked; None when the file has none."""
    md, types = c.md, c.header.array_types
    tokens = md.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    if not isinstance(tokens, list | SkippedArray) or types.get("tokenizer.ggml.tokens") != (
        GGUFValueType.STRING
    ):
        raise c.fail("tokenizer.ggml.tokens is not a list of strings")
    n_tokens = c.header.array_length("tokenizer.ggml.tokens") or 0
    if not 0 < n_tokens <= MAX_VOCAB:
        raise c.fail(f"the vocabulary has {n_tokens:,} tokens (expected 1 to {MAX_VOCAB:,})")
    for key, allowed in (
        ("tokenizer.ggml.scores", (GGUFValueType.FLOAT32, GGUFValueType.INT32)),
        ("tokenizer.ggml.token_type", (GGUFValueType.INT32,)),
    ):
        if key not in md:
            continue
        if types.get(key) not in allowed:
            raise c.fail(f"{key} is not an array of {' or '.join(t.name for t in allowed)}")
        length = c.header.array_length(key)
        if length != n_tokens:
            raise c.fail(f"{key} has {length:,} entries for {n_tokens:,} tokens")
    declared = md.get(c.key("vocab_size"))
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != n_tokens:
        raise c.fail(f"{c.key('vocab_size')} is {declared:,} but the vocabulary has {n_tokens:,}")
    # llama.cpp renames a lone empty token, but a vocabulary of nothing else has none
    # of the tokens its tokenizer looks up, and it aborts.
    if tokens.n_bytes == 8 * n_tokens if isinstance(tokens, SkippedArray) else not any(tokens):
        raise c.fail("every token of the vocabulary is empty")
    if vocabulary:
        _token_texts(c, n_tokens)
    return n_tokens


def _token_texts(c: _Checks, n_tokens: int) -> None:
    """Every token distinct and of bounded length (reads the whole vocabulary)."""
    values = c.header.get("tokenizer.ggml.tokens")
    assert isinstance(values, list)
    texts = [v.encode() if isinstance(v, str) else v for v in values if isinstance(v, str | bytes)]
    # llama.cpp names an empty token after its index before it looks for repeats.
    texts = [t or f"[EMPTY_{i}]".encode() for i, t in enumerate(texts)]
    longest = max(map(len, texts), default=0)
    if longest > MAX_TOKEN_BYTES:
        raise c.fail(f"a token is {longest:,} bytes long (the limit is {MAX_TOKEN_BYTES:,})")
    if len(set(texts)) != n_tokens:
        raise c.fail("the vocabulary lists a token twice")
    _byte_fallback(c, texts)


# Bytes that UTF-8 text can hold: every byte but C0, C1 and F5-FF.
_TEXT_BYTES = tuple(b for b in range(256) if b not in (0xC0, 0xC1) and b < 0xF5)
_BYTE_TOKEN = re.compile(rb"<0x[0-9A-Fa-f]{2}>")


def _byte_fallback(c: _Checks, texts: Sequence[bytes]) -> None:
    """A SentencePiece vocabulary with byte tokens can spell every byte of any text.

    llama.cpp's SentencePiece tokenizer spells a piece it has no token for byte by
    byte, looking up ``<0xHH>`` and then the byte itself with ``unordered_map::at``:
    a byte that has neither throws an uncaught exception and aborts the process on
    the first text that holds it. A vocabulary without any byte token is left to
    the test load, which meets such text at once.
    """
    if c.md.get("tokenizer.ggml.model") != "llama":
        return
    types = c.header.get("tokenizer.ggml.token_type")
    typed = isinstance(types, list) and 6 in types  # LLAMA_TOKEN_TYPE_BYTE
    if not typed and not any(_BYTE_TOKEN.fullmatch(t) for t in texts):
        return
    known = set(texts)
    for b in _TEXT_BYTES:
        if f"<0x{b:02X}>".encode() not in known and bytes([b]) not in known:
            shown = f" ({chr(b)!r})" if 0x20 < b < 0x7F else ""
            raise c.fail(
                f"the vocabulary has byte tokens but none for byte 0x{b:02X}{shown}, so "
                "llama.cpp would abort on the first text that holds it"
            )


def _tensors(
    c: _Checks,
    tables: Sequence[TensorTable],
    n_layers: int,
    n_embd: int,
    n_tokens: int | None,
    *,
    complete: bool,
) -> None:
    """The tensors agree with the hyper-parameters: embeddings' shape, one block per layer."""
    if not any(len(t) for t in tables):
        return
    if c.arch not in _DRAFT_ARCHES:
        for table in tables:
            try:
                k = table.raw_names.index(b"token_embd.weight")
            except ValueError:
                continue
            shape = table.shapes[k]
            want = (n_embd, n_tokens if n_tokens is not None else shape[-1])
            if shape != want:
                raise c.fail(
                    f"token_embd.weight has shape {list(shape)} but the header describes "
                    f"{list(want)} (embedding length, vocabulary)"
                )
    found: set[bytes] = set()
    for table in tables:
        joined = b"\n" + b"\n".join(table.raw_names)
        found.update(_LAYER_START.findall(joined))
        if b".blk." in joined:
            found.update(_LAYER_INSIDE.findall(joined))
    seen = set(map(int, found))
    beyond = [n for n in seen if n >= n_layers]
    if beyond:
        raise c.fail(
            f"tensors of layer {min(beyond)} exist but {c.key('block_count')} is {n_layers}"
        )
    if complete and len(seen) < n_layers:
        missing = min(set(range(n_layers)) - seen)
        raise c.fail(f"layer {missing} of {n_layers} has no tensors")


def validate_for_llama(
    header: GGUFHeader,
    *,
    parts: Sequence[TensorTable] = (),
    complete: bool = True,
    vocabulary: bool = False,
) -> None:
    """Raise :class:`ModelFormatError` when llama.cpp cannot safely load ``header``'s model.

    ``parts`` are the tensor tables of a split model's other files; ``complete``
    says whether all of them are there (a missing layer is then an error).
    ``vocabulary`` also reads the whole token list to find repeated or overlong
    tokens, which llama.cpp aborts on: a few hundred milliseconds for a large
    vocabulary, worth it before a model load, not for a listing. Files that are
    not models (adapters, importance matrices, projectors), headers without an
    architecture and architectures this llama.cpp does not know pass: llama.cpp
    does not load them as models, or refuses them itself.
    """
    md = header.metadata
    arch = md.get("general.architecture")
    kind = md.get("general.type")
    if not isinstance(arch, str) or arch not in LLAMA_ARCHITECTURES or kind not in (None, "model"):
        return
    c = _Checks(header, arch)
    _no_nan(c)
    n_layers, n_embd = _hyper_parameters(c)
    n_tokens = _token_list(c, vocabulary=vocabulary)
    _tensors(c, (header.table, *parts), n_layers, n_embd, n_tokens, complete=complete)
