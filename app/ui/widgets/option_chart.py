"""The Advisor's chart: each option's memory against its predicted quality loss.

x is the memory an option takes (RAM + GPU memory, in MiB or GiB), y its predicted mean KL
divergence on a log scale (lower is better), and each dot's colour and size its
predicted generation speed (brighter and bigger is faster). Options that do not
fit are hollow; the top pick and the selected option are ringed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.ui.theme import current_theme
from quant.units import GIB, MIB, format_rate

# The smallest loss drawn: BF16/F16 have none, and a log axis cannot show zero.
KLD_FLOOR = 1e-4


class LogLossAxis(pg.AxisItem):  # type: ignore[misc]  # pyqtgraph ships no types
    """A log axis that labels only 1, 2 and 5 of each decade, so labels never crowd.

    pyqtgraph labels every minor tick (0.08, 0.09, 0.1, …) when a range spans
    about a decade, and they run into each other.
    """

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if not self.logMode:
            return list(super().tickStrings(values, scale, spacing))
        out = []
        for v in values:
            x = 10.0**v
            mantissa = x / 10.0 ** math.floor(math.log10(x) + 1e-9)
            out.append(f"{x:g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else "")
        return out


class OptionChart(QWidget):
    #: The key of the option whose dot was clicked.
    option_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        t = current_theme()
        pg.setConfigOptions(antialias=True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.plot = pg.PlotWidget(
            background=t.surface, axisItems={"left": LogLossAxis(orientation="left")}
        )
        self.plot.setMinimumHeight(220)
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.15)
        for side in ("left", "bottom"):
            axis = item.getAxis(side)
            axis.setPen(pg.mkPen(t.border))
            axis.setTextPen(pg.mkPen(t.text_muted))
            axis.enableAutoSIPrefix(False)
        self._unit = ""
        self._set_unit("GiB")
        item.setLabel("left", "Quality loss (mean KLD)", color=t.text_muted)
        item.getAxis("left").setLogMode(True)
        item.setMenuEnabled(False)
        item.hideButtons()
        self.scatter = pg.ScatterPlotItem(hoverable=True, tip=self._tip)
        self.scatter.sigClicked.connect(self._on_click)
        item.addItem(self.scatter)
        self._label = pg.TextItem(color=t.text, anchor=(0, 1))
        item.addItem(self._label)
        self.caption = QLabel()
        self.caption.setProperty("muted", "true")
        self.caption.setWordWrap(True)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.caption)
        self._points: list[dict[str, Any]] = []

    def points(self) -> list[dict[str, Any]]:
        """The plotted dots: key, label, bytes, x (in :attr:`unit`), KLD, tokens/s, fits."""
        return list(self._points)

    def set_options(
        self, options: Sequence[Any], *, top_key: str | None, selected_key: str | None = None
    ) -> None:
        """Plot ``options`` (advisor ``Option`` objects); those without a KLD are left out."""
        t = current_theme()
        pts = []
        for o in options:
            kld = o.quality.kld
            if kld is None:
                continue
            pts.append(
                {
                    "key": o.key,
                    "label": o.label,
                    "bytes": o.ram_bytes + o.vram_bytes,
                    "kld": kld,
                    "tok_s": o.speed.generation,
                    "fits": o.fits,
                }
            )
        self._points = pts
        if not pts:
            self.scatter.setData([])
            self._label.setText("")
            self.caption.setText("No quality prediction for these options.")
            return
        # Small models read better in MiB.
        unit, scale = ("MiB", MIB) if max(p["bytes"] for p in pts) < 2 * GIB else ("GiB", GIB)
        self._set_unit(unit)
        for p in pts:
            p["x"] = p["bytes"] / scale
        speeds = [p["tok_s"] for p in pts if p["fits"]] or [p["tok_s"] for p in pts]
        lo, hi = min(speeds), max(speeds)
        cmap = pg.colormap.get("viridis")
        spots = []
        top_pos = None
        for p in pts:
            frac = 0.5 if hi <= lo else (p["tok_s"] - lo) / (hi - lo)
            frac = min(1.0, max(0.0, frac))
            y = math.log10(max(p["kld"], KLD_FLOOR))
            ringed = p["key"] in (top_key, selected_key)
            if p["fits"]:
                brush = pg.mkBrush(cmap.map(0.1 + 0.85 * frac, mode="qcolor"))
                pen = pg.mkPen(t.accent, width=3) if ringed else pg.mkPen(t.surface, width=1)
            else:
                brush = pg.mkBrush(0, 0, 0, 0)
                pen = pg.mkPen(t.accent if ringed else t.text_muted, width=3 if ringed else 1.2)
            spots.append(
                {
                    "pos": (p["x"], y),
                    "size": 9 + 11 * frac,
                    "brush": brush,
                    "pen": pen,
                    "data": p["key"],
                }
            )
            if p["key"] == top_key:
                top_pos = (p["x"], y, p["label"])
        self.scatter.setData(spots)
        if top_pos is not None:
            self._label.setText(f"  {top_pos[2]}")
            self._label.setPos(top_pos[0], top_pos[1])
        else:
            self._label.setText("")
        self.plot.getPlotItem().autoRange(padding=0.12)
        self.caption.setText(
            f"Colour and size: generation speed, {format_rate(lo)} (dark, small) to "
            f"{format_rate(hi)} tokens/s "
            "(bright, big). Hollow: does not fit. Ringed: top pick and selection. "
            "Lower is better on the vertical axis."
        )

    @property
    def unit(self) -> str:
        return self._unit

    def _set_unit(self, unit: str) -> None:
        if unit != self._unit:
            self._unit = unit
            self.plot.getPlotItem().setLabel(
                "bottom", f"Memory ({unit})", color=current_theme().text_muted
            )

    def _tip(self, x: float, y: float, data: Any) -> str:
        for p in self._points:
            if p["key"] == data:
                fit = "" if p["fits"] else " (does not fit)"
                return (
                    f"{p['label']}{fit}\n{p['x']:.4g} {self._unit} · KLD {p['kld']:.4g} · "
                    f"{format_rate(p['tok_s'])} tokens/s"
                )
        return str(data)

    def _on_click(self, _item: Any, points: Any, _event: Any = None) -> None:
        if points is not None and len(points):
            self.option_clicked.emit(str(points[0].data()))
