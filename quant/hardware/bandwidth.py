"""Measured main-memory read bandwidth, cached for 30 days.

Generation speed on a CPU is bounded by how fast weights stream from RAM, and
the datasheet figure of a machine is rarely what it reaches. A short numpy
micro-benchmark measures it: sum a 256 MiB float32 array (larger than any
last-level cache of a desktop CPU) split across the physical cores, best of a
few passes, in a fraction of a second. A machine busy with other work at that
moment reads low; ``use_cache=False`` measures again. The result is cached per CPU and memory
size so the probe stays fast.

Cache location: ``cache_dir`` when given, else ``$QUANTDESK_HOME/cache`` when
``QUANTDESK_HOME`` is set, else ``platformdirs.user_cache_dir("Quantdesk")``.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from quant.atomic import atomic_write_text

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

CACHE_FILE = "memory_bandwidth.json"
CACHE_VALID_S = 30 * 24 * 3600
DEFAULT_SIZE_BYTES = 256 * 1024**2
# Time for the timed passes; setting up the buffer comes on top (about 0.1 s).
DEFAULT_BUDGET_S = 0.2
MAX_THREADS = 16


@dataclass(frozen=True)
class BandwidthResult:
    gbps: float
    measured_at: float
    from_cache: bool
    threads: int


def default_cache_dir() -> Path:
    """Quantdesk's cache folder (``$QUANTDESK_HOME/cache`` when that is set)."""
    home = os.environ.get("QUANTDESK_HOME")
    if home:
        return Path(home) / "cache"
    return Path(platformdirs.user_cache_dir("Quantdesk", appauthor=False))


def cache_key(cpu_brand: str, memory_total_bytes: int) -> str:
    """The cache is per CPU model and memory size: a RAM upgrade invalidates it."""
    return f"{cpu_brand.strip()}|{int(memory_total_bytes)}"


def measure_memory_bandwidth(
    *,
    size_bytes: int = DEFAULT_SIZE_BYTES,
    threads: int | None = None,
    passes: int = 12,
    budget_s: float = DEFAULT_BUDGET_S,
) -> tuple[float, int]:
    """Read ``size_bytes`` of RAM ``passes`` times; return (best GB/s, threads used).

    One untimed pass first starts the threads and fills the TLBs; timed passes
    then stop early once ``budget_s`` is spent (at least two run). numpy releases
    the GIL while summing, so the threads read in parallel: a single core of a
    server CPU reaches a fraction of the machine's bandwidth.
    """
    import numpy as np  # only the benchmark needs it; importing the probe stays cheap

    n_threads = max(1, min(threads or os.cpu_count() or 1, MAX_THREADS))
    # The buffer is unmapped when the last view of it goes (end of this call).
    array = _touched_float32(size_bytes)
    chunks = np.array_split(array, n_threads)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="quantdesk-bw") as pool:
        list(pool.map(np.sum, chunks))
        started = time.perf_counter()
        for i in range(max(2, passes)):
            t0 = time.perf_counter()
            list(pool.map(np.sum, chunks))
            best = min(best, time.perf_counter() - t0)
            if i >= 1 and time.perf_counter() - started > budget_s:
                break
    return round(array.nbytes / best / 1e9, 1), n_threads


def _touched_float32(size_bytes: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A float32 array whose pages are really backed by RAM.

    Untouched pages all map the kernel's one zero page and would read from cache.
    On Linux ``MAP_POPULATE`` backs them at creation, several times faster than
    writing every page; elsewhere the array is filled. The returned array keeps
    its mapping alive.
    """
    import numpy as np

    n = size_bytes // 4
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is not None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate
        try:
            buf = mmap.mmap(-1, n * 4, flags=flags)
        except OSError as exc:
            logger.debug("populated mmap unavailable: %s", exc)
        else:
            return np.frombuffer(buf, dtype=np.float32)
    array = np.empty(n, dtype=np.float32)
    array.fill(1.0)
    return array


def memory_bandwidth(
    cpu_brand: str,
    memory_total_bytes: int,
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    now: float | None = None,
    measure: Callable[[], tuple[float, int]] | None = None,
) -> BandwidthResult:
    """Main-memory bandwidth from the cache when fresh, else measured and cached.

    ``use_cache=False`` measures anyway (and refreshes the cache). ``measure``
    replaces the benchmark (tests); ``now`` the clock.
    """
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    path = folder / CACHE_FILE
    key = cache_key(cpu_brand, memory_total_bytes)
    current = time.time() if now is None else now
    entries = _read_cache(path)
    if use_cache:
        entry = entries.get(key)
        if isinstance(entry, dict):
            cached = _fresh(entry, current)
            if cached is not None:
                return cached
    gbps, used = (measure or (lambda: measure_memory_bandwidth(threads=threads)))()
    entries[key] = {"gbps": gbps, "measured_at": current, "threads": used}
    try:
        atomic_write_text(path, json.dumps({"schema": 1, "entries": entries}, indent=2))
    except OSError as exc:
        logger.warning("could not save the bandwidth measurement to %s: %s", path, exc)
    return BandwidthResult(gbps=gbps, measured_at=current, from_cache=False, threads=used)


def _fresh(entry: dict[str, Any], now: float) -> BandwidthResult | None:
    try:
        gbps = float(entry["gbps"])
        measured_at = float(entry["measured_at"])
        threads = int(entry.get("threads", 1))
    except (KeyError, TypeError, ValueError):
        return None
    age = now - measured_at
    if gbps <= 0 or age < 0 or age > CACHE_VALID_S:
        return None
    return BandwidthResult(gbps=gbps, measured_at=measured_at, from_cache=True, threads=threads)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.info("ignoring unreadable bandwidth cache %s: %s", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return dict(entries) if isinstance(entries, dict) else {}
