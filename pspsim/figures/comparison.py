"""The comparison figure of ``pspsim run``: every variant over simulated time.

One panel per quantity the timeseries holds (NIC entries on the busiest
host, fleet cores, throughput, NIC command delay, handshake and rekey
rates, PSP stale-key events), one line per variant in its fixed colour:
the mean over replications, with a 95% confidence band when there are
several.  Panels
whose column is missing (or empty) are left out.  Below them, the PSP
device-key rotations as a density (rotations per minute, fleet-wide), which
stays readable on 10,000 hosts where individual ticks would merge into a
band.  The legend sits below the panels, so it covers no data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pspsim.figures.bands import mean_band
from pspsim.figures.style import VARIANT_COLORS, InlineFigure, style, variant_style

#: (column(s), title, y label, scale, per second): the first column present is drawn.
PANELS = [
    (("nic_entries_host_max",), "NIC key/SA entries, busiest host", "entries", "symlog", False),
    (("cores_total",), "CPU cores on networking, whole fleet", "cores", "linear", False),
    (("achieved_gbps",), "throughput carried, whole fleet", "Gb/s", "linear", False),
    (("command_delay_p99_us",), "NIC command queue delay, p99", "delay (µs)", "symlog", False),
    (("handshakes_in_window", "handshakes"), "handshakes, whole fleet", "handshakes per second", "symlog", True),
    (("rekeys_in_window", "rekeys"), "rekeys (all kinds), whole fleet", "rekeys per second", "symlog", True),
    (("psp_stale_events_in_window",), "PSP stale-key events, whole fleet", "events per second", "symlog", True),
]
#: PSP device-key rotations per window: today's column first, then the older name.
ROTATIONS = ("key_rotations_in_window", "rotations")


def _window_seconds(timeseries: pd.DataFrame) -> float:
    times = np.unique(timeseries["time_s"].to_numpy())
    return float(np.median(np.diff(times))) if len(times) > 1 else float(times[0] or 1.0)


def comparison_figure(timeseries: pd.DataFrame) -> Figure:
    """The figure for one run's ``timeseries`` table (columns ``time_s``, ``variant``, ``replication``, ...)."""
    window = _window_seconds(timeseries)
    span = float(timeseries["time_s"].max())
    hours = span >= 3 * 3600
    scale_x, unit_x = (1 / 3600, "h") if hours else (1 / 60, "min")
    panels = []
    for columns, title, ylabel, scale, per_second in PANELS:
        column = next((c for c in columns if c in timeseries and timeseries[c].notna().any()), None)
        if column is not None:
            panels.append((column, title, ylabel, scale, per_second))
    variants = [v for v in VARIANT_COLORS if v in set(timeseries["variant"])]
    variants += [v for v in dict.fromkeys(timeseries["variant"]) if v not in variants]
    replications = timeseries["replication"].nunique()
    rotation_column = next((c for c in ROTATIONS if c in timeseries), None)
    rotations = (timeseries[timeseries["variant"] == "psp"] if rotation_column else timeseries.iloc[:0])
    show_rotations = len(rotations) > 0 and rotations[rotation_column].sum() > 0

    rows = -(-len(panels) // 2)
    mosaic: list[Any] = [[f"p{2 * r}", f"p{2 * r + 1}" if 2 * r + 1 < len(panels) else "."] for r in range(rows)]
    heights = [1.0] * rows
    if show_rotations:
        mosaic.append(["rot", "rot"])
        heights.append(0.45)
    with style():
        fig = InlineFigure(figsize=(10, 2.3 * rows + (1.1 if show_rotations else 0) + 0.8), layout="constrained")
        axes = fig.subplot_mosaic(mosaic, height_ratios=heights, sharex=True, empty_sentinel=".")
        for i, (column, title, ylabel, scale, per_second) in enumerate(panels):
            ax = axes[f"p{i}"]
            for variant in variants:
                rows_v = timeseries[timeseries["variant"] == variant]
                band = mean_band(rows_v, "time_s", column)
                factor = 1 / window if per_second else 1.0
                t = band["time_s"] * scale_x
                ax.plot(t, band["mean"] * factor, label=variant, **variant_style(variant))
                if replications > 1:
                    ax.fill_between(t, band["low"] * factor, band["high"] * factor, alpha=0.15, linewidth=0,
                                    color=variant_style(variant)["color"])
            ax.set_title(title, loc="left")
            ax.set_ylabel(ylabel)
            if scale == "symlog":
                ax.set_yscale("symlog", linthresh=1)
            ax.set_ylim(bottom=0)
            if not (timeseries[column].fillna(0) != 0).any():  # say so rather than draw an empty axis
                ax.set_ylim(0, 1)
                ax.text(0.5, 0.5, "none in this run", transform=ax.transAxes, ha="center", va="center",
                        color="#666666")
            ax.tick_params(labelbottom=True)
            if i >= len(panels) - 2 and not show_rotations:
                ax.set_xlabel(f"simulated time ({unit_x})")
        if show_rotations and rotation_column is not None:
            ax = axes["rot"]
            band = mean_band(rotations, "time_s", rotation_column)
            per_minute = band["mean"] / (window / 60)
            ax.bar((band["time_s"] - window / 2) * scale_x, per_minute, width=window * scale_x,
                   color=VARIANT_COLORS["psp"], alpha=0.8, linewidth=0)
            ax.set_ylabel("per minute")
            ax.set_title("PSP device-key rotations, whole fleet (density)", loc="left")
            ax.set_xlabel(f"simulated time ({unit_x})")
            ax.set_ylim(bottom=0)
        handles = [Line2D([], [], label=v, linewidth=2, **variant_style(v)) for v in variants]
        what = (f"mean of {replications} replications, band: 95% confidence interval" if replications > 1
                else "one replication")
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), handlelength=3)
        fig.suptitle(f"{timeseries['scenario'].iloc[0]}: state, CPU and key events by protocol variant ({what})"
                     if "scenario" in timeseries else f"state, CPU and key events by variant ({what})",
                     fontsize=10)
    return fig
