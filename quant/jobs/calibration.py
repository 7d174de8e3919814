"""Calibration text for importance matrices and held-out text for evaluation.

Three sources:

* the **default mix** shipped in ``resources/calibration/`` (English prose,
  code, several languages, chat conversations; provenance in its README).
  Every eighth document of each file is held out: the evaluator measures on
  text the importance matrix never saw;
* the user's own **file or folder** of UTF-8 text;
* **self-generated** text: the model samples its own calibration text from
  BOS, which needs no data at all.

Chat conversations are stored as turns and rendered exactly as Quantdesk's chat
renders a conversation for the same model (:func:`quant.prompts.templates.select_template`:
the file's own template in the bounded sandbox, else the family's built-in one),
so the importance matrix sees the prompt shape and control tokens the model
meets in chat; a model no template suits gets a plain transcript. A
:class:`CalibrationSet` records what it is made of (``dataset_names``) so the
choice can be written into the output's metadata, and has a content hash for
caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quant.atomic import atomic_write_text
from quant.errors import QuantError
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel
from quant.prompts.templates import (
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
    Role,
    select_template,
)
from quant.resources import resources_dir

if TYPE_CHECKING:
    from quant.native.llama_session import NativeModel

logger = logging.getLogger(__name__)

MIX_VERSION = 1
# Changes whenever conversations are rendered differently (cached results then expire).
CHAT_RENDERING = "quantdesk-chat-format-1"
DOC_MARKER = "@@@ "
HELD_OUT_EVERY = 8
# A folder of calibration text larger than this is a mistake (a whole corpus).
MAX_USER_BYTES = 64 * 1024 * 1024
_TEXT_SUFFIXES = {
    ".txt",
    ".md",
    ".rst",
    ".text",
    ".py",
    ".c",
    ".h",
    ".cpp",
    ".hpp",
    ".rs",
    ".go",
    ".js",
    ".ts",
    ".java",
    ".kt",
    ".swift",
    ".rb",
    ".php",
    ".sh",
    ".sql",
    ".html",
    ".css",
    ".json",
    ".yaml",
    ".yml",
    ".toml",
    ".tex",
    ".csv",
    ".jsonl",
}


class CalibrationError(QuantError):
    """Calibration text could not be found or read."""


class CalibrationKind(StrEnum):
    DEFAULT = "default"
    FILES = "files"
    SELF = "self"


class Split(StrEnum):
    CALIBRATION = "calibration"
    HELD_OUT = "held-out"


@dataclass(frozen=True)
class Document:
    """Plain text, or a conversation as (role, content) turns."""

    name: str
    text: str = ""
    turns: tuple[tuple[str, str], ...] = ()

    @property
    def is_chat(self) -> bool:
        return bool(self.turns)

    def plain(self) -> str:
        if not self.turns:
            return self.text
        return "\n".join(f"{role.capitalize()}: {content}" for role, content in self.turns)


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    kind: CalibrationKind
    documents: tuple[Document, ...]
    # What is recorded in imatrix.datasets / quantize.imatrix.dataset.
    dataset_names: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_bytes(self) -> int:
        return sum(len(d.plain().encode()) for d in self.documents)

    @property
    def sha256(self) -> str:
        """Content hash: two sets with the same documents share cached results."""
        h = hashlib.sha256()
        if any(d.is_chat for d in self.documents):
            # How conversations become prompt text is part of what the set means.
            h.update(CHAT_RENDERING.encode() + b"\0")
        for d in self.documents:
            h.update(b"T" if d.is_chat else b"P")
            for role, content in d.turns:
                h.update(role.encode() + b"\0" + content.encode() + b"\0")
            h.update(d.text.encode() + b"\1")
        return h.hexdigest()

    def describe(self) -> str:
        return f"{self.name} ({len(self.documents)} documents, {self.n_bytes / 1024:.0f} KiB)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "documents": len(self.documents),
            "bytes": self.n_bytes,
            "sha256": self.sha256,
            "datasets": list(self.dataset_names),
            **({"details": self.details} if self.details else {}),
        }

    def tokenize(self, model: NativeModel) -> np.ndarray:
        """All documents as one token stream for ``model`` (no BOS; chunks add their own)."""
        parts: list[np.ndarray] = []
        template = chat_format(model) if any(d.is_chat for d in self.documents) else None
        for d in self.documents:
            rendered = _render_turns(template, d.turns) if d.is_chat and template else None
            if rendered is not None:
                parts.append(model.tokenize(rendered + "\n", parse_special=True))
            else:
                parts.append(model.tokenize(d.plain() + "\n\n"))
        if not parts:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate(parts).astype(np.int32)

    # -- persistence (self-generated sets are cached) ------------------------------

    def save(self, path: Path) -> None:
        data = {
            "name": self.name,
            "kind": self.kind.value,
            "datasets": list(self.dataset_names),
            "details": self.details,
            "documents": [
                {"name": d.name, "text": d.text, "turns": [list(t) for t in d.turns]}
                for d in self.documents
            ],
        }
        atomic_write_text(path, json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> CalibrationSet:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            docs = tuple(
                Document(
                    d["name"],
                    d.get("text", ""),
                    tuple((str(r), str(c)) for r, c in d.get("turns", [])),
                )
                for d in data["documents"]
            )
            return cls(
                data["name"],
                CalibrationKind(data["kind"]),
                docs,
                tuple(data.get("datasets", ())),
                dict(data.get("details", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"{path}: unreadable calibration cache ({exc}).") from exc


def chat_format(model: NativeModel) -> ChatTemplate | None:
    """The template chat uses for ``model``, without the BOS (each chunk adds its own)."""
    template = select_template(
        model.prompt_metadata(),
        has_token=model.has_token,
        bos_token="",
        eos_token=model.eos_text,
    )
    return None if template.is_raw else template


def _render_turns(template: ChatTemplate, turns: tuple[tuple[str, str], ...]) -> str | None:
    roles = {r.value: r for r in Role}
    if any(role not in roles for role, _ in turns):
        return None
    messages = [ChatMessage(roles[role], content) for role, content in turns]
    try:
        return template.render(messages, add_generation_prompt=False)
    except ChatTemplateError as exc:
        logger.info("a calibration conversation was used as plain text: %s", exc)
        return None


def resource_dir() -> Path:
    """Where the default mix lives (``resources/calibration``)."""
    return resources_dir() / "calibration"


def _split_documents(text: str, source: str) -> list[Document]:
    docs: list[Document] = []
    title = None
    lines: list[str] = []

    def close() -> None:
        body = "\n".join(lines).strip()
        if body:
            docs.append(Document(f"{source}:{title or len(docs)}", body))

    for line in text.splitlines():
        if line.startswith(DOC_MARKER):
            close()
            title = line[len(DOC_MARKER) :].strip()
            lines = []
        else:
            lines.append(line)
    close()
    return docs


def _chat_documents(path: Path) -> list[Document]:
    docs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            turns = tuple((str(m["role"]), str(m["content"])) for m in obj["messages"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(
                f"{path.name}, line {i + 1}: not a chat record ({exc})."
            ) from exc
        docs.append(Document(f"{path.stem}:{obj.get('id', i)}", turns=turns))
    return docs


def _mix_documents(folder: Path) -> list[tuple[str, list[Document]]]:
    if not folder.is_dir():
        raise CalibrationError(
            f"{folder}: the default calibration mix is missing; reinstall Quantdesk or pass "
            "--calibration FILE."
        )
    groups = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".txt":
            groups.append(
                (path.stem, _split_documents(path.read_text(encoding="utf-8"), path.stem))
            )
        elif path.suffix == ".jsonl":
            groups.append((path.stem, _chat_documents(path)))
    if not groups:
        raise CalibrationError(f"{folder}: no calibration files (*.txt, *.jsonl) found.")
    return groups


def default_mix(split: Split = Split.CALIBRATION, folder: Path | None = None) -> CalibrationSet:
    """The shipped mix; ``Split.HELD_OUT`` gives the documents the imatrix never sees."""
    folder = folder or resource_dir()
    docs: list[Document] = []
    for _, group in _mix_documents(folder):
        for i, d in enumerate(group):
            held = i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
            if held == (split is Split.HELD_OUT):
                docs.append(d)
    suffix = "" if split is Split.CALIBRATION else " (held out)"
    name = f"quantdesk-default-mix-v{MIX_VERSION}{suffix}"
    return CalibrationSet(name, CalibrationKind.DEFAULT, tuple(docs), (name,))


def from_path(path: Path | str) -> CalibrationSet:
    """The user's text: one UTF-8 file, or every text file under a folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CalibrationError(f"{path}: no such calibration file or folder; check the path.")
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES and not p.name.startswith(".")
        )
    )
    if not files:
        raise CalibrationError(
            f"{path}: no text files found (looked for {', '.join(sorted(_TEXT_SUFFIXES)[:6])}, …)."
        )
    docs: list[Document] = []
    total = 0
    for f in files:
        total += f.stat().st_size
        if total > MAX_USER_BYTES:
            raise CalibrationError(
                f"{path}: more than {MAX_USER_BYTES // 2**20} MiB of text; a few hundred KB is "
                "plenty for an importance matrix, pick a smaller sample."
            )
        if f.suffix.lower() == ".jsonl" and path.is_dir():
            try:
                docs.extend(_chat_documents(f))
                continue
            except CalibrationError:
                pass  # not chat records: use as plain text
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            if path.is_file():
                raise CalibrationError(f"{f.name}: not UTF-8 text; save it as UTF-8.") from None
            logger.info("skipping non-UTF-8 file %s", f)
            continue
        if text.strip():
            docs.append(Document(f.name, text))
    if not docs:
        raise CalibrationError(f"{path}: the calibration text is empty.")
    return CalibrationSet(path.name, CalibrationKind.FILES, tuple(docs), (str(path),))


