"""A malicious hub (or anyone between the user and HF_ENDPOINT) cannot make a download
write outside the Hugging Face cache: every commit id, ETag, revision and file name
it sends is checked before it becomes a path, and nothing outside the cache changes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.downloads import RemoteBlob, download_gguf
from app.core.hub import repo_files
from quant.errors import HubError, QuantError
from quant.untrusted import (
    UntrustedValueError,
    hub_commit,
    hub_etag,
    hub_revision,
    inside,
    repo_file_name,
)
from tests.fakehub import SHA, FakeHub, serve_fake_hub
from tests.test_downloads import gguf_bytes

REPO = "acme/tiny-GGUF"
NAME = "Tiny-Q4_K_M.gguf"
SIZE = 64 * 1024

# Commit ids a hostile mirror sends in X-Repo-Commit. The first ones aim the snapshot
# link at <tmp>/outside/Tiny-Q4_K_M.gguf, where a victim file waits.
HOSTILE_COMMITS = [
    "../../../outside",
    "../../../../" + "outside",
    "/tmp/quantdesk-escape",
    SHA + "/../../../../outside",
    "..",
    ".",
    SHA[:39],
    SHA + "0",
    "g" * 40,
    "x" * 5000,
    "%2e%2e%2f%2e%2e%2foutside",
    "..\\..\\outside",
]
HOSTILE_ETAGS = [
    '"../../../../outside/Tiny-Q4_K_M.gguf"',
    "../../../outside/victim",
    "..",
    ".",
    '"a/b"',
    "a" * 300,
    'W/"../../x"',
    "abc.incomplete/../../..",
    '""',
]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[bool, int, int, str]]:
    """Every path under ``root`` but ``skip``: (is link, size, mtime, link target)."""
    seen: dict[str, tuple[bool, int, int, str]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != skip]
        for name in [*dirs, *files]:
            path = here / name
            st = path.lstat()
            target = str(path.readlink()) if path.is_symlink() else ""
            seen[str(path.relative_to(root))] = (
                path.is_symlink(),
                st.st_size,
                st.st_mtime_ns,
                target,
            )
    return seen


def links_stay_inside(cache: Path) -> None:
    for folder, _dirs, files in os.walk(cache):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                inside(cache, path)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, Path, Path]]:
    cache = tmp_path / "hf-cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / NAME).write_bytes(b"the user's own model")
    with serve_fake_hub(monkeypatch, cache) as fake:
        fake.repos[REPO] = {NAME: gguf_bytes(SIZE)}
        yield fake, cache, tmp_path


@pytest.mark.parametrize("commit", HOSTILE_COMMITS)
def test_a_hostile_commit_id_writes_nothing_outside_the_cache(
    world: tuple[FakeHub, Path, Path], commit: str
) -> None:
    hub, cache, root = world
    before = snapshot(root, cache)
    hub.hostile["commit"] = commit
    with pytest.raises(HubError) as err:
        download_gguf(REPO, NAME)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert snapshot(root, cache) == before
    assert (root / "outside" / NAME).read_bytes() == b"the user's own model"
    links_stay_inside(cache)


@pytest.mark.parametrize("etag", HOSTILE_ETAGS)
def test_a_hostile_etag_writes_nothing_outside_the_cache(
    world: tuple[FakeHub, Path, Path], etag: str
) -> None:
    hub, cache, root = world
    before = snapshot(root, cache)
    hub.hostile["etag"] = etag
    with pytest.raises(HubError) as err:
        download_gguf(REPO, NAME)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert snapshot(root, cache) == before
    links_stay_inside(cache)


def test_a_planted_link_in_the_cache_is_not_followed_out(
    world: tuple[FakeHub, Path, Path],
) -> None:
    """A repo folder that is a symlink to elsewhere (planted earlier) is refused."""
    _hub, cache, root = world
    cache.mkdir(parents=True)
    (cache / "models--acme--tiny-GGUF").symlink_to(root / "outside", target_is_directory=True)
    before = snapshot(root, cache)
    with pytest.raises(QuantError, match="outside"):
        download_gguf(REPO, NAME)
    assert snapshot(root, cache) == before


def test_a_hostile_listing_commit_and_file_names_are_left_out(
    world: tuple[FakeHub, Path, Path],
) -> None:
    hub, _cache, _root = world
    hub.hostile["sha"] = "../../../outside"
    hub.hostile["names"] = {NAME: "../../outside/" + NAME}
    hub.repos[REPO]["good-Q8_0.gguf"] = gguf_bytes(SIZE, seed=1)
    repo = repo_files(REPO)
    assert repo.sha is None
    assert [f.filename for f in repo.files] == ["good-Q8_0.gguf"]


def test_the_same_download_succeeds_from_an_honest_hub(
    world: tuple[FakeHub, Path, Path],
) -> None:
    _hub, cache, _root = world
    entry = download_gguf(REPO, NAME)
    assert Path(entry.path).is_relative_to(cache)


def test_a_saved_queue_entry_with_hostile_values_is_refused() -> None:
    good = RemoteBlob(REPO, NAME, "main", SHA, "a" * 64, 1, "http://x")
    assert RemoteBlob.from_dict(good.to_dict()) == good
    for field, value in [
        ("commit", "../../x"),
        ("etag", "../x"),
        ("revision", "../../x"),
        ("filename", "../x.gguf"),
        ("repo_id", "../x"),
    ]:
        with pytest.raises(ValueError):
            RemoteBlob.from_dict({**good.to_dict(), field: value})


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (hub_commit, [SHA, SHA.upper()], ["", "..", SHA[:-1], SHA + "/..", None, 7]),
        (hub_etag, ['"' + "a" * 64 + '"', 'W/"abc-1"', "0" * 40], ["..", "a/b", "a" * 129]),
        (hub_revision, ["main", "v1.0", "refs/pr/1", SHA], ["..", "../x", "/main", "a//b", ""]),
        (
            repo_file_name,
            ["a.gguf", "q4/a-00001-of-00002.gguf"],
            ["../a", "/a", "a\\b", "a/../b", "a\x1b]0;x\x07", "x" * 300, ""],
        ),
    ],
)
def test_each_network_value_has_one_shape(
    check: object, good: list[str], bad: list[object]
) -> None:
    for value in good:
        check(value)  # type: ignore[operator]
    for value in bad:
        with pytest.raises(UntrustedValueError):
            check(value)  # type: ignore[operator]


def test_pull_from_a_hostile_hub_is_one_sentence_and_exit_2(
    world: tuple[FakeHub, Path, Path],
) -> None:
    hub, cache, root = world
    hub.hostile["commit"] = "../../../outside"
    before = snapshot(root, cache)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(root / "hf-home"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "app", "pull", REPO, "--file", NAME],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "commit id" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(root, cache) == before
