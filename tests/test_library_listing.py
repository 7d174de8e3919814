"""The library listing ``quantdesk models`` and the Models page share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.core.library import ModelLibrary, ModelSource
from app.core.library_index import LibraryIndex
from app.core.library_listing import (
    describe_entries,
    list_library,
    merge_duplicates,
    remember_starter,
)
from app.core.settings import Settings
from quant.errors import Cancelled
from quant.plan.advisor import Fit
from quant.progress import CancelToken, Progress
from tests.ggufs import write_tiny_gguf
from tests.ui.conftest import make_profile


class CopyingAssembler:
    """Stands in for the starter package: "assembles" a tiny GGUF, and counts how often."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.calls = 0

    def __call__(self, output_path: Path, overwrite: bool = False) -> Path:
        self.calls += 1
        if output_path.exists() and not overwrite:
            return output_path  # verified
        shutil.copyfile(self.source, output_path)
        return output_path


@pytest.fixture
def assembler(tmp_path: Path) -> CopyingAssembler:
    return CopyingAssembler(write_tiny_gguf(tmp_path / "pkg" / "starter.gguf", name="starter"))


def _library(tmp_path: Path, assembler: CopyingAssembler) -> ModelLibrary:
    return ModelLibrary(
        Settings(),
        external_roots=(),
        starter_assembler=assembler,
        starter_target=tmp_path / "data" / "starter.gguf",
    )


def test_first_listing_prepares_the_starter_and_describes_every_model(
    tmp_path: Path, assembler: CopyingAssembler
) -> None:
    library = _library(tmp_path, assembler)
    library.add(write_tiny_gguf(tmp_path / "added.gguf", name="added"))
    reports: list[Progress] = []
    listing = list_library(library, make_profile(), on_progress=reports.append)
    assert listing.starter is not None and listing.starter_problem is None
    assert [(e.source, e.name) for e in listing.entries] == [
        (ModelSource.STARTER, "starter"),
        (ModelSource.ADDED, "added"),
    ]
    assert all(r.architecture == "llama" and r.fit is Fit.CPU for r in listing.rows)
    assert "Preparing the starter model (about 250 MB)…" in [p.message for p in reports]
    assert "Looking for models…" in [p.message for p in reports]

    # Listing writes no settings; remembering the starter does, once.
    assert library.cached_starter() is None
    remember_starter(library, listing)
    assert library.cached_starter() == listing.starter
    again = list_library(_library(tmp_path, assembler), None)
    assert assembler.calls == 1  # verified before: not assembled again
    assert [r.fit for r in again.rows] == [None, None]  # no machine, no badges


def test_an_unavailable_starter_does_not_hide_the_rest(tmp_path: Path) -> None:
    def broken(output_path: Path, overwrite: bool = False) -> Path:
        raise ValueError("Assembled file sha256 did not match expected value")

    library = ModelLibrary(
        Settings(), external_roots=(), starter_assembler=broken, starter_target=tmp_path / "s.gguf"
    )
    library.add(write_tiny_gguf(tmp_path / "mine.gguf", name="mine"))
    listing = list_library(library, None)
    assert listing.starter is None
    assert "reinstall" in str(listing.starter_problem)
    assert [e.name for e in listing.entries] == ["mine"]
    remember_starter(library, listing)  # nothing to remember
    assert library.cached_starter() is None


def test_copies_are_merged_once_hashed_and_known_afterwards(
    tmp_path: Path, assembler: CopyingAssembler
) -> None:
    library = _library(tmp_path, assembler)
    original = write_tiny_gguf(tmp_path / "a" / "zebra.gguf", name="zebra")
    (tmp_path / "b").mkdir()
    shutil.copyfile(original, tmp_path / "b" / "zebra.gguf")
    library.add_folder(tmp_path / "a")
    library.add_folder(tmp_path / "b")
    index = LibraryIndex()
    listing = list_library(library, None, index)
    assert [e.name for e in listing.entries].count("zebra") == 2  # not hashed yet

    merged = merge_duplicates(listing.entries, make_profile(), index)
    (zebra,) = [r for r in merged if r.entry.name == "zebra"]
    assert zebra.entry.also_at and zebra.fit is Fit.CPU
    # The digests are remembered: the next listing merges the copies without hashing.
    hashed = index.files_hashed
    assert [e.name for e in list_library(library, None, index).entries].count("zebra") == 1
    assert index.files_hashed == hashed


def test_badges_follow_the_machine(tmp_path: Path, assembler: CopyingAssembler) -> None:
    from tests.ui.conftest import H100

    library = _library(tmp_path, assembler)
    index = LibraryIndex()
    entries = list_library(library, None, index).entries
    (cpu,) = describe_entries(entries, make_profile(), index)
    (gpu,) = describe_entries(entries, make_profile(gpus=(H100,)), index)
    assert (cpu.fit, gpu.fit) == (Fit.CPU, Fit.GPU)


def test_a_cancelled_listing_stops(tmp_path: Path, assembler: CopyingAssembler) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        list_library(_library(tmp_path, assembler), None, cancel=token)
