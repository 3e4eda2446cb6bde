"""Cross-check: the packet tier against the fleet model, rates and event counts.

Both run the same scenario over the packet tier's span (``[packets]
duration``; the model with ``run.duration`` set to it) and the same
connection list (replication 0's workload stream), for the whole fleet.  The
packet tier decides its own events (:mod:`pspsim.packets.control`), so every
count below compares two independent implementations of SEMANTICS.md: the
fleet model's summary columns (``run_one``) against what the packet tier's
control plane did and its real packets showed.

Per variant and metric, the report gives both values, a tolerance and
whether the difference is within it.  Tolerances come from sampling noise:

* counts (handshakes, re-keys of each kind, stale events, NIC commands,
  fallbacks, failures, connections lost): the two tiers draw their random
  phases, delays and jitters from different streams, so each count is a
  Poisson-like draw: ``3 sqrt(N_packet + N_model + 1) + 2 %`` of the larger;
* rates (throughput, overhead, cores): the packet tier's messages are Poisson
  (relative sd ``payload_noise``), the model is fluid: ``(3 noise + 3 %)``
  of the larger;
* NIC entries per host: a count over the fleet: ``3 sqrt(total) / hosts + 3 %``;
* drop fraction: below 1 % on both sides compared in absolute terms
  (``0.005``), above it ``3 sqrt(dropped) / offered + 5 %`` of the larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from pspsim.model.streams import RandomStreams, replication_sequence
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from pspsim.packets.result import PacketTierResult
from pspsim.packets.tier import PacketTier
from pspsim.scenario import Scenario
from pspsim.study.runner import resolve_parameters, run_one

#: metric -> the model's summary column (a rate per second when it ends in _per_s)
COUNTS = {
    "handshakes": "handshakes_per_s",
    "psp_rekeys": "psp_rekeys_per_s",
    "child_sa_rekeys": "child_sa_rekeys_per_s",
    "ike_sa_rekeys": "ike_sa_rekeys_per_s",
    "tls_key_updates": "tls_key_updates_per_s",
    "key_reconnects": "key_reconnects_per_s",
    "rekeys": "rekeys_per_s",
    "psp_stale_events": "psp_stale_events",
    "nic_commands": "nic_commands_per_s",
    "offload_fallbacks": "offload_fallbacks",
    "offload_failures": "offload_failures",
    "connections_lost": "connections_lost",
}
RATES = {"throughput_gbps": "achieved_gbps_mean", "cpu_cores": "cores_mean",  # throughput: less bytes_lost
         "nic_entries_per_host": "nic_entries_per_host_mean"}
REKEY_KINDS = ("psp_rekeys", "child_sa_rekeys", "ike_sa_rekeys", "tls_key_updates", "key_reconnects")
SOFTWARE = {"tls": "tls-user", "esp-sw": "ipsec-sw", "records-sw": "ktls-sw"}


def packet_cores(r: PacketTierResult, variant_name: str, costs, keys) -> float:
    """The packet tier's counts priced with the cost model: both ends of every delivered
    packet (the tier has no congestion control: what the fabric drops, TCP would not have
    kept sending), every handshake and re-key; traffic that fell back to software at the
    software variant's cost."""
    variant = make_variant(variant_name, costs, keys)
    ends = 2 * r.outcomes["delivered"] / max(r.packets_sent, 1)  # both ends of what arrived
    cycles = ends * r.packets_sent * costs.host_stack_cycles_per_packet
    record_packets = sum(c["packets"] for k, c in r.by_kind.items() if k in ("records", "records-sw", "tls"))
    for kind, c in r.by_kind.items():
        priced = make_variant(SOFTWARE[kind], costs, keys) if kind in SOFTWARE else variant
        records = r.records * c["packets"] / record_packets if kind in ("records", "records-sw", "tls") else 0
        cycles += float(np.asarray(priced.crypto_cycles(np.float64(ends * c["packets"]),
                                                        np.float64(ends * c["payload"]), np.float64(ends * records))))
    rekeys = sum(r.counts[k] for k in REKEY_KINDS if k != "key_reconnects")
    cycles += 2 * r.counts["handshakes"] * variant.handshake_cycles() + 2 * rekeys * variant.rekey_cycles()
    return cycles / r.duration / costs.host_clock_hz


