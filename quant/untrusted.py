"""One place for values that come from a file or the network and are not to be trusted.

Three kinds of use, each with one helper here:

- **Path components.** A commit id, ETag, revision, repo id or file name that a
  hub (or anyone between the user and it) sends becomes part of a path in the
  Hugging Face cache. Each is checked against the shape the hub really uses
  before it is joined (:func:`hub_commit`, :func:`hub_etag`, :func:`hub_revision`,
  :func:`hub_repo_id`, :func:`repo_file_name`; a file that a model folder's index
  names, :func:`folder_file`), and every final path is checked
  to stay inside its folder once symlinks are resolved (:func:`inside`), before
  anything is created.
- **JSON.** Every JSON document read from a model folder, a cache or the
  network goes through :func:`load_json`: nesting depth, document size and
  number magnitudes are bounded, and ``NaN``/``Infinity`` are refused, so a
  hostile ``config.json`` or safetensors header is one sentence, never a
  ``RecursionError`` or an ``OverflowError`` later.
- **Terminal text.** Metadata strings and file names are printed by the CLI;
  :func:`terminal_text` shows control characters as visible escapes so a file
  cannot retitle, clear or fake lines on the user's terminal, and
  :func:`short_text` keeps a 10,000-character name from filling an error.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from quant.errors import HubError, QuantError


class UntrustedValueError(QuantError):
    """A value from a file or the network does not have the shape it must have."""


class UntrustedHubValueError(UntrustedValueError, HubError):
    """A hub answer carried a commit, ETag, revision or name of the wrong shape."""


class UnsafePathError(UntrustedValueError):
    """A path built from outside values would leave the folder it belongs in."""


# --------------------------------------------------------------------------- text


# C0 and C1 control characters, DEL, and the Unicode format characters that
# reorder or hide text on a terminal (bidi overrides and isolates, zero-width).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def short_text(text: str, limit: int = 160) -> str:
    """``text`` cut in the middle to at most ``limit`` characters (``…`` marks the cut)."""
    if len(text) <= limit:
        return text
    keep = max(limit - 1, 2)
    head = keep - keep // 3
    return text[:head] + "…" + text[len(text) - (keep - head) :]


def terminal_text(value: object, limit: int | None = 400) -> str:
    """``value`` as text safe to print: control and format characters shown as escapes.

    Tabs and newlines are escaped too: one value is one line on the terminal.
    Text longer than ``limit`` is shortened in the middle (``None``: no limit).
    """
    text = _printable(str(value))
    if limit is not None:
        text = short_text(text, limit)
    return _INVISIBLE.sub(_escape, text)


def _printable(text: str) -> str:
    """Lone surrogates (undecodable bytes of a file name) as ``\\xNN`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")
    return text


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def terminal_lines(text: str) -> str:
    """Multi-line text (a chat answer, a help page) with every control character but
    newline and tab shown as an escape."""
    return "\n".join(
        "\t".join(_INVISIBLE.sub(_escape, piece) for piece in line.split("\t"))
        for line in text.split("\n")
    )


# --------------------------------------------------------------------------- hub names


_COMMIT = re.compile(r"[0-9a-f]{40}")
_ETAG = re.compile(r"[0-9A-Za-z_-]{1,128}")
# The hub's repo-name rule: letters, digits, '-', '_', '.', at most 96 characters,
# no '--' or '..', not starting or ending with '-' or '.'.
_REPO_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}")
_REVISION_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
MAX_NAME_BYTES = 255  # one path component, on every common file system
MAX_REPO_PATH = 1024


def hub_commit(value: object, *, what: str = "the hub") -> str:
    """A commit id as a path component: exactly 40 lowercase hex digits."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _COMMIT.fullmatch(text):
        raise UntrustedHubValueError(
            f"{what} sent an invalid commit id ({terminal_text(value, 60)!s}; expected 40 "
            "hex digits), so nothing was written; check HF_ENDPOINT and try again later"
        )
    return text


def hub_etag(value: object, *, what: str = "the hub") -> str:
    """An ETag as a file name in the cache: 1–128 letters, digits, ``-`` or ``_``."""
    text = value.strip() if isinstance(value, str) else ""
    text = text.removeprefix("W/").strip('"')
    if not _ETAG.fullmatch(text):
        raise UntrustedHubValueError(
            f"{what} sent an unusable ETag ({terminal_text(value, 60)!s}; expected up to "
            "128 letters and digits), so nothing was written; try again later"
        )
    return text


def hub_revision(value: object) -> str:
    """A branch, tag or commit as path components: ``refs/pr/1`` is fine, ``../x`` is not."""
    text = value if isinstance(value, str) else ""
    parts = text.split("/")
    if (
        not text
        or len(text) > 256
        or any(not _REVISION_PART.fullmatch(p) or p.endswith(".") for p in parts)
        or ".." in text
    ):
        raise UntrustedHubValueError(
            f"{terminal_text(value, 60)!r} is not a usable revision; give a branch, tag or "
            "commit id such as main or v1.0"
        )
    return text


def hub_repo_id(value: object) -> str:
    """A repo id ``org/name`` by the hub's own naming rule."""
    text = value if isinstance(value, str) else ""
    parts = text.split("/")
    if (
        len(parts) != 2
        or not all(_REPO_PART.fullmatch(p) for p in parts)
        or any(p.endswith((".", "-")) or "--" in p or ".." in p for p in parts)
    ):
        raise UntrustedHubValueError(
            f"{terminal_text(value, 100)!r} is not a hub repo id; expected the form org/name"
        )
    return text


def _relative_name(value: object) -> bool:
    """Whether ``value`` is a relative file path: forward slashes, no ``.``/``..``, sane length."""
    text = value if isinstance(value, str) else ""
    parts = PurePosixPath(text).parts if text else ()
    return (
        bool(text)
        and len(text.encode("utf-8", "surrogatepass")) <= MAX_REPO_PATH
        and not text.startswith("/")
        and "\\" not in text
        and "//" not in text
        and not text.endswith("/")
        and not _INVISIBLE.search(text)
        and all(
            p not in ("", ".", "..") and len(p.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
            for p in parts
        )
    )


def repo_file_name(value: object, *, repo_id: str = "") -> str:
    """A file's path inside a repo: relative, forward slashes, no ``.``/``..``, sane length."""
    text = value if isinstance(value, str) else ""
    if not _relative_name(text):
        where = f"{repo_id}: " if repo_id else ""
        raise UntrustedHubValueError(
            f"{where}{terminal_text(value, 100)!r} is not a file name inside a repo"
        )
    return text


def inside(base: Path, path: Path) -> Path:
    """``path`` when it stays inside ``base`` with symlinks resolved; else raise.

    Checked before anything is created: a folder or link that already exists on the
    way (a planted ``models--x`` symlink) counts as where it points.
    """
    root = Path(os.path.realpath(base))
    real = Path(os.path.realpath(path))
    if real != root and not real.is_relative_to(root):
        raise UnsafePathError(
            f"{terminal_text(path, 200)} would be outside {terminal_text(base, 200)}, so "
            "nothing was written; a value from the hub or a file tried to leave its folder"
        )
    return path


def folder_file(folder: Path, value: object, *, what: str) -> Path:
    """The file ``value`` that ``what`` (a file in ``folder``, an index) names, in ``folder``.

    The name must be relative with no ``..`` and its folder must stay inside
    ``folder`` with symlinks resolved. The file itself may be a link (the Hugging
    Face cache links each snapshot file to its blob, outside the snapshot folder).
    """
    if _relative_name(value):
        assert isinstance(value, str)
        path = folder / value
        try:
            inside(folder, path.parent)
        except UnsafePathError:
            pass
        else:
            return path
    raise UnsafePathError(
        f"{what} names {terminal_text(value, 100)!r}, which is not a file inside "
        f"{terminal_text(folder.name, 100)}, so nothing was read from it; a model's files "
        "must all be in its folder, download the model again"
    )


# --------------------------------------------------------------------------- JSON


MAX_JSON_DEPTH = 64
# Larger than any real tokenizer.json (the biggest are ~40 MB).
MAX_JSON_BYTES = 512 * 1024 * 1024
# Integers with more digits than this are refused (a 2**64 fits in 20).
_MAX_INT_DIGITS = 40


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large a number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"a {len(text)}-digit number is too large")
    return int(text)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed document, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def load_json(
    data: str | bytes,
    *,
    what: str,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BYTES,
) -> Any:
    """Parse untrusted JSON with bounds; raise :class:`UntrustedValueError` naming ``what``.

    Refuses: more than ``max_bytes``, nesting deeper than ``max_depth``, ``NaN``,
    ``Infinity``, numbers that overflow a float, integers of more than 40 digits,
    and text that is not UTF-8.
    """
    if len(data) > max_bytes:
        raise UntrustedValueError(
            f"{what} is {len(data):,} bytes, more than the {max_bytes:,} a JSON file here may be"
        )
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except RecursionError:
        raise UntrustedValueError(
            f"{what} is not usable JSON: it is nested more than {max_depth} levels deep"
        ) from None
    except UnicodeDecodeError as exc:
        raise UntrustedValueError(f"{what} is not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:
        reason = short_text(str(exc), 120)
        raise UntrustedValueError(f"{what} is not valid JSON ({reason})") from None
    if _depth(value, max_depth) > max_depth:
        raise UntrustedValueError(
            f"{what} is not usable JSON: it is nested more than {max_depth} levels deep"
        )
    return value


def read_json_file(path: Path, *, what: str | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """:func:`load_json` on a regular file, refusing FIFOs and devices (which would block).

    ``OSError`` from reading is left to the caller (a missing file is often fine).
    """
    label = what or path.name
    with open(path, "rb", opener=_nonblocking_opener) as fh:
        st = os.fstat(fh.fileno())
        if not _is_regular(st.st_mode):
            raise UntrustedValueError(f"{label} is not a regular file")
        if st.st_size > max_bytes:
            raise UntrustedValueError(
                f"{label} is {st.st_size:,} bytes, more than the {max_bytes:,} a JSON file "
                "here may be"
            )
        data = fh.read(max_bytes + 1)
    return load_json(data, what=label, max_bytes=max_bytes)


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _nonblocking_opener(path: str, flags: int) -> int:
    """Open without blocking on a FIFO; regular files behave as usual."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file; raise otherwise.

    A FIFO, socket or device named like a model file would block a reader forever
    or return endless bytes.
    """
    fh = open(path, "rb", opener=_nonblocking_opener)  # noqa: SIM115 - needs opener
    try:
        if not _is_regular(os.fstat(fh.fileno()).st_mode):
            raise UntrustedValueError(f"{terminal_text(path.name, 120)} is not a regular file")
        # Back to blocking reads for a regular file (O_NONBLOCK has no effect there,
        # but keep the descriptor ordinary for native readers given its number).
        if hasattr(os, "set_blocking"):
            os.set_blocking(fh.fileno(), True)
    except BaseException:
        fh.close()
        raise
    return fh
