"""The model library: adding, forgetting, other apps' folders, the starter model, the CLI."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from app.core.cli import run_cli
from app.core.library import (
    MAX_SCAN_DEPTH,
    ExternalRoot,
    LibraryError,
    ModelLibrary,
    ModelSource,
    StarterModel,
    default_external_roots,
    read_entry,
    starter_model_path,
)
from app.core.paths import app_paths
from app.core.settings import Settings
from quant.errors import ModelFormatError


def gguf_header(path: Path, *, version: int = 3, extra: bytes = b"\0" * 64) -> Path:
    """A file that starts like a GGUF (magic, version, zero tensors, zero metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, 0, 0) + extra)
    return path


def real_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_tensor("token_embd.weight", np.zeros((8, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def lib(**kw: Any) -> ModelLibrary:
    kw.setdefault("external_roots", ())
    return ModelLibrary(Settings(), **kw)


# --------------------------------------------------------------------------- add / remove


def test_add_validates_and_persists(tmp_path: Path) -> None:
    path = real_gguf(tmp_path / "My-Model.Q4_K_M.gguf")
    entry = lib().add(path)
    assert entry.name == "My-Model.Q4_K_M"
    assert entry.source == ModelSource.ADDED == "added"
    assert entry.size_bytes == path.stat().st_size
    assert entry.to_dict()["source"] == "added"
    # A new library over a fresh read of the settings file lists it.
    assert [e.path for e in lib().entries()] == [path]


def test_adding_twice_lists_once(tmp_path: Path) -> None:
    path = gguf_header(tmp_path / "a.gguf")
    library = lib()
    library.add(path)
    library.add(path)
    assert [e.path for e in library.entries()] == [path]


def test_non_gguf_is_refused_with_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "photo.gguf"
    bad.write_bytes(os.urandom(1000))
    with pytest.raises(ModelFormatError, match=r"photo\.gguf: not a GGUF file .*expected b'GGUF'"):
        lib().add(bad)
    assert lib().entries() == []


def test_short_and_odd_headers_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF\x03\0")
    with pytest.raises(ModelFormatError, match=r"short\.gguf: truncated GGUF file \(6 bytes"):
        read_entry(short)
    future = gguf_header(tmp_path / "future.gguf", version=99)
    with pytest.raises(ModelFormatError, match="unsupported GGUF version 99"):
        read_entry(future)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"empty\.gguf: not a GGUF file \(magic b''"):
        read_entry(empty)


def test_missing_file_and_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="no such file"):
        lib().add(tmp_path / "nope.gguf")
    with pytest.raises(LibraryError, match="is a folder"):
        lib().add(tmp_path)


def test_remove_forgets_without_deleting(tmp_path: Path) -> None:
    path = gguf_header(tmp_path / "keep-me.gguf")
    library = lib()
    library.add(path)
    assert library.remove(path) is True
    assert path.exists()
    assert lib().entries() == []
    assert library.remove(path) is False  # already forgotten
    library.add(path)  # adding again brings it back
    assert [e.path for e in lib().entries()] == [path]


def test_a_moved_added_file_is_left_out_and_reported(tmp_path: Path) -> None:
    path = gguf_header(tmp_path / "moving.gguf")
    library = lib()
    library.add(path)
    path.rename(tmp_path / "moved.gguf")
    assert library.entries() == []
    assert library.missing_added() == [path]


# --------------------------------------------------------------------------- scanning


def test_quantdesk_models_folder_is_listed(tmp_path: Path) -> None:
    made = gguf_header(app_paths().models_dir / "qwen" / "qwen-Q5_K_M.gguf")
    entries = lib().entries()
    assert [(e.path, e.source) for e in entries] == [(made, ModelSource.QUANTDESK)]


def test_other_apps_folders(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    blob = gguf_header(hf / "models--org--Tiny-GGUF" / "blobs" / "abc123")
    snap = hf / "models--org--Tiny-GGUF" / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "tiny.Q8_0.gguf").symlink_to(blob)
    (snap / "mmproj-tiny.gguf").symlink_to(blob)  # a vision projector: not a chat model
    (snap / "missing.gguf").symlink_to(snap / "nowhere")  # blob not downloaded

    lms = tmp_path / "lmstudio"
    gguf_header(lms / "pub" / "Repo" / "big-00001-of-00002.gguf")
    gguf_header(lms / "pub" / "Repo" / "big-00002-of-00002.gguf")
    gguf_header(lms / "pub" / "Repo" / "notes.txt")

    jan = tmp_path / "jan"
    gguf_header(jan / "llama3" / "model.gguf")
    g4a = tmp_path / "gpt4all"
    gguf_header(g4a / "orca-mini.gguf")

    ollama = tmp_path / "ollama"
    digest = "b" * 64
    gguf_header(ollama / "blobs" / f"sha256-{digest}")
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "llama3.2" / "3b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "layers": [
                    {
                        "mediaType": "application/vnd.ollama.image.license",
                        "digest": "sha256:" + "c" * 64,
                    },
                    {
                        "mediaType": "application/vnd.ollama.image.model",
                        "digest": f"sha256:{digest}",
                    },
                ]
            }
        )
    )
    broken = ollama / "manifests" / "registry.ollama.ai" / "library" / "junk" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")

    roots = [
        ExternalRoot(ModelSource.HUGGINGFACE, hf),
        ExternalRoot(ModelSource.LM_STUDIO, lms),
        ExternalRoot(ModelSource.JAN, jan),
        ExternalRoot(ModelSource.GPT4ALL, g4a),
        ExternalRoot(ModelSource.OLLAMA, ollama),
        ExternalRoot(ModelSource.LM_STUDIO, tmp_path / "not-installed"),
    ]
    got = {(e.source.value, e.name) for e in lib(external_roots=roots).entries()}
    assert got == {
        ("huggingface", "org/Tiny-GGUF · tiny.Q8_0"),
        ("lm-studio", "big-00001-of-00002"),
        ("jan", "model"),
        ("gpt4all", "orca-mini"),
        ("ollama", "llama3.2:3b"),
    }


