"""The overhead figure of ``pspsim overhead``: bytes each protocol adds on the wire, as measured."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from pspsim.figures.style import PROTOCOL_COLORS, InlineFigure, style


def overhead_figure(table: pd.DataFrame) -> Figure:
    """Horizontal bars: bytes added per IPv4 packet (PSP, ESP) or per record (TLS), min-max over payloads."""
    ipv4 = table[(table["ip_version"] == 4) | table["ip_version"].isna()]
    rows = (ipv4.assign(case=lambda t: t["protocol"].str.upper() + " " + t["mode"])
            .groupby("case", sort=False)["overhead_bytes"].agg(["min", "max"]))
    with style():
        fig = InlineFigure(figsize=(6.5, 0.32 * len(rows) + 1.2), layout="constrained")
        ax = fig.subplots()
        bars = ax.barh(rows.index, rows["max"], color=[PROTOCOL_COLORS.get(c.split()[0], "#444444")
                                                        for c in rows.index])
        labels = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in zip(rows["min"], rows["max"])]
        ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
        ax.set_xlabel("bytes added per IPv4 packet (PSP, ESP) or per record (TLS), measured (bytes)")
        ax.set_title("Protocol overhead on the wire", loc="left")
        ax.set_xlim(0, rows["max"].max() * 1.15)
        ax.grid(axis="y", visible=False)
        ax.invert_yaxis()
    return fig
