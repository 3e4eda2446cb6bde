"""The figure of ``pspsim plan``: its answers and the runs each boundary took.

Four panels, drawn without pyplot on an ``InlineFigure`` (no backend change;
a notebook shows it when a cell returns it):

1. cores per host by variant, mean with the 95% interval over replications;
2. the rotation search: stale events (sum over replications) against the
   rotation period, every run the search took, the boundary shaded;
3. the command-rate search: command delay p99 against the factor on every
   ``nic.cmd_*_s``, the target as a line;
4. the reconnect storm at the chosen period: peak handshakes per second by
   rotation schedule, with 95% intervals.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure

from pspsim.figures.style import VARIANT_COLORS, InlineFigure, style


def _err(stat: dict[str, Any]) -> tuple[float, list[float]]:
    mean = stat["mean"]
    lo, hi = stat.get("ci_low"), stat.get("ci_high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return mean, [0.0, 0.0]
    return mean, [mean - lo, hi - mean]


def plan_figure(answers: dict[str, Any]) -> Figure:
    with style():
        fig = InlineFigure(figsize=(11, 7.5), layout="constrained")
        (cores, rotation), (rate, storm) = fig.subplots(2, 2)
        _cores(cores, answers)
        _rotation(rotation, answers["rotation"])
        _rate(rate, answers["command_rate"])
        _storm(storm, answers["storms"])
        fig.suptitle(f"pspsim plan: {answers['scenario']} ({answers['hosts']} hosts, {answers['replications']} "
                     "replications; error bars: 95% confidence intervals)")
    return fig


def _cores(ax, answers: dict[str, Any]) -> None:
    variants = list(answers["variants"])
    means, errors = zip(*(_err(answers["variants"][v]["cores_per_host"]) for v in variants))
    ax.barh(variants, means, xerr=list(zip(*errors)), color=[VARIANT_COLORS.get(v, "#444444") for v in variants],
            capsize=3, ecolor="#777777")
    ax.invert_yaxis()
    ax.set_xlabel("CPU cores per host on networking")
    ax.set_title(f"cores per host (current: {answers['current']})", loc="left")


def _rotation(ax, rot: dict[str, Any]) -> None:
    trials = sorted(rot["trials"], key=lambda t: t["period_s"])
    for t in trials:
        stale = sum(r["psp_stale_events"] for r in t["runs"])
        ax.plot(t["period_s"], stale + 1, "o" if t["step"] == "coarse" else "s", ms=6,
                color="#D55E00" if t["unsafe"] else "#009E73")
    if rot["found"] and rot["unsafe_below_s"] is not None:
        ax.axvspan(rot["unsafe_below_s"], rot["min_safe_s"], color="#999999", alpha=0.3, lw=0,
                   label=f"boundary: {rot['unsafe_below_s']:g}-{rot['min_safe_s']:g} s")
        ax.legend(loc="upper right", frameon=False)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("PSP rotation period (s)")
    ax.set_ylabel("stale events + 1 (all replications)")
    ax.set_title("rotation search (red: stale, green: none)", loc="left")


def _rate(ax, rate: dict[str, Any]) -> None:
    trials = sorted(rate["trials"], key=lambda t: t["factor"])
    x = [t["factor"] for t in trials]
    ax.plot(x, [t["p99_us"]["mean"] / 1000 for t in trials], "-o", ms=4, color=VARIANT_COLORS["psp"])
    ax.axhline(rate["target_p99_us"] / 1000, color="#D55E00", ls="--", label="set-up delay p99 target")
    if rate["found"]:
        ax.axvline(rate["factor"], color="#444444", ls=":", label=f"largest passing factor {rate['factor']:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("factor on every nic.cmd_*_s (1 = parameter set)")
    ax.set_ylabel("NIC command delay p99 (ms)")
    ax.set_title(f"command-rate search ({rate['schedule']} rotation)", loc="left")
    ax.legend(loc="upper left", frameon=False)


def _storm(ax, storm: dict[str, Any]) -> None:
    schedules = list(storm["schedules"])
    means, errors = zip(*(_err(storm["schedules"][s]["handshakes_per_s_peak"]) for s in schedules))
    ax.bar(schedules, means, yerr=list(zip(*errors)), color=VARIANT_COLORS["psp"], capsize=3, ecolor="#777777")
    ax.set_ylabel("handshakes per second, peak window")
    ax.set_title(f"reconnect storm, rotation every {storm['period_s']:g} s", loc="left")
