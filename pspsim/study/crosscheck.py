"""Cross-check: the packet tier and the fleet model on the same workload.

Both tiers run the same scenario, workload, rotation schedule and rekey
completions (the packet tier takes them from the model's run), over the
packet tier's span, for the whole fleet.  For each variant and metric the
report gives both values, the relative difference, whether it is within the
5 % target, and why they differ where they may.

What the packet tier measures is counted from real packets: bytes on the
wire, packets, records, handshakes and rekeys performed, keys and SAs
installed, packets that failed.  CPU cycles are those counts priced with
the same cost model, so the cycle comparison checks the model's traffic
arithmetic (packets per message, records, rekey counts), not the prices.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from pspsim.costs.params import load_parameter_set
from pspsim.packets.tier import PacketTier, PacketTierResult
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from pspsim.scenario import Scenario

TARGET = 0.05

WHY = {
    "throughput_gbps": "messages are Poisson in the packet tier (noise shown) and rates are sampled at window ends "
                       "in the model",
    "cpu_cores": "the model counts TLS and IKE rekeys as fluid rates and PSP rekeys when requested; the packet "
                 "tier counts those performed (short runs: a few rekeys more or less)",
    "nic_entries": "the model samples at the last window end; the packet tier counts keys and SAs installed at the end",
    "overhead_gbps": "PSP/ESP: per packet, exact; TLS: per record, exact; differences are message-count noise",
    "drop_fraction": "the model drops traffic of lost connections per rekey outage; the packet tier counts packets "
                     "that really failed (including ones in flight across a key death)",
}


def _packet_values(r: PacketTierResult, variant, costs) -> dict[str, float]:
    d = r.duration
    packets = 2 * r.packets_sent  # each packet is handled by a sender and a receiver
    payload = 2 * r.payload_bytes_delivered
    records = 2 * r.records
    cycles = (packets * costs.host_stack_cycles_per_packet
              + float(np.asarray(variant.crypto_cycles(np.float64(packets), np.float64(payload),
                                                        np.float64(records))))
              + 2 * r.handshakes * variant.handshake_cycles() + 2 * r.rekeys * variant.rekey_cycles())
    overhead = r.wire_bytes_sent - r.inner_bytes_sent + r.record_overhead_bytes
    failed = r.packets_sent - r.outcomes["delivered"]
    return {
        "throughput_gbps": 8 * r.payload_bytes_delivered / d / 1e9,
        "cpu_cores": cycles / d / costs.host_clock_hz,
        "nic_entries": float(r.nic_entries),
        "overhead_gbps": 8 * overhead / d / 1e9,
        "drop_fraction": failed / max(r.packets_sent, 1),
    }


def _model_values(r: PacketTierResult) -> dict[str, float]:
    ts = pd.DataFrame(r.model.rows)
    offered_bits = float((ts["offered_gbps"] * 1e9).mean() * r.duration)
    lost_gbps = 8 * r.model.totals["bytes_lost"] / r.duration / 1e9
    return {
        "throughput_gbps": float(ts["achieved_gbps"].mean()) - lost_gbps,  # delivered
        "cpu_cores": float(ts["cores_total"].mean()),
        "nic_entries": float(ts["nic_entries_total"].iloc[-1]),
        "overhead_gbps": float(ts["overhead_gbps"].mean()),
        "drop_fraction": 8 * r.model.totals["bytes_lost"] / max(offered_bits, 1.0),
    }


def crosscheck(scenario: Scenario, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per variant and metric: packet tier, model, relative difference, verdict, reason."""
    params = load_parameter_set(scenario.costs.parameter_set).with_overrides(scenario.costs.overrides)
    costs = params.costs()
    seq = np.random.SeedSequence(scenario.run.seed)
    workload_seq, *variant_seqs = seq.spawn(1 + len(scenario.run.variants))
    workload = generate_workload(scenario, np.random.default_rng(workload_seq))
    rows = []
    for name, variant_seq in zip(scenario.run.variants, variant_seqs):
        tier = PacketTier(scenario, name, costs, workload, np.random.default_rng(variant_seq))
        result = tier.run()
        variant = make_variant(name, costs, scenario.keys)
        packet, model = _packet_values(result, variant, costs), _model_values(result)
        for metric in packet:
            p, m = packet[metric], model[metric]
            scale = max(abs(m), abs(p))
            diff = 0.0 if scale < 1e-12 else abs(p - m) / max(abs(m), 1e-12 if abs(m) > 0 else scale)
            noise = result.payload_noise if metric in ("throughput_gbps", "overhead_gbps", "cpu_cores") else 0.0
            if metric == "drop_fraction" and max(p, m) < 0.01:
                diff = abs(p - m)  # tiny fractions: compare in absolute terms
            ok = diff <= TARGET
            rows.append({"variant": name, "metric": metric, "packet_tier": p, "model": m, "difference": diff,
                         "within_5pct": ok, "sampling_noise": noise,
                         "why": "" if ok and diff <= 0.01 else WHY[metric]})
        if progress:
            progress(f"{name}: {result.packets_sent:,} packets")
    return pd.DataFrame(rows)
