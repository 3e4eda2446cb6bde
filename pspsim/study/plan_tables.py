"""NIC tables in ``pspsim plan``: each variant's table and capacity, headroom, and where it overflows.

Headroom compares the median and the busiest host's entries, at their peak
window, with the table's capacity.  The overflow point is searched along the
workload quantity the table grows with: connections per host (PSP TX keys,
kTLS contexts, IPsec SAs per connection) or fan-out (IPsec SAs per host
pair), around the linear prediction ``today x capacity / peak entries``
(0.5, 0.8, 1.25, 2 times it, then bisection).  Above
:data:`MAX_SIMULATED_CONNECTIONS` live connections only the prediction is
given, and says so; fan-out stops at the fleet's hosts - 1.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pspsim.costs.params import ParameterSet
from pspsim.model.variants import make_variant
from pspsim.scenario import Scenario
from pspsim.study.plan_runs import PlanOptions, Runner, ci

#: Above this many live connections in the fleet, an overflow search is predicted, not simulated.
MAX_SIMULATED_CONNECTIONS = 200_000
OVERFLOW_COLUMNS = ("offload_fallbacks", "offload_failures", "hosts_over_nic_capacity_peak")


def overflowed(rows: pd.DataFrame, variant: str) -> bool:
    """Any replication whose NIC table overflowed (kTLS: a socket fell back or failed; see table_of)."""
    columns = OVERFLOW_COLUMNS[:2] if variant == "ktls-offload" else OVERFLOW_COLUMNS
    return bool((rows[list(columns)] > 0).any(axis=None))


def table_of(variant: str, scenario: Scenario, params: ParameterSet) -> dict[str, Any] | None:
    """The NIC table a variant's entries live in: name, capacity in entries, parameters.

    kTLS offload counts TX and RX contexts together in ``nic_entries``; each
    direction has its own table, so its capacity in entries is twice the
    smaller of the two (the control plane falls back when contexts / 2 reach it)."""
    v = make_variant(variant, params.costs(), scenario.keys)
    if not math.isfinite(v.nic_capacity):
        return None
    if variant == "psp":
        return {"table": "PSP TX keys (DEK objects)", "capacity": v.nic_capacity,
                "parameters": ["nic.psp_tx_key_capacity"]}
    if variant.startswith("ipsec"):
        return {"table": "IPsec SAs (inbound + outbound)", "capacity": v.nic_capacity,
                "parameters": ["nic.ipsec_sa_capacity"]}
    c = params.costs()
    return {"table": "kTLS contexts (TX + RX)",
            "capacity": 2 * min(c.nic_ktls_tx_context_capacity, c.nic_ktls_rx_context_capacity),
            "parameters": ["nic.ktls_tx_context_capacity", "nic.ktls_rx_context_capacity"]}


def nic_headroom(rows: pd.DataFrame, table: dict[str, Any] | None) -> dict[str, Any] | None:
    """NIC entries per host against the table's capacity (None: the variant has no NIC table)."""
    if table is None:
        return None
    capacity = float(table["capacity"])
    peak, median = rows["nic_entries_per_host_peak"], rows["nic_entries_median_host_peak"]
    return table | {
        "entries_p50": ci(median),  # the median host, at its busiest window
        "entries_p99_upper_bound": ci(peak),  # the model reports the median and busiest host only
        "entries_max": ci(peak),  # the busiest host, at its busiest window
        "used_fraction_max": ci(peak / capacity),
        "headroom_fraction": ci(1 - peak / capacity),  # free share of the table on the busiest host
        "headroom_factor": ci(capacity / peak.where(peak > 0)),  # how many times today's peak fits
    }


