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
    try:
        _atomic(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _atomic(path: str | os.PathLike[str], write) -> None:
    """Call ``write(temporary path)``, then move the file into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_csv(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table as CSV atomically."""
    _atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write a text file atomically."""
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def overhead_figure(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Bar chart: bytes added per IPv4 packet (PSP, ESP) or per record (TLS), as measured."""
    ipv4 = table[(table["ip_version"] == 4) | table["ip_version"].isna()]
    rows = (ipv4.assign(case=lambda t: t["protocol"].str.upper() + " " + t["mode"])
            .groupby("case", sort=False)["overhead_bytes"].agg(["min", "max"]))
    colors = {"PSP": "#3a6ea5", "ESP": "#c0504d", "TLS1.3": "#4f9a5b", "TLS1.2": "#8aa65a"}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        bars = ax.barh(rows.index, rows["max"], color=[colors[c.split()[0]] for c in rows.index])
        labels = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in zip(rows["min"], rows["max"])]
        ax.bar_label(bars, labels=labels, padding=2)
        ax.set_xlabel("bytes added per IPv4 packet (PSP, ESP) or per record (TLS), measured")
        ax.set_title("Protocol overhead on the wire")
        ax.invert_yaxis()
        save_figure(fig, path)


VARIANT_COLORS = {
    "psp": "#1f5fa8", "ipsec-sw": "#b2182b", "ipsec-crypto-offload": "#e0603f", "ipsec-packet-offload": "#f4a582",
    "tls-user": "#1b7837", "ktls-sw": "#5aae61", "ktls-offload": "#a6dba0", "plaintext": "#888888",
}


def comparison_figure(timeseries: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Three panels side by side over time, one line per variant: NIC key/SA
    entries on the busiest host, cores spent by the fleet, and rekey events
    (with PSP device-key rotations marked)."""
    ts = timeseries[timeseries["replication"] == timeseries["replication"].min()]
    hours = ts["time_s"] / 3600
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        panels = [("nic_entries_host_max", "NIC key/SA entries, busiest host"),
                  ("cores_total", "cores spent, whole fleet"),
                  ("rekeys_in_window", "rekeys per window, whole fleet")]
        for ax, (column, title) in zip(axes, panels):
            for variant, group in ts.groupby("variant", sort=False):
                ax.plot(hours[group.index], group[column], label=variant, lw=1.4,
                        color=VARIANT_COLORS.get(variant))
            ax.set_title(title)
            ax.set_xlabel("simulated time (h)")
        for ax in (axes[0], axes[2]):
            ax.set_yscale("symlog", linthresh=1)
            ax.set_ylim(bottom=0)
        psp = ts[(ts["variant"] == "psp") & (ts["key_rotations_in_window"] > 0)]
        if len(psp):
            marks = axes[2].scatter(psp["time_s"] / 3600, psp["key_rotations_in_window"], marker="|", s=40, color="black",
                                    label="PSP device-key rotations", zorder=3)
            axes[2].legend(handles=[marks], fontsize=7, loc="lower right", frameon=False)
        axes[1].set_ylim(bottom=0)
        axes[1].legend(fontsize=7, ncol=2, loc="upper left", frameon=False, bbox_to_anchor=(0, 0.93))
        fig.suptitle(f"{ts['scenario'].iloc[0]}: state, CPU and rekey events by protocol variant", y=1.02)
        fig.tight_layout()
        save_figure(fig, path)


def validation_figure(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Predicted against measured: CPU cores per run, and throughput against NIC entries."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        cpu = table[table["kind"] == "cpu"]
        for variant, group in cpu.groupby("variant", sort=False):
            axes[0].scatter(group["measured"], group["predicted"], label=variant, color=VARIANT_COLORS.get(variant))
        if len(cpu):
            top = max(cpu["measured"].max(), cpu["predicted"].max()) * 1.1
            axes[0].plot([0, top], [0, top], color="grey", lw=0.8)
        axes[0].set_xlabel("measured cores")
        axes[0].set_ylabel("predicted cores")
        axes[0].set_title("CPU per run")
        axes[0].legend(fontsize=7, frameon=False)
        state = table[table["kind"] == "state"]
        if len(state):
            entries = state["configuration"].str.split().str[0].astype(float)
            axes[1].plot(entries, state["measured"], "o", label="measured")
            axes[1].plot(entries, state["predicted"], "-", label="model")
            axes[1].legend(fontsize=7, frameon=False)
        axes[1].set_xlabel("live NIC entries (keys/SAs)")
        axes[1].set_ylabel("Gb/s")
        axes[1].set_title("throughput against NIC state")
        fig.tight_layout()
        save_figure(fig, path)
