"""The chat engine: templates, loading, streaming, stop, the prefix cache, context limits.

The model tests share one loaded starter model (Gemma 3 270M, n_ctx 2048, one
thread so that a busy machine does not make them crawl) and keep answers short.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.chat.session import (
    ChatLoadError,
    ChatSession,
    ContextOverflowError,
    LoadFailure,
    classify_load_failure,
    estimate_fit,
)
from app.core.chat.settings import (
    ChatSettingsStore,
    LoadPlan,
    ModelChatSettings,
    SamplingSettings,
)
from app.core.chat.stats import StopReason
from app.core.chat.templates import (
    ChatMessage,
    ChatTemplateError,
    PromptMode,
    Role,
    TemplateSource,
    builtin_template,
    render_jinja,
    select_template,
)
from app.core.errors import ModelLoadError
from app.core.settings import Settings
from quant.errors import Cancelled
from quant.plan.memory import KvType
from quant.progress import CancelToken

U = Role.USER
A = Role.ASSISTANT


def _no_special_tokens(_text: str) -> bool:
    return False


# ----------------------------------------------------------------------------- templates

CHATML_LIKE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_file_template_is_rendered_in_the_sandbox() -> None:
    template = select_template(
        {"general.architecture": "qwen2", "tokenizer.chat_template": CHATML_LIKE},
        has_token=_no_special_tokens,
    )
    assert template.source is TemplateSource.GGUF
    text = template.render(
        [ChatMessage(U, "Hi"), ChatMessage(A, "Hello!"), ChatMessage(U, "Bye")],
        system_prompt="Be brief.",
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_gemma_file_without_template_gets_the_builtin_gemma_format() -> None:
    template = select_template(
        {"general.architecture": "gemma3", "general.finetune": "it"},
        has_token=_no_special_tokens,
        bos_token="<bos>",
    )
    assert template.source is TemplateSource.BUILTIN
    assert template.name == "gemma"
    assert "no chat template" in template.note
    text = template.render(
        [ChatMessage(U, "Hi"), ChatMessage(A, "Hello!"), ChatMessage(U, "Bye")],
        system_prompt="Be brief.",
    )
    # Gemma has no system role: the system prompt opens the first user turn.
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "{{ messages.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}{{ messages }}",
        "{{ 'x' * 100000000 }}",
    ],
)
def test_template_reaching_outside_the_sandbox_is_refused(hostile: str) -> None:
    with pytest.raises(ChatTemplateError, match=r"refused|unsafe"):
        render_jinja(
            hostile,
            [{"role": "user", "content": "hi"}],
            bos_token="",
            eos_token="",
            add_generation_prompt=True,
        )
    # A model file carrying such a template falls back to the built-in family template.
    chosen = select_template(
        {"general.architecture": "gemma3", "tokenizer.chat_template": hostile},
        has_token=_no_special_tokens,
    )
    assert chosen.source is TemplateSource.BUILTIN
    assert chosen.name == "gemma"
    assert "refused" in chosen.note


def test_template_raise_exception_becomes_a_template_error() -> None:
    src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="user first"):
        render_jinja(
            src,
            [{"role": "assistant", "content": "x"}],
            bos_token="",
            eos_token="",
            add_generation_prompt=True,
        )


def test_builtin_families_pick_by_special_tokens() -> None:
    llama3_tokens = {"<|start_header_id|>", "<|eot_id|>"}
    chosen = select_template(
        {"general.architecture": "llama"},
        has_token=lambda t: t in llama3_tokens,
        mode=PromptMode.TEMPLATE,
    )
    assert chosen.name == "llama3"
    chatml = select_template(
        {"general.architecture": "qwen3"},
        has_token=lambda t: t in {"<|im_start|>", "<|im_end|>"},
        mode=PromptMode.TEMPLATE,
    )
    assert chatml.name == "chatml"
    assert (
        builtin_template("mistral").render([ChatMessage(U, "Q")], system_prompt="S")
        == "[INST] S\n\nQ [/INST]"
    )


def test_raw_mode_concatenates_the_text() -> None:
    raw = select_template(
        {"general.architecture": "gemma3"}, has_token=_no_special_tokens, mode=PromptMode.RAW
    )
    assert (
        raw.render([ChatMessage(U, "Once upon"), ChatMessage(A, " a time")], system_prompt="Story:")
        == "Story:\n\nOnce upon a time"
    )


# ----------------------------------------------------------------------------- settings


def test_sampling_settings_are_saved_per_model(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "settings.json")
    store = ChatSettingsStore(settings)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    store.save_for_model(
        a,
        ModelChatSettings(
            sampling=SamplingSettings(temperature=0.2, top_k=7, seed=42),
            plan=LoadPlan(n_ctx=2048, kv_type=KvType.Q8_0),
            system_prompt="Be terse.",
        ),
    )
    store.update_sampling(b, SamplingSettings(temperature=1.3))
    reread = ChatSettingsStore(Settings(tmp_path / "settings.json"))
    got_a = reread.for_model(a)
    assert got_a.sampling.temperature == 0.2
    assert got_a.sampling.top_k == 7
    assert got_a.sampling.seed == 42
    assert got_a.plan.n_ctx == 2048
    assert got_a.plan.kv_type is KvType.Q8_0
    assert got_a.system_prompt == "Be terse."
    assert reread.for_model(b).sampling.temperature == 1.3
    assert reread.for_model(b).system_prompt == ""
    assert reread.last_model() == b.resolve()


def test_hand_edited_settings_are_clamped(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "settings.json")
    key = ChatSettingsStore.key(tmp_path / "m.gguf")
    settings.section("chat")["models"] = {
        key: {
            "sampling": {"temperature": "hot", "top_p": 7, "top_k": -3, "max_tokens": True},
            "plan": {"n_ctx": 10, "kv_type": "fp7", "n_gpu_layers": "all"},
            "mode": "poetry",
        }
    }
    got = ChatSettingsStore(settings).for_model(tmp_path / "m.gguf")
    assert got.sampling.temperature == SamplingSettings().temperature
    assert got.sampling.top_p == 1.0
    assert got.sampling.top_k == 0
    assert got.plan.n_ctx == 256
    assert got.plan.kv_type is KvType.F16
    assert got.mode is PromptMode.CHAT


# ----------------------------------------------------------------------------- bad files


def _assert_plain_sentence(message: str, name: str) -> None:
    assert name in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert ";" in message  # a next step follows the problem


def test_random_bytes_are_refused_with_a_plain_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "random.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError) as info:
        ChatSession.load(bad, LoadPlan(n_ctx=256))
    assert isinstance(info.value, ChatLoadError)
    assert info.value.failure is LoadFailure.NOT_GGUF
    assert "not a GGUF file" in str(info.value)
    _assert_plain_sentence(str(info.value), "random.gguf")


def test_truncated_gguf_is_reported_as_damaged(tmp_path: Path, starter_model: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with starter_model.open("rb") as src:
        cut.write_bytes(src.read(starter_model.stat().st_size // 2))
    with pytest.raises(ChatLoadError) as info:
        ChatSession.load(cut, LoadPlan(n_ctx=256))
    assert info.value.failure is LoadFailure.CORRUPT
    assert "truncated" in str(info.value)
    _assert_plain_sentence(str(info.value), "cut.gguf")


def test_unknown_architecture_is_named(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "alien.gguf"
    w = gguf.GGUFWriter(str(path), "notarealarch")
    w.add_name("alien")
    w.add_context_length(128)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ChatLoadError) as info:
        ChatSession.load(path, LoadPlan(n_ctx=256), check_fit=False)
    assert info.value.failure is LoadFailure.UNKNOWN_ARCHITECTURE
    assert "'notarealarch'" in str(info.value)
    _assert_plain_sentence(str(info.value), "alien.gguf")


def test_out_of_memory_during_load_offers_a_smaller_plan() -> None:
    # What llama.cpp logs when a CUDA buffer cannot be allocated.
    lines = [
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 40960.00 MiB on device 0: "
        "cudaMalloc failed: out of memory",
        "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
        "llama_model_load_from_file_impl: failed to load model",
    ]
    plan = LoadPlan(n_ctx=32768, n_gpu_layers=-1)
    err = classify_load_failure(
        Path("big.gguf"), lines, ValueError("Failed to load model"), plan, n_layers=48
    )
    assert isinstance(err, ModelLoadError)
    assert err.failure is LoadFailure.OUT_OF_MEMORY
    assert err.retry == LoadPlan(n_ctx=16384, n_gpu_layers=24)
    assert str(err).startswith("big.gguf: not enough memory to load with context 32,768 tokens")
    assert "retry with context 16,384 tokens, GPU 24 layers" in str(err)
    _assert_plain_sentence(str(err), "big.gguf")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ChatLoadError) as info:
        ChatSession.load(tmp_path / "nowhere.gguf")
    assert info.value.failure is LoadFailure.NOT_FOUND


def test_a_folder_is_told_apart_from_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ChatLoadError, match=r"is a folder.*convert-hf"):
        ChatSession.load(tmp_path)


def test_a_config_or_a_hub_id_is_told_apart_from_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ChatLoadError, match=r"config\.json holds no weights.*convert-hf") as info:
        ChatSession.load(tmp_path / "config.json")
    assert info.value.failure is LoadFailure.NOT_GGUF
    with pytest.raises(ChatLoadError, match=r"quantdesk pull acme/tiny-GGUF") as info:
        ChatSession.load("acme/tiny-GGUF")
    assert info.value.failure is LoadFailure.NOT_FOUND


# ----------------------------------------------------------------------------- fit check


def test_plan_that_does_not_fit_is_stopped_with_a_suggestion(
    starter_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = LoadPlan(n_ctx=32768, n_threads=1)
    fits = estimate_fit(starter_model, plan)
    assert fits.fits
    # With 480 MiB free, the weights fit but a 32k-token KV cache does not.
    report = estimate_fit(starter_model, plan, available_ram=480 * 2**20)
    assert not report.fits
    assert report.suggestion is not None
    assert 256 <= report.suggestion.n_ctx < 32768
    assert "try a context of" in report.message
    assert estimate_fit(starter_model, report.suggestion, available_ram=480 * 2**20).fits
    # Not even the weights fit: no context helps, a smaller quant might.
    tiny = estimate_fit(starter_model, plan, available_ram=64 * 2**20)
    assert tiny.suggestion is None
    assert "smaller quant" in tiny.message

    # load() stops before llama.cpp allocates anything.
    import app.core.chat.session as session_mod

    monkeypatch.setattr(session_mod, "available_ram_bytes", lambda: 480 * 2**20)
    with pytest.raises(ChatLoadError) as info:
        ChatSession.load(starter_model, plan)
    assert info.value.failure is LoadFailure.WONT_FIT
    assert info.value.retry == report.suggestion


@pytest.mark.slow
def test_load_reports_progress_and_can_be_cancelled(starter_model: Path) -> None:
    seen: list[int] = []
    token = CancelToken()

    def on_progress(p: object) -> None:
        seen.append(p.done)  # type: ignore[attr-defined]
        if p.done > 0:  # type: ignore[attr-defined]
            token.cancel()

    with pytest.raises(Cancelled):
        ChatSession.load(
            starter_model, LoadPlan(n_ctx=256, n_threads=1), on_progress=on_progress, cancel=token
        )
    assert seen[0] == 0
    assert any(v > 0 for v in seen)
    assert 100 not in seen


# ----------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def session(starter_model: Path) -> Iterator[ChatSession]:
    loaded: list[int] = []
    # The chat template's mechanics (the base starter chats through in-context examples
    # by default: tests/test_first_chat.py).
    s = ChatSession.load(
        starter_model,
        LoadPlan(n_ctx=2048, n_threads=1),
        mode=PromptMode.TEMPLATE,
        on_progress=lambda p: loaded.append(p.done),
    )
    assert loaded[-1] == 100
    yield s
    s.close()


GREEDY = SamplingSettings(temperature=0.0, max_tokens=12)


@pytest.mark.slow
def test_starter_model_loads_with_the_gemma_template(session: ChatSession) -> None:
    assert session.info.architecture == "gemma3"
    assert session.template.name == "gemma"
    assert session.n_ctx == 2048
    assert session.info.plan.n_threads == 1
    prediction = session.info.prediction
    assert prediction is not None
    assert prediction.gen_tokens_per_s > 0
    # The chart compares the predicted growth on top of the RSS the process had
    # before the load with the RSS it reads while answering.
    assert 0 < prediction.rss_before_load_bytes < session.info.rss_after_load_bytes
    assert prediction.expected_rss_bytes == prediction.rss_before_load_bytes + prediction.ram_bytes
    # The starter is Gemma 3 270M base: the user is told why it rambles.
    assert any("base model" in n for n in session.info.notes)


@pytest.mark.slow
def test_answer_streams_and_is_measured(session: ChatSession) -> None:
    pieces: list[str] = []
    samples: list[object] = []
    answer = session.respond(
        [ChatMessage(U, "Name three colors.")],
        sampling=GREEDY,
        on_token=pieces.append,
        on_sample=samples.append,
    )
    assert len(pieces) >= 2
    assert "".join(pieces) == answer.text
    st = answer.stats
    assert st.stop_reason in (StopReason.MAX_TOKENS, StopReason.END_OF_TURN)
    assert 1 <= st.generated_tokens <= 12
    assert st.ttft_s is not None and st.ttft_s > 0
    assert st.prompt_tokens == st.prompt_tokens_evaluated + st.prompt_tokens_cached
    assert st.prompt_tokens_per_s is not None and st.prompt_tokens_per_s > 0
    if st.generated_tokens >= 2:
        assert st.gen_tokens_per_s is not None and st.gen_tokens_per_s > 0
    assert st.rss_peak_bytes >= st.rss_bytes > 100 * 2**20  # the mapped weights are resident
    assert st.vram_bytes is None or st.vram_bytes > 0
    assert st.context_used == st.prompt_tokens + st.generated_tokens
    assert samples, "live samples arrive while answering"


@pytest.mark.slow
def test_second_turn_evaluates_only_the_new_tokens(session: ChatSession) -> None:
    first_q = "Write one sentence about the ocean and the moon and the tides at night."
    turn1 = [ChatMessage(U, first_q)]
    a1 = session.respond(turn1, system_prompt="You are helpful.", sampling=GREEDY)
    second_q = "Now about mountains."
    turn2 = [*turn1, ChatMessage(A, a1.text), ChatMessage(U, second_q)]
    a2 = session.respond(turn2, system_prompt="You are helpful.", sampling=GREEDY)
    st = a2.stats
    new_text = (
        f"<end_of_turn>\n<start_of_turn>user\n{second_q}<end_of_turn>\n<start_of_turn>model\n"
    )
    new_tokens = len(session.tokenize_prompt(new_text)) - 1  # tokenize_prompt adds a BOS
    # The history (system prompt, first question, first answer) came from the KV cache;
    # only the new turn and at most the last answer token were evaluated.
    assert st.prompt_tokens_cached >= a1.stats.prompt_tokens + a1.stats.generated_tokens - 2
    assert new_tokens <= st.prompt_tokens_evaluated <= new_tokens + 2
    assert st.prompt_tokens_evaluated < st.prompt_tokens / 2


@pytest.mark.slow
def test_stop_mid_answer_keeps_the_text(session: ChatSession) -> None:
    token = CancelToken()
    pieces: list[str] = []

    def on_token(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 5:
            token.cancel()

    answer = session.respond(
        [ChatMessage(U, "Count from one to fifty in words.")],
        sampling=SamplingSettings(temperature=0.0, max_tokens=200),
        on_token=on_token,
        cancel=token,
    )
    assert answer.stats.stop_reason is StopReason.STOPPED
    assert answer.stats.generated_tokens == 5
    assert answer.text == "".join(pieces)


@pytest.mark.slow
def test_regenerate_with_a_fixed_seed_repeats_and_reuses_the_prompt(session: ChatSession) -> None:
    msgs = [ChatMessage(U, "Tell me a fact about cats.")]
    seeded = SamplingSettings(temperature=0.9, seed=1234, max_tokens=10)
    session.respond(msgs, sampling=seeded)
    again = session.respond(msgs, sampling=seeded)
    third = session.respond(msgs, sampling=seeded)
    # The whole prompt was still cached; one token is evaluated for fresh logits.
    assert again.stats.prompt_tokens_evaluated == 1
    assert third.stats.prompt_tokens_evaluated == 1
    assert third.text == again.text
    other = session.respond(
        msgs, sampling=SamplingSettings(temperature=1.5, seed=99, max_tokens=10)
    )
    assert other.stats.generated_tokens >= 1


@pytest.mark.slow
def test_edit_and_resend_reuses_the_shared_prefix_only(session: ChatSession) -> None:
    system = "Answer in one word."
    base = [ChatMessage(U, "What color is the sky?")]
    a1 = session.respond(base, system_prompt=system, sampling=GREEDY)
    long_tail = [*base, ChatMessage(A, a1.text), ChatMessage(U, "And grass?")]
    session.respond(long_tail, system_prompt=system, sampling=GREEDY)
    # Edit the first question and resend: everything after the edit is evaluated again.
    edited = [ChatMessage(U, "What color is snow?")]
    a3 = session.respond(edited, system_prompt=system, sampling=GREEDY)
    shared = len(session.tokenize_prompt(f"<bos><start_of_turn>user\n{system}\n\nWhat color is"))
    assert a3.stats.prompt_tokens_cached == shared
    assert (
        a3.stats.prompt_tokens_evaluated == a3.stats.prompt_tokens - a3.stats.prompt_tokens_cached
    )


@pytest.mark.slow
def test_system_prompt_reaches_the_model(session: ChatSession) -> None:
    msgs = [ChatMessage(U, "Hi")]
    without = session.count_tokens(msgs)
    with_system = session.count_tokens(msgs, system_prompt="You are a pirate. Speak like one.")
    assert with_system > without
    prepared = session.prepare_prompt(msgs, system_prompt="You are a pirate.")
    text = session.template.render(msgs, system_prompt="You are a pirate.")
    assert "<start_of_turn>user\nYou are a pirate.\n\nHi" in text
    assert len(prepared.tokens) == len(session.tokenize_prompt(text))


@pytest.mark.slow
def test_raw_completion_mode(starter_model: Path) -> None:
    with ChatSession.load(
        starter_model, LoadPlan(n_ctx=256, n_threads=1), mode=PromptMode.RAW
    ) as raw:
        assert raw.template.is_raw
        answer = raw.respond([ChatMessage(U, "The capital of France is")], sampling=GREEDY)
        assert answer.stats.prompt_tokens == len(raw.tokenize_prompt("The capital of France is"))
        assert answer.stats.generated_tokens >= 1


@pytest.mark.slow
def test_long_conversation_drops_the_oldest_turns_and_says_so(starter_model: Path) -> None:
    with ChatSession.load(
        starter_model, LoadPlan(n_ctx=256, n_threads=1), mode=PromptMode.TEMPLATE
    ) as small:
        filler = "The quick brown fox jumps over the lazy dog. " * 6
        history: list[ChatMessage] = []
        for i in range(6):
            history += [ChatMessage(U, f"Question {i}: {filler}"), ChatMessage(A, f"Answer {i}.")]
        history.append(ChatMessage(U, "Last question?"))
        answer = small.respond(
            history,
            system_prompt="Stay calm.",
            sampling=SamplingSettings(temperature=0.0, max_tokens=8),
        )
        assert answer.stats.dropped_messages >= 2
        assert answer.stats.dropped_messages % 2 == 0  # whole exchanges go
        assert "oldest" in answer.notice and "256-token context" in answer.notice
        assert answer.stats.prompt_tokens + 8 <= 256
        kept = small.prepare_prompt(history, system_prompt="Stay calm.", reserve=8)
        text = small.detokenize(kept.tokens)
        assert "Stay calm." in text  # the system prompt is kept
        assert "Last question?" in text
        with pytest.raises(ContextOverflowError, match="256-token context"):
            small.respond([ChatMessage(U, filler * 10)], sampling=GREEDY)


@pytest.mark.parametrize(
    ("metadata", "filename", "base"),
    [
        (
            {"general.name": "Gemma 3 270m", "general.basename": "gemma-3"},
            "gemma-3-270m.gguf",
            True,
        ),
        ({"general.name": "Gemma 3 270m", "general.finetune": "it"}, "x.gguf", False),
        ({"general.name": "Qwen2.5 7B Instruct"}, "qwen.gguf", False),
        ({"general.name": "Llama 3"}, "Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", False),
        ({"general.name": "Phi", "tokenizer.chat_template": "{{ messages }}"}, "phi.gguf", False),
        ({"general.name": "Mistral 7B v0.1"}, "mistral-7b-v0.1.Q4_K_M.gguf", True),
        # "it" only as a word of its own, not inside another one ("Unit", "bit").
        ({"general.name": "Unit 8bit"}, "unit-8bit.gguf", True),
    ],
)
def test_base_models_are_told_apart_from_chat_models(
    metadata: dict[str, str], filename: str, base: bool
) -> None:
    from app.core.chat.templates import is_base_model

    assert is_base_model(metadata, filename) is base
