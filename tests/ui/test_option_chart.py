"""The Advisor chart's loss axis names only 1, 2 and 5 of each decade, so its labels
never run into each other however narrow the range."""

from __future__ import annotations

import math
from typing import Any

from app.ui.widgets.option_chart import LogLossAxis, OptionChart


def test_the_log_axis_labels_only_one_two_and_five(qtbot: Any) -> None:
    axis = LogLossAxis(orientation="left")
    axis.setLogMode(True)
    values = [math.log10(v) for v in (0.08, 0.09, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 5.0)]
    labels = axis.tickStrings(values, 1.0, 1.0)
    assert labels == ["", "", "0.1", "0.2", "", "0.5", "", "1", "2", "5"]


def test_the_chart_uses_it_for_the_loss(qtbot: Any) -> None:
    chart = OptionChart()
    qtbot.addWidget(chart)
    assert isinstance(chart.plot.getPlotItem().getAxis("left"), LogLossAxis)
