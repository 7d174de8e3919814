"""Hostile Hugging Face model folders against conversion and inspection.

Each attack copies the tiny real Llama folder of tests/convert/checkpoints.py and
breaks one thing: JSON nested 200,000 deep, ``Infinity``/``1e999``/``NaN`` in shapes,
offsets and hyper-parameters, absurd architectures and layer counts, a FIFO or a
device where a file should be, pickle-only checkpoints whose payload would write
into the sentinel folder if it were ever unpickled, and links or index entries
pointing outside the folder.

Targets: ``quantdesk convert-hf DIR OUT.gguf`` (``convert``), ``python -m quant
convert-hf DIR OUT.gguf --json-progress`` (``job``) and ``quantdesk inspect DIR --json
--offline`` (``inspect``). A finished conversion must be a readable GGUF; a refused
one leaves no OUT and no partial file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.adversarial.assets import Assets
from tests.adversarial.harness import (
    Case,
    CaseContext,
    CaseFailure,
    expect_cli,
    expect_job,
    read_gguf_ok,
)

FAMILY = "folders"
DEEP = 200_000

Build = Callable[[Path, CaseContext], "Path | None"]


@dataclass(frozen=True)
class Attack:
    """``build(folder, ctx)`` breaks the copied model folder; it may return another OUT."""

    name: str
    what: str
    build: Build
    # The only clean outcome is a refusal (a success would have read outside the folder
    # or unpickled a checkpoint).
    must_refuse: bool = False
    force: bool = False


# --------------------------------------------------------------------------- builders


def _raw(text: str) -> Callable[[Path, CaseContext], None]:
    def build(folder: Path, ctx: CaseContext, name: str = "config.json") -> None:
        (folder / name).write_text(text)

    return build


def deep_lists(n: int = DEEP) -> str:
    return "[" * n + "]" * n


def deep_objects(n: int = DEEP) -> str:
    return '{"a":' * n + "1" + "}" * n


def file_text(name: str, text: str | bytes) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        p = folder / name
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)

    return build


def _set(target: dict[str, Any], changes: dict[str, Any]) -> dict[str, str]:
    """Apply ``changes`` to ``target``; return placeholder -> literal for ``Raw`` values."""
    literals = {}
    for key, value in changes.items():
        if isinstance(value, Raw):
            literals[f'"@raw:{key}"'] = value.text
            target[key] = f"@raw:{key}"
        else:
            target[key] = value
    return literals


def _dump(obj: Any, literals: dict[str, str]) -> str:
    text = json.dumps(obj, indent=1)  # NaN and Infinity come out as those tokens
    for placeholder, literal in literals.items():
        text = text.replace(placeholder, literal)
    return text


def config(**changes: Any) -> Build:
    """Set config.json keys; a value ``Raw("1e999")`` is written as that literal text."""

    def build(folder: Path, ctx: CaseContext) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(_dump(cfg, _set(cfg, changes)))

    return build


@dataclass(frozen=True)
class Raw:
    text: str


def _st_read(path: Path) -> tuple[dict[str, Any], bytes]:
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _st_write(path: Path, header: bytes, data: bytes, length: int | None = None) -> None:
    header += b" " * (-len(header) % 8)
    n = len(header) if length is None else length
    path.write_bytes(n.to_bytes(8, "little", signed=False) + header + data)


def st_header(change: Callable[[dict[str, Any]], dict[str, Any] | bytes]) -> Build:
    """Rewrite model.safetensors' JSON header (the data stays)."""

    def build(folder: Path, ctx: CaseContext) -> None:
        path = folder / "model.safetensors"
        header, data = _st_read(path)
        new = change(header)
        raw = new if isinstance(new, bytes) else json.dumps(new).encode()
        _st_write(path, raw, data)

    return build


def st_tensor(**changes: Any) -> Build:
    """Change the first tensor's entry (``Raw`` values become literal JSON text)."""

    def change(header: dict[str, Any]) -> bytes:
        name = next(k for k in header if k != "__metadata__")
        return _dump(header, _set(header[name], changes)).encode()

    return st_header(change)


