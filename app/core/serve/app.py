"""The HTTP side of the server: OpenAI's routes on FastAPI, streamed with sse-starlette.

Routes: ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/chat/completions``,
``POST /v1/completions``, ``POST /v1/embeddings``, ``GET /v1/stats`` (JSON) and
``GET /metrics`` (Prometheus text), ``GET /health``. With an API key every
route, these included, wants ``Authorization: Bearer KEY``; a wrong or missing
key is a 401 in OpenAI's error shape. Every error is ``{"error": {"message",
"type", "param", "code"}}``; a full queue is a 429 with ``Retry-After``.

A request waits for its model in the pool's queue without holding the event
loop; when its client goes away (a closed stream, a dropped connection) the
request's cancel token stops the generation before its next token, which
frees the model for the next request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sse_starlette import EventSourceResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.chat.session import ChatLoadError, ContextOverflowError, GenerationError
from app.core.serve import engine
from app.core.serve.catalog import Catalog, ServedModel
from app.core.serve.engine import ChatResult, CompletionResult, RequestError, logprob_json
from app.core.serve.log import RequestLog, RequestRecord
from app.core.serve.pool import BusyError, ModelPool, QueueFullError, WontFitError
from app.core.serve.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from quant.errors import QuantError
from quant.progress import CancelToken

logger = logging.getLogger(__name__)

# How often a waiting non-streaming request checks that its client is still there.
DISCONNECT_POLL_S = 0.25


@dataclass
class ApiOptions:
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def api_error(exc: BaseException) -> ApiError:
    """The error response for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFullError):
        return ApiError(
            429,
            str(exc),
            type_="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, BusyError):
        return ApiError(
            503,
            str(exc),
            type_="server_error",
            code="memory_busy",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, WontFitError):
        return ApiError(400, str(exc), code="model_does_not_fit", param="model")
    if isinstance(exc, ChatLoadError):
        return ApiError(422, str(exc), code="model_load_failed", param="model")
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, RequestError):
        return ApiError(400, str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, GenerationError | QuantError):
        return ApiError(500, str(exc), type_="server_error", code="generation_failed")
    logger.error("unexpected server error", exc_info=exc)
    return ApiError(
        500,
        f"unexpected server error ({type(exc).__name__}); see the server log",
        type_="server_error",
    )


