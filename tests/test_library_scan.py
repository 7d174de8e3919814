"""Library scans of trees laid out like each app's folders, header facts, duplicates, cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.core.library import (
    MAX_LAST_USED,
    ExternalRoot,
    LibraryEntry,
    LibraryError,
    ModelLibrary,
    ModelSource,
    default_external_roots,
)
from app.core.library_index import INDEX_FILE, LibraryIndex, describe_library
from app.core.paths import app_paths
from app.core.settings import Settings
from quant.errors import Cancelled
from quant.hardware.profile import CpuInfo, HardwareProfile, MemoryInfo, RuntimeInfo
from quant.plan.advisor import Fit
from quant.progress import CancelToken, Progress
from tests.ggufs import write_tiny_gguf

GIB = 1024**3


def tiny_gguf(
    path: Path,
    *,
    name: str = "tiny",
    seed: int = 0,
    context: int = 2048,
    chat_template: str | None = None,
) -> Path:
    """A small but complete llama GGUF; ``seed`` changes the weights, not the size."""
    return write_tiny_gguf(
        path, name=name, n_layers=1, context=context, seed=seed, chat_template=chat_template
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ollama_manifest(models: Path, rel: str, digest: str, size: int) -> Path:
    manifest = models / "manifests" / rel
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "layers": [
                    {
                        "mediaType": "application/vnd.ollama.image.model",
                        "digest": f"sha256:{digest}",
                        "size": size,
                    },
                    {
                        "mediaType": "application/vnd.ollama.image.template",
                        "digest": "sha256:" + "c" * 64,
                        "size": 10,
                    },
                ],
            }
        )
    )
    return manifest


def profile(available_gib: float = 11.0) -> HardwareProfile:
    return HardwareProfile(
        cpu=CpuInfo("Testium 9000", "x86_64", 6, 12, ("avx2", "fma", "f16c"), "/proc/cpuinfo"),
        memory=MemoryInfo(16 * GIB, int(available_gib * GIB), 2 * GIB, 2 * GIB),
        gpus=(),
        backends=("cpu",),
        runtime=RuntimeInfo("0.3.36", False, ("CPU",), ""),
        measured_bandwidth_gbps=40.0,
        source="probe",
    )


@dataclass
class Tree:
    """Folders laid out like each app keeps them, and the files placed in them."""

    root: Path
    hf: Path
    lms: Path
    ollama: Path
    jan_new: Path
    jan_old: Path
    g4a: Path
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def under(cls, root: Path) -> Tree:
        """Every app's folder side by side under ``root``."""
        return cls(
            root,
            hf=root / "hf-hub",
            lms=root / "lmstudio",
            ollama=root / "ollama",
            jan_new=root / "jan-data" / "llamacpp" / "models",
            jan_old=root / "jan" / "models",
            g4a=root / "gpt4all",
            folder=root / "my-models",
        )

    @classmethod
    def linux_home(cls, home: Path, xdg_data: Path, hf_cache: Path) -> Tree:
        """Every app's folder where it is on Linux for a user whose home is ``home``."""
        return cls(
            home,
            hf=hf_cache,
            lms=home / ".lmstudio" / "models",
            ollama=home / ".ollama" / "models",
            jan_new=xdg_data / "Jan" / "data" / "llamacpp" / "models",
            jan_old=home / "jan" / "models",
            g4a=xdg_data / "nomic.ai" / "GPT4All",
            folder=home / "my-models",
        )

    def roots(self) -> list[ExternalRoot]:
        return [
            ExternalRoot(ModelSource.HUGGINGFACE, self.hf),
            ExternalRoot(ModelSource.LM_STUDIO, self.lms),
            ExternalRoot(ModelSource.OLLAMA, self.ollama),
            ExternalRoot(ModelSource.JAN, self.jan_new, named_by_folder=True),
            ExternalRoot(ModelSource.JAN, self.jan_old),
            ExternalRoot(ModelSource.GPT4ALL, self.g4a),
            ExternalRoot(ModelSource.LM_STUDIO, self.root / "not-installed"),
        ]

    def library(self, settings: Settings | None = None) -> ModelLibrary:
        lib = ModelLibrary(
            settings or Settings(), external_roots=self.roots(), models_dir=self.root / "made"
        )
        if str(self.folder) not in [str(f) for f in lib.folders()]:
            lib.add_folder(self.folder)
        return lib