def add_median_host(runs: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """Each run's busiest window of its median host (``nic_entries_host_p50`` of the time series)."""
    keys = ["point", "replication", "variant"]
    median = series.groupby(keys)["nic_entries_host_p50"].max().rename("nic_entries_median_host_peak")
    return runs.merge(median.reset_index(), on=keys, how="left")


def overflow_dimension(variant: str, scenario: Scenario) -> str:
    per_pair = variant.startswith("ipsec") and scenario.keys.ipsec_sa_granularity == "host-pair"
    return "workload.peers_per_host" if per_pair else "workload.connections_per_host"


def table_overflow(runner: Runner, variant: str, peak_entries: float, table: dict[str, Any],
                   opts: PlanOptions) -> dict[str, Any]:
    scenario = runner.scenario
    dim = overflow_dimension(variant, scenario)
    workload = scenario.workload
    dist = workload.peers_per_host if dim.endswith("peers_per_host") else workload.connections_per_host
    today = dist.mean
    predicted_scale = table["capacity"] / peak_entries if peak_entries > 0 else math.inf
    result: dict[str, Any] = {"dimension": dim, "today": today, "table": table["table"],
                              "capacity": table["capacity"], "predicted": today * predicted_scale,
                              "prediction": "linear: today's value x capacity / peak entries per host"}
    limit = scenario.fleet.hosts - 1 if dim.endswith("peers_per_host") else math.inf
    hosts = scenario.fleet.hosts
    connections = lambda scale: hosts * scenario.workload.connections_per_host.mean * (  # noqa: E731
        scale if dim.endswith("connections_per_host") else 1)
    if not math.isfinite(predicted_scale) or today * predicted_scale / 2 >= limit:
        return result | {"simulated": False, "overflow_at": None,
                         "note": f"cannot overflow on this fleet: {dim} is at most {limit:g} here"
                                 if math.isfinite(limit) else "no entries: cannot overflow"}
    if connections(predicted_scale * 2) > MAX_SIMULATED_CONNECTIONS:
        return result | {"simulated": False, "overflow_at": today * predicted_scale,
                         "note": f"predicted, not simulated: a fleet at twice the prediction would hold "
                                 f"{connections(predicted_scale * 2):,.0f} connections (limit "
                                 f"{MAX_SIMULATED_CONNECTIONS:,})"}
    trials: list[dict[str, Any]] = []

    def value(scale: float) -> float:
        v = today * scale
        return float(min(round(v), limit)) if dim.endswith("peers_per_host") else float(max(1, round(v)))

    def test(values: list[float], step: str) -> None:
        points = [{dim: {"kind": dist.kind, "mean": v, "sigma": dist.sigma, "alpha": dist.alpha}} for v in values]
        runs = runner.run(f"overflow {variant}", step, points, [variant], lambda p: p[dim]["mean"])
        for v in values:
            rows = runs[runs["value"] == v]
            trials.append({"value": v, "step": step, "overflow": overflowed(rows, variant),
                           "runs": rows[["replication", *OVERFLOW_COLUMNS, "nic_entries_per_host_peak"]]
                           .to_dict("records")})

    test(sorted({value(predicted_scale * s) for s in (0.5, 0.8, 1.25, 2.0)}), "coarse")
    over = {t["value"]: t["overflow"] for t in trials}
    first = next((v for v in sorted(over) if over[v] and all(over[w] for w in over if w >= v)), None)
    below = [v for v in sorted(over) if first is None or v < first]
    if first is None or not below:
        top = max(over)
        note = ("overflows at every value tested" if first is not None else
                f"no overflow even at {top:g}, the largest fan-out this fleet allows" if top >= limit else
                f"no overflow at up to {top:g} (twice the prediction): the table fills more slowly than linearly")
        result |= {"simulated": True, "overflow_at": first, "fits_at": below[-1] if below else None, "note": note}
    else:
        lo, hi = below[-1], first
        for k in range(opts.overflow_steps):
            mid = value((lo + hi) / 2 / today)
            if mid in (lo, hi):
                break
            test([mid], f"bisect {k + 1}")
            lo, hi = (lo, mid) if trials[-1]["overflow"] else (mid, hi)
        result |= {"simulated": True, "overflow_at": hi, "fits_at": lo, "resolution": hi - lo,
                   "note": f"fits at {lo:g}, overflows at {hi:g}"}
    result["trials"] = trials
    result["runs_taken"] = len(trials) * runner.replications
    return result


def variants_answer(runs: pd.DataFrame, variants: list[str], current: str, scenario: Scenario,
                     params: ParameterSet) -> dict[str, Any]:
    hosts = scenario.fleet.hosts
    base = runs[runs["variant"] == current].set_index("replication")
    out: dict[str, Any] = {}
    for variant in variants:
        rows = runs[runs["variant"] == variant].set_index("replication")
        saving = base["cores_mean"] - rows["cores_mean"].reindex(base.index)
        out[variant] = {
            "cores_fleet": ci(rows["cores_mean"]),
            "cores_per_host": ci(rows["cores_mean"] / hosts),
            "cores_per_100gbps": ci(rows["cores_per_100gbps"]),
            "cores_saving_vs_current": {"per_host": ci(saving / hosts), "fleet": ci(saving),
                                        "fraction": ci(saving / base["cores_mean"])},
            "achieved_gbps": ci(rows["achieved_gbps_mean"]),
            "nic_headroom": nic_headroom(rows, table_of(variant, scenario, params)),
        }
    return out
