"""Which connections the packet tier carries, and how much it will produce.

The sample: connections alive during ``[packets] duration`` that touch
``[packets] hosts`` (or any host), at most ``max_connections``, the first in
start order.  The estimates (packets per second, a capture's packets and
bytes) come from the workload's own draws (message sizes and rates, lives),
so a run can be refused before any work.
"""

from __future__ import annotations

import numpy as np

from pspsim.costs.params import Costs
from pspsim.model.sorting import argsort_stable
from pspsim.model.variants import make_variant
from pspsim.model.workload import Workload
from pspsim.packets.tcp import HEADER_BYTES
from pspsim.scenario import Scenario


def sample_connections(scenario: Scenario, workload: Workload, span: float) -> np.ndarray:
    """Indices of the connections the packet tier carries (see the module docstring)."""
    hosts = scenario.packets.hosts
    touches = (workload.start < span) & (workload.end > 0)
    if hosts is not None:
        touches &= np.isin(workload.client, hosts) | np.isin(workload.server, hosts)
    chosen = np.flatnonzero(touches)
    return chosen[argsort_stable(workload.start[chosen])][: scenario.packets.max_connections]


def expected_packet_rate(scenario: Scenario, workload: Workload, sample: np.ndarray, mss: float) -> float:
    """Packets per second the sample sends while all of it lives (both directions)."""
    w = workload
    size = w.msg_bytes[sample].astype(np.float64)
    per = np.ceil(size / mss) + 0.5 + (w.response_ratio > 0) * (np.ceil(size * w.response_ratio / mss) + 0.5)
    return float((w.msgs_per_s[sample] * per).sum())


def estimate_capture(scenario: Scenario, workload: Workload, host: int, variant: str,
                     costs: Costs) -> tuple[int, int]:
    """(packets, pcap bytes) a capture of ``host`` will hold: the expected packets of
    the sampled connections touching it over their lives inside the span, each with
    its wire bytes and a 16-byte pcap record header."""
    span = scenario.packets.duration
    if scenario.packets.hosts is None:
        scenario = scenario.model_copy(update={"packets": scenario.packets.model_copy(update={"hosts": [host]})})
    v = make_variant(variant, costs, scenario.keys)
    sample = sample_connections(scenario, workload, span)
    w = workload
    mine = sample[(w.client[sample] == host) | (w.server[sample] == host)]
    alive = np.clip(np.minimum(w.end[mine], span) - np.maximum(w.start[mine], 0), 0, None)
    total_packets, total_bytes = 0.0, 0.0
    for ratio in (1.0, w.response_ratio):
        if ratio <= 0:
            continue
        size = np.maximum(1, w.msg_bytes[mine].astype(np.float64) * ratio)
        packets = np.ceil(size / v.mss)
        messages = w.msgs_per_s[mine] * alive
        total_packets += float((messages * packets).sum())
        total_bytes += float((messages * (size + packets * (HEADER_BYTES + v.per_packet_overhead + 16))).sum())
    return int(total_packets), int(total_bytes)