def _rows(name: str, r: PacketTierResult, model: dict, costs, scenario: Scenario) -> list[dict]:
    d, hosts = r.duration, scenario.fleet.hosts
    counts = dict(r.counts)
    counts["rekeys"] = sum(r.counts[k] for k in REKEY_KINDS)
    rows = []

    def add(metric, p, m, tol, column):
        missing = m is None or (isinstance(m, float) and math.isnan(m))
        m = float("nan") if missing else float(m)
        within = (not missing) and abs(p - m) <= tol + 1e-12  # rounding of sums that should be 0
        rows.append({"variant": name, "metric": metric, "packet_tier": float(p), "model": m,
                     "difference": float(p - m) if not missing else float("nan"), "tolerance": float(tol),
                     "within": bool(within), "note": f"model has no column {column}" if missing else ""})

    for metric, column in COUNTS.items():
        p = float(counts.get(metric, 0))
        m = model.get(column)
        if m is not None and column.endswith("_per_s"):
            m = m * d
        larger = max(p, m if m is not None and not math.isnan(m) else 0.0)
        add(metric, p, m, 3 * math.sqrt(p + larger + 1) + 0.02 * larger, column)
    noise = r.payload_noise
    throughput = 8 * r.payload_bytes_delivered / d / 1e9
    delivered = r.outcomes["delivered"] / max(r.packets_sent, 1)  # overhead of what arrived, as the model counts it
    overhead = 8 * (r.wire_bytes_sent - r.inner_bytes_sent + r.record_overhead_bytes) * delivered / d / 1e9
    cores = packet_cores(r, name, costs, scenario.keys)
    for metric, p in (("throughput_gbps", throughput), ("cpu_cores", cores)):
        m = model.get(RATES[metric])
        if metric == "throughput_gbps" and m is not None and model.get("bytes_lost") is not None:
            m = m - 8 * model["bytes_lost"] / d / 1e9  # delivered: less the traffic lost on dead keys
        add(metric, p, m, (3 * noise + 0.03) * max(p, m or 0.0), RATES[metric])
    m = model.get("overhead_gbps_mean")
    add("overhead_gbps", overhead, m, (3 * noise + 0.03) * max(overhead, m or 0.0), "overhead_gbps_mean")
    p = r.nic_entries_mean
    m = model.get("nic_entries_per_host_mean")
    add("nic_entries_per_host", p, m, 3 * math.sqrt(p * hosts) / hosts + 0.03 * max(p, m or 0.0),
        "nic_entries_per_host_mean")
    offered = max(r.packets_offered, 1)
    p = 1 - r.outcomes["delivered"] / offered
    fraction = model.get("achieved_fraction")
    m = None if fraction is None else max(0.0, 1 - fraction)
    if m is not None and max(p, m) < 0.01:
        tol = 0.005
    else:
        tol = 3 * math.sqrt(max(p, 0) * offered) / offered + 0.05 * max(p, m or 0.0)
    add("drop_fraction", p, m, tol, "achieved_fraction")
    return rows


def crosscheck(scenario: Scenario, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per variant and metric: packet tier, model, tolerance, within."""
    span = scenario.packets.duration
    scenario = scenario.model_copy(update={
        "run": scenario.run.model_copy(update={"duration": span, "window": min(scenario.run.window, span),
                                               "replications": 1}),
    })
    params = resolve_parameters(scenario)
    costs = params.costs()
    streams = RandomStreams.from_sequence(replication_sequence(scenario.run.seed, 0))
    workload = generate_workload(scenario, streams.workload)
    whole = scenario.model_copy(update={"packets": scenario.packets.model_copy(
        update={"hosts": None, "max_connections": max(len(workload), 1)})})
    rows = []
    for name in scenario.run.variants:
        model = run_one(scenario, params, 0, name).summary
        packet_rng = RandomStreams.from_sequence(replication_sequence(scenario.run.seed, 0)).packets
        result = PacketTier(whole, name, costs, workload, packet_rng).run()
        rows += _rows(name, result, model, costs, scenario)
        if progress:
            progress(f"{name}: {result.packets_sent:,} packets, {result.counts['handshakes']} handshakes")
    return pd.DataFrame(rows)
