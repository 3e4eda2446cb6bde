"""What one packet-tier run measured: the result record and its summary row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PacketTierResult:
    """What the packet tier measured and decided over ``duration`` seconds."""

    variant: str
    duration: float
    outcomes: Counter  # delivered, per-counter drops, fabric-drop, not-sent ...
    packets_sent: int
    packets_offered: int  # sent + not sent (offload failures, waiting for an upgrade)
    payload_bytes_delivered: int
    wire_bytes_sent: int
    inner_bytes_sent: int  # the same frames unprotected
    records: int
    record_overhead_bytes: int
    payload_noise: float  # relative standard deviation of the delivered payload (Poisson messages)
    counts: Counter  # the control plane's events (handshakes, re-keys by kind, commands, ...)
    by_kind: dict[str, Counter]  # packets, payload, records per protection actually used
    nic_entries_mean: float  # per host, at the window ends inside the span
    nic_entries_end: int
    command_delay_max_s: float
    key_cache_hit_ratio: float
    nic_counters: list[Counter] = field(default_factory=list)  # PSP get-stats names, per NIC
    arrivals: dict[str, np.ndarray] = field(repr=False, default_factory=dict)



def result_row(r: PacketTierResult) -> dict[str, object]:
    """One summary row of a packet-tier run."""
    row = {"variant": r.variant, "duration_s": r.duration, "packets_sent": r.packets_sent,
           "packets_delivered": r.outcomes["delivered"], "payload_bytes_delivered": r.payload_bytes_delivered,
           "wire_bytes_sent": r.wire_bytes_sent, "records": r.records,
           "nic_entries_end": r.nic_entries_end, "key_cache_hit_ratio": r.key_cache_hit_ratio,
           "failures": ";".join(f"{k}={v}" for k, v in sorted(r.outcomes.items()) if k != "delivered" and v)}
    for name in ("handshakes", "psp_rekeys", "child_sa_rekeys", "ike_sa_rekeys", "tls_key_updates",
                 "key_reconnects", "psp_stale_events", "key_rotations", "nic_commands", "offload_fallbacks",
                 "offload_failures", "connections_lost"):
        row[name] = int(r.counts[name])
    return row

