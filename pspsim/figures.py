"""Figures, in one style, written to files (matplotlib without a screen)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 9}


def save_figure(fig: plt.Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` atomically (temporary file, then rename) and close it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def overhead_figure(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Bar chart: bytes added per packet by each mode, as measured."""
    per_mode = (
        table.assign(case=lambda t: t["mode"] + " IPv" + t["ip_version"].astype(str)
                     + t["vc"].map({True: " +VC", False: ""}))
        .groupby("case", sort=False)["overhead_bytes"].max()
    )
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 3))
        bars = ax.barh(per_mode.index, per_mode.values, color="#3a6ea5")
        ax.bar_label(bars, padding=2)
        ax.set_xlabel("bytes added per packet (measured)")
        ax.set_title("PSP encapsulation overhead")
        ax.invert_yaxis()
        save_figure(fig, path)
