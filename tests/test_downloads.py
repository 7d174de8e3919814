"""Hub downloads land in the HF cache, report progress, stop on cancel and resume later,
all against a local fake hub (no request leaves the machine)."""

from __future__ import annotations

import hashlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from app.core import downloads
from app.core.downloads import (
    NotEnoughDiskError,
    download_gguf,
    download_hub_file,
)
from app.core.library import ExternalRoot, ModelLibrary, ModelSource
from app.core.settings import Settings
from quant.errors import Cancelled, HubError, InsufficientResourcesError, ModelFormatError
from quant.gguf.split import split_parts
from quant.progress import CancelToken, Progress
from quant.units import human_bytes
from tests.fakehub import SHA, FakeHub, serve_fake_hub, sha256

REPO = "acme/tiny-GGUF"
NAME = "Tiny-Q4_K_M.gguf"
SIZE = 2 * 1024 * 1024 + 12345


def gguf_bytes(size: int, seed: int = 0) -> bytes:
    """A GGUF fixed header (version 3, no tensors) followed by random bytes."""
    head = struct.pack("<4sIQQ", b"GGUF", 3, 0, 0)
    return head + os_random(size - len(head), seed)


def os_random(n: int, seed: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(f"seed-{seed}".encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, cache) as fake:
        fake.repos[REPO] = {NAME: gguf_bytes(SIZE), "README.md": b"# tiny"}
        yield fake


def repo_dir(cache: Path) -> Path:
    return cache / "models--acme--tiny-GGUF"


def partials(cache: Path) -> list[Path]:
    return list(repo_dir(cache).glob("blobs/*.incomplete"))


def slow(hub: FakeHub) -> None:
    """About 6 MiB/s: a few progress reports and time to cancel, in well under a second."""
    hub.throttle(64 * 1024, 0.01)


def test_a_download_lands_in_the_hf_cache_with_progress(hub: FakeHub, cache: Path) -> None:
    slow(hub)
    seen: list[Progress] = []
    path = download_hub_file(REPO, NAME, on_progress=seen.append)
    data = hub.repos[REPO][NAME]
    # huggingface_hub's layout: snapshot link -> blob named by the ETag (the SHA-256).
    assert path == repo_dir(cache) / "snapshots" / SHA / NAME
    assert path.is_symlink() and path.resolve() == repo_dir(cache) / "blobs" / sha256(data)
    assert path.read_bytes() == data
    assert (repo_dir(cache) / "refs" / "main").read_text() == SHA
    assert partials(cache) == []
    # Other huggingface_hub-based tools find it without a network request.
    found = huggingface_hub.try_to_load_from_cache(REPO, NAME, cache_dir=cache)
    assert found == str(path)
    # Progress: bytes only ever grow, end at the size, and say the rate and time left.
    byte_reports = [p for p in seen if p.bytes_total]
    done = [p.bytes_done for p in byte_reports]
    assert done == sorted(done) and done[-1] == SIZE
    assert all(p.stage == "download" and p.total == SIZE for p in byte_reports)
    middle = [p for p in byte_reports if 0 < p.bytes_done < SIZE]
    assert middle, "no report while the bytes were arriving"
    assert any("/s" in p.message and "left" in p.message for p in middle)
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in middle)
    assert seen[-1].message == f"Downloaded {NAME} (2.0 MiB)"
    # A second call finds the file: one HEAD request, no bytes fetched again; asked
    # for that commit, it does not even ask the hub.
    gets = len(hub.downloads(NAME))
    assert download_hub_file(REPO, NAME) == path
    assert len(hub.downloads(NAME)) == gets
    asked = len(hub.requests)
    assert download_hub_file(REPO, NAME, revision=SHA) == path
    assert len(hub.requests) == asked


def test_cancel_keeps_a_resumable_part_and_the_next_call_finishes(
    hub: FakeHub, cache: Path, quantdesk_home: Path
) -> None:
    slow(hub)
    token = CancelToken()

    def cancel_once_bytes_arrive(p: Progress) -> None:
        if 0 < p.bytes_done < SIZE:
            token.cancel()

    with pytest.raises(Cancelled):
        download_hub_file(REPO, NAME, on_progress=cancel_once_bytes_arrive, cancel=token)
    (part,) = partials(cache)
    kept = part.stat().st_size
    assert 0 < kept < SIZE
    # Nothing that looks complete: no snapshot file, and the library lists nothing.
    assert not (repo_dir(cache) / "snapshots" / SHA / NAME).exists()
    library = ModelLibrary(
        Settings(), external_roots=[ExternalRoot(ModelSource.HUGGINGFACE, cache)]
    )
    assert library.entries() == []

    hub.throttle(1024 * 1024, 0.0)
    seen: list[Progress] = []
    path = download_hub_file(REPO, NAME, on_progress=seen.append)
    assert hub.downloads(NAME)[-1][2] == f"bytes={kept}-"  # only the missing bytes
    assert sha256(path.read_bytes()) == sha256(hub.repos[REPO][NAME])
    assert partials(cache) == []
    done = [p.bytes_done for p in seen if p.bytes_total]
    assert done == sorted(done) and done[-1] == SIZE
    checking = f"Checking the {human_bytes(kept)} downloaded earlier"
    assert any(p.message.startswith(checking) for p in seen)
    assert [e.path for e in library.entries()] == [path]


