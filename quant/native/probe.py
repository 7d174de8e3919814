"""Load a model file once in a throwaway process, to learn whether llama.cpp survives it.

Some damaged or hostile GGUF files pass every header check and then abort the
whole process inside llama.cpp (a ``GGML_ASSERT`` on a hyper-parameter, a
vocabulary its tokenizer cannot spell with): in the GUI that would take the
window down with it. ``python -m quant probe-load FILE`` does in a child process
what chat does first — load the file with a small context, tokenize text with
special tokens, turn every vocabulary entry back into text, evaluate a few
tokens and sample one — and prints one JSON line ``{"ok": true, …}``. A file
that kills the child is reported by the parent from the child's exit signal
and the last ``GGML_ASSERT``/error line of its output
(:mod:`app.core.chat.probe`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from typing import Any

from quant.native import import_llama_first
from quant.native.llama_model import open_llama

# Text a chat meets early: punctuation, digits, whitespace runs, accents, CJK,
# emoji, a control-token lookalike.
SAMPLE = "Hello, world! 123   tabs\tand\nnewlines — héllo 你好 🙂 <start_of_turn> </s>"


def probe_load(path: str, *, n_ctx: int = 256) -> dict[str, Any]:
    """Exercise ``path`` the way a first chat would; return what was done."""
    t0 = time.perf_counter()
    llama = import_llama_first()
    if llama is None:
        raise RuntimeError("llama-cpp-python is not importable")
    llm = open_llama(
        llama,
        model_path=path,
        n_ctx=n_ctx,
        n_batch=64,
        n_ubatch=64,
        n_threads=1,
        n_threads_batch=1,
        n_gpu_layers=0,
        verbose=False,
    )
    try:
        vocab = llama.llama_model_get_vocab(llm.model)
        n_vocab = int(llama.llama_vocab_n_tokens(vocab))
        buf = ctypes.create_string_buffer(512)
        for token in range(n_vocab):
            llama.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        tokens = llm.tokenize(SAMPLE.encode("utf-8"), add_bos=True, special=True)
        llm.eval(tokens[:32])
        llm.sample()
    finally:
        llm.close()
    return {"ok": True, "n_vocab": n_vocab, "seconds": round(time.perf_counter() - t0, 3)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a GGUF file")
    parser.add_argument("--ctx", type=int, default=256)


def run(args: argparse.Namespace) -> int:
    result = probe_load(args.model, n_ctx=args.ctx)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
