"""The download queue: one worker, pause and resume (also across a restart), checksums,
removal, all against the local fake hub."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.download_queue import (
    DownloadItem,
    DownloadQueue,
    DownloadState,
    QueueError,
    default_queue_file,
    item_id,
)
from app.core.paths import app_paths
from quant.progress import CancelToken
from quant.units import human_bytes
from tests.fakehub import SHA, FakeHub, serve_fake_hub, sha256
from tests.test_downloads import gguf_bytes

REPO = "acme/tiny-GGUF"
NAME = "Tiny-Q4_K_M.gguf"
SIZE = 2 * 1024 * 1024 + 12345


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, cache) as fake:
        fake.repos[REPO] = {NAME: gguf_bytes(SIZE), "README.md": b"# tiny"}
        yield fake


@pytest.fixture
def queue_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "downloads.json"


def partials(cache: Path) -> list[Path]:
    return list(cache.glob("models--*/blobs/*.incomplete"))


def run_in_worker(
    queue: DownloadQueue, seen: list[DownloadItem], cancel: CancelToken | None = None
) -> tuple[threading.Thread, list[DownloadItem | None]]:
    """``run_next`` on a worker thread, as the GUI runs it."""
    result: list[DownloadItem | None] = []
    thread = threading.Thread(
        target=lambda: result.append(queue.run_next(seen.append, cancel)), daemon=True
    )
    thread.start()
    return thread, result


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting")


def test_a_queued_download_runs_and_is_remembered(hub: FakeHub, queue_file: Path) -> None:
    queue = DownloadQueue(queue_file)
    item = queue.add(REPO, NAME, size_bytes=SIZE)
    assert item.state is DownloadState.QUEUED and item.bytes_total == SIZE
    assert queue.add(REPO, NAME) == item  # asking twice queues it once
    assert [i.id for i in DownloadQueue(queue_file).items()] == [item.id]  # on disk at once
    assert queue.next_pending() == item

    seen: list[DownloadItem] = []
    done = queue.run_next(seen.append)
    assert done is not None and done.state is DownloadState.DONE
    expected = queue_file.parent.parent / "hf-cache" / "models--acme--tiny-GGUF"
    assert done.path == str(expected / "snapshots" / SHA / NAME)
    assert (done.bytes_done, done.bytes_total, done.error) == (SIZE, SIZE, None)
    assert Path(done.path).read_bytes() == hub.repos[REPO][NAME]
    states = [s.state for s in seen]
    assert states[0] is DownloadState.RUNNING and states[-1] is DownloadState.DONE
    assert queue.run_next() is None and queue.next_pending() is None
    again = DownloadQueue(queue_file).get(item.id)
    assert again is not None and again.state is DownloadState.DONE and again.path == done.path
    saved = json.loads(queue_file.read_text())
    assert saved["version"] == 1 and saved["items"][0]["state"] == "done"
    assert queue.clear_finished() == 1 and queue.items() == []


def test_pause_keeps_the_bytes_and_resume_continues_after_a_restart(
    hub: FakeHub, cache: Path, queue_file: Path
) -> None:
    hub.throttle(32 * 1024, 0.01)
    queue = DownloadQueue(queue_file)
    item = queue.add(REPO, NAME)
    seen: list[DownloadItem] = []
    thread, result = run_in_worker(queue, seen)
    wait_for(lambda: any(s.bytes_done > 0 for s in seen))
    queue.pause(item.id)
    thread.join(10)
    (paused,) = result
    assert paused is not None and paused.state is DownloadState.PAUSED
    (part,) = partials(cache)
    kept = part.stat().st_size
    assert 0 < kept < SIZE and paused.bytes_done == kept
    assert paused.message == f"Paused at {human_bytes(kept)} of {human_bytes(SIZE)}"
    assert queue.next_pending() is None  # a paused item waits for the user

    # A restart: a new queue object on the same file.
    hub.throttle(1024 * 1024, 0.0)
    later = DownloadQueue(queue_file)
    restored = later.get(item.id)
    assert restored is not None and restored.state is DownloadState.PAUSED
    assert (restored.bytes_done, restored.bytes_total) == (kept, SIZE)
    assert later.resume(item.id).state is DownloadState.QUEUED
    done = later.run_next()
    assert done is not None and done.state is DownloadState.DONE
    assert hub.downloads(NAME)[-1][2] == f"bytes={kept}-"  # only the missing bytes
    assert sha256(Path(done.path or "").read_bytes()) == sha256(hub.repos[REPO][NAME])


def test_a_download_running_when_the_app_stopped_is_shown_paused(
    hub: FakeHub, cache: Path, queue_file: Path
) -> None:
    hub.throttle(32 * 1024, 0.01)
    queue = DownloadQueue(queue_file)
    item = queue.add(REPO, NAME)
    closing = CancelToken()
    seen: list[DownloadItem] = []
    thread, result = run_in_worker(queue, seen, closing)
    wait_for(lambda: any(s.bytes_done > 100_000 for s in seen))
    # What the file says while the transfer runs, as a crash would leave it.
    running_snapshot = queue_file.read_text()
    assert json.loads(running_snapshot)["items"][0]["state"] == "running"
    closing.cancel()  # the app closes: the worker stops, the item is paused
    thread.join(10)
    assert result[0] is not None and result[0].state is DownloadState.PAUSED

    queue_file.write_text(running_snapshot)  # the process died instead
    (part,) = partials(cache)
    restored = DownloadQueue(queue_file).get(item.id)
    assert restored is not None and restored.state is DownloadState.PAUSED
    assert restored.bytes_done == part.stat().st_size > 0


def test_a_corrupted_download_fails_with_its_sentence_and_leaves_no_bytes(
    hub: FakeHub, cache: Path, queue_file: Path
) -> None:
    hub.corrupt_at[NAME] = 4096
    queue = DownloadQueue(queue_file)
    item = queue.add(REPO, NAME)
    failed = queue.run_next()
    assert failed is not None and failed.state is DownloadState.FAILED
    assert failed.error == (
        f"{REPO}: {NAME} arrived damaged (its SHA-256 does not match the hub's), so it was "
        "deleted; download it again"
    )
    assert partials(cache) == [] and failed.bytes_done == 0
    hub.corrupt_at.clear()
    assert queue.resume(item.id).state is DownloadState.QUEUED
    done = queue.run_next()
    assert done is not None and done.state is DownloadState.DONE and done.error is None


def test_failures_are_sentences(hub: FakeHub, queue_file: Path) -> None:
    queue = DownloadQueue(queue_file)
    missing = queue.add(REPO, "nope.gguf")
    gone = queue.add("acme/gone", NAME)
    hub.info["acme/gated"] = {"gated": "manual"}
    hub.repos["acme/gated"] = {NAME: gguf_bytes(1000)}
    gated = queue.add("acme/gated", NAME)
    for _ in range(3):
        queue.run_next()
    errors = {i.id: i.error for i in queue.items()}
    assert errors[missing.id] == (
        f"{REPO}: nope.gguf is not in the repo on the hub; plan again to see the files it has now"
    )
    assert (errors[gone.id] or "").startswith("acme/gone: no such model on the Hugging Face hub")
    assert (errors[gated.id] or "").startswith("acme/gated is a gated model: request access")
    assert all(i.state is DownloadState.FAILED for i in queue.items())


def test_remove_stops_and_deletes_partial_bytes_but_never_a_finished_file(
    hub: FakeHub, cache: Path, queue_file: Path
) -> None:
    hub.repos[REPO]["Tiny-Q8_0.gguf"] = gguf_bytes(SIZE, 3)
    queue = DownloadQueue(queue_file)
    q4 = queue.add(REPO, NAME)
    q8 = queue.add(REPO, "Tiny-Q8_0.gguf")

    hub.throttle(32 * 1024, 0.01)
    seen: list[DownloadItem] = []
    thread, result = run_in_worker(queue, seen)
    wait_for(lambda: any(s.bytes_done > 0 for s in seen))
    assert queue.remove(q4.id) is True
    thread.join(10)
    assert partials(cache) == [] and queue.get(q4.id) is None
    assert result[0] is not None and result[0].id == q4.id

    hub.throttle(1024 * 1024, 0.0)
    done = queue.run_next()
    assert done is not None and done.id == q8.id and done.state is DownloadState.DONE
    assert queue.remove(q8.id) is True
    assert Path(done.path or "").is_file()  # the file stays in the cache and the library
    assert queue.remove(q8.id) is False
    with pytest.raises(QueueError, match="not in the download queue"):
        queue.pause(q8.id)


def test_a_split_model_is_one_item(hub: FakeHub, queue_file: Path) -> None:
    names = [f"Big-Q8_0-{i:05d}-of-00002.gguf" for i in (1, 2)]
    hub.repos["acme/big"] = {names[0]: gguf_bytes(300_000, 1), names[1]: gguf_bytes(200_000, 2)}
    queue = DownloadQueue(queue_file)
    item = queue.add("acme/big", names[1])
    assert item.filename == names[0] and item.id == item_id("acme/big", names[0])
    assert queue.add("acme/big", names[0]) == item
    done = queue.run_next()
    assert done is not None and done.state is DownloadState.DONE
    assert (done.bytes_done, done.bytes_total) == (500_000, 500_000)
    assert [r.filename for r in done.remotes] == names


def test_pause_and_resume_of_waiting_items(hub: FakeHub, queue_file: Path) -> None:
    queue = DownloadQueue(queue_file)
    first = queue.add(REPO, NAME)
    second = queue.add(REPO, "README-Q8_0.gguf")
    assert queue.pause(first.id).state is DownloadState.PAUSED
    assert queue.next_pending() == queue.get(second.id)
    assert queue.resume(first.id).state is DownloadState.QUEUED
    assert queue.next_pending() == queue.get(first.id)  # the oldest request first
    assert queue.resume(first.id).state is DownloadState.QUEUED  # no change when not paused
    with pytest.raises(QueueError, match="expected a repo id org/name"):
        queue.add("not-a-repo", NAME)


def test_a_damaged_queue_file_starts_empty_and_is_kept(queue_file: Path) -> None:
    queue_file.parent.mkdir(parents=True)
    queue_file.write_text("{not json")
    queue = DownloadQueue(queue_file)
    assert queue.items() == []
    assert queue_file.with_name("downloads.json.damaged").read_text() == "{not json"


def test_the_default_queue_file_is_in_the_data_folder() -> None:
    assert default_queue_file() == app_paths().data_dir / "downloads.json"


def test_the_worker_waits_for_work_without_polling(hub: FakeHub, queue_file: Path) -> None:
    queue = DownloadQueue(queue_file)
    assert queue.wait_for_work(0.05) is False
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(queue.wait_for_work(10.0)))
    waiter.start()
    time.sleep(0.05)
    queue.add(REPO, NAME)
    waiter.join(5)
    assert woke == [True]
    queue.pause(item_id(REPO, NAME))
    waiter = threading.Thread(target=lambda: woke.append(queue.wait_for_work(10.0)))
    waiter.start()
    time.sleep(0.05)
    queue.wake()  # the app is closing
    waiter.join(5)
    assert woke == [True, False]
    queue.resume(item_id(REPO, NAME))
    assert queue.wait_for_work(0) is True