def st_length(value: int) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        path = folder / "model.safetensors"
        blob = path.read_bytes()
        path.write_bytes(value.to_bytes(8, "little") + blob[8:])

    return build


def overlap(header: dict[str, Any]) -> dict[str, Any]:
    names = [k for k in header if k != "__metadata__"]
    header[names[1]]["data_offsets"] = header[names[0]]["data_offsets"]
    return header


def prefix(name: str, head: bytes) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        p = folder / name
        p.write_bytes(head + p.read_bytes())

    return build


def fifo(name: str) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        p = folder / name
        p.unlink(missing_ok=True)
        os.mkfifo(p)

    return build


def link(name: str, target: Callable[[CaseContext], str]) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        p = folder / name
        p.unlink(missing_ok=True)
        p.symlink_to(target(ctx))

    return build


def directory(name: str) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return build


class _Payload:
    """Unpickling this opens (creates) a file in the sentinel folder."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.target, "w"))


def pickle_only(name: str, *, zipped: bool, keep_safetensors: bool = False) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        payload = pickle.dumps(_Payload(str(ctx.sentinel / "PWNED-by-unpickling")))
        if zipped:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("archive/data.pkl", payload)
                z.writestr("archive/version", "3\n")
            payload = buf.getvalue()
        (folder / name).write_bytes(payload)
        if not keep_safetensors:
            (folder / "model.safetensors").unlink()

    return build


def index(weight_map_target: Callable[[Path, CaseContext], str]) -> Build:
    """Shard index whose entries name ``weight_map_target`` (the single file removed)."""

    def build(folder: Path, ctx: CaseContext) -> None:
        header, _ = _st_read(folder / "model.safetensors")
        target = weight_map_target(folder, ctx)
        names = [k for k in header if k != "__metadata__"]
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": dict.fromkeys(names, target)})
        )
        (folder / "model.safetensors").unlink()

    return build


def tokenizer(change: Callable[[dict[str, Any]], Any]) -> Build:
    def build(folder: Path, ctx: CaseContext) -> None:
        tok = json.loads((folder / "tokenizer.json").read_text())
        (folder / "tokenizer.json").write_text(json.dumps(change(tok)))

    return build


def _empty_vocab(tok: dict[str, Any]) -> dict[str, Any]:
    tok["model"]["vocab"] = {"": 0}
    return tok


def _bad_merges(tok: dict[str, Any]) -> dict[str, Any]:
    tok["model"]["merges"] = ["no such", "tokens here"] * 50
    return tok


def _huge_added_id(tok: dict[str, Any]) -> dict[str, Any]:
    tok["added_tokens"].append({"id": 10**9, "content": "<huge>", "special": True})
    return tok


def out_is(rel: Callable[[Path, CaseContext], Path]) -> Build:
    def build(folder: Path, ctx: CaseContext) -> Path:
        return rel(folder, ctx)

    return build


def _out_link(folder: Path, ctx: CaseContext) -> Path:
    out = ctx.folder / "out" / "linked.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(ctx.sentinel / "victim.gguf")
    return out


# --------------------------------------------------------------------------- the list


def attacks() -> list[Attack]:
    inf, nan = float("inf"), float("nan")
    return [
        Attack(
            "config deep lists", "config.json = [[[…]]] nested 200,000 deep", _raw(deep_lists())
        ),
        Attack(
            "config deep objects",
            'config.json = {"a":{"a":…}} nested 200,000 deep',
            _raw(deep_objects()),
        ),
        Attack(
            "config deep rope_scaling",
            "config.json's rope_scaling a list nested 200,000 deep",
            config(rope_scaling=Raw(deep_lists())),
        ),
        Attack(
            "tokenizer.json deep",
            "tokenizer.json nested 200,000 deep",
            file_text("tokenizer.json", deep_lists()),
        ),
        Attack(
            "tokenizer_config deep",
            "tokenizer_config.json nested 200,000 deep",
            file_text("tokenizer_config.json", deep_objects()),
        ),
        Attack(
            "safetensors header deep",
            "model.safetensors' JSON header nested 200,000 deep",
            st_header(lambda h: deep_lists().encode()),
        ),
        Attack(
            "index deep",
            "model.safetensors.index.json nested 200,000 deep beside the weights",
            file_text("model.safetensors.index.json", deep_objects()),
        ),
        Attack(
            "generation_config deep",
            "generation_config.json nested 200,000 deep",
            file_text("generation_config.json", deep_lists()),
        ),
        # hyper-parameters
        *[
            Attack(f"rope_theta={label}", f"config.json rope_theta: {label}", config(rope_theta=v))
            for label, v in (
                ("Infinity", inf),
                ("NaN", nan),
                ("1e999", Raw("1e999")),
                ("-1", -1.0),
                ("0", 0),
                ("string", "fast"),
            )
        ],
        *[
            Attack(
                f"rms_norm_eps={label}",
                f"config.json rms_norm_eps: {label}",
                config(rms_norm_eps=v),
            )
            for label, v in (("NaN", nan), ("Infinity", inf), ("-1", -1.0), ("0", 0))
        ],
        *[
            Attack(
                f"hidden_size={label}", f"config.json hidden_size: {label}", config(hidden_size=v)
            )
            for label, v in (
                ("1e999", Raw("1e999")),
                ("Infinity", inf),
                ("0", 0),
                ("-64", -64),
                ("63", 63),
                ("64.5", 64.5),
                ("true", True),
                ("'64'", "64"),
            )
        ],
        *[
            Attack(
                f"num_attention_heads={label}",
                f"config.json num_attention_heads: {label}",
                config(num_attention_heads=v),
            )
            for label, v in (("0", 0), ("3", 3), ("1e9", 10**9))
        ],
        *[
            Attack(
                f"num_key_value_heads={label}",
                f"config.json num_key_value_heads: {label}",
                config(num_key_value_heads=v),
            )
            for label, v in (("0", 0), ("3", 3), ("8", 8))
        ],
        *[
            Attack(
                f"num_hidden_layers={label}",
                f"config.json num_hidden_layers: {label}",
                config(num_hidden_layers=v),
            )
            for label, v in (
                ("1000000", 1_000_000),
                ("0", 0),
                ("-1", -1),
                ("1e999", Raw("1e999")),
                ("3", 3),
                ("2^64", 2**64),
                ("10^100", Raw("1" + "0" * 100)),
            )
        ],
        *[
            Attack(f"vocab_size={label}", f"config.json vocab_size: {label}", config(vocab_size=v))
            for label, v in (("1e9", 10**9), ("0", 0), ("-1", -1))
        ],
        *[
            Attack(
                f"intermediate_size={label}",
                f"config.json intermediate_size: {label}",
                config(intermediate_size=v),
            )
            for label, v in (("0", 0), ("1e12", 10**12))
        ],
        *[
            Attack(
                f"max_position_embeddings={label}",
                f"config.json max_position_embeddings: {label}",
                config(max_position_embeddings=v),
            )
            for label, v in (("1e999", Raw("1e999")), ("-1", -1), ("2^64", 2**64))
        ],
        *[
            Attack(f"head_dim={label}", f"config.json head_dim: {label}", config(head_dim=v))
            for label, v in (("0", 0), ("1e9", 10**9))
        ],
        *[
            Attack(
                f"rope_scaling={label}",
                f"config.json rope_scaling: {label}",
                config(rope_scaling=v),
            )
            for label, v in (
                ("factor NaN", {"rope_type": "llama3", "factor": nan}),
                ("factor 0", {"rope_type": "llama3", "factor": 0, "low_freq_factor": 0}),
                ("a string", "x"),
                ("a list", [1, 2]),
            )
        ],
        *[
            Attack(
                f"architectures={label}",
                f"config.json architectures: {label}",
                config(architectures=v),
            )
            for label, v in (
                ("42", 42),
                ("nested list", [["LlamaForCausalLM"]]),
                ("[]", []),
                ("a string", "LlamaForCausalLM"),
                ("null", None),
                ("an object", {"a": 1}),
                ("10,000 chars", ["X" * 10_000]),
                ("[42]", [42]),
                ("with ESC", ["LlamaForCausalLM\x1b]0;x\x07"]),
            )
        ],
        Attack(
            "tie_word_embeddings='yes'",
            "config.json tie_word_embeddings: 'yes'",
            config(tie_word_embeddings="yes"),
        ),
        Attack(
            "torch_dtype=float99",
            "config.json torch_dtype: 'float99'",
            config(torch_dtype="float99"),
        ),
        Attack(
            "config not UTF-8",
            "config.json holds bytes ff fe",
            file_text("config.json", b"\xff\xfe{}"),
        ),
        Attack(
            "config with BOM",
            "config.json starts with a UTF-8 byte order mark",
            prefix("config.json", b"\xef\xbb\xbf"),
        ),
        Attack("config a list", "config.json = []", file_text("config.json", "[]")),
        Attack("config empty", "config.json empty", file_text("config.json", "")),
        Attack("config null", "config.json = null", file_text("config.json", "null")),
        # files that are not files
        Attack("safetensors FIFO", "model.safetensors a FIFO", fifo("model.safetensors")),
        Attack("config FIFO", "config.json a FIFO", fifo("config.json")),
        Attack("tokenizer FIFO", "tokenizer.json a FIFO", fifo("tokenizer.json")),
        Attack(
            "safetensors -> /dev/zero",
            "model.safetensors a link to /dev/zero",
            link("model.safetensors", lambda c: "/dev/zero"),
        ),
        Attack(
            "config -> /dev/zero",
            "config.json a link to /dev/zero",
            link("config.json", lambda c: "/dev/zero"),
        ),
        Attack(
            "tokenizer -> /dev/urandom",
            "tokenizer.json a link to /dev/urandom",
            link("tokenizer.json", lambda c: "/dev/urandom"),
        ),
        Attack("config a folder", "config.json a folder", directory("config.json")),
        Attack(
            "safetensors a folder", "model.safetensors a folder", directory("model.safetensors")
        ),
        # safetensors headers
        Attack(
            "overlapping data_offsets", "two tensors with the same data_offsets", st_header(overlap)
        ),
        Attack(
            "float data_offsets",
            "the first tensor's data_offsets [0.5, 100.5]",
            st_tensor(data_offsets=[0.5, 100.5]),
        ),
        Attack(
            "reversed data_offsets",
            "the first tensor's data_offsets [4096, 0]",
            st_tensor(data_offsets=[4096, 0]),
        ),
        Attack(
            "negative data_offsets",
            "the first tensor's data_offsets [-4096, 0]",
            st_tensor(data_offsets=[-4096, 0]),
        ),
        Attack(
            "data_offsets past EOF",
            "the first tensor's data_offsets past the end of the file",
            st_tensor(data_offsets=[10**9, 10**9 + 4096]),
        ),
        Attack(
            "data_offsets Infinity",
            "the first tensor's data_offsets [0, Infinity]",
            st_tensor(data_offsets=Raw("[0, Infinity]")),
        ),
        Attack(
            "data_offsets 1e999",
            "the first tensor's data_offsets [0, 1e999]",
            st_tensor(data_offsets=Raw("[0, 1e999]")),
        ),
        Attack(
            "shape Infinity",
            "the first tensor's shape [Infinity, 64]",
            st_tensor(shape=Raw("[Infinity, 64]")),
        ),
        Attack(
            "shape NaN", "the first tensor's shape [NaN, 64]", st_tensor(shape=Raw("[NaN, 64]"))
        ),
        Attack("shape negative", "the first tensor's shape [-1, 64]", st_tensor(shape=[-1, 64])),
        Attack(
            "shape 2^40 x 2^40",
            "the first tensor's shape [2**40, 2**40]",
            st_tensor(shape=[2**40, 2**40]),
        ),
        Attack(
            "shape 1e999",
            "the first tensor's shape [1e999, 64]",
            st_tensor(shape=Raw("[1e999, 64]")),
        ),
        Attack(
            "shape does not match bytes",
            "the first tensor's shape doubled (its byte range unchanged)",
            st_header(
                lambda h: {
                    **h,
                    **{
                        k: {**v, "shape": [v["shape"][0] * 2, *v["shape"][1:]]}
                        for k, v in list(h.items())[1:2]
                    },
                }
            ),
        ),
        Attack("dtype F99", "the first tensor's dtype 'F99'", st_tensor(dtype="F99")),
        Attack("dtype I64", "the first tensor's dtype 'I64'", st_tensor(dtype="I64")),
        Attack("dtype a number", "the first tensor's dtype 7", st_tensor(dtype=7)),
        Attack(
            "no data_offsets", "the first tensor without data_offsets", st_tensor(data_offsets=None)
        ),
        Attack("header length 2^63", "the safetensors header length 2**63", st_length(2**63)),
        Attack("header length past EOF", "the safetensors header length 10**9", st_length(10**9)),
        Attack("header length 0", "the safetensors header length 0", st_length(0)),
        Attack(
            "header not JSON", "the safetensors header 'not json'", st_header(lambda h: b"not json")
        ),
        Attack("header a list", "the safetensors header []", st_header(lambda h: b"[]")),
        Attack(
            "header NaN metadata",
            "the safetensors __metadata__ holding NaN",
            st_header(lambda h: {**h, "__metadata__": {"x": float("nan")}}),
        ),
        # pickles
        Attack(
            "pickle-only .bin",
            "only pytorch_model.bin, a pickle that writes into the sentinel folder when loaded",
            pickle_only("pytorch_model.bin", zipped=False),
            must_refuse=True,
        ),
        Attack(
            "pickle-only torch zip",
            "only pytorch_model.bin, a torch zip whose data.pkl writes into the sentinel folder",
            pickle_only("pytorch_model.bin", zipped=True),
            must_refuse=True,
        ),
        Attack(
            "pickle-only .pt",
            "only model.pt, a pickle that writes into the sentinel folder",
            pickle_only("model.pt", zipped=False),
            must_refuse=True,
        ),
        Attack(
            "pickle beside safetensors",
            "a hostile pytorch_model.bin beside the real model.safetensors",
            pickle_only("pytorch_model.bin", zipped=False, keep_safetensors=True),
        ),
        # links and paths out of the folder
        Attack(
            "safetensors links outside",
            "model.safetensors a link to a safetensors file in the sentinel folder",
            link("model.safetensors", lambda c: str(c.sentinel / "victim.safetensors")),
        ),
        Attack(
            "index names ../ outside",
            "an index whose weight_map names ../../../sentinel/victim.safetensors",
            index(lambda f, c: os.path.relpath(c.sentinel / "victim.safetensors", f)),
            must_refuse=True,
        ),
        Attack(
            "index names an absolute path",
            "an index whose weight_map names the sentinel's victim.safetensors by absolute path",
            index(lambda f, c: str(c.sentinel / "victim.safetensors")),
            must_refuse=True,
        ),
        Attack(
            "index names /dev/zero",
            "an index whose weight_map names /dev/zero",
            index(lambda f, c: "/dev/zero"),
            must_refuse=True,
        ),
        Attack(
            "tokenizer.model -> /etc/passwd",
            "tokenizer.model a link to /etc/passwd (beside tokenizer.json)",
            link("tokenizer.model", lambda c: "/etc/passwd"),
        ),
        # tokenizers
        Attack(
            "tokenizer empty vocab",
            "tokenizer.json whose vocabulary is the one empty-string token",
            tokenizer(_empty_vocab),
        ),
        Attack(
            "tokenizer bad merges",
            "tokenizer.json merges naming unknown tokens",
            tokenizer(_bad_merges),
        ),
        Attack(
            "tokenizer added id 1e9",
            "tokenizer.json with an added token of id 10**9",
            tokenizer(_huge_added_id),
        ),
        Attack("tokenizer a list", "tokenizer.json = []", file_text("tokenizer.json", "[]")),
        # outputs
        Attack(
            "OUT replaces the weights",
            "OUT.gguf = the folder's own model.safetensors, with --force",
            out_is(lambda f, c: f / "model.safetensors"),
            must_refuse=True,
            force=True,
        ),
        Attack(
            "OUT a link into the sentinel",
            "OUT.gguf an existing link to the sentinel's victim.gguf, with --force",
            _out_link,
            force=True,
        ),
        Attack(
            "OUT in a missing folder",
            "OUT.gguf in folders that do not exist yet",
            out_is(lambda f, c: c.folder / "out" / "a" / "b" / "m.gguf"),
        ),
    ]


# --------------------------------------------------------------------------- cases


def make_case(assets: Assets, attack: Attack, target: str) -> Case:
    command = {
        "convert": "quantdesk convert-hf DIR OUT.gguf",
        "job": "python -m quant convert-hf DIR OUT.gguf --json-progress",
        "inspect": "quantdesk inspect DIR --json --offline",
    }[target]
    if attack.force and target != "inspect":
        command += " --force"

    def run(ctx: CaseContext) -> None:
        folder = assets.copy_tiny_hf(ctx.folder / "in" / "model")
        out = ctx.folder / "out" / "model.gguf"
        out.parent.mkdir(parents=True, exist_ok=True)
        other = attack.build(folder, ctx)
        if isinstance(other, Path):
            out = other
        force = ["--force"] if attack.force else []
        if target == "inspect":
            ran = ctx.cli("inspect", folder, "--json", "--offline")
            expect_cli(ran, json_out=True)
            return
        outputs = [] if attack.force else [out]
        if target == "convert":
            ran = ctx.cli("convert-hf", folder, out, *force)
            expect_cli(ran, outputs=outputs)
            ok = ran.returncode == 0
        else:
            ran = ctx.job("convert-hf", folder, out, "--json-progress", *force)
            ok = expect_job(ran, outputs=outputs) is not None
        if ok:
            if attack.must_refuse:
                raise CaseFailure("converted although it had to refuse", ran.describe())
            written = out / "model.gguf" if out.is_dir() else out
            if not out.is_dir() and not written.exists():
                raise CaseFailure("reported success but OUT does not exist", ran.describe())
            if written.exists():
                read_gguf_ok(written, "the converted file")

    return Case(
        FAMILY,
        f"{attack.name} -> {target}",
        run,
        f"the tiny Llama folder of tests/convert/checkpoints.py with {attack.what}; {command}",
        deadline_s=30,
    )


FAST_PICKS = (
    "config deep lists",
    "safetensors header deep",
    "rope_theta=Infinity",
    "num_hidden_layers=1000000",
    "architectures=42",
    "safetensors FIFO",
    "pickle-only .bin",
    "index names ../ outside",
    "float data_offsets",
    "config -> /dev/zero",
)


def cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    all_attacks = attacks()
    targets = ("convert", "job", "inspect")
    if long:
        return [make_case(assets, a, t) for a in all_attacks for t in targets]
    by_name = {a.name: a for a in all_attacks}
    out = [make_case(assets, by_name[n], targets[i % 3]) for i, n in enumerate(FAST_PICKS)]
    control = Attack("unchanged", "no change (a control case)", lambda f, c: None)
    out.append(make_case(assets, control, "job"))
    rest = [a for a in all_attacks if a.name not in FAST_PICKS]
    out += [make_case(assets, a, rng.choice(targets)) for a in rng.sample(rest, 3)]
    return out