def build_tree(t: Tree) -> Tree:
    """Every app's layout, one file seen through two apps (a hardlink and a copy), broken files."""
    f = t.files
    staging = t.root / "staging"
    # Hugging Face cache: blobs named by SHA-256, snapshot links, refs/main.
    repo = t.hf / "models--org--Tiny-GGUF"
    made = tiny_gguf(staging / "hf.gguf", name="hf-tiny", seed=1)
    digest = sha256_of(made)
    (repo / "blobs").mkdir(parents=True)
    f["hf_blob"] = made.rename(repo / "blobs" / digest)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    f["hf"] = snap / "tiny.Q8_0.gguf"
    f["hf"].symlink_to(Path("..") / ".." / "blobs" / digest)
    (snap / "gone.Q4_0.gguf").symlink_to(Path("..") / ".." / "blobs" / ("e" * 64))
    (repo / "blobs" / ("f" * 64 + ".incomplete")).write_bytes(b"GGUF partial")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    # Ollama: manifests name content-addressed blobs; two tags of one model, a model
    # whose blob is a copy of the Hugging Face file, and one whose blob is gone.
    blob = tiny_gguf(staging / "ollama.gguf", name="ollama-llama", seed=2)
    odigest = sha256_of(blob)
    (t.ollama / "blobs").mkdir(parents=True)
    f["ollama"] = blob.rename(t.ollama / "blobs" / f"sha256-{odigest}")
    size = f["ollama"].stat().st_size
    ollama_manifest(t.ollama, "registry.ollama.ai/library/llama3.2/3b", odigest, size)
    ollama_manifest(t.ollama, "registry.ollama.ai/library/llama3.2/latest", odigest, size)
    f["ollama_copy"] = t.ollama / "blobs" / f"sha256-{digest}"
    shutil.copyfile(f["hf_blob"], f["ollama_copy"])
    hf_size = f["hf_blob"].stat().st_size
    ollama_manifest(t.ollama, "registry.ollama.ai/someone/coder/q4", digest, hf_size)
    ollama_manifest(t.ollama, "registry.ollama.ai/library/gone/latest", "d" * 64, 1234)
    # LM Studio: publisher/repo/file.gguf.
    f["lms"] = tiny_gguf(t.lms / "pub" / "Repo" / "lms-model.Q4_K_M.gguf", name="lms-model", seed=3)
    # Jan: the llama.cpp store names models by folder; the old layout by file.
    f["jan_new"] = tiny_gguf(
        t.jan_new / "org" / "qwen3-4b" / "model.gguf",
        name="jan-qwen",
        seed=6,
    )
    (f["jan_new"].parent / "model.yml").write_text("model_path: llamacpp/models/org/qwen3-4b\n")
    f["jan_old"] = tiny_gguf(t.jan_old / "llama3" / "llama3.gguf", name="jl", seed=5)
    # GPT4All: files in its data folder, one a hardlink of the LM Studio file.
    f["g4a"] = tiny_gguf(t.g4a / "orca-mini.gguf", name="orca", seed=4)
    f["g4a_link"] = t.g4a / "linked.gguf"
    os.link(f["lms"], f["g4a_link"])
    # A folder the user chose: a model with a chat template, two different models of
    # the same size, a plain copy of the LM Studio file, and broken files.
    d = t.folder
    f["mine"] = tiny_gguf(d / "mine.gguf", name="mine", seed=7, chat_template="{{ messages }}")
    f["twin"] = tiny_gguf(d / "sub" / "twin.gguf", name="twin-a", seed=8)
    f["twin2"] = tiny_gguf(d / "sub" / "twin2.gguf", name="twin-b", seed=9)
    f["copy"] = d / "copy-of-lms.gguf"
    shutil.copy2(f["lms"], f["copy"])
    f["not_gguf"] = d / "not-a-model.gguf"
    f["not_gguf"].write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    f["truncated"] = d / "truncated.gguf"
    f["truncated"].write_bytes(f["mine"].read_bytes()[:3000])
    f["empty"] = d / "empty.gguf"
    f["empty"].write_bytes(b"")
    f["dangling"] = d / "dangling.gguf"
    f["dangling"].symlink_to(d / "nowhere.gguf")
    (d / "notes.txt").write_text("not a model")
    (d / "mmproj-vision.gguf").write_bytes(f["mine"].read_bytes())  # a projector: skipped
    shutil.rmtree(staging)
    return t


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return build_tree(Tree.under(tmp_path / "tree"))


