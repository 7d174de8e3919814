"""Terminal injection: escape sequences, BEL, CR, bidi overrides, huge and undecodable
names in GGUF metadata, in file names and in hub listings.

The human output of ``inspect``, ``models`` and the hub listings (``search``, ``pull
REPO``) must hold no raw control character and no line beyond the bound, and a name
with a newline must not be able to start a line of its own (each payload that has one
carries ``INJECTED`` after it, which must never begin an output line). Nothing may
end in a logging traceback.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tests.adversarial import gguf_doc as g
from tests.adversarial.assets import Assets
from tests.adversarial.gguf_attacks import Mutation, target_facts, target_library
from tests.adversarial.gguf_doc import Doc, Image
from tests.adversarial.harness import (
    Case,
    CaseContext,
    CaseFailure,
    Ran,
    expect_cli,
    visible,
)
from tests.adversarial.known_attacks import served_hub

FAMILY = "terminal"

PAYLOADS: dict[str, bytes] = {
    "OSC title": b"evil\x1b]0;pwned\x07name",
    "clear screen": b"\x1b[2J\x1b[Hclean",
    "hidden text": b"\x1b[8mhidden\x1b[0m",
    "BEL": b"ring\x07\x07\x07",
    "CR overwrite": b"evil\rGOOD-MODEL",
    "newline": b"name\nINJECTED fake row",
    "bidi override": "\u202egnp.evil".encode(),
    "bidi isolate": "\u2066abc\u2069".encode(),
    "C1 CSI": "c1\u009b31mred".encode(),
    "10,000 characters": b"x" * 10_000,
    "undecodable bytes": b"bad\xff\xfe\x9b31m",
    "NUL": b"a\x00b",
    "backspaces": b"safe\x08\x08\x08\x08evil",
}

FILE_NAMES: dict[str, bytes] = {
    "OSC title": b"evil\x1b]0;pwned\x07.gguf",
    "CSI colour": b"red\x1b[31m.gguf",
    "BEL": b"bell\x07.gguf",
    "CR overwrite": b"cr\rGOOD.gguf",
    "newline": b"nl\nINJECTED.gguf",
    "bidi override": "\u202efdp.gguf".encode(),
    "undecodable bytes": b"bad\xff\xfe.gguf",
    "C1 CSI": "c1\u009b31m.gguf".encode(),
    "255 bytes": b"x" * 250 + b".gguf",
}

# Metadata strings the human output shows, with the key that holds each.
FIELDS = {
    "general.name": "general.name",
    "architecture": "general.architecture",
    "license": "general.license",
    "tokenizer model": "tokenizer.ggml.model",
    "tensor name": "",
}


def _inject(field: str, payload: bytes) -> Callable[[Doc, Image], Image]:
    key = FIELDS[field]

    def make(doc: Doc, _image: Image) -> Image:
        if field == "tensor name":
            t = doc.tensor("output_norm.weight")
            tensors = [replace(t, name=payload) if x is t else x for x in doc.tensors]
            return doc.with_tensors(tensors).image()
        if field == "architecture":
            # Keep the per-architecture keys under the new name so the file stays whole.
            old = doc.arch.encode()
            kvs = [
                replace(kv, key=payload + kv.key[len(old) :])
                if kv.key.startswith(old + b".")
                else kv
                for kv in doc.kvs
            ]
            doc = replace(doc, kvs=tuple(kvs))
        return doc.with_kv(key, g.STRING, payload).image()

    return make


def expect_no_injected_line(*texts: str) -> None:
    for text in texts:
        for line in text.splitlines():
            if line.startswith("INJECTED"):
                raise CaseFailure(f"a name started a line of its own: {visible(line, 120)}")


def _judge(ran: Ran, *, json_out: bool = False) -> None:
    expect_cli(ran, json_out=json_out)
    expect_no_injected_line(ran.stdout, ran.stderr)


# --------------------------------------------------------------------------- metadata


def metadata_case(assets: Assets, field: str, label: str, target: str) -> Case:
    payload = PAYLOADS[label]
    m = Mutation(f"{field}={label}", f"{field} set to {payload[:40]!r}", _inject(field, payload))
    command = {
        "facts": "quant.facts.inspect_model(FILE) and the inspect summary",
        "library": "read_entry(FILE), LibraryIndex.describe and models' render",
        "inspect": "quantdesk inspect FILE --tensors",
        "models": "quantdesk models --add FILE --no-other-apps --no-fit",
    }[target]

    def run(ctx: CaseContext) -> None:
        path = m.make(assets.tiny_doc, assets.image("tiny")).write(ctx.folder / "m.gguf")
        if target == "facts":
            target_facts(ctx, path, assets)
        elif target == "library":
            target_library(ctx, path, assets)
        elif target == "inspect":
            _judge(ctx.cli("inspect", path, "--tensors"))
        else:
            _judge(ctx.cli("models", "--add", path, "--no-other-apps", "--no-fit"))

    return Case(
        FAMILY,
        f"metadata {field} = {label} -> {target}",
        run,
        f"the tiny GGUF with {m.what}; {command}",
        isolated=target in ("inspect", "models"),
        deadline_s=60,
    )


# --------------------------------------------------------------------------- file names


def file_name_case(assets: Assets, label: str, broken: bool, target: str) -> Case:
    raw = FILE_NAMES[label]
    content = "a file that is not GGUF" if broken else "the tiny GGUF"
    command = {
        "inspect": "quantdesk inspect FILE",
        "models-add": "quantdesk models --add FILE --no-other-apps --no-fit",
        "models-folder": "quantdesk models --add-folder DIR --no-other-apps --no-fit",
        "library": "read_entry(FILE), LibraryIndex.describe and models' render",
    }[target]

    def run(ctx: CaseContext) -> None:
        folder = ctx.folder / "models"
        folder.mkdir()
        path = Path(bytes(folder).decode("utf-8", "surrogateescape")) / raw.decode(
            "utf-8", "surrogateescape"
        )
        if broken:
            path.write_bytes(b"this is not a model at all" * 10)
        else:
            path.write_bytes(assets.tiny_gguf.read_bytes())
        if target == "library":
            target_library(ctx, path, assets)
            return
        if target == "inspect":
            ran = ctx.cli("inspect", path)
        elif target == "models-add":
            ran = ctx.cli("models", "--add", path, "--no-other-apps", "--no-fit")
        else:
            ran = ctx.cli("models", "--add-folder", folder, "--no-other-apps", "--no-fit")
        _judge(ran)

    return Case(
        FAMILY,
        f"file name {label}{' (broken file)' if broken else ''} -> {target}",
        run,
        f"{content} named {raw[:60]!r}; {command}",
        isolated=target != "library",
        deadline_s=60,
    )


# --------------------------------------------------------------------------- hub listings

REPO = "acme/tiny-GGUF"
HUB_INJECTIONS: dict[str, dict[str, object]] = {
    "repo id": {"id": "acme/evil\x1b]0;pwned\x07-GGUF"},
    "long repo id": {"id": "acme/" + "x" * 5000},
    "tags": {"tags": ["gguf", "\x1b[2J"], "pipeline_tag": "text\x1b[8m", "library_name": "\x07"},
    "last modified": {"lastModified": "\x1b[2J2024"},
    "downloads as text": {"downloads": "\x1b[31m9", "likes": "\u202e"},
    "downloads NaN": {"downloads": float("nan"), "likes": float("inf")},
    "base model": {"cardData": {"base_model": "evil\x1b]0;x\x07", "license": "\x1b[2J"}},
}


def hub_case(assets: Assets, label: str, command: str, *, file_label: str | None = None) -> Case:
    inject = HUB_INJECTIONS.get(label, {})

    def run(ctx: CaseContext) -> None:
        with served_hub(ctx) as (hub, env):
            files: dict[str, bytes] = {"README.md": b"# tiny"}
            if file_label is not None:
                named = assets.tiny_doc.with_kv("general.name", g.STRING, PAYLOADS[file_label])
                image = named.image()
                files["Tiny-Q8_0.gguf"] = image.head + (image.data or b"")
                files["Other-Q4_K_M.gguf"] = assets.tiny_gguf.read_bytes()
                hub.hostile["names"] = {"Other-Q4_K_M.gguf": "Other\x1b[31m-Q4_K_M.gguf"}
            else:
                files["Tiny-Q4_K_M.gguf"] = assets.tiny_gguf.read_bytes()
            hub.repos[REPO] = files
            hub.info[REPO] = dict(inject)
            if command == "search":
                ran = ctx.cli("search", "tiny", env=env)
            elif command == "search-json":
                ran = ctx.cli("search", "tiny", "--json", env=env)
            else:
                ran = ctx.cli("pull", REPO, env=env)
        _judge(ran, json_out=command == "search-json")

    what = (
        f"a hub whose GGUF has general.name = {PAYLOADS[file_label][:30]!r} and lists a "
        "file name with ESC [31m"
        if file_label
        else f"a hub answering with {label} = {str(inject)[:80]!r}"
    )
    cmd = {
        "search": "quantdesk search tiny",
        "search-json": "quantdesk search tiny --json",
        "pull": f"quantdesk pull {REPO}",
    }[command]
    return Case(
        FAMILY,
        f"hub {file_label or label} -> {command}",
        run,
        f"{what}; {cmd}",
        isolated=False,
        deadline_s=120,
    )


# --------------------------------------------------------------------------- the family


def cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    out: list[Case] = []
    labels = list(PAYLOADS)
    if long:
        for field in FIELDS:
            for label in labels:
                for target in ("facts", "library", "inspect"):
                    out.append(metadata_case(assets, field, label, target))
                if field in ("architecture", "general.name"):
                    out.append(metadata_case(assets, field, label, "models"))
        for label in FILE_NAMES:
            for broken in (False, True):
                for target in ("library", "inspect", "models-add", "models-folder"):
                    out.append(file_name_case(assets, label, broken, target))
        for label in HUB_INJECTIONS:
            out += [hub_case(assets, label, c) for c in ("search", "search-json", "pull")]
        for label in PAYLOADS:
            out.append(hub_case(assets, "", "pull", file_label=label))
        return out
    for label in rng.sample(labels, 5):
        out += [
            metadata_case(assets, "general.name", label, "facts"),
            metadata_case(assets, "architecture", label, "library"),
            metadata_case(assets, "tensor name", label, "facts"),
        ]
    out.append(metadata_case(assets, "general.name", "OSC title", "inspect"))
    out.append(metadata_case(assets, "architecture", "CR overwrite", "models"))
    for label in rng.sample(list(FILE_NAMES), 4):
        out.append(file_name_case(assets, label, rng.random() < 0.5, "library"))
    out.append(file_name_case(assets, "OSC title", True, "inspect"))
    out.append(file_name_case(assets, "undecodable bytes", False, "models-add"))
    out.append(file_name_case(assets, "newline", False, "models-folder"))
    out.append(hub_case(assets, "repo id", "search"))
    out.append(hub_case(assets, "", "pull", file_label="OSC title"))
    return out
