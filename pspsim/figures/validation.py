"""The validation figure: the calibrated model against the measurements.

Left, CPU per run: the model's relative error on each measured run, with
the prediction's standard error (propagated from the fitted parameters) as
error bars, and a +-5% band.  Right, throughput against live
NIC entries: measured points and the model's curve with its +-1 standard
error band.  When the table holds cross-validated predictions
(``predicted_out_of_sample``), they are drawn as open markers: where the
model lands on a point it was not fitted to.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pspsim.figures.style import VARIANT_COLORS, InlineFigure, style

OUT_OF_SAMPLE = "predicted_out_of_sample"


def _stderr(table: pd.DataFrame) -> np.ndarray:
    return table["predicted_stderr"].to_numpy() if "predicted_stderr" in table else np.zeros(len(table))


def validation_figure(table: pd.DataFrame) -> Figure:
    """``table``: the output of :func:`pspsim.calibration.fit.validate` (optionally with out-of-sample predictions)."""
    cpu = table[table["kind"] == "cpu"]
    state = table[table["kind"] == "state"]
    crossed = OUT_OF_SAMPLE in table
    model = "model fitted on all points, ±1 s.e." if crossed else "model, ±1 s.e."
    with style():
        fig = InlineFigure(figsize=(10, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2)
        if len(cpu):
            position = np.arange(len(cpu))[::-1]
            left.axvspan(-5, 5, color="grey", alpha=0.15, linewidth=0, label="±5%")
            left.axvline(0, color="grey", lw=0.8)
            error = (cpu["predicted"] / cpu["measured"] - 1).to_numpy() * 100
            spread = _stderr(cpu) / cpu["measured"].to_numpy() * 100
            colors = [VARIANT_COLORS.get(v, "#444444") for v in cpu["variant"]]
            for y, e, se, c in zip(position, error, spread, colors):
                left.errorbar(e, y, xerr=se, fmt="o", ms=4.5, color=c)
            if crossed:
                held = (cpu[OUT_OF_SAMPLE] / cpu["measured"] - 1).to_numpy() * 100
                left.scatter(held, position, s=60, facecolors="none", edgecolors=colors, linewidths=1,
                             label="held out (cross-validation)")
            left.errorbar([], [], xerr=[], fmt="o", ms=4.5, color="#444444", label=model)
            left.set_yticks(position, cpu["configuration"])
            for tick, c in zip(left.get_yticklabels(), colors):
                tick.set_color(c)
            limit = max(10.0, float(np.nanmax(np.abs(np.concatenate([error, held if crossed else error])))) * 1.2)
            left.set_xlim(-limit, limit)
            left.grid(axis="y", visible=False)
            left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize=7.5)
        left.set_xlabel("predicted / measured CPU - 1 (%)")
        left.set_title("CPU per run: model error", loc="left")
        if len(state):
            entries = state["configuration"].str.split().str[0].astype(float).to_numpy()
            order = np.argsort(entries)
            predicted, err = state["predicted"].to_numpy()[order], _stderr(state)[order]
            color = VARIANT_COLORS.get(state["variant"].iloc[0], "#444444")
            right.fill_between(entries[order], predicted - err, predicted + err, color=color, alpha=0.2, linewidth=0)
            right.plot(entries[order], predicted, "-", color=color, label=model)
            right.plot(entries, state["measured"], "o", color="black", ms=4.5, label="measured")
            if crossed:
                right.plot(entries, state[OUT_OF_SAMPLE], "o", ms=8, mfc="none", color=color,
                           label="model, point held out")
            right.set_ylim(bottom=0)
            right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize=7.5)
        right.set_xlabel("live NIC entries (keys or SAs)")
        right.set_ylabel("throughput (Gb/s)")
        right.set_title("throughput against NIC state", loc="left")
    return fig
