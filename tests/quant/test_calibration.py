"""Calibration text: the shipped mix, the user's files, and self-generated text."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant.jobs.calibration import (
    CalibrationError,
    CalibrationKind,
    CalibrationSet,
    Split,
    default_mix,
    from_path,
    resource_dir,
    self_generated,
)


def test_default_mix_has_every_domain_and_holds_out_one_in_eight() -> None:
    cal, held = default_mix(), default_mix(Split.HELD_OUT)
    names = {d.name for d in cal.documents}
    held_names = {d.name for d in held.documents}
    assert not names & held_names
    domains = {"prose", "explainers", "code", "multilingual", "chat"}
    assert {n.split(":")[0] for n in names} == domains
    assert {n.split(":")[0] for n in held_names} == domains
    assert len(held.documents) * 6 < len(cal.documents)
    assert cal.n_bytes > 120_000
    assert any(d.is_chat for d in cal.documents)
    assert cal.dataset_names == ("quantdesk-default-mix-v1",)
    assert (resource_dir() / "README.md").is_file()


def test_hash_depends_on_content_only() -> None:
    assert default_mix().sha256 == default_mix().sha256
    assert default_mix().sha256 != default_mix(Split.HELD_OUT).sha256


def test_a_folder_of_user_text(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first document", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second document", encoding="utf-8")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    s = from_path(tmp_path)
    assert s.kind is CalibrationKind.FILES
    assert [d.text for d in s.documents] == ["first document", "second document"]
    assert s.dataset_names == (str(tmp_path),)


def test_unreadable_user_text_is_explained(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="no such calibration file"):
        from_path(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(CalibrationError, match=r"latin1\.txt: not UTF-8 text"):
        from_path(bad)


def test_self_generated_text_is_reproducible_and_cached(f16_model: Path, tmp_path: Path) -> None:
    a = self_generated(f16_model, n_tokens=48, n_parallel=4)
    b = self_generated(f16_model, n_tokens=48, n_parallel=4)
    assert a.kind is CalibrationKind.SELF
    assert a.sha256 == b.sha256  # seeded
    assert a.details["tokens"] >= 48
    assert sum(len(d.text) for d in a.documents) > 100
    a.save(tmp_path / "self.json")
    assert CalibrationSet.load(tmp_path / "self.json").sha256 == a.sha256


@pytest.mark.slow
def test_conversations_are_calibrated_in_the_shape_chat_sends(starter_model: Path) -> None:
    """The importance matrix sees a conversation exactly as chat renders it for the model."""
    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan
    from quant.jobs.calibration import Document, chat_format
    from quant.native.llama_session import NativeModel
    from quant.prompts.templates import ChatMessage, Role

    turns = (("user", "What is 2 + 2?"), ("assistant", "4."), ("user", "And 3 + 3?"))
    with NativeModel(starter_model, n_ctx=256) as model:
        template = chat_format(model)
        assert template is not None
        calibrated = CalibrationSet("t", CalibrationKind.FILES, (Document("c", turns=turns),))
        stream = calibrated.tokenize(model).tolist()
    with ChatSession.load(starter_model, LoadPlan(n_ctx=256), check_fit=False) as session:
        messages = [ChatMessage(Role(r), c) for r, c in turns]
        chat_text = session.template.render(messages, add_generation_prompt=False)
        chat_tokens = session.tokenize_prompt(chat_text)
    # Chat's prompt starts with BOS (calibration chunks add their own), and the
    # calibration stream separates documents with a newline after the last turn.
    body = chat_tokens[1:-1]
    assert len(body) > 20
    assert stream[: len(body)] == body
