"""Measure what quantization cost: perplexity, KL divergence and top-token agreement.

The reference (full-precision) model is run once over the evaluation text and
its next-token distributions are stored for every scored position: the whole
vocabulary's log-probabilities as float16, with the ``top_k`` most likely
tokens also kept exactly (float32), since they carry most of the KL
divergence. Storing only the top tokens is not enough: on Gemma 3's
262k-token vocabulary the top 64 tokens miss about 9% of the probability mass
and a top-64 KL divergence came out 24% low. The number of stored positions is
bounded by a byte budget (``max_bytes``), so the cache stays a few hundred MB
even for large vocabularies. Each quantized model is then compared with it:

* **perplexity** of the quantized model on the text, next to the reference's;
* **KL divergence** KL(reference ‖ quantized) per token, mean, median and
  99th percentile;
* **same top token**: how often both models rank the same token first.

Scoring follows llama.cpp's perplexity tool: the text is cut into chunks of
``chunk_size`` tokens (BOS first, KV cache cleared per chunk) and only the
second half of each chunk is scored, so every scored token has context.

Reference data is cached on disk keyed by a fingerprint of the model file, the
text's hash and the settings, so evaluating several quantized files, or
rerunning a job, runs the reference model once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from quant.errors import QuantError
from quant.jobs.calibration import CalibrationSet
from quant.progress import CancelToken, EtaEstimator, Progress, ProgressCallback, check_cancel

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 512
DEFAULT_MAX_CHUNKS = 16
DEFAULT_TOP_K = 64
# Disk budget for the reference's full log-probabilities (float16 per vocab entry).
DEFAULT_MAX_BYTES = 512 * 2**20
REFERENCE_VERSION = 2
_ROW_BLOCK = 32


class EvaluationError(QuantError):
    """An evaluation could not be run or its inputs do not match."""


def model_fingerprint(path: Path | str) -> str:
    """A quick identity for a model file: size plus hashes of its header and 16 samples.

    Hashing all of a 15 GB model would take a minute; two different model
    files differing only outside every sampled block is not a practical risk
    for a cache key.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    block = 1 << 20
    with path.open("rb") as fh:
        h.update(fh.read(4 * block))
        for i in range(16):
            fh.seek(max(0, (size - block) * i // 15))
            h.update(fh.read(block))
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class ReferenceLogits:
    """What the reference model predicted at every scored position."""

    tokens: np.ndarray  # (n_chunks, chunk_size) int32, first token of each chunk is BOS
    first: int  # first scored position in a chunk (its logits predict token first + 1)
    top_ids: np.ndarray  # (n_scored, k) int32, most likely first
    top_logp: np.ndarray  # (n_scored, k) float32
    target_logp: np.ndarray  # (n_scored,) float32: log p(actual next token)
    full_logp: np.ndarray  # (n_scored, n_vocab) float16, usually a read-only memory map
    model_name: str
    model_fingerprint: str
    text_name: str
    text_sha256: str
    seconds: float = 0.0

    @property
    def chunk_size(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_scored(self) -> int:
        return len(self.target_logp)

    @property
    def perplexity(self) -> float:
        return float(np.exp(-np.mean(self.target_logp.astype(np.float64))))

    def row_logp(self, r0: int, r1: int) -> np.ndarray:
        """Reference log-probs of rows r0..r1 over the whole vocabulary (float64)."""
        lp = np.asarray(self.full_logp[r0:r1], dtype=np.float64)
        np.put_along_axis(
            lp,
            self.top_ids[r0:r1].astype(np.int64),
            self.top_logp[r0:r1].astype(np.float64),
            axis=1,
        )
        return lp

    def save(self, folder: Path) -> None:
        """Write into ``folder`` (made whole or not at all)."""
        _write_reference_dir(folder, self, full=None)

    @classmethod
    def load(cls, folder: Path) -> ReferenceLogits:
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("version") != REFERENCE_VERSION:
                raise EvaluationError(f"{folder.name}: reference cache of another version.")
            arrays = {
                n: np.load(
                    folder / f"{n}.npy",
                    mmap_mode="r" if n == "full_logp" else None,
                    allow_pickle=False,
                )
                for n in ("tokens", "top_ids", "top_logp", "target_logp", "full_logp")
            }
            return cls(
                arrays["tokens"],
                int(meta["first"]),
                arrays["top_ids"],
                arrays["top_logp"],
                arrays["target_logp"],
                arrays["full_logp"],
                meta["model_name"],
                meta["model_fingerprint"],
                meta["text_name"],
                meta["text_sha256"],
                float(meta.get("seconds", 0.0)),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise EvaluationError(f"{folder.name}: unreadable reference cache ({exc}).") from exc


def partial_path(folder: Path) -> Path:
    """Where a reference cache entry is assembled before it is renamed into place."""
    return folder.with_name(f".{folder.name}.partial")


def _write_reference_dir(folder: Path, ref: ReferenceLogits, full: Path | None) -> None:
    tmp = partial_path(folder)
    if full is None or full.parent != tmp:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    try:
        for name in ("tokens", "top_ids", "top_logp", "target_logp"):
            np.save(tmp / f"{name}.npy", getattr(ref, name), allow_pickle=False)
        if full is not None:
            if full != tmp / "full_logp.npy":
                full.replace(tmp / "full_logp.npy")
        else:
            np.save(tmp / "full_logp.npy", np.asarray(ref.full_logp), allow_pickle=False)
        meta = {
            "version": REFERENCE_VERSION,
            "first": ref.first,
            "model_name": ref.model_name,
            "model_fingerprint": ref.model_fingerprint,
            "text_name": ref.text_name,
            "text_sha256": ref.text_sha256,
            "seconds": ref.seconds,
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class EvalResult:
    model_name: str
    perplexity: float
    reference_perplexity: float
    kld_mean: float
    kld_p99: float
    kld_median: float
    top1_agreement: float  # 0..1
    n_tokens: int
    seconds: float

    @property
    def delta_perplexity(self) -> float:
        return self.perplexity - self.reference_perplexity

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "perplexity": round(self.perplexity, 4),
            "reference_perplexity": round(self.reference_perplexity, 4),
            "delta_perplexity": round(self.delta_perplexity, 4),
            "kld_mean": round(self.kld_mean, 6),
            "kld_median": round(self.kld_median, 6),
            "kld_p99": round(self.kld_p99, 6),
            "top1_agreement": round(self.top1_agreement, 4),
            "tokens": self.n_tokens,
            "seconds": round(self.seconds, 2),
        }


def log_softmax(rows: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64) of rows of logits."""
    x = rows.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def _chunks(
    calibration: CalibrationSet, model: Any, chunk_size: int, max_chunks: int | None
) -> np.ndarray:
    from quant.jobs.imatrix import chunk_tokens

    tokens = calibration.tokenize(model)
    chunks = chunk_tokens(tokens, chunk_size, max_chunks, model.bos if model.add_bos else None)
    if not chunks:
        raise EvaluationError(
            f"evaluation text '{calibration.name}' is {len(tokens)} tokens, less than one "
            f"{chunk_size}-token chunk; give more text or a smaller chunk size."
        )
    return np.stack(chunks)


def reference_cache_path(
    cache_dir: Path,
    model: Path,
    text: CalibrationSet,
    *,
    chunk_size: int,
    max_chunks: int | None,
    top_k: int,
    max_bytes: int,
) -> Path:
    key = hashlib.sha256(
        f"{model_fingerprint(model)}|{text.sha256}|{chunk_size}|{max_chunks}|{top_k}|"
        f"{max_bytes}|{REFERENCE_VERSION}".encode()
    ).hexdigest()[:24]
    return cache_dir / f"reference-{key}"


def compute_reference(
    model: Path | str,
    text: CalibrationSet,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_chunks: int | None = DEFAULT_MAX_CHUNKS,
    top_k: int = DEFAULT_TOP_K,
    max_bytes: int = DEFAULT_MAX_BYTES,
    cache_dir: Path | None = None,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ReferenceLogits:
    """Run the reference model over ``text`` (or load the cached result).

    At most ``max_chunks`` chunks are scored, and fewer when their full
    log-probabilities would exceed ``max_bytes``; at least one chunk always is.
    """
    from quant.native.llama_session import NativeModel

    model = Path(model)
    cache = None
    if cache_dir is not None:
        cache = reference_cache_path(
            cache_dir,
            model,
            text,
            chunk_size=chunk_size,
            max_chunks=max_chunks,
            top_k=top_k,
            max_bytes=max_bytes,
        )
        if (cache / "meta.json").exists():
            try:
                ref = ReferenceLogits.load(cache)
                logger.info("reference logits for %s from cache %s", model.name, cache.name)
                return ref
            except EvaluationError as exc:
                logger.warning("ignoring reference cache: %s", exc)
    check_cancel(cancel)
    started = time.monotonic()
    stage = "reference"
    first = chunk_size // 2
    per_chunk = chunk_size - first - 1
    ids_out: list[np.ndarray] = []
    logp_out: list[np.ndarray] = []
    target_out: list[np.ndarray] = []
    if cache is not None:
        # A fixed name beside the cache entry, so a job runner knows what to remove
        # if the process is killed half way.
        work = partial_path(cache)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="quantdesk-ref-"))
    try:
        with NativeModel(model, n_ctx=chunk_size, threads=threads) as m:
            by_budget = max(1, max_bytes // max(1, per_chunk * m.n_vocab * 2))
            limit = by_budget if max_chunks is None else min(max_chunks, by_budget)
            chunks = _chunks(text, m, chunk_size, limit)
            full_path = work / "full_logp.npy"
            full = np.lib.format.open_memmap(
                full_path, mode="w+", dtype=np.float16, shape=(len(chunks) * per_chunk, m.n_vocab)
            )
            eta = EtaEstimator()
            k = min(top_k, m.n_vocab)
            row = 0
            for c, chunk in enumerate(chunks):
                check_cancel(cancel)
                m.clear()
                n_rows = m.decode(chunk, output_from=first)
                view = m.logits_view(n_rows)
                # Row r predicts token first + r + 1; the chunk's last row has no target.
                for r0 in range(0, n_rows - 1, _ROW_BLOCK):
                    r1 = min(n_rows - 1, r0 + _ROW_BLOCK)
                    logp = log_softmax(view[r0:r1])
                    full[row : row + r1 - r0] = logp.astype(np.float16)
                    row += r1 - r0
                    top = np.argpartition(logp, -k, axis=1)[:, -k:]
                    top_lp = np.take_along_axis(logp, top, axis=1)
                    order = np.argsort(-top_lp, axis=1)
                    ids_out.append(np.take_along_axis(top, order, axis=1).astype(np.int32))
                    logp_out.append(np.take_along_axis(top_lp, order, axis=1).astype(np.float32))
                    targets = chunk[first + r0 + 1 : first + r1 + 1]
                    target_out.append(logp[np.arange(r1 - r0), targets].astype(np.float32))
                if on_progress is not None:
                    on_progress(
                        Progress(
                            stage,
                            c + 1,
                            len(chunks),
                            f"reference {model.name}: chunk {c + 1}/{len(chunks)}",
                            eta_s=eta.eta(c + 1, len(chunks)),
                        )
                    )
            full.flush()
            del full
        ref = ReferenceLogits(
            tokens=chunks.astype(np.int32),
            first=first,
            top_ids=np.concatenate(ids_out),
            top_logp=np.concatenate(logp_out),
            target_logp=np.concatenate(target_out),
            full_logp=np.load(full_path, mmap_mode="r"),
            model_name=model.name,
            model_fingerprint=model_fingerprint(model),
            text_name=text.name,
            text_sha256=text.sha256,
            seconds=time.monotonic() - started,
        )
        if cache is not None:
            _write_reference_dir(cache, ref, full=full_path)
            ref = ReferenceLogits.load(cache)
        else:
            ref = replace(ref, full_logp=np.array(ref.full_logp))
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "reference %s: %d chunks, %d scored tokens, PPL %.3f",
        model.name,
        len(chunks),
        ref.n_scored,
        ref.perplexity,
    )
    return ref


def kl_divergence(ref_logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """Per-row KL(P‖Q) from two (rows, vocab) arrays of log-probabilities."""
    p = np.exp(ref_logp)
    kl: np.ndarray = np.maximum((p * (ref_logp - logq)).sum(axis=1), 0.0)
    return kl


def evaluate(
    model: Path | str,
    reference: ReferenceLogits,
    *,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> EvalResult:
    """Compare ``model`` with ``reference`` on the reference's own tokens."""
    from quant.native.llama_session import NativeModel

    model = Path(model)
    check_cancel(cancel)
    started = time.monotonic()
    stage = "evaluate"
    chunk_size, first = reference.chunk_size, reference.first
    nll: list[np.ndarray] = []
    kld: list[np.ndarray] = []
    same: list[np.ndarray] = []
    row = 0
    with NativeModel(model, n_ctx=chunk_size, threads=threads) as m:
        max_id = int(reference.tokens.max())
        if max_id >= m.n_vocab:
            raise EvaluationError(
                f"{model.name} has a {m.n_vocab}-token vocabulary but the reference text uses "
                f"token {max_id}; compare quantizations of the same model only."
            )
        eta = EtaEstimator()
        n_chunks = len(reference.tokens)
        for c, chunk in enumerate(reference.tokens):
            check_cancel(cancel)
            m.clear()
            n_rows = m.decode(chunk, output_from=first)
            view = m.logits_view(n_rows)
            for r0 in range(0, n_rows - 1, _ROW_BLOCK):
                r1 = min(n_rows - 1, r0 + _ROW_BLOCK)
                logq = log_softmax(view[r0:r1])
                targets = chunk[first + r0 + 1 : first + r1 + 1]
                nll.append(-logq[np.arange(r1 - r0), targets])
                ids = reference.top_ids[row : row + r1 - r0]
                kld.append(kl_divergence(reference.row_logp(row, row + r1 - r0), logq))
                same.append(np.argmax(logq, axis=1) == ids[:, 0])
                row += r1 - r0
            if on_progress is not None:
                on_progress(
                    Progress(
                        stage,
                        c + 1,
                        n_chunks,
                        f"evaluate {model.name}: chunk {c + 1}/{n_chunks}",
                        eta_s=eta.eta(c + 1, n_chunks),
                    )
                )
    if row != reference.n_scored:
        raise EvaluationError(
            f"{model.name}: scored {row} tokens but the reference has {reference.n_scored}; "
            "the reference cache does not match, delete it and run again."
        )
    k = np.concatenate(kld)
    result = EvalResult(
        model_name=model.name,
        perplexity=float(np.exp(np.concatenate(nll).mean())),
        reference_perplexity=reference.perplexity,
        kld_mean=float(k.mean()),
        kld_p99=float(np.percentile(k, 99)),
        kld_median=float(np.median(k)),
        top1_agreement=float(np.concatenate(same).mean()),
        n_tokens=row,
        seconds=time.monotonic() - started,
    )
    logger.info(
        "evaluated %s: PPL %.3f (ref %.3f), KLD %.5f, top-1 %.1f%%",
        model.name,
        result.perplexity,
        result.reference_perplexity,
        result.kld_mean,
        100 * result.top1_agreement,
    )
    return result
