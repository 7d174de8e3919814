"""The stats bar and the live chart of one answer: tokens/s and memory, measured,
with the advisor's prediction drawn beside them as dashed lines."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.core.chat.session import Prediction
from app.core.chat.stats import AnswerStats, LiveSample
from app.ui.theme import current_theme
from app.ui.widgets.flow_layout import FlowLayout
from quant.units import MIB, format_rate


class StatsBar(QWidget):
    """TTFT · prompt tok/s · generation tok/s · context used · memory."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # A flow layout wraps the figures onto a second line on narrow windows
        # instead of widening the page past the window.
        lay = FlowLayout(self, spacing=16)
        self.labels: dict[str, QLabel] = {}
        for key, tip in (
            ("ttft", "Time to first token, prompt processing included"),
            ("prompt", "Prompt tokens evaluated per second (cached tokens are free)"),
            ("gen", "Generated tokens per second"),
            ("context", "Tokens in the context / context size"),
            ("memory", "Resident memory of Quantdesk (and VRAM on NVIDIA)"),
            ("stop", "Why the last answer ended"),
        ):
            label = QLabel("—")
            label.setObjectName(f"stat_{key}")
            label.setToolTip(tip)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.labels[key] = label
            lay.addWidget(label)
        self.clear()

    def clear(self) -> None:
        self.labels["ttft"].setText("TTFT —")
        self.labels["prompt"].setText("Prompt — tok/s")
        self.labels["gen"].setText("Generation — tok/s")
        self.labels["context"].setText("Context —")
        self.labels["memory"].setText("RSS —")
        self.labels["stop"].setText("")

    def text(self) -> str:
        return "  ".join(lbl.text() for lbl in self.labels.values() if lbl.text())

    def show_live(self, sample: LiveSample, *, context_used: int, context_size: int) -> None:
        if sample.tokens_per_s is not None:
            self.labels["gen"].setText(f"Generation {format_rate(sample.tokens_per_s)} tok/s")
        self.labels["context"].setText(f"Context {context_used:,} / {context_size:,}")
        self._memory(sample.rss_bytes, sample.vram_bytes)

    def show_stats(self, st: AnswerStats) -> None:
        self.labels["ttft"].setText(
            f"TTFT {st.ttft_s * 1000:.0f} ms" if st.ttft_s is not None else "TTFT —"
        )
        pps = st.prompt_tokens_per_s
        cached = f" (+{st.prompt_tokens_cached} cached)" if st.prompt_tokens_cached else ""
        self.labels["prompt"].setText(
            f"Prompt {format_rate(pps)} tok/s · {st.prompt_tokens_evaluated} tok{cached}"
            if pps is not None
            else f"Prompt — · {st.prompt_tokens_evaluated} tok{cached}"
        )
        if st.remote and st.prompt_tokens == 0:  # the server did not report its usage
            self.labels["prompt"].setText("Prompt —")
        gps = st.gen_tokens_per_s
        self.labels["gen"].setText(
            f"Generation {format_rate(gps)} tok/s · {st.generated_tokens} tok"
            if gps is not None
            else f"Generation — · {st.generated_tokens} tok"
        )
        if st.remote:  # measured as a client: the memory is the server's
            self.labels["context"].setText(f"Context {st.context_used:,}")
            self.labels["memory"].setText("Memory: remote")
        else:
            self.labels["context"].setText(f"Context {st.context_used:,} / {st.context_size:,}")
            self._memory(st.rss_peak_bytes, st.vram_peak_bytes)
        self.labels["stop"].setText(f"Stop: {st.stop_reason.value}")

    def _memory(self, rss: int, vram: int | None) -> None:
        text = f"RSS {rss / MIB:,.0f} MiB"
        if vram is not None:
            text += f" · VRAM {vram / MIB:,.0f} MiB"
        self.labels["memory"].setText(text)