class _KeyCheck:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <key>``."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8"), self._key
        ):
            response = ApiError(
                401,
                "invalid or missing API key: send 'Authorization: Bearer <key>' with the "
                "key the server was started with",
                code="invalid_api_key",
            ).response()
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    catalog: Catalog,
    pool: ModelPool,
    log: RequestLog,
    options: ApiOptions | None = None,
) -> FastAPI:
    """The server's ASGI application."""
    opts = options or ApiOptions()
    api = FastAPI(title="Quantdesk", docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        where = ".".join(loc)
        message = (
            f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg"))
        )
        return ApiError(400, f"invalid request: {message}", param=where or None).response()

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), type_=type_).response()

    def find(model_id: str) -> ServedModel:
        model = catalog.find(model_id)
        if model is None:
            raise ApiError(
                404,
                f"The model '{model_id}' does not exist; GET /v1/models lists the models "
                "this server offers",
                param="model",
                code="model_not_found",
            )
        return model

    def record(
        request: Request,
        rid: str,
        route: str,
        model: str,
        t0: float,
        *,
        status: int,
        stream: bool,
        result: ChatResult | CompletionResult | None = None,
        error: str | None = None,
    ) -> None:
        stats = result.stats if result is not None else None
        client = request.client
        log.add(
            RequestRecord(
                id=rid,
                time=time.time(),
                route=route,
                model=model,
                status=status,
                stream=stream,
                client=f"{client.host}:{client.port}" if client else "",
                duration_s=round(time.perf_counter() - t0, 4),
                prompt_tokens=stats.prompt_tokens if stats else 0,
                completion_tokens=stats.generated_tokens if stats else 0,
                ttft_s=stats.ttft_s if stats else None,
                prompt_tokens_per_s=stats.prompt_tokens_per_s if stats else None,
                gen_tokens_per_s=stats.gen_tokens_per_s if stats else None,
                finish_reason=result.finish_reason if result is not None else None,
                error=error,
            )
        )

    def abandon(  # noqa: PLR0917 - a streamed request's state, as record takes it
        fut: Any, cancel: CancelToken, request: Request, rid: str, route: str, model: str, t0: float
    ) -> None:
        """The client went away: stop the generation before its next token; log it as 499."""
        cancel.cancel()
        fut.cancel()

        def logged(f: Any) -> None:
            record(request, rid, route, model, t0, status=499, stream=True,
                   result=_result_or_none(f), error="client disconnected")  # fmt: skip

        fut.add_done_callback(logged)

    async def find_logged(model_id: str, request: Request, route: str, rid: str, t0: float) -> Any:
        """:func:`find`, with an unknown model logged as the failed request it is."""
        try:
            return await asyncio.to_thread(find, model_id)
        except ApiError as exc:
            record(request, rid, route, model_id, t0, status=exc.status, stream=False,
                   error=exc.code)  # fmt: skip
            raise

    # ------------------------------------------------------------------ models
    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        models = await asyncio.to_thread(catalog.models)
        return {"object": "list", "data": [m.to_openai() for m in models]}

    @api.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        model = await asyncio.to_thread(find, model_id)
        return model.to_openai()

    # ------------------------------------------------------------------ chat
    @api.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        rid = engine.new_id("chatcmpl")
        model = await find_logged(body.model, request, "chat", rid, t0)
        saved = pool.saved_sampling(model)
        cancel = CancelToken()
        if not body.stream:
            try:
                fut = pool.submit(
                    model,
                    lambda s, t: engine.run_chat(s, t, body, saved, sink=None, cancel=cancel),
                    cancel=cancel,
                )
                result: ChatResult = await _wait(fut, request, cancel)
            except BaseException as exc:
                err = api_error(exc) if not isinstance(exc, asyncio.CancelledError) else None
                record(request, rid, "chat", model.id, t0, status=err.status if err else 499,
                       stream=False, error=str(exc) or "client went away")  # fmt: skip
                if err is None:
                    raise
                raise err from None
            record(request, rid, "chat", model.id, t0, status=200, stream=False, result=result)
            choice: dict[str, Any] = {
                "index": 0,
                "message": result.message,
                "finish_reason": result.finish_reason,
                "logprobs": (
                    {"content": [logprob_json(lp) for lp in result.logprobs]}
                    if body.logprobs
                    else None
                ),
            }
            return {
                "id": rid,
                "object": "chat.completion",
                "created": result.created,
                "model": model.id,
                "choices": [choice],
                "usage": engine.usage(result.stats),
                "system_fingerprint": None,
                "timings": engine.timings(result.stats, result.ticket),
            }
        return _stream_chat(body, request, model, saved, cancel, rid, t0, record)

    def _stream_chat(  # noqa: PLR0917 - the one caller passes the request's state
        body: ChatRequest,
        request: Request,
        model: ServedModel,
        saved: Any,
        cancel: CancelToken,
        rid: str,
        t0: float,
        record_fn: Callable[..., None],
    ) -> EventSourceResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def sink(delta: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("delta", delta))

        # Refusals known at once (queue full, too large) are plain HTTP errors.
        fut = pool.submit(
            model,
            lambda s, t: engine.run_chat(s, t, body, saved, sink=sink, cancel=cancel),
            cancel=cancel,
        )
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(events.put_nowait, ("done", f)))
        created = int(time.time())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            logprobs = delta.pop("_logprobs", None)
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": {"content": logprobs} if logprobs and body.logprobs else None,
                "finish_reason": finish,
            }
            out = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model.id,
                "system_fingerprint": None,
                "choices": [choice],
                **extra,
            }
            if include_usage:
                out.setdefault("usage", None)
            return json.dumps(out, ensure_ascii=False)

        async def generate() -> AsyncIterator[dict[str, Any]]:
            finished = False
            try:
                yield {"data": chunk({"role": "assistant", "content": ""})}
                while True:
                    kind, payload = await events.get()
                    if kind == "delta":
                        yield {"data": chunk(dict(payload))}
                        continue
                    exc = payload.exception() if not payload.cancelled() else None
                    if exc is not None:
                        err = api_error(exc)
                        record_fn(request, rid, "chat", model.id, t0, status=err.status,
                                  stream=True, error=str(exc))  # fmt: skip
                        finished = True
                        yield {"data": json.dumps(err.body())}
                        break
                    result: ChatResult = payload.result()
                    final = {"timings": engine.timings(result.stats, result.ticket)}
                    yield {"data": chunk({}, result.finish_reason, **final)}
                    if include_usage:
                        usage = json.dumps(
                            {
                                "id": rid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model.id,
                                "choices": [],
                                "usage": engine.usage(result.stats),
                            }
                        )
                        yield {"data": usage}
                    record_fn(request, rid, "chat", model.id, t0, status=200, stream=True,
                              result=result)  # fmt: skip
                    finished = True
                    break
                yield {"data": "[DONE]"}
            finally:
                if not finished:
                    abandon(fut, cancel, request, rid, "chat", model.id, t0)

        return EventSourceResponse(generate(), ping=15, sep="\n")

    # ------------------------------------------------------------------ completions
    @api.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        rid = engine.new_id("cmpl")
        model = await find_logged(body.model, request, "completions", rid, t0)
        saved = pool.saved_sampling(model)
        cancel = CancelToken()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def sink(text: str) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("text", text))

        fut = pool.submit(
            model,
            lambda s, t: engine.run_completion(
                s, t, body, saved, sink=sink if body.stream else None, cancel=cancel
            ),
            cancel=cancel,
        )
        created = int(time.time())

        def shape(result: CompletionResult | None, text: str, finish: str | None) -> dict[str, Any]:
            lp = None
            if result is not None and body.logprobs is not None:
                lp = {
                    "tokens": [x.token for x in result.logprobs],
                    "token_logprobs": [x.logprob for x in result.logprobs],
                    "top_logprobs": [{t: v for t, v, _ in x.top} for x in result.logprobs],
                    "text_offset": [],
                }
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model.id,
                "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}],
            }

        if not body.stream:
            try:
                result: CompletionResult = await _wait(fut, request, cancel)
            except BaseException as exc:
                err = api_error(exc) if not isinstance(exc, asyncio.CancelledError) else None
                record(request, rid, "completions", model.id, t0, status=err.status if err else 499,
                       stream=False, error=str(exc) or "client went away")  # fmt: skip
                if err is None:
                    raise
                raise err from None
            record(request, rid, "completions", model.id, t0, status=200, stream=False,
                   result=result)  # fmt: skip
            out = shape(result, result.text, result.finish_reason)
            out["usage"] = engine.usage(result.stats)
            out["timings"] = engine.timings(result.stats, result.ticket)
            return out

        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(events.put_nowait, ("done", f)))

        async def generate() -> AsyncIterator[dict[str, Any]]:
            finished = False
            try:
                while True:
                    kind, payload = await events.get()
                    if kind == "text":
                        yield {"data": json.dumps(shape(None, payload, None), ensure_ascii=False)}
                        continue
                    exc = payload.exception() if not payload.cancelled() else None
                    finished = True
                    if exc is not None:
                        err = api_error(exc)
                        record(request, rid, "completions", model.id, t0, status=err.status,
                               stream=True, error=str(exc))  # fmt: skip
                        yield {"data": json.dumps(err.body())}
                        break
                    result: CompletionResult = payload.result()
                    last = shape(result, "", result.finish_reason)
                    last["usage"] = engine.usage(result.stats)
                    last["timings"] = engine.timings(result.stats, result.ticket)
                    yield {"data": json.dumps(last)}
                    record(request, rid, "completions", model.id, t0, status=200, stream=True,
                           result=result)  # fmt: skip
                    break
                yield {"data": "[DONE]"}
            finally:
                if not finished:
                    abandon(fut, cancel, request, rid, "completions", model.id, t0)

        return EventSourceResponse(generate(), ping=15, sep="\n")

    # ------------------------------------------------------------------ embeddings
    @api.post("/v1/embeddings", response_model=None)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        from app.core.serve.embed import embed_texts, embedding_refusal

        t0 = time.perf_counter()
        rid = engine.new_id("embd")
        model = await find_logged(body.model, request, "embeddings", rid, t0)
        refusal = await asyncio.to_thread(embedding_refusal, model)
        if refusal:
            record(request, rid, "embeddings", model.id, t0, status=400, stream=False,
                   error=refusal)  # fmt: skip
            raise ApiError(400, refusal, param="model", code="model_cannot_embed")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "input must be a string or a list of strings", param="input")
        try:
            vectors, n_tokens = await asyncio.to_thread(embed_texts, model, [str(t) for t in texts])
        except Exception as exc:
            raise api_error(exc) from None
        record(request, rid, "embeddings", model.id, t0, status=200, stream=False)
        return {
            "object": "list",
            "model": model.id,
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    # ------------------------------------------------------------------ stats
    def stats_body() -> dict[str, Any]:
        return {
            "started": log.started,
            "models": log.stats(),
            "loaded": [
                {
                    "id": m.id,
                    "state": m.state,
                    "estimate_bytes": m.estimate_bytes,
                    "rss_after_load_bytes": m.rss_after_load_bytes,
                    "n_ctx": m.n_ctx,
                    "queued": m.queued,
                    "busy": m.busy,
                }
                for m in pool.loaded()
            ],
            "memory_budget_bytes": pool.budget,
        }

    @api.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return stats_body()

    @api.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(_prometheus(stats_body()), media_type="text/plain; version=0.0.4")

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if opts.api_key:
        api.add_middleware(_KeyCheck, key=opts.api_key)
    if opts.cors_origins:
        # Added last, so it runs first: browsers' preflight requests carry no key.
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return api


async def _wait(fut: Any, request: Request, cancel: CancelToken) -> Any:
    """The job's result; cancels it when the client disconnects while it waits or runs."""
    wrapped: asyncio.Future[Any] = asyncio.wrap_future(fut)
    try:
        while True:
            done, _ = await asyncio.wait({wrapped}, timeout=DISCONNECT_POLL_S)
            if done:
                return wrapped.result()
            if await request.is_disconnected():
                cancel.cancel()
                fut.cancel()
                raise asyncio.CancelledError
    except asyncio.CancelledError:
        cancel.cancel()
        fut.cancel()
        raise


def _result_or_none(fut: Any) -> Any:
    """A finished job's result, or None when it was cancelled or failed."""
    if fut.cancelled() or fut.exception() is not None:
        return None
    return fut.result()


def _prometheus(body: dict[str, Any]) -> str:
    lines = []
    metrics = (
        ("requests", "quantdesk_requests_total", "counter"),
        ("errors", "quantdesk_request_errors_total", "counter"),
        ("prompt_tokens", "quantdesk_prompt_tokens_total", "counter"),
        ("completion_tokens", "quantdesk_completion_tokens_total", "counter"),
        ("mean_ttft_s", "quantdesk_mean_ttft_seconds", "gauge"),
        ("mean_prompt_tokens_per_s", "quantdesk_mean_prompt_tokens_per_second", "gauge"),
        ("mean_gen_tokens_per_s", "quantdesk_mean_generation_tokens_per_second", "gauge"),
    )
    for key, name, kind in metrics:
        lines.append(f"# TYPE {name} {kind}")
        for model, values in sorted(body["models"].items()):
            value = values.get(key)
            if value is not None:
                label = model.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{name}{{model="{label}"}} {value}')
    lines.append("# TYPE quantdesk_loaded_models gauge")
    lines.append(f"quantdesk_loaded_models {len(body['loaded'])}")
    return "\n".join(lines) + "\n"
