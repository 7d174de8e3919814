"""A thin, typed wrapper over llama.cpp's low-level API for batch work.

The importance-matrix collector, the evaluator and the self-generated
calibration all need what the high-level ``llama_cpp.Llama`` does not offer:
an eval callback on the context (``cb_eval``), logits for every token of a
batch, and explicit control of the KV cache per chunk. :class:`NativeModel`
loads a GGUF with ``llama_model_load_from_file``, makes one context with
``llama_init_from_model`` and exposes tokenize / decode / logits.

Native handles are freed in :meth:`NativeModel.close` (also on ``with`` exit);
the ctypes callback object passed as ``cb_eval`` is kept referenced for the
context's lifetime, since llama.cpp calls it until the context is freed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from quant.errors import ModelFormatError, QuantError
from quant.native.llama_log import LineCollector, install, observe

logger = logging.getLogger(__name__)

EvalCallback = Callable[[int, bool, int], bool]
"""(tensor address, ask, user data address) -> keep going."""

_backend_lock = threading.Lock()
_backend_ready: list[bool] = []


def physical_cores() -> int:
    """Threads for compute-bound llama.cpp work: the physical core count."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        n = None
    return max(1, n or os.cpu_count() or 1)


def _ensure_backend() -> Any:
    import llama_cpp

    install()
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            _backend_ready.append(True)
    return llama_cpp