def test_a_dropped_connection_fails_and_a_later_call_resumes(hub: FakeHub, cache: Path) -> None:
    half = SIZE // 2
    hub.drop_at = half
    with pytest.raises(
        HubError, match=r"stopped at 1\.0 MiB of 2\.0 MiB .* download again to resume"
    ):
        download_hub_file(REPO, NAME)
    (part,) = partials(cache)
    assert part.stat().st_size == half
    # It tried to resume on the spot once, and gave up when that attempt got nothing.
    assert [r[2] for r in hub.downloads(NAME)] == [None, f"bytes={half}-"]

    hub.drop_at = None
    path = download_hub_file(REPO, NAME)
    assert hub.downloads(NAME)[-1][2] == f"bytes={half}-"
    assert sha256(path.read_bytes()) == sha256(hub.repos[REPO][NAME])
    assert partials(cache) == []


def test_a_connection_that_drops_once_is_resumed_within_the_call(hub: FakeHub) -> None:
    hub.drop_at, hub.drop_times = 700_000, 1
    path = download_hub_file(REPO, NAME)
    assert [r[2] for r in hub.downloads(NAME)] == [None, "bytes=700000-"]
    assert path.read_bytes() == hub.repos[REPO][NAME]


def test_progress_never_falls_back_to_zero_when_a_dropped_connection_resumes(
    hub: FakeHub,
) -> None:
    """A stall or a drop mid-file: what the user sees keeps the bytes already on disk."""
    hub.drop_at, hub.drop_times = 700_000, 1
    seen: list[Progress] = []
    download_hub_file(REPO, NAME, on_progress=seen.append)
    done = [p.bytes_done for p in seen if p.bytes_total]
    assert done and done[-1] == SIZE
    assert done == sorted(done)  # never backwards, so never "0 B" after the first bytes
    assert all("0 B of" not in p.message for p in seen if p.bytes_done)


def test_a_damaged_partial_is_caught_and_replaced(hub: FakeHub, cache: Path) -> None:
    hub.drop_at = SIZE // 3
    with pytest.raises(HubError):
        download_hub_file(REPO, NAME)
    (part,) = partials(cache)
    with part.open("r+b") as fh:  # a bit flipped on disk while the download was paused
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    hub.drop_at = None
    with pytest.raises(HubError, match=r"arrived damaged .* download it again"):
        download_hub_file(REPO, NAME)
    assert partials(cache) == []
    assert not (repo_dir(cache) / "snapshots" / SHA / NAME).exists()
    path = download_hub_file(REPO, NAME)
    assert path.read_bytes() == hub.repos[REPO][NAME]


def test_offline_mode_asks_nothing(
    hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=f"{REPO}: cannot download {NAME} in offline mode"):
        download_hub_file(REPO, NAME)
    assert hub.requests == []
    # A file already downloaded is still there for the asking.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    path = download_hub_file(REPO, NAME)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    asked = len(hub.requests)
    assert download_hub_file(REPO, NAME) == path
    assert len(hub.requests) == asked


def test_too_little_disk_space_stops_before_any_byte(
    hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downloads, "free_disk_bytes", lambda _p: 1_000_000)
    with pytest.raises(InsufficientResourcesError) as info:
        download_hub_file(REPO, NAME)
    err = info.value
    assert isinstance(err, NotEnoughDiskError)
    assert (err.needed_bytes, err.available_bytes) == (SIZE, 1_000_000)
    assert str(err).startswith(f"{NAME} needs 2.0 MiB ({SIZE:,} bytes) more")
    assert "HF_HUB_CACHE" in str(err)
    assert hub.downloads(NAME) == [] and partials(cache) == []


def test_unknown_files_and_an_unreachable_hub(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HubError, match=f"{REPO}: nope.gguf is not in the repo on the hub"):
        download_hub_file(REPO, "nope.gguf")
    with pytest.raises(HubError, match="acme/missing: no such model on the Hugging Face hub"):
        download_hub_file("acme/missing", NAME)
    with pytest.raises(HubError, match="not a file name inside a repo"):
        download_hub_file(REPO, "../escape.gguf")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", dead)
    template = dead + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    with pytest.raises(HubError, match=f"{REPO}: cannot reach the Hugging Face hub"):
        download_hub_file(REPO, NAME)