def test_scans_are_bounded_in_depth(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    shallow = gguf_header(root / "a" / "ok.gguf")
    deep_dir = root
    for i in range(MAX_SCAN_DEPTH + 2):
        deep_dir = deep_dir / f"d{i}"
    gguf_header(deep_dir / "too-deep.gguf")
    entries = lib(external_roots=[ExternalRoot(ModelSource.JAN, root)]).entries()
    assert [e.path for e in entries] == [shallow]


def test_a_file_is_listed_once_and_forgetting_a_scanned_file_sticks(tmp_path: Path) -> None:
    root = tmp_path / "lms"
    path = gguf_header(root / "p" / "m.gguf")
    roots = [ExternalRoot(ModelSource.LM_STUDIO, root)]
    library = lib(external_roots=roots)
    library.add(path)  # also inside a scanned folder: listed once, as added
    assert [(e.path, e.source) for e in library.entries()] == [(path, ModelSource.ADDED)]
    library.remove(path)
    assert lib(external_roots=roots).entries() == []
    assert path.exists()


def test_scanning_other_apps_can_be_turned_off(tmp_path: Path) -> None:
    root = tmp_path / "jan"
    gguf_header(root / "m.gguf")
    settings = Settings()
    settings.section("library")["scan_other_apps"] = False
    library = ModelLibrary(settings, external_roots=[ExternalRoot(ModelSource.JAN, root)])
    assert library.entries() == []


def test_default_roots_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfc"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "olm"))
    roots = default_external_roots()
    assert ExternalRoot(ModelSource.HUGGINGFACE, tmp_path / "hfc") in roots
    assert ExternalRoot(ModelSource.OLLAMA, tmp_path / "olm") in roots
    assert {r.source for r in roots} == set(ModelSource) - {
        ModelSource.STARTER,
        ModelSource.ADDED,
        ModelSource.FOLDER,
        ModelSource.QUANTDESK,
    }


# --------------------------------------------------------------------------- starter model


class FakeAssembler:
    """Writes a GGUF-looking file like the starter package's assemble()."""

    def __init__(self, payload: bytes = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)) -> None:
        self.calls: list[tuple[Path, bool]] = []
        self.payload = payload

    def __call__(self, output_path: Path, overwrite: bool = False) -> Path:
        self.calls.append((Path(output_path), overwrite))
        if output_path.exists() and not overwrite:
            if output_path.read_bytes() != self.payload:
                raise FileExistsError(f"{output_path} already exists with an unexpected sha256")
            return output_path
        output_path.write_bytes(self.payload)
        return output_path