def held_out_for(calibration: CalibrationSet) -> CalibrationSet:
    """Evaluation text that goes with ``calibration``: the mix's held-out part by default."""
    return default_mix(Split.HELD_OUT)


def self_generated(
    model_path: Path | str,
    *,
    n_tokens: int = 8192,
    n_parallel: int = 8,
    temperature: float = 1.0,
    top_k: int = 40,
    seed: int = 1234,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> CalibrationSet:
    """Let the model write its own calibration text, sampling from BOS.

    ``n_parallel`` sequences are generated in one batch; each ends at an
    end-of-generation token or when it has its share of ``n_tokens``, and a
    fresh one starts in its place until enough text exists. Seeded, so the
    same model and settings give the same text.
    """
    from quant.native.llama_session import NativeModel

    rng = np.random.default_rng(seed)
    seq_len = max(16, math.ceil(n_tokens / n_parallel))
    # llama.cpp rounds the context up to 256 cells and splits it evenly between sequences.
    per_seq = -(-(seq_len + 1) // 256) * 256
    stage = "calibration"
    eta = EtaEstimator()
    docs: list[Document] = []
    produced = 0
    with NativeModel(
        model_path,
        n_ctx=n_parallel * per_seq,
        n_batch=max(n_parallel, 8),
        n_seq=n_parallel,
        threads=threads,
    ) as m:
        start = m.bos if m.bos >= 0 else 0
        current: list[list[int]] = [[] for _ in range(n_parallel)]
        last = [start] * n_parallel
        pos = [0] * n_parallel
        while produced < n_tokens:
            check_cancel(cancel)
            m.decode_multi([(s, pos[s], [last[s]]) for s in range(n_parallel)])
            logits = m.logits(n_parallel)
            for s in range(n_parallel):
                tok = _sample(logits[s], rng, temperature, top_k)
                pos[s] += 1
                finished = m.is_eog(tok) or pos[s] >= seq_len
                if not m.is_eog(tok):
                    current[s].append(tok)
                    produced += 1
                last[s] = tok
                if finished:
                    text = m.detokenize(current[s]).strip()
                    if text:
                        docs.append(Document(f"self:{len(docs)}", text))
                    current[s] = []
                    m.clear_seq(s)
                    pos[s] = 0
                    last[s] = start
            if on_progress is not None:
                done = min(produced, n_tokens)
                on_progress(
                    Progress(
                        stage,
                        done,
                        n_tokens,
                        f"self-generated {done} tokens",
                        eta_s=eta.eta(done, n_tokens),
                    )
                )
        for s in range(n_parallel):
            text = m.detokenize(current[s]).strip()
            if text:
                docs.append(Document(f"self:{len(docs)}", text))
    name = f"self-generated ({produced} tokens, seed {seed})"
    details = {"tokens": produced, "seed": seed, "temperature": temperature, "top_k": top_k}
    return CalibrationSet(name, CalibrationKind.SELF, tuple(docs), (name,), details)


def _sample(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    k = min(top_k, len(logits))
    top = np.argpartition(logits, -k)[-k:]
    z = logits[top].astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(top[rng.choice(k, p=p)])


def resolve(spec: str | Path | None) -> CalibrationSet | None:
    """``None``/``"default"`` → the default mix; a path → the user's text; ``"self"`` → None.

    Self-generated text needs the model, so callers handle ``"self"`` with
    :func:`self_generated`.
    """
    if spec is None or str(spec) == "default":
        return default_mix()
    if str(spec) == "self":
        return None
    return from_path(spec)