def test_a_split_gguf_comes_with_all_its_parts(hub: FakeHub, cache: Path) -> None:
    names = ["big/Big-Q8_0-00001-of-00002.gguf", "big/Big-Q8_0-00002-of-00002.gguf"]
    assert split_parts(names[1]) == names and split_parts(NAME) == [NAME]
    hub.repos["acme/big"] = {names[0]: gguf_bytes(300_000, 1), names[1]: gguf_bytes(200_000, 2)}
    seen: list[Progress] = []
    entry = download_gguf("acme/big", names[1], on_progress=seen.append)
    snapshot = cache / "models--acme--big" / "snapshots" / SHA
    assert entry.path == snapshot / names[0]
    assert entry.name == "Big-Q8_0-00001-of-00002" and entry.size_bytes == 300_000
    assert (snapshot / names[1]).read_bytes() == hub.repos["acme/big"][names[1]]
    assert any(p.message.startswith("Part 2 of 2: ") for p in seen)


# --------------------------------------------------------------------------- split models


def big_split(hub: FakeHub) -> list[str]:
    names = [f"Big-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    hub.repos["acme/big"] = {n: gguf_bytes(400_000 + 1000 * i, i) for i, n in enumerate(names)}
    return names


def test_a_split_model_reports_progress_over_all_its_parts(hub: FakeHub) -> None:
    names = big_split(hub)
    total = sum(len(d) for d in hub.repos["acme/big"].values())
    hub.throttle(64 * 1024, 0.002)
    seen: list[Progress] = []
    told: list[list[str]] = []
    download_gguf(
        "acme/big",
        names[0],
        on_progress=seen.append,
        on_remotes=lambda rs: told.append([r.filename for r in rs]),
    )
    assert told == [names]  # every part was looked up before the first byte
    heads = [i for i, r in enumerate(hub.requests) if r[0] == "HEAD"]
    gets = [i for i, r in enumerate(hub.requests) if r[0] == "GET"]
    assert len(heads) == 3 and max(heads) < min(gets)
    counted = [p for p in seen if p.bytes_total == total]
    done = [p.bytes_done for p in counted]
    assert done == sorted(done) and done[-1] == total
    assert any(p.message.startswith("Part 3 of 3: ") for p in counted)
    assert all(p.total == total for p in counted)


def test_a_split_model_with_a_missing_part_stops_before_any_byte(hub: FakeHub) -> None:
    names = big_split(hub)
    del hub.repos["acme/big"][names[2]]
    with pytest.raises(
        HubError,
        match=f"acme/big: {names[2]} is not in the repo on the hub; it is part 3 of 3 of a "
        "split model, so the model cannot be downloaded whole",
    ):
        download_gguf("acme/big", names[1])
    assert not hub.downloads(".gguf")


def test_a_split_model_needs_room_for_every_part(
    hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = big_split(hub)
    total = sum(len(d) for d in hub.repos["acme/big"].values())
    # Room for each part, not for all three.
    monkeypatch.setattr(downloads, "free_disk_bytes", lambda _p: 500_000)
    with pytest.raises(NotEnoughDiskError, match=r"the 3 parts of Big-Q8_0-00001-of-00003.gguf"):
        download_gguf("acme/big", names[0])
    assert not hub.downloads(".gguf")
    monkeypatch.setattr(downloads, "free_disk_bytes", lambda _p: total)
    assert download_gguf("acme/big", names[0]).path.name == names[0]


def test_a_part_that_is_not_gguf_is_refused(hub: FakeHub) -> None:
    names = big_split(hub)
    hub.repos["acme/big"][names[1]] = os_random(300_000, 7)
    with pytest.raises(ModelFormatError, match=f"{names[1]}: not a GGUF file"):
        download_gguf("acme/big", names[0])


# --------------------------------------------------------------------------- checksums


def test_bytes_damaged_in_transit_are_rejected_and_removed(hub: FakeHub, cache: Path) -> None:
    hub.corrupt_at[NAME] = SIZE // 2  # the server sends one wrong byte, with the right ETag
    with pytest.raises(
        HubError,
        match=rf"{REPO}: {NAME} arrived damaged \(its SHA-256 does not match the hub's\), so it "
        "was deleted; download it again",
    ):
        download_gguf(REPO, NAME)
    assert partials(cache) == []
    assert not (repo_dir(cache) / "snapshots" / SHA / NAME).exists()
    assert not (repo_dir(cache) / "blobs" / sha256(hub.repos[REPO][NAME])).exists()
    hub.corrupt_at.clear()
    entry = download_gguf(REPO, NAME)
    assert sha256(entry.path.read_bytes()) == sha256(hub.repos[REPO][NAME])
    assert entry.source is ModelSource.HUGGINGFACE
