"""The sweep figure: chosen metrics against a swept field, one line per variant
(and per value of the other swept fields), the band the 95% Student-t
interval of the replications' mean (``summary.parquet``)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from pspsim.figures import STYLE, VARIANT_COLORS, save_figure

_STYLES = ("-", "--", ":", "-.")
_STATS = ("_mean", "_peak", "_max", "_min", "_p50", "_p99")


def metric_unit(metric: str) -> str:
    """The unit of a summary metric, read off its name (pspsim's naming convention)."""
    name = metric
    while name.endswith(_STATS):
        name = name.rsplit("_", 1)[0]
    rules = [(name.endswith("_us"), "µs"), ("per_100gbps" in name, "cores per 100 Gbit/s"),
             (name.endswith("_per_s"), "per second"), (name.endswith("_gbps"), "Gbit/s"), ("bytes" in name, "bytes"),
             (name.startswith("cores"), "cores"), (name.endswith(("_fraction", "_ratio")), "fraction"),
             (name.endswith("_s"), "s")]
    return next((unit for hit, unit in rules if hit), "count")


def axis_label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def sweep_figure(summary: pd.DataFrame, x: str, units: dict[str, str], others: list[str], metrics: list[str],
                 path: str | os.PathLike[str], title: str) -> None:
    """One panel per metric; ``others`` are the swept fields other than ``x``;
    ``units`` gives each swept field's unit ("" for none)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 3.2 * len(metrics)), squeeze=False)
        groups = list(summary.groupby(["variant", *others], sort=False, dropna=False))
        combos = list(dict.fromkeys(tuple(k)[1:] if isinstance(k, tuple) else () for k, _ in groups))
        variants = list(dict.fromkeys(summary["variant"]))
        shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(combos), 1)))
        for ax, metric in zip(axes[:, 0], metrics):
            for keys, group in groups:
                keys = keys if isinstance(keys, tuple) else (keys,)
                group = group.sort_values(x)
                label = ", ".join([str(keys[0])] + [f"{o} = {v:g} {units[o]}".rstrip() if isinstance(v, float)
                                                    else f"{o} = {v} {units[o]}".rstrip()
                                                    for o, v in zip(others, keys[1:])])
                if others:  # colour: the other fields' values; line style: the variant
                    color, style = shades[combos.index(keys[1:])], _STYLES[variants.index(keys[0]) % len(_STYLES)]
                else:
                    color, style = VARIANT_COLORS.get(keys[0]), "-"
                ax.plot(group[x], group[f"{metric}_mean"], style, marker="o", ms=3, lw=1.4, color=color, label=label)
                ax.fill_between(group[x], group[f"{metric}_ci_low"], group[f"{metric}_ci_high"],
                                color=color, alpha=0.18, lw=0)
            values = pd.to_numeric(summary[x], errors="coerce")
            if values.notna().all() and values.min() > 0 and values.max() / values.min() >= 10:
                ax.set_xscale("log")
                ticks = sorted(set(values))
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_major_formatter(FixedFormatter([f"{v:g}" for v in ticks]))
                ax.xaxis.set_minor_locator(NullLocator())
            ax.set_ylabel(axis_label(metric, metric_unit(metric)))
            ax.set_xlabel(axis_label(x, units[x]))
        n = int(np.nanmax(summary["replications"])) if len(summary) else 0
        axes[0, 0].set_title(f"{title}: mean of {n} replications, band = 95% confidence interval (Student t)")
        axes[0, 0].legend(fontsize=7, frameon=False)
        fig.tight_layout()
        save_figure(fig, path)