def by_name(entries: list[LibraryEntry]) -> dict[str, LibraryEntry]:
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), names
    return {e.name: e for e in entries}


EXPECTED = {
    ("folder", "copy-of-lms"),
    ("folder", "dangling"),
    ("folder", "empty"),
    ("folder", "mine"),
    ("folder", "not-a-model"),
    ("folder", "truncated"),
    ("folder", "twin"),
    ("folder", "twin2"),
    ("huggingface", "org/Tiny-GGUF · tiny.Q8_0"),
    ("lm-studio", "lms-model.Q4_K_M"),
    ("ollama", "llama3.2:3b"),
    ("ollama", "gone:latest"),
    ("jan", "org/qwen3-4b"),
    ("jan", "llama3"),
    ("gpt4all", "orca-mini"),
}


# --------------------------------------------------------------------------- scanning


def test_every_model_is_found_once_with_its_name_and_source(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.core.library"):
        entries = tree.library().entries()
    assert len(entries) == len(EXPECTED)
    assert {(e.source.value, e.name) for e in entries} == EXPECTED
    e = by_name(entries)
    f = tree.files
    # The user's folder comes first, then the other apps.
    assert entries[0].source is ModelSource.FOLDER
    # A hardlink is one file: listed once, the other path named.
    assert e["lms-model.Q4_K_M"].also_at == (f["g4a_link"],)
    # The Ollama blob that is a copy of the Hugging Face blob: both digests are in the
    # layout, so they merge without reading either file.
    hf = e["org/Tiny-GGUF · tiny.Q8_0"]
    assert hf.path == f["hf"]
    assert hf.also_at == (f["ollama_copy"],)
    assert hf.sha256 == f["hf_blob"].name
    assert e["llama3.2:3b"].sha256 == f["ollama"].name.removeprefix("sha256-")
    # Two Ollama tags of one blob: one entry.
    assert e["llama3.2:3b"].path == f["ollama"]
    # A copy (not a link) is still two entries until its content is hashed.
    assert e["copy-of-lms"].also_at == ()
    # Broken by layout: the missing Ollama blob and the dangling link in a folder.
    assert e["gone:latest"].broken is not None
    assert "Ollama's model file sha256-dddd" in e["gone:latest"].broken
    assert "ollama pull gone:latest" in e["gone:latest"].broken
    assert e["gone:latest"].size_bytes == 1234
    assert e["dangling"].broken is not None
    assert "is missing; restore the file or remove the link" in e["dangling"].broken
    # The Hugging Face link to a blob never downloaded is left out, with a log line;
    # the unfinished download is not listed either.
    assert not any("gone.Q4_0" in n for n in e)
    assert "not downloaded; leaving it out" in caplog.text
    assert all(".incomplete" not in str(x.path) for x in entries)
    # Sizes and modification times come from the scan.
    assert e["mine"].size_bytes == f["mine"].stat().st_size
    assert e["mine"].mtime_ns == f["mine"].stat().st_mtime_ns


def test_describe_reads_headers_and_lists_broken_files_with_reasons(tree: Tree) -> None:
    index = LibraryIndex()
    rows = describe_library(tree.library(), profile(), index=index)
    r = {row.entry.name: row for row in rows}
    assert {(x.entry.source.value, x.entry.name) for x in rows} == EXPECTED
    mine = r["mine"]
    assert mine.architecture == "llama"
    assert mine.file_type == "F32"
    assert mine.context_length == 2048
    assert mine.has_chat_template is True
    assert r["twin"].has_chat_template is False
    # vocab 32, width 64, 4 heads / 2 KV heads of 16, feed-forward 128, one layer:
    # embeddings + output + norms + Q,O + K,V + gate/up/down.
    emb, vocab, kv, ff = 64, 32, 2 * 16, 128
    expected = 2 * vocab * emb + 3 * emb + 2 * emb * emb + 2 * kv * emb + 3 * ff * emb
    assert mine.parameters == expected
    assert mine.fit is Fit.CPU and mine.fit_label == "CPU only"
    assert mine.predicted_ram_bytes and mine.predicted_ram_bytes > mine.entry.size_bytes
    assert mine.predicted_vram_bytes == 0
    assert mine.predicted_tokens_per_s and mine.predicted_tokens_per_s > 0

    broken = {n: x.entry.broken for n, x in r.items() if x.entry.broken}
    assert set(broken) == {"not-a-model", "truncated", "empty", "dangling", "gone:latest"}
    assert broken["not-a-model"] == (
        "not-a-model.gguf: not a GGUF file (magic b'PK\\x03\\x04', expected b'GGUF'); it is "
        "not a model llama.cpp can load, download it again or remove it from the library"
    )
    assert "truncated" in str(broken["truncated"])
    assert "download or convert it again" in str(broken["truncated"])
    assert broken["empty"] == (
        "empty.gguf: empty file (0 bytes); the download or copy did not finish, make it again"
    )
    for name in broken:
        row = r[name]
        assert row.architecture is None and row.parameters is None and row.fit is None
        assert row.fit_label == ""
        assert row.to_dict()["broken"] == row.entry.broken
    # Every file with a header was read once; broken-by-layout entries were not opened.
    assert index.header_reads == len(EXPECTED) - 2


def test_rescan_reads_no_header_and_a_changed_file_is_read_again(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tree.library()
    first = describe_library(library, profile())
    # A new index (as at the next start) answers from the cache file alone.
    import quant.facts.gguf as header_mod

    def no_reads(path: Path) -> Any:
        raise AssertionError(f"header of {path} read again")

    with monkeypatch.context() as m:
        m.setattr(header_mod, "inspect_gguf", no_reads)
        index = LibraryIndex()
        again = describe_library(library, profile(), index=index)
        assert index.header_reads == 0
        assert [x.to_dict() for x in again] == [x.to_dict() for x in first]
        # A fit for another machine is recomputed from the cached facts, without reading.
        small = describe_library(library, profile(available_gib=0.0001), index=index)
        assert index.header_reads == 0
        assert {x.fit for x in small if x.entry.broken is None} == {Fit.TOO_LARGE}

    # Changing one file re-reads that file only.
    tiny_gguf(tree.files["twin"], name="twin-changed-and-longer", seed=8, context=4096)
    index = LibraryIndex()
    rows = {x.entry.name: x for x in describe_library(library, profile(), index=index)}
    assert index.header_reads == 1
    assert rows["twin"].context_length == 4096


def test_a_damaged_index_file_is_ignored_and_rebuilt(tree: Tree) -> None:
    library = tree.library()
    path = app_paths().cache_dir / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"schema": 1, "files": {"/x": {"size": 1')  # cut short
    index = LibraryIndex()
    rows = describe_library(library, profile(), index=index)
    assert index.header_reads == len(EXPECTED) - 2
    assert rows and json.loads(path.read_text())["schema"] == 1
    # A well-formed file of another shape is ignored too.
    path.write_text('["not", "an", "index"]')
    index = LibraryIndex()
    describe_library(library, profile(), index=index)
    assert index.header_reads == len(EXPECTED) - 2
    # A record that cannot be decoded costs a re-read of that file only.
    data = json.loads(path.read_text())
    data["files"][str(tree.files["mine"])]["facts"]["tensors"] = "garbage"
    path.write_text(json.dumps(data))
    index = LibraryIndex()
    rows = describe_library(library, profile(), index=index)
    assert index.header_reads == 1
    assert next(x for x in rows if x.entry.name == "mine").fit is Fit.CPU
    fresh = LibraryIndex()
    describe_library(library, profile(), index=fresh)
    assert fresh.header_reads == 0


def test_copies_merge_after_hashing_and_digests_are_cached(tree: Tree) -> None:
    library = tree.library()
    f = tree.files
    index = LibraryIndex()
    seen: list[Progress] = []
    merged = index.find_duplicates(library.entries(), on_progress=seen.append)
    e = by_name(merged)
    assert "lms-model.Q4_K_M" not in e  # merged into the copy, which has precedence
    copy = e["copy-of-lms"]
    assert set(copy.also_at) == {f["lms"], f["g4a_link"]}
    assert copy.sha256 == sha256_of(f["lms"])
    assert len(merged) == len(EXPECTED) - 1
    # Only the two size-colliding files without a known digest were hashed; the twins
    # (same size, different content) were told apart by sampled blocks.
    assert index.files_hashed == 2
    assert e["twin"].also_at == () and e["twin2"].also_at == ()
    assert e["twin"].sha256 is None
    assert seen[-1].stage == "hash" and seen[-1].done == seen[-1].total == 2
    assert seen[-1].bytes_done == seen[-1].bytes_total == 2 * f["lms"].stat().st_size
    # The digests are cached: the next listing merges the copies without hashing.
    again = LibraryIndex()
    rows = describe_library(library, profile(), index=again)
    assert again.files_hashed == 0
    assert {x.entry.name for x in rows} == set(e)
    assert next(x for x in rows if x.entry.name == "copy-of-lms").sha256 == copy.sha256
    assert again.find_duplicates(library.entries()) == merged
    assert again.files_hashed == 0


def test_hashing_can_be_cancelled(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.core.library_index as index_mod

    monkeypatch.setattr(index_mod, "HASH_CHUNK", 1024)
    token = CancelToken()

    def cancel_midway(p: Progress) -> None:
        if p.bytes_done > 0:
            token.cancel()

    index = LibraryIndex()
    with pytest.raises(Cancelled):
        index.find_duplicates(tree.library().entries(), cancel=token, on_progress=cancel_midway)
    assert index.files_hashed == 0
    with pytest.raises(Cancelled):
        index.describe(tree.library().entries(), profile(), cancel=token)


def test_describe_reports_progress_and_works_without_a_profile(tree: Tree) -> None:
    seen: list[Progress] = []
    rows = describe_library(tree.library(), None, on_progress=seen.append)
    assert all(x.fit is None and x.fit_label == "" for x in rows)
    assert next(x for x in rows if x.entry.name == "mine").architecture == "llama"
    assert seen[-1].stage == "library" and seen[-1].done == seen[-1].total == len(rows)


def test_unreadable_file_is_broken_with_a_next_step(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tree.files["twin2"]
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    rows = {x.entry.name: x for x in describe_library(tree.library(), None)}
    assert rows["twin2"].entry.broken == (
        f"{target}: cannot be read (Permission denied); check the file's permissions"
    )
    assert rows["twin"].entry.broken is None
    # Once the file can be read (same size and time), the next listing reads it.
    monkeypatch.setattr(Path, "open", real_open)
    index = LibraryIndex()
    rows = {x.entry.name: x for x in describe_library(tree.library(), None, index=index)}
    assert rows["twin2"].entry.broken is None and rows["twin2"].architecture == "llama"
    assert index.header_reads == 1


def test_ollama_blob_of_the_wrong_size_is_broken(tree: Tree) -> None:
    blob = tree.files["ollama"]
    blob.write_bytes(blob.read_bytes()[:5000])
    e = by_name(tree.library().entries())["llama3.2:3b"]
    assert e.broken is not None
    assert "5,000 bytes but its manifest says" in e.broken
    assert "ollama pull llama3.2:3b" in e.broken


# --------------------------------------------------------------------------- folders


def test_chosen_folders_are_validated_and_persisted(tmp_path: Path) -> None:
    lib = ModelLibrary(Settings(), external_roots=())
    folder = tmp_path / "models"
    tiny_gguf(folder / "a" / "m.gguf", name="m")
    with pytest.raises(LibraryError, match=r"no such folder; check the path"):
        lib.add_folder(tmp_path / "nope")
    with pytest.raises(LibraryError, match=r"m\.gguf: is a file, not a folder"):
        lib.add_folder(folder / "a" / "m.gguf")
    assert lib.add_folder(folder) == folder
    assert lib.add_folder(str(folder) + "/") == folder  # once only
    fresh = ModelLibrary(Settings(), external_roots=())
    assert fresh.folders() == [folder]
    assert [(e.source, e.name) for e in fresh.entries()] == [(ModelSource.FOLDER, "m")]
    assert ModelSource.FOLDER.label == "Folder"
    assert fresh.remove_folder(folder) is True
    assert fresh.remove_folder(folder) is False
    assert ModelLibrary(Settings(), external_roots=()).entries() == []
    assert (folder / "a" / "m.gguf").exists()


def test_an_unreadable_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    real = os.scandir

    def deny(path: Any) -> Any:
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", deny)
    with pytest.raises(LibraryError, match=r"cannot be read \(Permission denied\); check its"):
        ModelLibrary(Settings(), external_roots=()).add_folder(folder)


def test_forgetting_a_merged_entry_hides_every_path(tree: Tree) -> None:
    lib = tree.library()
    hf = by_name(lib.entries())["org/Tiny-GGUF · tiny.Q8_0"]
    assert lib.forget(hf) is True
    names = {e.name for e in tree.library(Settings()).entries()}
    assert "org/Tiny-GGUF · tiny.Q8_0" not in names
    assert "someone/coder:q4" not in names  # the copy behind it stays hidden too
    assert tree.files["hf_blob"].exists() and tree.files["ollama_copy"].exists()
    assert lib.forget(hf) is False


# --------------------------------------------------------------------------- last used, watching


def test_last_used_is_remembered_bounded_and_shown_on_entries(tree: Tree) -> None:
    lib = tree.library()
    assert lib.last_used(tree.files["mine"]) is None
    lib.mark_used(tree.files["mine"], when=1000.0)
    lib.mark_used(tree.files["g4a_link"], when=2000.0)  # the hardlinked path
    fresh = tree.library(Settings())
    assert fresh.last_used(tree.files["mine"]) == 1000.0
    e = by_name(fresh.entries())
    assert e["mine"].last_used == 1000.0
    assert e["lms-model.Q4_K_M"].last_used == 2000.0
    assert e["twin"].last_used is None
    for i in range(MAX_LAST_USED + 20):
        lib.mark_used(tree.root / f"gone-{i}.gguf", when=3000.0 + i)
    stored = Settings().get("library")["last_used"]
    assert len(stored) == MAX_LAST_USED
    assert str(tree.files["mine"]) not in stored  # the oldest went first
    assert lib.last_used(tree.root / f"gone-{MAX_LAST_USED + 19}.gguf") == 3000.0 + 319


def test_watch_paths_cover_the_folders_where_models_appear(tree: Tree) -> None:
    lib = tree.library()
    (tree.root / "made").mkdir()
    watched = set(lib.watch_paths())
    r = tree.root
    assert {
        tree.folder,
        tree.folder / "sub",
        r / "made",
        tree.hf,
        tree.hf / "models--org--Tiny-GGUF" / "snapshots",
        tree.hf / "models--org--Tiny-GGUF" / "snapshots" / "0123abcd",
        tree.ollama,
        tree.ollama / "manifests",
        tree.ollama / "manifests" / "registry.ollama.ai" / "library",
        tree.ollama / "manifests" / "registry.ollama.ai" / "library" / "llama3.2",
        tree.lms / "pub" / "Repo",
        tree.g4a,
        tree.jan_new / "org",
    } <= watched
    assert all(p.is_dir() for p in watched)
    assert r / "not-installed" not in watched
    assert tree.ollama / "blobs" not in watched  # changes there come with a manifest


# --------------------------------------------------------------------------- default folders


def test_default_roots_on_linux_follow_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux folder layout")
    home = tmp_path / "home"
    (home / ".lmstudio").mkdir(parents=True)
    (home / ".lmstudio" / "settings.json").write_text(
        json.dumps({"downloadsFolder": str(tmp_path / "big-disk" / "lms")})
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    roots = {(r.source, r.path, r.named_by_folder) for r in default_external_roots()}
    hf, lms, oll, jan, g4a = (
        ModelSource.HUGGINGFACE,
        ModelSource.LM_STUDIO,
        ModelSource.OLLAMA,
        ModelSource.JAN,
        ModelSource.GPT4ALL,
    )
    assert roots == {
        (hf, tmp_path / "hf-home" / "hub", False),
        (lms, tmp_path / "big-disk" / "lms", False),
        (lms, home / ".lmstudio" / "models", False),
        (lms, home / ".cache" / "lm-studio" / "models", False),
        (oll, home / ".ollama" / "models", False),
        (oll, Path("/usr/share/ollama/.ollama/models"), False),
        (jan, tmp_path / "xdg-data" / "Jan" / "data" / "llamacpp" / "models", True),
        (jan, tmp_path / "xdg-data" / "Jan" / "data" / "models", False),
        (jan, home / "jan" / "models", False),
        (g4a, tmp_path / "xdg-data" / "nomic.ai" / "GPT4All", False),
        (g4a, home / ".cache" / "gpt4all", False),
    }
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("OLLAMA_MODELS", str(home / ".ollama" / "models"))  # listed once
    roots2 = default_external_roots()
    assert roots2[0] == ExternalRoot(hf, tmp_path / "explicit")
    assert [r.path for r in roots2].count(home / ".ollama" / "models") == 1


def test_default_roots_on_macos_use_application_support(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Mac, Jan and GPT4All live under ~/Library/Application Support."""
    import platformdirs
    from platformdirs.macos import MacOS

    from app.core.library import ModelSource, default_external_roots

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(
        platformdirs,
        "user_data_dir",
        lambda name, appauthor=None, roaming=False: (
            MacOS(name, appauthor, roaming=roaming).user_data_dir
        ),
    )
    roots = {(r.source, r.path) for r in default_external_roots()}
    support = tmp_path / "Library" / "Application Support"
    assert (ModelSource.JAN, support / "Jan" / "data" / "llamacpp" / "models") in roots
    assert (ModelSource.GPT4ALL, support / "nomic.ai" / "GPT4All") in roots
    assert (ModelSource.OLLAMA, tmp_path / ".ollama" / "models") in roots
    assert (ModelSource.LM_STUDIO, tmp_path / ".lmstudio" / "models") in roots
    # The Linux service folder of Ollama is not a Mac location.
    assert not any("/usr/share/ollama" in str(p) for _, p in roots)


def test_a_scan_bound_is_said_in_the_listing_not_dropped_silently(tmp_path: Path) -> None:
    from app.core.library import MAX_SCAN_DEPTH, ModelLibrary
    from app.core.library_listing import list_library
    from app.core.settings import Settings
    from tests.ggufs import write_tiny_gguf

    root = tmp_path / "mine"
    deep = root.joinpath(*[f"d{i}" for i in range(MAX_SCAN_DEPTH + 2)])
    write_tiny_gguf(deep / "deep.gguf")
    write_tiny_gguf(root / "near.gguf")
    library = ModelLibrary(Settings(tmp_path / "settings.json"), external_roots=())
    library.add_folder(root)
    listing = list_library(library, None)
    names = {r.entry.path.name for r in listing.rows}
    assert "near.gguf" in names and "deep.gguf" not in names
    assert any("levels deep" in n and "mine" in n for n in listing.notes)