class NativeModel:
    """One model and one context, for chunked batch evaluation."""

    def __init__(
        self,
        path: Path | str,
        *,
        n_ctx: int,
        n_batch: int | None = None,
        n_seq: int = 1,
        threads: int | None = None,
        cb_eval: EvalCallback | None = None,
        n_gpu_layers: int | None = None,
    ) -> None:
        llama_cpp = _ensure_backend()
        self._llama = llama_cpp
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path}: no such model file; check the path.")
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._cb: Any = None

        mparams = llama_cpp.llama_model_default_params()
        if n_gpu_layers is not None:
            mparams.n_gpu_layers = n_gpu_layers
        problems = LineCollector()
        with observe(problems):
            self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            reason = problems.reason() or "llama.cpp could not load it"
            raise ModelFormatError(
                f"{self.path.name}: failed to load ({reason}); check that the file is a "
                "complete GGUF of an architecture this llama.cpp supports."
            )
        try:
            self.vocab = llama_cpp.llama_model_get_vocab(self._model)
            self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
            self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
            self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
            self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._model))
            self.n_params = int(llama_cpp.llama_model_n_params(self._model))

            n_batch = n_batch or n_ctx
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = n_ctx
            cparams.n_batch = n_batch
            cparams.n_ubatch = n_batch
            cparams.n_seq_max = n_seq
            n_threads = threads or physical_cores()
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads
            cparams.no_perf = True
            if cb_eval is not None:
                self._cb = llama_cpp.ggml_backend_sched_eval_callback(cb_eval)
                cparams.cb_eval = self._cb
                cparams.cb_eval_user_data = None
            with observe(problems):
                self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if not self._ctx:
                reason = problems.reason() or "out of memory?"
                raise QuantError(
                    f"{self.path.name}: could not create a {n_ctx}-token context ({reason}); "
                    "close other programs or use a smaller chunk size."
                )
            self.n_ctx = n_ctx
            self.n_batch = n_batch
            self.n_seq = n_seq
            self._batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        llama_cpp = self._llama
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None
        self._cb = None

    def __enter__(self) -> NativeModel:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- text -------------------------------------------------------------------

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = False
    ) -> np.ndarray:
        """Token ids of ``text`` as int32 (no BOS unless ``add_special``)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        buf = (ctypes.c_int32 * cap)()
        n = self._llama.llama_tokenize(
            self.vocab, raw, len(raw), buf, cap, add_special, parse_special
        )
        if n < 0:
            cap = -n
            buf = (ctypes.c_int32 * cap)()
            n = self._llama.llama_tokenize(
                self.vocab, raw, len(raw), buf, cap, add_special, parse_special
            )
        if n < 0:
            raise QuantError(f"{self.path.name}: tokenization failed for a {len(raw)}-byte text.")
        return np.array(buf[:n], dtype=np.int32)

    def detokenize(self, tokens: Sequence[int]) -> str:
        pieces = []
        buf = ctypes.create_string_buffer(256)
        for t in tokens:
            n = self._llama.llama_token_to_piece(self.vocab, int(t), buf, len(buf), 0, False)
            if n > 0:
                pieces.append(buf.raw[:n])
        return b"".join(pieces).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._llama.llama_vocab_is_eog(self.vocab, int(token)))

    def meta(self, key: str) -> str | None:
        """The GGUF metadata value ``key`` as text, or None when the file has no such key."""
        buf = ctypes.create_string_buffer(1024)
        n = int(self._llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf)))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def prompt_metadata(self) -> dict[str, str]:
        """The metadata that decides how a conversation becomes prompt text."""
        keys = (
            "general.architecture",
            "general.name",
            "general.basename",
            "general.finetune",
            "tokenizer.chat_template",
        )
        return {k: v for k in keys if (v := self.meta(k)) is not None}

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._llama.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def eos_text(self) -> str:
        return self.token_text(int(self._llama.llama_vocab_eos(self.vocab)))

    def has_token(self, text: str) -> bool:
        """Whether ``text`` is one special token of the vocabulary."""
        return len(self.tokenize(text, parse_special=True)) == 1

    # -- evaluation ---------------------------------------------------------------

    def clear(self) -> None:
        """Forget the KV cache of every sequence."""
        self._llama.llama_memory_clear(self._llama.llama_get_memory(self._ctx), True)

    def clear_seq(self, seq: int) -> None:
        """Forget the KV cache of one sequence."""
        self._llama.llama_memory_seq_rm(self._llama.llama_get_memory(self._ctx), seq, -1, -1)

    def decode(
        self,
        tokens: Sequence[int] | np.ndarray,
        *,
        pos0: int = 0,
        seq: int = 0,
        output_from: int = 0,
    ) -> int:
        """Evaluate ``tokens`` at positions ``pos0…``; return how many logit rows were made.

        Tokens at index ``output_from`` and later get a logit row. The default,
        every token, is what the imatrix needs: llama.cpp computes the last
        layer only for tokens that produce output.
        """
        return self.decode_multi([(seq, pos0, tokens)], output_from=output_from)

    def decode_multi(
        self, items: Sequence[tuple[int, int, Sequence[int] | np.ndarray]], *, output_from: int = 0
    ) -> int:
        """Evaluate several sequences in one batch: items are (seq id, first position, tokens)."""
        b = self._batch
        n = 0
        n_out = 0
        for seq, pos0, tokens in items:
            toks = np.asarray(tokens, dtype=np.int32)
            if n + len(toks) > self.n_batch:
                raise QuantError(f"batch of {n + len(toks)} tokens exceeds {self.n_batch}.")
            start = min(output_from, len(toks) - 1)
            for k, tok in enumerate(toks.tolist()):
                i = n + k
                b.token[i] = tok
                b.pos[i] = pos0 + k
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                want = k >= start
                b.logits[i] = 1 if want else 0
                n_out += int(want)
            n += len(toks)
        b.n_tokens = n
        rc = self._llama.llama_decode(self._ctx, b)
        if rc != 0:
            raise QuantError(
                f"{self.path.name}: llama_decode failed with code {rc} on a batch of {n} tokens; "
                "try a smaller chunk size."
            )
        return n_out

    def logits_view(self, n_rows: int) -> np.ndarray:
        """The last decode's logits, (n_rows, n_vocab), not copied: valid until the next decode."""
        ptr = self._llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_rows * self.n_vocab,)).reshape(
            n_rows, self.n_vocab
        )

    def logits(self, n_rows: int) -> np.ndarray:
        """A copy of the last decode's logits, shape (n_rows, n_vocab), float32."""
        ptr = self._llama.llama_get_logits(self._ctx)
        arr = np.ctypeslib.as_array(ptr, shape=(n_rows * self.n_vocab,))
        return np.array(arr, dtype=np.float32).reshape(n_rows, self.n_vocab)
