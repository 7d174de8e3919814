"""Mutated GGUF files against ``inspect``, the library and ``chat``.

Two bases: the tiny GGUF of tests/ggufs.py (llama.cpp loads and tokenizes it) and
the starter model's header (Gemma 3 270M) over a sparse hole where its data was.
Targeted mutations set one value no honest writer produces; random ones flip,
cut, splice or overwrite header bytes (reproducible from the seed).

Targets: ``facts`` and ``library`` run the engine's header reader, the facts, the
inspect summary and the library row in this process; ``inspect``, ``inspect-json``,
``models`` and ``chat`` run the CLI in a subprocess (``chat`` loads the file in
llama.cpp, which must never die by a signal).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from tests.adversarial import gguf_doc as g
from tests.adversarial.assets import Assets
from tests.adversarial.gguf_doc import Arr, Doc, Image, Tensor
from tests.adversarial.harness import (
    Case,
    CaseContext,
    expect_cli,
    expect_terminal_text,
    in_process,
    strict_json,
)

FAMILY = "gguf"

BASES = {
    "tiny": "the tiny GGUF of tests/ggufs.py write_tiny_gguf(byte_tokens=True)",
    "starter": "the starter model's header (Gemma 3 270M Q4_K_M) over a sparse zero data section",
}


@dataclass(frozen=True)
class Mutation:
    """One damaged file: ``make(doc, image)`` gives its bytes; ``what`` says how it differs."""

    name: str
    what: str
    make: Callable[[Doc, Image], Image]
    filename: str = "model.gguf"
    # Worth loading in llama.cpp (the header reader accepts it, or it probes the loader).
    native: bool = True
    # Slow to build and to read (a million tensor infos): the bytes are made once per run,
    # and each case gets ``heavy_deadline_s``.
    heavy: bool = False


HEAVY_DEADLINE_S = 180.0


# --------------------------------------------------------------------------- targets

Target = Callable[[CaseContext, Path, Assets], None]


def expect_json_document(data: object, what: str) -> None:
    """``data`` written the way the CLI writes ``--json`` (app.core.commands.common.print_json
    is quant.protocol.write_json to stdout) is strict JSON."""
    from quant.protocol import write_json

    out = io.StringIO()
    _, ok = in_process(lambda: write_json(data, out))
    if ok:
        strict_json(out.getvalue(), what)


def target_facts(ctx: CaseContext, path: Path, assets: Assets) -> None:
    from app.core.commands.inspect import write_summary
    from quant.facts import inspect_model

    facts, ok = in_process(lambda: inspect_model(path))
    if not ok:
        return
    expect_json_document(facts.to_dict(with_tensors=True), "the facts as inspect --json")
    out = io.StringIO()
    _, ok = in_process(lambda: write_summary(facts, out, with_tensors=True))
    if ok:
        expect_terminal_text(out.getvalue(), "the inspect summary")


def target_library(ctx: CaseContext, path: Path, assets: Assets) -> None:
    from app.core.commands.models import render
    from app.core.library import read_entry
    from app.core.library_index import LibraryIndex
    from quant.hardware.profile import HardwareProfile

    entry, ok = in_process(lambda: read_entry(path))
    if not ok:
        return
    profile = HardwareProfile.load(assets.hardware_profile)
    index = LibraryIndex(ctx.folder / "library-index.json")
    rows, ok = in_process(lambda: index.describe([entry], profile))
    if not ok:
        return
    expect_json_document([r.to_dict() for r in rows], "the library rows as models --json")
    text, ok = in_process(lambda: render(rows))
    if ok:
        expect_terminal_text(text, "the library listing")


def target_inspect(ctx: CaseContext, path: Path, assets: Assets) -> None:
    expect_cli(ctx.cli("inspect", path, "--tensors"))


def target_inspect_json(ctx: CaseContext, path: Path, assets: Assets) -> None:
    expect_cli(ctx.cli("inspect", path, "--json"), json_out=True)


def target_models(ctx: CaseContext, path: Path, assets: Assets) -> None:
    ran = ctx.cli("models", "--add", path, "--no-other-apps", "--hardware", assets.hardware_profile)
    expect_cli(ran)


def target_scan(ctx: CaseContext, path: Path, assets: Assets) -> None:
    ran = ctx.cli("models", "--add-folder", path.parent, "--no-other-apps", "--no-fit")
    expect_cli(ran)


def target_chat(ctx: CaseContext, path: Path, assets: Assets) -> None:
    # The answer itself is the model's text: only the exit, stderr and files are judged.
    ran = ctx.cli("chat", path, "--prompt", "hi", "--max-tokens", "4")
    expect_cli(ran, stdout_is_terminal_text=False)


TARGETS: dict[str, tuple[Target, bool, str]] = {
    # name: (function, runs a subprocess, the command in words)
    "facts": (target_facts, False, "quant.facts.inspect_model(FILE), its JSON and summary"),
    "library": (
        target_library,
        False,
        "app.core.library.read_entry(FILE) then LibraryIndex.describe and models' render",
    ),
    "inspect": (target_inspect, True, "quantdesk inspect FILE --tensors"),
    "inspect-json": (target_inspect_json, True, "quantdesk inspect FILE --json"),
    "models": (
        target_models,
        True,
        "quantdesk models --add FILE --no-other-apps --hardware PROFILE",
    ),
    "scan": (
        target_scan,
        True,
        "quantdesk models --add-folder DIR_OF_FILE --no-other-apps --no-fit (the library scan)",
    ),
    "chat": (target_chat, True, "quantdesk chat FILE --prompt hi --max-tokens 4"),
}


def make_case(assets: Assets, base: str, m: Mutation, target: str, *, family: str = FAMILY) -> Case:
    fn, isolated, command = TARGETS[target]

    def run(ctx: CaseContext) -> None:
        if m.heavy:
            image = assets.memo(
                f"{base}:{m.name}", lambda: m.make(assets.doc(base), assets.image(base))
            )
        else:
            image = m.make(assets.doc(base), assets.image(base))
        path = image.write(ctx.folder / "in" / m.filename)
        fn(ctx, path, assets)

    return Case(
        family=family,
        name=f"{base}: {m.name} -> {target}",
        run=run,
        repro=f"{BASES[base]}, with {m.what}; {command}",
        isolated=isolated,
        deadline_s=HEAVY_DEADLINE_S if m.heavy else 120.0 if target == "chat" else 60.0,
    )


# --------------------------------------------------------------------------- mutations


def _doc(change: Callable[[Doc], Doc]) -> Callable[[Doc, Image], Image]:
    return lambda doc, _image: change(doc).image()


def _field(label: Callable[[Doc], str], value: int | float) -> Callable[[Doc, Image], Image]:
    return lambda doc, image: image.set_field(label(doc), value)


def _arch_kv(suffix: str, vtype: int, value: object) -> Callable[[Doc, Image], Image]:
    return _doc(lambda d: d.with_arch_kv(suffix, vtype, value))


def _kv(key: str, vtype: int, value: object) -> Callable[[Doc, Image], Image]:
    return _doc(lambda d: d.with_kv(key, vtype, value))


def _tokens(d: Doc) -> Arr:
    value = d.get("tokenizer.ggml.tokens")
    assert isinstance(value, Arr)
    return value


def _shrink(key: str, n: int) -> Callable[[Doc], Doc]:
    def change(d: Doc) -> Doc:
        arr = d.get(key)
        assert isinstance(arr, Arr)
        return d.with_kv(key, g.ARRAY, Arr(arr.item_type, arr.items[:n]))

    return change


def _respell(old: bytes, new: bytes) -> Callable[[Doc], Doc]:
    """The token ``old`` renamed ``new`` (the vocabulary keeps its length)."""

    def change(d: Doc) -> Doc:
        tokens = _tokens(d)
        items = tuple(new if t == old else t for t in tokens.items)
        return d.with_kv("tokenizer.ggml.tokens", g.ARRAY, Arr(tokens.item_type, items))

    return change


def _first_tensor_with(d: Doc, part: str) -> Tensor:
    for t in d.tensors:
        if part in t.name.decode():
            return t
    return d.tensors[0]


def _retensor(change: Callable[[Doc, Tensor], Tensor], part: str) -> Callable[[Doc, Image], Image]:
    def make(d: Doc, _image: Image) -> Image:
        victim = _first_tensor_with(d, part)
        tensors = [change(d, t) if t is victim else t for t in d.tensors]
        return d.with_tensors(tensors).image()

    return make


def _many_tensors(n: int) -> Callable[[Doc, Image], Image]:
    """The header declares and lists ``n`` one-row tensors (data left as a sparse hole)."""

    def make(d: Doc, _image: Image) -> Image:
        tensors = [Tensor(f"t.{i}".encode(), (8,), 0, 32 * i) for i in range(n)]
        return replace(d, tensors=tuple(tensors), data=None, data_len=32 * n).image()

    return make


def _deep_array(depth: int) -> Arr:
    value: Arr = Arr(g.UINT8, (1,))
    for _ in range(depth - 1):
        value = Arr(g.ARRAY, (value,))
    return value


def targeted(base: str, doc: Doc, image: Image) -> list[Mutation]:
    """Hand-made damage: one absurd value each."""
    a = doc.arch
    n_layers = doc.get(f"{a}.block_count")
    n_layers = n_layers if isinstance(n_layers, int) else 2
    nan, inf = math.nan, math.inf
    eps = "attention.layer_norm_rms_epsilon"
    tokens = _tokens(doc)
    size = image.size
    m = [
        Mutation("block_count=0", f"{a}.block_count = 0", _arch_kv("block_count", g.UINT32, 0)),
        Mutation(
            "block_count=1e6",
            f"{a}.block_count = 1,000,000",
            _arch_kv("block_count", g.UINT32, 1_000_000),
        ),
        Mutation(
            "block_count=2^32-1",
            f"{a}.block_count = 4294967295",
            _arch_kv("block_count", g.UINT32, 2**32 - 1),
        ),
        Mutation(
            "block_count=-1",
            f"{a}.block_count = -1 stored as int32",
            _arch_kv("block_count", g.INT32, -1),
        ),
        Mutation(
            "block_count=str",
            f"{a}.block_count stored as the string '2'",
            _arch_kv("block_count", g.STRING, b"2"),
        ),
        Mutation(
            "block_count=float",
            f"{a}.block_count stored as float32 2.5",
            _arch_kv("block_count", g.FLOAT32, 2.5),
        ),
        Mutation(
            "block_count=+1",
            f"{a}.block_count one more than the layers whose tensors exist",
            _arch_kv("block_count", g.UINT32, n_layers + 1),
        ),
        *[
            Mutation(
                f"rms_eps={label}",
                f"{a}.{eps} = {label}",
                _arch_kv(eps, g.FLOAT32, value),
            )
            for label, value in (("NaN", nan), ("Inf", inf), ("-Inf", -inf), ("-1", -1.0))
        ],
        Mutation("rms_eps=0", f"{a}.{eps} = 0", _arch_kv(eps, g.FLOAT32, 0.0)),
        *[
            Mutation(
                f"rope.freq_base={label}",
                f"{a}.rope.freq_base = {label}",
                _arch_kv("rope.freq_base", g.FLOAT32, value),
            )
            for label, value in (("0", 0.0), ("NaN", nan), ("Inf", inf), ("-1", -1.0))
        ],
        Mutation(
            "head_count=0",
            f"{a}.attention.head_count = 0",
            _arch_kv("attention.head_count", g.UINT32, 0),
        ),
        Mutation(
            "head_count_kv=0",
            f"{a}.attention.head_count_kv = 0",
            _arch_kv("attention.head_count_kv", g.UINT32, 0),
        ),
        Mutation(
            "head_count=3",
            f"{a}.attention.head_count = 3 (does not divide the embedding)",
            _arch_kv("attention.head_count", g.UINT32, 3),
        ),
        Mutation(
            "head_count_kv=3",
            f"{a}.attention.head_count_kv = 3 (does not divide the heads)",
            _arch_kv("attention.head_count_kv", g.UINT32, 3),
        ),
        Mutation(
            "head_count=1e9",
            f"{a}.attention.head_count = 1,000,000,000",
            _arch_kv("attention.head_count", g.UINT32, 10**9),
        ),
        Mutation(
            "head_count_kv=[0]*layers",
            f"{a}.attention.head_count_kv = an array of zeros, one per layer",
            _arch_kv("attention.head_count_kv", g.ARRAY, Arr(g.UINT32, (0,) * n_layers)),
        ),
        Mutation(
            "head_count=[4]",
            f"{a}.attention.head_count = a one-element array for {n_layers} layers",
            _arch_kv("attention.head_count", g.ARRAY, Arr(g.UINT32, (4,))),
        ),
        Mutation(
            "embedding_length=0",
            f"{a}.embedding_length = 0",
            _arch_kv("embedding_length", g.UINT32, 0),
        ),
        Mutation(
            "embedding_length=2^31",
            f"{a}.embedding_length = 2**31",
            _arch_kv("embedding_length", g.UINT32, 2**31),
        ),
        Mutation(
            "context_length=0", f"{a}.context_length = 0", _arch_kv("context_length", g.UINT32, 0)
        ),
        Mutation(
            "context_length=2^64-1",
            f"{a}.context_length = 2**64-1 stored as uint64",
            _arch_kv("context_length", g.UINT64, 2**64 - 1),
        ),
        Mutation(
            "feed_forward_length=0",
            f"{a}.feed_forward_length = 0",
            _arch_kv("feed_forward_length", g.UINT32, 0),
        ),
        Mutation(
            "key_length=0",
            f"{a}.attention.key_length = 0",
            _arch_kv("attention.key_length", g.UINT32, 0),
        ),
        Mutation(
            "key_length=1e9",
            f"{a}.attention.key_length = 1,000,000,000",
            _arch_kv("attention.key_length", g.UINT32, 10**9),
        ),
        Mutation(
            "expert_count=1e6",
            f"{a}.expert_count = 1,000,000 and {a}.expert_used_count = 2,000,000",
            _doc(
                lambda d: d.with_arch_kv("expert_count", g.UINT32, 10**6).with_arch_kv(
                    "expert_used_count", g.UINT32, 2 * 10**6
                )
            ),
        ),
        Mutation(
            "expert_used>count",
            f"{a}.expert_count = 4 and {a}.expert_used_count = 8 on a dense model",
            _doc(
                lambda d: d.with_arch_kv("expert_count", g.UINT32, 4).with_arch_kv(
                    "expert_used_count", g.UINT32, 8
                )
            ),
        ),
        Mutation(
            "swa_pattern=wrong length",
            f"{a}.attention.sliding_window_pattern = a bool array of 3 for {n_layers} layers",
            _doc(
                lambda d: d.with_arch_kv("attention.sliding_window", g.UINT32, 512).with_arch_kv(
                    "attention.sliding_window_pattern", g.ARRAY, Arr(g.BOOL, (True,) * 3)
                )
            ),
        ),
        Mutation(
            "sliding_window=2^32-1",
            f"{a}.attention.sliding_window = 4294967295",
            _arch_kv("attention.sliding_window", g.UINT32, 2**32 - 1),
        ),
        # -- the vocabulary
        Mutation(
            "vocab of empty strings",
            "every tokenizer.ggml.tokens entry the empty string",
            _kv("tokenizer.ggml.tokens", g.ARRAY, Arr(g.STRING, (b"",) * len(tokens.items))),
        ),
        Mutation(
            "vocab shorter than embedding",
            "tokenizer.ggml.tokens (and scores, types) cut to 10 entries",
            _doc(
                lambda d: _shrink("tokenizer.ggml.token_type", 10)(
                    _shrink("tokenizer.ggml.scores", 10)(_shrink("tokenizer.ggml.tokens", 10)(d))
                )
            ),
        ),
        Mutation(
            "tokens shorter than scores",
            "tokenizer.ggml.tokens cut to 10 entries, scores and types left whole",
            _doc(_shrink("tokenizer.ggml.tokens", 10)),
        ),
        Mutation(
            "token_type shorter",
            "tokenizer.ggml.token_type cut to 10 entries",
            _doc(_shrink("tokenizer.ggml.token_type", 10)),
        ),
        Mutation(
            "token_type=99",
            "every tokenizer.ggml.token_type 99",
            _kv("tokenizer.ggml.token_type", g.ARRAY, Arr(g.INT32, (99,) * len(tokens.items))),
        ),
        Mutation(
            "duplicate tokens",
            "every tokenizer.ggml.tokens entry 'a'",
            _kv("tokenizer.ggml.tokens", g.ARRAY, Arr(g.STRING, (b"a",) * len(tokens.items))),
        ),
        Mutation(
            "undecodable tokens",
            "every tokenizer.ggml.tokens entry the bytes ff fe",
            _kv(
                "tokenizer.ggml.tokens", g.ARRAY, Arr(g.STRING, (b"\xff\xfe",) * len(tokens.items))
            ),
        ),
        Mutation(
            "byte token <0x70> misspelled",
            "the byte token '<0x70>' (the letter p) spelled '<0xZZ>'",
            _doc(_respell(b"<0x70>", b"<0xZZ>")),
        ),
        Mutation(
            "bos=1e9",
            "tokenizer.ggml.bos_token_id = 1,000,000,000",
            _kv("tokenizer.ggml.bos_token_id", g.UINT32, 10**9),
        ),
        Mutation(
            "eos=2^32-1",
            "tokenizer.ggml.eos_token_id = 4294967295",
            _kv("tokenizer.ggml.eos_token_id", g.UINT32, 2**32 - 1),
        ),
        Mutation(
            "unk=-2",
            "tokenizer.ggml.unknown_token_id = -2 stored as int32",
            _kv("tokenizer.ggml.unknown_token_id", g.INT32, -2),
        ),
        Mutation(
            "tokenizer model unknown",
            "tokenizer.ggml.model = 'nope'",
            _kv("tokenizer.ggml.model", g.STRING, b"nope"),
        ),
        Mutation(
            "no tokens",
            "tokenizer.ggml.tokens removed",
            _doc(lambda d: d.without("tokenizer.ggml.tokens")),
        ),
        # -- identity
        Mutation(
            "architecture unknown",
            "general.architecture = 'nope'",
            _kv("general.architecture", g.STRING, b"nope"),
        ),
        Mutation(
            "no architecture",
            "general.architecture removed",
            _doc(lambda d: d.without("general.architecture")),
        ),
        Mutation(
            "architecture=int",
            "general.architecture stored as uint32 7",
            _kv("general.architecture", g.UINT32, 7),
        ),
        Mutation(
            "architecture=''",
            "general.architecture = ''",
            _kv("general.architecture", g.STRING, b""),
        ),
        Mutation(
            "file_type=999",
            "general.file_type = 999",
            _kv("general.file_type", g.UINT32, 999),
        ),
        *[
            Mutation(
                f"alignment={label}",
                f"general.alignment = {label}",
                _kv("general.alignment", vt, v),
            )
            for label, vt, v in (
                ("0", g.UINT32, 0),
                ("3", g.UINT32, 3),
                ("2^31", g.UINT32, 2**31),
                ("64 as uint64", g.UINT64, 64),
            )
        ],
        Mutation(
            "split.count=10000",
            "split.count = 10000 and a file name of part 1 of 10000",
            _kv("split.count", g.UINT16, 10000),
            filename="model-00001-of-10000.gguf",
        ),
        Mutation(
            "nested arrays 9 deep",
            "a metadata array nested 9 levels deep",
            _kv("general.tags", g.ARRAY, _deep_array(9)),
        ),
        Mutation(
            "template 1.5 MB",
            "tokenizer.chat_template of 1.5 million characters",
            _kv("tokenizer.chat_template", g.STRING, b"{{ 'a' }}" * 170_000),
        ),
        # -- raw header fields
        Mutation(
            "name length past EOF",
            "general.name's string length set past the end of the file",
            _field(lambda d: "kv[general.name].value.len", size * 2),
            native=False,
        ),
        Mutation(
            "token length 2^40",
            "the length of tokenizer.ggml.tokens[1] set to 2**40",
            _field(lambda d: "kv[tokenizer.ggml.tokens][1].len", 2**40),
            native=False,
        ),
        Mutation(
            "token count 2^60",
            "the element count of tokenizer.ggml.tokens set to 2**60",
            _field(lambda d: "kv[tokenizer.ggml.tokens].count", 2**60),
            native=False,
        ),
        Mutation(
            "n_tensors=1e6 declared",
            "the header's tensor count set to 1,000,000 (the tensors themselves unchanged)",
            _field(lambda d: "n_tensors", 1_000_000),
            native=False,
        ),
        Mutation(
            "n_tensors=2^64-1",
            "the header's tensor count set to 2**64-1",
            _field(lambda d: "n_tensors", 2**64 - 1),
            native=False,
        ),
        Mutation(
            "n_kv=2^63",
            "the header's metadata count set to 2**63",
            _field(lambda d: "n_kv", 2**63),
            native=False,
        ),
        Mutation("version=1", "GGUF version 1", _field(lambda d: "version", 1), native=False),
        Mutation("version=4", "GGUF version 4", _field(lambda d: "version", 4), native=False),
        Mutation(
            "version=2^32-1",
            "GGUF version 4294967295",
            _field(lambda d: "version", 2**32 - 1),
            native=False,
        ),
        Mutation(
            "big-endian version",
            "the version written big-endian (the rest little-endian)",
            _field(lambda d: "version", 3 << 24),
            native=False,
        ),
        Mutation(
            "value type 13",
            "general.architecture's value type id set to 13",
            _field(lambda d: "kv[general.architecture].type", 13),
            native=False,
        ),
        Mutation(
            "array item type 99",
            "tokenizer.ggml.tokens' element type id set to 99",
            _field(lambda d: "kv[tokenizer.ggml.tokens].item_type", 99),
            native=False,
        ),
        # -- tensors
        Mutation(
            "tensor type 200",
            "the first attention tensor's ggml type set to 200",
            _retensor(lambda d, t: replace(t, ttype=200), "attn_q"),
            native=False,
        ),
        Mutation(
            "tensor type 4 (retired)",
            "the first attention tensor's ggml type set to 4 (a retired type id)",
            _retensor(lambda d, t: replace(t, ttype=4), "attn_q"),
            native=False,
        ),
        Mutation(
            "tensor offset past EOF",
            "the output norm's data offset set past the end of the file",
            _retensor(lambda d, t: replace(t, offset=d.data_len + 4096), "output_norm"),
            native=False,
        ),
        Mutation(
            "tensor offset misaligned",
            "the output norm's data offset moved by 1 byte",
            _retensor(lambda d, t: replace(t, offset=t.offset + 1), "output_norm"),
            native=False,
        ),
        Mutation(
            "tensor n_dims=0",
            "the first attention tensor declared with 0 dimensions",
            _retensor(lambda d, t: replace(t, dims=()), "attn_q"),
            native=False,
        ),
        Mutation(
            "tensor n_dims=5",
            "the output norm declared with 5 dimensions",
            _retensor(lambda d, t: replace(t, dims=(*t.dims, 1, 1, 1, 1)[:5]), "output_norm"),
            native=False,
        ),
        Mutation(
            "tensor dim 0",
            "a dimension of 0 in the first attention tensor",
            _retensor(lambda d, t: replace(t, dims=(t.dims[0], 0)), "attn_q"),
            native=False,
        ),
        Mutation(
            "tensor dim -1",
            "a dimension of -1 in the first attention tensor",
            _retensor(lambda d, t: replace(t, dims=(t.dims[0], -1)), "attn_q"),
            native=False,
        ),
        Mutation(
            "tensor dim 2^62",
            "a dimension of 2**62 in the first attention tensor",
            _retensor(lambda d, t: replace(t, dims=(t.dims[0], 2**62)), "attn_q"),
            native=False,
        ),
        Mutation(
            "attn_k shape swapped",
            "the first attn_k tensor's two dimensions swapped (same bytes, wrong shape)",
            _retensor(lambda d, t: replace(t, dims=tuple(reversed(t.dims))), "attn_k"),
        ),
        Mutation(
            "token_embd shape halved",
            "token_embd.weight declared with half its rows (inconsistent with the vocabulary)",
            _retensor(
                lambda d, t: replace(t, dims=(t.dims[0], max(1, t.dims[1] // 2))),
                "token_embd",
            ),
        ),
        Mutation(
            "ffn shape inconsistent",
            "the first ffn_up tensor declared with half its rows (not the feed-forward length)",
            _retensor(lambda d, t: replace(t, dims=(t.dims[0], max(1, t.dims[1] // 2))), "ffn_up"),
        ),
        Mutation(
            "missing output_norm",
            "the tensor output_norm.weight removed",
            _doc(
                lambda d: d.with_tensors([t for t in d.tensors if t.name != b"output_norm.weight"])
            ),
        ),
        Mutation(
            "duplicate tensor",
            "the first tensor listed twice",
            _doc(lambda d: d.with_tensors([*d.tensors, d.tensors[0]])),
            native=False,
        ),
        Mutation(
            "empty tensor name",
            "the output norm's name the empty string",
            _retensor(lambda d, t: replace(t, name=b""), "output_norm"),
        ),
        Mutation(
            "overlapping tensors",
            "every tensor's data offset 0 (all tensors share the same bytes)",
            _doc(lambda d: d.with_tensors([replace(t, offset=0) for t in d.tensors])),
        ),
        # -- cut short
        Mutation(
            "cut after the header",
            "the file cut where the tensor data begins",
            lambda d, im: im.truncated(len(im.head)),
            native=False,
        ),
        Mutation(
            "cut in the data",
            "the file cut half-way through the tensor data",
            lambda d, im: im.truncated(len(im.head) + im.data_len // 2),
            native=False,
        ),
        Mutation(
            "cut to 23 bytes",
            "the file cut to its first 23 bytes",
            lambda d, im: im.truncated(23),
            native=False,
        ),
        Mutation("empty file", "an empty file", lambda d, im: im.truncated(0), native=False),
    ]
    if base == "tiny":
        m.append(
            Mutation(
                "1,000,000 tensors",
                "a header that lists 1,000,000 one-row F32 tensors",
                _many_tensors(1_000_000),
                native=False,
                heavy=True,
            )
        )
    return m


# --------------------------------------------------------------------------- random


_EXTREMES = (0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1)


def _flip(d: Doc, im: Image, spots: tuple[int, ...], xors: tuple[int, ...]) -> Image:
    head = bytearray(im.head)
    for at, x in zip(spots, xors, strict=True):
        head[at] ^= x
    return replace(im, head=bytes(head))


def _set_field(d: Doc, im: Image, label: str, value: float) -> Image:
    return im.set_field(label, value)


def _cut(d: Doc, im: Image, at: int) -> Image:
    return im.truncated(at)


def _splice(d: Doc, im: Image, at: int, drop: int, insert: bytes) -> Image:
    return replace(im, head=im.head[:at] + insert + im.head[at + drop :])


def random_mutations(base: str, image: Image, rng: random.Random, count: int) -> list[Mutation]:
    """``count`` random damages of ``image``'s header, each described exactly."""
    head_len = len(image.head)
    out = []
    for i in range(count):
        kind = rng.choice(("flip", "flip", "field", "field", "cut", "splice"))
        make: Callable[[Doc, Image], Image]
        if kind == "flip":
            region = _region(rng, head_len)
            spots = tuple(sorted({rng.randrange(*region) for _ in range(rng.randint(1, 8))}))
            xors = tuple(rng.randrange(1, 256) for _ in spots)
            make = partial(_flip, spots=spots, xors=xors)
            what = "bytes flipped at " + ", ".join(
                f"0x{at:x} (xor 0x{x:02x})" for at, x in zip(spots, xors, strict=True)
            )
        elif kind == "field":
            f = rng.choice(image.fields)
            value: float
            if f.fmt[-1] in "fd":
                value = rng.choice((math.nan, math.inf, -math.inf, -1.0, 0.0, 1e38))
            else:
                value = rng.choice(_EXTREMES)
            make = partial(_set_field, label=f.label, value=value)
            what = f"the header field {f.label} set to {value}"
        elif kind == "cut":
            at = rng.randrange(0, head_len + (image.data_len // 2 if base == "tiny" else 0))
            make = partial(_cut, at=at)
            what = f"the file cut to its first {at:,} bytes"
        else:
            at = rng.randrange(*_region(rng, head_len))
            drop = rng.choice((0, rng.randint(1, 16)))
            insert = bytes(rng.randrange(256) for _ in range(rng.randint(0 if drop else 1, 16)))
            make = partial(_splice, at=at, drop=drop, insert=insert)
            what = f"{drop} bytes at 0x{at:x} replaced by {insert.hex() or 'nothing'}"
        out.append(Mutation(f"random #{i} {kind}", what, make))
    return out


def _region(rng: random.Random, head_len: int) -> tuple[int, int]:
    """Where to damage: mostly the metadata's start and the tensor infos, else anywhere."""
    r = rng.random()
    if r < 0.45:
        return 0, min(head_len, 4096)
    if r < 0.7:
        return max(0, head_len - 16384), head_len
    return 0, head_len


# --------------------------------------------------------------------------- the family

FAST_CORE = (
    ("rope.freq_base=NaN", "inspect-json"),
    ("rms_eps=Inf", "facts"),
    ("vocab of empty strings", "chat"),
    ("head_count=0", "chat"),
    ("byte token <0x70> misspelled", "chat"),
    ("block_count=1e6", "library"),
)


def cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    bases = ["tiny"] + (["starter"] if assets.starter_doc is not None else [])
    out: list[Case] = []
    for base in bases:
        doc, image = assets.doc(base), assets.image(base)
        control = Mutation("unchanged", "no change (a control case)", lambda d, im: im)
        marks = targeted(base, doc, image)
        if long:
            # Starter chats load a 270M model each: a seeded share of them.
            starter_chats = set(rng.sample([m.name for m in marks if m.native], 20))
            for m in [control, *marks]:
                targets = ["facts", "library", "inspect-json"]
                if base == "tiny" and not m.native:
                    targets.append("models")
                if base == "tiny" and m is control:
                    targets += ["models", "scan", "inspect"]
                if m.native and (base == "tiny" or m.name in starter_chats or m is control):
                    targets.append("chat")
                if m.name == "1,000,000 tensors":
                    targets = ["facts", "inspect-json", "scan"]
                out += [make_case(assets, base, m, t) for t in targets]
            n_random = 300 if base == "tiny" else 150
            for i, m in enumerate(random_mutations(base, image, rng, n_random)):
                out.append(make_case(assets, base, m, ("facts", "library")[i % 2]))
                if base == "tiny" and i % 6 == 0:
                    out.append(make_case(assets, base, m, "chat"))
                if base == "tiny" and i % 25 == 0:
                    out.append(make_case(assets, base, m, "scan"))
        else:
            by_name = {m.name: m for m in marks}
            if base == "tiny":
                # A fixed core that has found problems before, then a seeded sample.
                out += [make_case(assets, base, by_name[n], t) for n, t in FAST_CORE]
            picked = rng.sample(marks, 8 if base == "tiny" else 6)
            for m in [control, *picked]:
                out += [make_case(assets, base, m, "facts"), make_case(assets, base, m, "library")]
            native = [m for m in marks if m.native and m.name != "unchanged"]
            chat = rng.sample(native, 4 if base == "tiny" else 1)
            out += [make_case(assets, base, m, "chat") for m in chat]
            out.append(make_case(assets, base, rng.choice(marks), "inspect-json"))
            if base == "tiny":
                out.append(make_case(assets, base, rng.choice(marks), "models"))
                out.append(make_case(assets, base, control, "chat"))
            for i, m in enumerate(random_mutations(base, image, rng, 24 if base == "tiny" else 8)):
                out.append(make_case(assets, base, m, ("facts", "library")[i % 2]))
    return out
