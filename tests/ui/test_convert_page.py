"""The Convert page: queue jobs, cancel one, complete one, read the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.core.settings import Settings
from app.ui.pages.convert_page import ConvertPage
from tests.ui.conftest import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama checkpoint (HF folder) built on the spot."""
    from tests.convert import checkpoints as ckpt

    tok = ckpt.with_bos(
        ckpt.train_bpe("llama3", specials=ckpt.LLAMA3_SPECIALS), "<|begin_of_text|>"
    )
    return ckpt.build_llama(tmp_path_factory.mktemp("hf") / "tiny-llama", tok).path


@pytest.fixture
def page(qtbot: Any, settings: Settings) -> ConvertPage:
    # Small stages so a job on the tiny model takes seconds.
    s = settings.section("convert")
    s.update({"chunk_size": 32, "imatrix_chunks": 2, "eval_chunks": 2})
    p = ConvertPage(settings)
    qtbot.addWidget(p)
    p.show()
    return p


def test_preset_fills_source_and_types_with_predictions(
    page: ConvertPage, qtbot: Any, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny-F32.gguf")
    page.preset(str(gguf), ["Q5_K_M", "IQ4_XS"])
    assert page.source_edit.text() == str(gguf)
    assert page.selected_types() == ["Q5_K_M", "IQ4_XS"]
    qtbot.waitUntil(lambda: "GGUF llama" in page.source_note.text(), timeout=10_000)
    texts = [page.types_list.item(i).text() for i in range(page.types_list.count())]
    q5 = next(t for t in texts if t.startswith("Q5_K_M"))
    assert "bpw" in q5 and "KLD ≈" in q5
    assert any("needs an importance matrix" in t for t in texts if t.startswith("IQ2_XS"))


def test_missing_source_is_explained_without_starting_anything(
    page: ConvertPage, qtbot: Any
) -> None:
    from tests.ui.conftest import message_boxes

    page.source_edit.setText("")
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    boxes = message_boxes()
    assert boxes and "Choose a model first" in boxes[0].text()
    assert not page.is_busy()


def test_queue_cancel_one_complete_one_and_read_the_report(
    page: ConvertPage, qtbot: Any, tiny_hf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    page.preset(str(tiny_hf), ["Q8_0", "Q4_K_M"])
    page.out_edit.setText(str(out))

    with qtbot.waitSignal(page.job_started, timeout=10_000):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)  # a second job queues
    assert page.queued_count() == 1

    # Cancel the first job as soon as it reports its stages.
    qtbot.waitUntil(lambda: len(page._stage_rows) > 0, timeout=30_000)
    assert list(page._stage_rows)[:2] == ["prepare", "imatrix"]
    assert page.cancel_button.isEnabled()
    with qtbot.waitSignal(page.job_cancelled, timeout=30_000):
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    assert "cancelled" in page.queue_list.item(0).text()

    # The queued job starts by itself and runs to the end.
    with qtbot.waitSignal(page.job_finished, timeout=180_000) as finished:
        pass
    report = finished.args[0]
    assert "done" in page.queue_list.item(1).text()
    rows = page.report_rows()
    assert [r[0] for r in rows] == ["Q8_0", "Q4_K_M"]
    assert [r[3] for r in rows] == ["no", "yes"]  # imatrix only where it is used
    assert all(float(r[4]) >= 0.0 for r in rows)  # KLD mean
    assert all(r[8].endswith("%") for r in rows)  # same top token
    assert all(row.finished for row in page._stage_rows.values())
    assert Path(report["report_path"]).is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]

    # "Chat with this" hands the selected file to the chat page.
    page.report_table.selectRow(1)
    assert page.chat_button.isEnabled()
    with qtbot.waitSignal(page.chat_requested, timeout=2_000) as chat:
        qtbot.mouseClick(page.chat_button, Qt.MouseButton.LeftButton)
    assert chat.args[0] == Path(report["outputs"][1]["path"])
    assert chat.args[0].is_file()
