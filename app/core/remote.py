"""Models served elsewhere: OpenAI-compatible endpoints, and chatting with their models.

When a model outgrows this machine the advisor points at an NVIDIA serving
engine (vLLM) on another one; a *remote* is the address of such a server (or of
any OpenAI-compatible one: another Quantdesk, llama.cpp's server, Ollama, LM
Studio). Its ``/v1/models`` appear in the chat's model list as ``NAME:MODEL``,
and :class:`RemoteSession` chats with one of them the way
:class:`~app.core.chat.session.ChatSession` chats with a local file, streaming,
with time to first token and tokens/s measured here, on the client side
(memory is the server's business: it shows as "remote").

Names and URLs live in the settings (section ``remote``); API keys never do:
they are kept in :mod:`app.core.secrets`' private file (0600 in a 0700
folder), the way huggingface_hub keeps its token, and are never logged.
HTTP is httpx2's, and streams are read with its SSE decoder.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.core.chat.session import Answer, GenerationError, ModelInfo
from app.core.chat.settings import LoadPlan, SamplingSettings
from app.core.chat.stats import AnswerStats, LiveSample, StopReason
from app.core.chat.templates import ChatMessage, Role
from app.core.errors import AppError
from app.core.secrets import KeyFile
from app.core.settings import Settings
from quant.progress import CancelToken
from quant.untrusted import short_text

logger = logging.getLogger(__name__)

SECTION = "remote"
CONNECT_TIMEOUT_S = 10.0
# A model may think for a long time before its first token.
READ_TIMEOUT_S = 600.0
SAMPLE_EVERY_S = 0.1

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
# A remote's answer is untrusted: model ids are bounded, and so is their number.
MODEL_ID_LIMIT = 200
MAX_MODELS = 1000


class RemoteError(AppError):
    """A remote endpoint could not be added, reached, or understood."""


@dataclass(frozen=True)
class Remote:
    """An OpenAI-compatible endpoint: a name, its base URL (ending in ``/v1``), a key or not."""

    name: str
    url: str
    has_key: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "has_key": self.has_key}


@dataclass(frozen=True)
class RemoteRef:
    """``NAME:MODEL``: one model of one remote."""

    remote: str
    model: str

    def __str__(self) -> str:
        return f"{self.remote}:{self.model}"


def normalize_url(url: str) -> str:
    """``url`` as an API base: http(s), no query, ``/v1`` added when the path is empty."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(
            f"{url!r} is not an http(s) address; give one like http://gpu-box:8000/v1"
        )
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class RemoteStore:
    """The user's remotes: names and URLs in the settings, keys in a private file."""

    def __init__(self, settings: Settings | None = None, keys: KeyFile | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.keys = keys or KeyFile()

    # ------------------------------------------------------------------ keys
    def key(self, name: str) -> str | None:
        return self.keys.get(f"remote/{name}")

    # ------------------------------------------------------------------ remotes
    def _section(self) -> dict[str, Any]:
        section = self.settings.section(SECTION)
        endpoints = section.get("endpoints")
        if not isinstance(endpoints, dict):
            endpoints = {}
            section["endpoints"] = endpoints
        return endpoints

    def list(self) -> list[Remote]:
        raw = self.settings.get(SECTION)
        endpoints = raw.get("endpoints") if isinstance(raw, dict) else None
        if not isinstance(endpoints, dict):
            return []
        return [
            Remote(str(name), str(url), self.key(str(name)) is not None)
            for name, url in sorted(endpoints.items())
            if isinstance(url, str)
        ]

    def get(self, name: str) -> Remote | None:
        return next((r for r in self.list() if r.name == name), None)

    def add(self, name: str, url: str, key: str | None = None) -> Remote:
        """Add or replace the remote ``name``; ``key`` None keeps a key saved before."""
        if not _NAME.match(name):
            raise RemoteError(
                f"{name!r} cannot name a remote: use letters, digits, '.', '_' or '-' "
                "(up to 40, starting with a letter or digit)"
            )
        base = normalize_url(url)
        if key is not None:
            key = key.strip()
            if any(c.isspace() for c in key):
                raise RemoteError("an API key is one word without spaces")
            self.keys.set(f"remote/{name}", key or None)
        self._section()[name] = base
        self.settings.save()
        logger.info("remote %s added at %s", name, base)
        return Remote(name, base, bool(self.key(name)))

    def remove(self, name: str) -> bool:
        endpoints = self._section()
        if name not in endpoints:
            return False
        del endpoints[name]
        self.settings.save()
        self.keys.set(f"remote/{name}", None)
        return True

    def parse_ref(self, text: str) -> RemoteRef | None:
        """``NAME:MODEL`` when NAME is a saved remote (and ``text`` is not a file), else None."""
        name, sep, model = text.partition(":")
        if not sep or not model or Path(text).exists():
            return None
        return RemoteRef(name, model) if self.get(name) is not None else None

    def client(self, name: str) -> RemoteClient:
        remote = self.get(name)
        if remote is None:
            known = ", ".join(r.name for r in self.list()) or "none yet"
            raise RemoteError(
                f"there is no remote called {name!r} (remotes: {known}); "
                "add it with 'quantdesk remote add NAME URL'"
            )
        return RemoteClient(remote, self.key(name))


# ----------------------------------------------------------------------------- client


@dataclass(frozen=True)
class RemoteModel:
    remote: str
    id: str
    owned_by: str = ""
    #: The remote's base URL (``…/v1``).
    url: str = ""

    @property
    def ref(self) -> RemoteRef:
        return RemoteRef(self.remote, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "id": self.id,
            "ref": str(self.ref),
            "owned_by": self.owned_by,
            "url": self.url,
        }


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except Exception:  # not JSON: the status says enough
        return f"HTTP {response.status_code}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"HTTP {response.status_code}: {err['message']}"
    if isinstance(err, str):
        return f"HTTP {response.status_code}: {err}"
    return f"HTTP {response.status_code}"


class RemoteClient:
    """Talks to one remote's OpenAI-compatible API."""

    def __init__(self, remote: Remote, key: str | None) -> None:
        self.remote = remote
        self._key = key

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _client(self) -> Any:
        import httpx2

        return httpx2.Client(
            timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            headers=self._headers(),
        )

    def _fail(self, what: str, exc: BaseException) -> RemoteError:
        return RemoteError(
            f"cannot {what} at {self.remote.url} ({type(exc).__name__}: {exc}); check that the "
            "server is running and the address is right"
        )

    def models(self) -> list[RemoteModel]:
        """The models the remote serves (its ``GET /v1/models``)."""
        import httpx2

        try:
            with self._client() as http:
                r = http.get(f"{self.remote.url}/models")
        except httpx2.HTTPError as exc:
            raise self._fail("list the models", exc) from exc
        if r.status_code == 401:
            raise RemoteError(
                f"{self.remote.name} refused the API key ({_error_text(r)}); set it with "
                f"'quantdesk remote add {self.remote.name} {self.remote.url} --key KEY'"
            )
        if r.status_code >= 400:
            raise RemoteError(f"{self.remote.name} could not list its models ({_error_text(r)})")
        try:
            data = r.json().get("data", [])
        except (ValueError, AttributeError) as exc:
            raise RemoteError(f"{self.remote.url} did not answer like an OpenAI API") from exc
        if not isinstance(data, list):
            raise RemoteError(f"{self.remote.url} did not answer like an OpenAI API")
        return [
            RemoteModel(
                self.remote.name,
                str(m["id"]),
                short_text(str(m.get("owned_by", "")), MODEL_ID_LIMIT),
                self.remote.url,
            )
            for m in data[:MAX_MODELS]
            # An id too long to be a model's name could not be asked for again either.
            if isinstance(m, dict) and m.get("id") and len(str(m["id"])) <= MODEL_ID_LIMIT
        ]

    def chat(
        self,
        model: str,
        messages: Sequence[dict[str, Any]],
        sampling: SamplingSettings,
        *,
        on_token: Callable[[str], None] | None = None,
        on_sample: Callable[[LiveSample], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Answer:
        """Stream one answer from ``model``; timings are measured here (client side)."""
        import httpx2

        s = sampling.validated()
        body: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.max_tokens > 0:
            body["max_tokens"] = s.max_tokens
        if s.seed >= 0:
            body["seed"] = s.seed
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        parts: list[str] = []
        pieces = 0
        usage: dict[str, Any] = {}
        finish: str | None = None
        t0 = time.perf_counter()
        t_first: float | None = None
        t_last: float | None = None
        last_sample = t0
        last_pieces = 0
        stopped = False
        try:
            with (
                self._client() as http,
                http.stream("POST", f"{self.remote.url}/chat/completions", json=body) as r,
            ):
                if r.status_code >= 400:
                    r.read()
                    raise RemoteError(f"{self.remote.name} refused the request ({_error_text(r)})")
                for event in httpx2.EventSource(r):
                    if cancel is not None and cancel.cancelled:
                        stopped = True
                        break
                    if event.data.strip() == "[DONE]":
                        break
                    try:
                        chunk = json.loads(event.data)
                    except ValueError:
                        continue
                    if not isinstance(chunk, dict):
                        continue
                    if isinstance(chunk.get("error"), dict | str):
                        err = chunk["error"]
                        msg = err.get("message") if isinstance(err, dict) else err
                        raise RemoteError(f"{self.remote.name} failed while answering: {msg}")
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        text = delta.get("content") or ""
                        if text:
                            now = time.perf_counter()
                            t_first = t_first if t_first is not None else now
                            t_last = now
                            pieces += 1
                            parts.append(text)
                            if on_token is not None:
                                on_token(text)
                            if on_sample is not None and now - last_sample >= SAMPLE_EVERY_S:
                                dt = now - last_sample
                                on_sample(
                                    LiveSample(
                                        now - t0, pieces, (pieces - last_pieces) / dt, 0, None, 0
                                    )
                                )
                                last_sample, last_pieces = now, pieces
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
        except httpx2.HTTPError as exc:
            raise self._fail("chat", exc) from exc
        # Servers that report no usage (llama-cpp-python's) send one token per chunk.
        generated = int(usage.get("completion_tokens") or pieces)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        reason = StopReason.STOPPED if stopped else _stop_reason(finish)
        ttft = (t_first - t0) if t_first is not None else None
        stats = AnswerStats(
            ttft_s=ttft,
            prompt_tokens=prompt_tokens,
            prompt_tokens_evaluated=prompt_tokens,
            prompt_s=ttft if ttft is not None else time.perf_counter() - t0,
            generated_tokens=generated if not stopped else pieces,
            gen_s=(t_last - t_first) if t_first is not None and t_last is not None else 0.0,
            stop_reason=reason,
            context_used=prompt_tokens + generated,
            context_size=0,
            rss_bytes=0,
            rss_peak_bytes=0,
            remote=True,
        )
        return Answer("".join(parts), stats)


def _stop_reason(finish: str | None) -> StopReason:
    if finish == "length":
        return StopReason.MAX_TOKENS
    return StopReason.END_OF_TURN


def openai_messages(
    messages: Sequence[ChatMessage], system_prompt: str = ""
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system_prompt.strip():
        out.append({"role": "system", "content": system_prompt})
    out.extend(
        {"role": m.role.value, "content": m.content}
        for m in messages
        if m.role is not Role.SYSTEM or m.content.strip()
    )
    return out


class RemoteSession:
    """A remote model with the part of :class:`ChatSession`'s interface chat uses."""

    def __init__(self, ref: RemoteRef, client: RemoteClient) -> None:
        self.ref = ref
        self.client = client
        self.info = ModelInfo(
            path=Path(str(ref)),
            name=f"{ref.model} on {ref.remote}",
            architecture="remote",
            n_ctx=0,
            n_ctx_train=0,
            n_layers=0,
            n_params=0,
            size_bytes=0,
            plan=LoadPlan(),
            flash_attention=False,
            gpu_offload_supported=False,
            template_name="server",
            template_note=f"served by {client.remote.url}, which formats the prompt",
            load_s=0.0,
            rss_after_load_bytes=0,
            notes=(f"memory: remote ({client.remote.url})",),
        )
        self._closed = False

    @classmethod
    def open(cls, ref: RemoteRef, store: RemoteStore | None = None) -> RemoteSession:
        """Check that the remote serves ``ref.model`` and return a session for it."""
        store = store or RemoteStore()
        client = store.client(ref.remote)
        ids = [m.id for m in client.models()]
        if ref.model not in ids:
            shown = ", ".join(ids[:8]) or "none"
            raise RemoteError(
                f"{ref.remote} does not serve {ref.model!r} (it serves: {shown}); "
                "check the name with 'quantdesk remote models'"
            )
        return cls(ref, client)

    def respond(
        self,
        messages: Sequence[ChatMessage],
        *,
        system_prompt: str = "",
        sampling: SamplingSettings | None = None,
        on_token: Callable[[str], None] | None = None,
        on_sample: Callable[[LiveSample], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Answer:
        if self._closed:
            raise GenerationError("the remote model was closed; pick it again")
        return self.client.chat(
            self.ref.model,
            openai_messages(
                [m for m in messages if m.role is not Role.SYSTEM or m.content], system_prompt
            ),
            sampling or SamplingSettings(),
            on_token=on_token,
            on_sample=on_sample,
            cancel=cancel,
        )

    @property
    def n_ctx(self) -> int:
        return 0

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(frozen=True)
class RemoteListing:
    """Every remote's models, and a sentence for each remote that could not be listed."""

    models: tuple[RemoteModel, ...] = ()
    notes: tuple[str, ...] = ()


def remote_listing(store: RemoteStore | None = None) -> RemoteListing:
    """The models of every remote; one that cannot be reached becomes a note, not a failure."""
    store = store or RemoteStore()
    models: list[RemoteModel] = []
    notes: list[str] = []
    for remote in store.list():
        try:
            models.extend(store.client(remote.name).models())
        except RemoteError as exc:
            logger.info("remote %s unavailable: %s", remote.name, exc)
            notes.append(f"remote {remote.name}: {exc}")
    return RemoteListing(tuple(models), tuple(notes))


def list_remote_models(store: RemoteStore | None = None) -> list[RemoteModel]:
    """Every remote's models; a remote that cannot be reached is skipped (and logged)."""
    return list(remote_listing(store).models)