class LiveChart(QWidget):
    """Tokens/s (left axis) and RSS in MiB (right axis) over the current answer.

    The advisor's predicted generation rate and RAM are dashed horizontal lines
    in the same colours, so prediction and measurement sit side by side.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._loaded = False
        t = current_theme()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(background=t.surface)
        self.plot.setObjectName("liveChart")
        self.plot.setMinimumHeight(110)
        self.plot.setMaximumHeight(150)
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        item.setLabel("bottom", "s")
        item.setLabel("left", "tok/s")
        item.showAxis("right")
        item.getAxis("right").setLabel("RSS MiB")
        for axis in ("left", "bottom", "right"):
            item.getAxis(axis).setTextPen(t.text_muted)
            item.getAxis(axis).setPen(t.border)
        self._speed_color = t.accent
        self._mem_color = t.good
        self.speed_curve = item.plot([], [], pen=pg.mkPen(self._speed_color, width=2))
        self.mem_view = pg.ViewBox()
        item.scene().addItem(self.mem_view)
        item.getAxis("right").linkToView(self.mem_view)
        self.mem_view.setXLink(item)
        self.mem_curve = pg.PlotCurveItem([], [], pen=pg.mkPen(self._mem_color, width=1.5))
        self.mem_view.addItem(self.mem_curve)
        dash = Qt.PenStyle.DashLine
        self.predicted_speed = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen(self._speed_color, width=1, style=dash)
        )
        self.predicted_mem = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen(self._mem_color, width=1, style=dash)
        )
        item.addItem(self.predicted_speed)
        self.mem_view.addItem(self.predicted_mem)
        self.predicted_speed.setVisible(False)
        self.predicted_mem.setVisible(False)
        item.getViewBox().sigResized.connect(self._sync_views)
        lay.addWidget(self.plot)
        self.legend = QLabel()
        self.legend.setProperty("muted", "true")
        self.legend.setWordWrap(True)
        lay.addWidget(self.legend)
        self._t: list[float] = []
        self._speed: list[float] = []
        self._mem_t: list[float] = []
        self._mem: list[float] = []
        self.prediction: Prediction | None = None
        self._sync_views()
        self._update_legend()

    def _sync_views(self) -> None:
        vb = self.plot.getPlotItem().getViewBox()
        self.mem_view.setGeometry(vb.sceneBoundingRect())
        self.mem_view.linkedViewChanged(vb, self.mem_view.XAxis)

    def set_prediction(self, prediction: Prediction | None, *, loaded: bool = True) -> None:
        """Draw ``prediction`` beside the measurement; ``loaded`` says a model is in use."""
        self.prediction = prediction
        self._loaded = loaded
        if prediction is None:
            self.predicted_speed.setVisible(False)
            self.predicted_mem.setVisible(False)
        else:
            self.predicted_speed.setPos(prediction.gen_tokens_per_s)
            self.predicted_speed.setVisible(True)
            self.predicted_mem.setPos(prediction.expected_rss_bytes / MIB)
            self.predicted_mem.setVisible(True)
        self._rescale()
        self._update_legend()

    def reset(self) -> None:
        self._t, self._speed, self._mem_t, self._mem = [], [], [], []
        self.speed_curve.setData([], [])
        self.mem_curve.setData([], [])
        self._rescale()

    def add_sample(self, sample: LiveSample) -> None:
        self._mem_t.append(sample.t_s)
        self._mem.append(sample.rss_bytes / MIB)
        if sample.tokens_per_s is not None:
            self._t.append(sample.t_s)
            self._speed.append(sample.tokens_per_s)
        self.speed_curve.setData(self._t, self._speed)
        self.mem_curve.setData(self._mem_t, self._mem)
        self._rescale()

    def series(self) -> tuple[list[float], list[float]]:
        """The measured tokens/s curve (times, rates)."""
        return list(self._t), list(self._speed)

    def _rescale(self) -> None:
        top = max([*self._speed, 1.0])
        mem_hi = max([*self._mem, 1.0])
        mem_lo = min(self._mem) if self._mem else 0.0
        if self.prediction is not None:
            top = max(top, self.prediction.gen_tokens_per_s)
            pm = self.prediction.expected_rss_bytes / MIB
            mem_hi = max(mem_hi, pm)
            mem_lo = min(mem_lo, pm) if self._mem else pm
        item = self.plot.getPlotItem()
        item.setYRange(0, top * 1.15, padding=0)
        span = max(mem_hi - mem_lo, 16.0)
        self.mem_view.setYRange(max(0.0, mem_lo - span * 0.5), mem_hi + span * 0.5, padding=0)
        right = max([*self._t, *self._mem_t, 1.0])
        item.setXRange(0, right, padding=0.02)

    def _update_legend(self) -> None:
        p = self.prediction
        parts = [
            f"<span style='color:{self._speed_color}'>━ tok/s</span>",
            f"<span style='color:{self._mem_color}'>━ RSS</span>",
        ]
        if p is not None:
            parts.append(
                f"╌ predicted {format_rate(p.gen_tokens_per_s)} tok/s "
                f"({format_rate(p.gen_low)}–{format_rate(p.gen_high)}), "
                f"RSS {p.expected_rss_bytes / MIB:,.0f} MiB "
                f"(+{p.ram_bytes / MIB:,.0f} MiB for the model)"
                + ("" if p.calibrated else " (uncalibrated)")
            )
        elif self._loaded:
            parts.append("no prediction for this model")
        else:
            parts.append("load a model: its predicted speed and memory are drawn here")
        self.legend.setText(" &nbsp; ".join(parts))
