"""The Convert page: queue jobs, cancel one, complete one, read the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.core.settings import Settings
from app.ui.pages.convert_page import ConvertPage
from quant.errors import QuantError
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
    # Rows run from the smallest file up (a mix then sits among the stock types).
    by_size = sorted(report["outputs"], key=lambda o: o["size_bytes"])
    assert [r[0] for r in rows] == [o["type"] for o in by_size]
    assert {r[0]: r[3] for r in rows} == {"Q8_0": "no", "Q4_K_M": "yes"}  # imatrix where used
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
    assert chat.args[0] == Path(by_size[1]["path"])
    assert chat.args[0].is_file()


# -- size budget ------------------------------------------------------------------------


def test_budget_mode_marks_the_stock_types_and_queues_a_mix_job(
    page: ConvertPage, qtbot: Any, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny-F32.gguf")
    page.preset(str(gguf), [])
    qtbot.waitUntil(lambda: page.budget_axis.axis() is not None, timeout=10_000)
    assert not page.budget_panel.isVisible()
    qtbot.mouseClick(page.mode_budget, Qt.MouseButton.LeftButton)
    assert page.budget_panel.isVisible() and not page.types_list.isVisible()
    axis = page.budget_axis.axis()
    assert axis is not None
    names = {m.name for m in axis.marks}
    assert {"Q8_0", "Q4_K_M", "Q2_K"} <= names
    assert axis.min_bytes < min(m.size_bytes for m in axis.marks) < axis.max_bytes
    # The first budget is where Q4_K_M falls, so the user starts from the usual choice.
    q4 = next(m for m in axis.marks if m.name == "Q4_K_M")
    assert page.budget_bytes() == q4.size_bytes
    assert "compared with" in page.budget_note.text()

    # Clicking the axis moves the budget; typing a size or bits per weight does too.
    with qtbot.waitSignal(page.budget_axis.budget_changed, timeout=2_000):
        qtbot.mouseClick(
            page.budget_axis,
            Qt.MouseButton.LeftButton,
            pos=page.budget_axis.rect().center(),
        )
    assert page.budget_edit.text() == str(page.budget_axis.budget())
    page.budget_edit.setText("6bpw")
    page.budget_edit.editingFinished.emit()
    assert page.budget_axis.budget() == page.budget_bytes() == int(6 * axis.n_parameters / 8)
    assert "6.00 bits per weight" in page.budget_note.text()

    spec = page.build_spec()
    assert spec.budget == "6bpw" and spec.types == ()
    page.out_edit.setText(str(tmp_path / "models"))
    page._remember()
    again = ConvertPage(page.settings)
    qtbot.addWidget(again)
    assert again.budget_mode() and again.budget_edit.text() == "6bpw"

    page.budget_edit.setText("a lot")
    page.budget_edit.editingFinished.emit()
    with pytest.raises(QuantError, match="not a size"):
        page.build_spec()


def _report(tmp_path: Path, *, kept: bool) -> dict[str, Any]:
    def ev(kld: float) -> dict[str, Any]:
        return {
            "kld_mean": kld,
            "kld_p99": 10 * kld,
            "kld_median": kld / 2,
            "perplexity": 10 + kld,
            "delta_perplexity": kld,
            "top1_agreement": 1 - kld,
        }

    def out(t: str, size: int, kld: float) -> dict[str, Any]:
        return {
            "type": t,
            "path": str(tmp_path / f"m-{t}.gguf"),
            "size_bytes": size,
            "bits_per_weight": 8 * size / 1e8,
            "imatrix": True,
            "reused": False,
            "seconds": 1.0,
            "evaluation": ev(kld),
        }

    mix = {
        "budget_bytes": 50_000_000,
        "size_bytes": 49_999_000,
        "bits_per_weight": 4.0,
        "predicted_kld": 0.05,
        "path": str(tmp_path / "m-mix.gguf"),
        "kept": kept,
        "evaluation": ev(0.04 if kept else 0.2),
        "verdict": "The mix has 0.40× the KL divergence of Q3_K_M."
        if kept
        else "The searched mix did not beat Q3_K_M at the same size; it was removed.",
    }
    outputs = [out("Q3_K_M", 48_000_000, 0.1), out("IQ4_XS", 56_000_000, 0.06)]
    if kept:
        outputs.append(out("MIX", 49_999_000, 0.04))
    return {
        "outputs": outputs,
        "mix": mix,
        "base_model": "m-F16.gguf",
        "report_path": str(tmp_path / "r.json"),
    }


def test_the_report_shows_the_mix_beside_the_stock_types(page: ConvertPage, tmp_path: Path) -> None:
    page.show_report(_report(tmp_path, kept=True))
    rows = page.report_rows()
    assert [r[0] for r in rows] == ["Q3_K_M", "Quantdesk mix", "IQ4_XS"]  # by size
    assert "0.40× the KL divergence" in page.report_note.text()
    if page._plot is not None:
        symbols = [item.opts.get("symbol") for item in page._plot.listDataItems()]
        assert "star" in symbols and "o" in symbols

    page.show_report(_report(tmp_path, kept=False))
    rows = page.report_rows()
    assert [r[0] for r in rows] == ["Q3_K_M", "Quantdesk mix (removed)", "IQ4_XS"]
    assert "did not beat Q3_K_M" in page.report_note.text()
    page.report_table.selectRow(1)
    assert not page.chat_button.isEnabled()  # a removed mix cannot be chatted with