def test_starter_is_assembled_once_then_cached(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "starter.gguf"
    fake = FakeAssembler()
    library = lib(starter_assembler=fake, starter_target=target)
    assert library.cached_starter() is None
    path = library.starter_model_path()
    assert path == target and target.read_bytes() == fake.payload
    assert len(fake.calls) == 1
    assert not list(target.parent.glob(".*partial"))  # assembled beside, then renamed
    # Next start: settings say it was verified and the file is unchanged.
    again = lib(starter_assembler=fake, starter_target=target)
    assert again.starter_model_path() == target
    assert len(fake.calls) == 1
    entries = again.entries()
    assert [(e.source, e.name) for e in entries] == [(ModelSource.STARTER, "starter")]


def test_a_changed_starter_file_is_verified_again(tmp_path: Path) -> None:
    target = tmp_path / "starter.gguf"
    fake = FakeAssembler()
    lib(starter_assembler=fake, starter_target=target).starter_model_path()
    target.write_bytes(b"GGUF damaged")  # size and mtime change
    library = lib(starter_assembler=fake, starter_target=target)
    assert library.cached_starter() is None
    assert library.starter_model_path() == target
    assert target.read_bytes() == fake.payload  # rebuilt whole
    assert [c[1] for c in fake.calls] == [True, False, True]


def test_starter_failure_is_a_clear_error(tmp_path: Path) -> None:
    def broken(output_path: Path, overwrite: bool = False) -> Path:
        raise ValueError("Assembled file sha256 did not match expected value")

    library = lib(starter_assembler=broken, starter_target=tmp_path / "s.gguf")
    with pytest.raises(LibraryError, match=r"starter model could not be prepared .*reinstall"):
        library.locate_starter()
    assert not (tmp_path / "s.gguf").exists()
    assert library.entries() == []  # the rest of the library still lists


def test_real_starter_model_is_listed(starter_model: Path) -> None:
    settings = Settings()
    assert starter_model_path(settings) == starter_model
    record = ModelLibrary(settings).cached_starter()
    assert record == StarterModel(
        starter_model, starter_model.stat().st_size, starter_model.stat().st_mtime_ns
    )
    entries = ModelLibrary(Settings(), external_roots=()).entries()
    assert [(e.source, e.path) for e in entries] == [(ModelSource.STARTER, starter_model)]


# --------------------------------------------------------------------------- CLI


def test_cli_lists_adds_and_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], starter_model: Path
) -> None:
    path = real_gguf(tmp_path / "cli-model.gguf")
    assert run_cli(["models", "--add", str(path), "--json", "--no-other-apps", "--no-fit"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["source"], e["path"]) for e in listed] == [
        ("starter", str(starter_model)),
        ("added", str(path)),
    ]
    assert listed[1]["size_bytes"] == path.stat().st_size

    assert run_cli(["models", "--no-other-apps", "--no-fit"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "NAME", "SOURCE", "ARCH", "PARAMS", "TYPE", "CTX", "SIZE", "FIT", "LAST", "USED", "PATH"
    ]  # fmt: skip
    assert any(line.startswith("cli-model") and "Added" in line for line in table[1:])

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    assert run_cli(["models", "--add", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.gguf: not a GGUF file" in err

    assert run_cli(["models", "--remove", str(path), "--json", "--no-other-apps", "--no-fit"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["source"] for e in listed] == ["starter"]
    assert path.exists()


def test_a_recorded_hub_download_is_listed_as_hugging_face(tmp_path: Path) -> None:
    """A file pulled from the hub keeps its repo name and blob digest, not "Added"."""
    repo = tmp_path / "hf" / "models--acme--tiny-GGUF"
    blob = repo / "blobs" / ("ab" * 32)
    blob.parent.mkdir(parents=True)
    real_gguf(blob)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "tiny-Q4_K_M.gguf").symlink_to(os.path.relpath(blob, snap))
    library = lib()
    library.record(read_entry(snap / "tiny-Q4_K_M.gguf"))
    (entry,) = library.entries()
    assert entry.source is ModelSource.HUGGINGFACE
    assert entry.name == "acme/tiny-GGUF · tiny-Q4_K_M"
    assert entry.sha256 == "ab" * 32
