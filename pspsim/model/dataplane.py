"""The data plane of one window: flows share the network and NIC engines max-min
fairly, and hosts pay CPU for the traffic actually carried.

Per window, from the traffic ledger's time-averaged flow quantities:

* Demand: each host-pair flow's bytes per second in the categories that send
  (the variant's own path and its software fallback); waiting and stale
  traffic sends nothing.
* Sharing: weighted max-min fairness (progressive filling,
  :mod:`pspsim.model.sharing`; weight = the flow's connections) over every
  host's uplink and downlink (``min(host link, NIC line rate)``), each rack's
  spine uplink and downlink (``hosts_per_rack * link / oversubscription``) for
  cross-rack flows, and, for offloaded traffic, each NIC's transmit and
  receive crypto engine (packets per second, stretched by context-cache
  misses, or bits per second, whichever binds).  A congested receiver limits
  exactly the flows into it.  Assumption: TCP converges to max-min fair shares.
* Context caches: keys that data packets look up in a NIC table (PSP TX
  keys in a NIC table, IPsec SAs both ways, kTLS TX and RX contexts) go
  through an LRU cache; its miss ratio per NIC follows the lookup rate each
  key carries (Che's approximation, :mod:`pspsim.model.cache`), one lookup per
  TSO burst.  PSP receive derives its keys and never looks one up.  A miss
  costs ``miss_cost`` engine packet-times and ``nic.cache_miss_latency_s``.
* CPU: every packet sent or received pays the plain stack; each category its
  variant's protection cycles per packet, byte and record, from the achieved
  traffic only.  Cores = cycles per second / clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspsim.costs.params import Costs
from pspsim.model.cache import lru_miss_ratio
from pspsim.model.sharing import max_min_rates
from pspsim.model.traffic import BYTES, CONNECTIONS, LOOKUPS, OFFLOAD, PACKETS, RECORDS, SOFTWARE, STALE, WAITING, Flows
from pspsim.model.variants import Variant

try:  # the compiled pass (setup.py builds it); the numpy expressions below give the same bytes
    from pspsim.model import _kernels
except ImportError:  # pragma: no cover - the compiled module is optional
    _kernels = None
if not hasattr(_kernels, "engine_shares"):  # pragma: no cover - a build older than this source
    _kernels = None

FRAMING = 78  # bytes per packet on the wire: Ethernet 14 + FCS 4 + preamble/IFG 20 + IPv4 20 + TCP 20


@dataclass(frozen=True)
class Network:
    link_bps: float  # per host and direction: min(host link, NIC line rate)
    spine_bps: float  # per rack and direction, for cross-rack traffic
    rack_of: np.ndarray

    @classmethod
    def of(cls, fleet, costs: Costs, rack_of: np.ndarray) -> Network:
        link = min(fleet.host_link_gbps * 1e9, costs.nic_line_rate_bps)
        return cls(link, fleet.hosts_per_rack * fleet.host_link_gbps * 1e9 / fleet.spine_oversubscription, rack_of)


def wire_bytes(v: Variant, payload, packets, records):
    """Bytes on the wire: payload, protocol overhead, TCP/IP headers and Ethernet framing."""
    return payload + packets * (v.per_packet_overhead + FRAMING) + records * v.per_record_overhead


def host_cycles(v: Variant, c: Costs, packets, payload, records) -> tuple[np.ndarray, np.ndarray]:
    """(stack, protection) cycles per second of a host's packets, bytes and records."""
    crypto = np.broadcast_to(v.crypto_cycles(packets, payload, records), np.shape(packets))
    return packets * c.host_stack_cycles_per_packet, crypto


def engine_load(c: Costs, packets, lookups, wire, miss, miss_cost):
    """Share of a NIC crypto engine (one direction) taken: packets, plus a miss cost per
    missed lookup, against its packet rate, or bits against its bit rate."""
    return np.maximum((packets + lookups * miss * miss_cost) / c.nic_crypto_pps, 8 * wire / c.nic_crypto_bps)


@dataclass(frozen=True)
class PathVariants:
    own: Variant  # OFFLOAD category
    fallback: Variant  # SOFTWARE category


def window_dataplane(paths: PathVariants, c: Costs, flows: Flows, average: np.ndarray,
                     network: Network) -> dict[str, np.ndarray]:
    """Per-host results of one window from the flows' time-averaged quantities
    ``average[category, quantity, flow]``; rates per second, arrays of length hosts."""
    hosts = len(network.rack_of)
    own, sw = paths.own, paths.fallback
    q_own, q_sw = average[OFFLOAD], average[SOFTWARE]
    demand = q_own[BYTES] + q_sw[BYTES]
    active = np.flatnonzero(demand > 0)
    s, r = flows.sender[active], flows.receiver[active]
    d = demand[active]
    wire_own = wire_bytes(own, q_own[BYTES][active], q_own[PACKETS][active], q_own[RECORDS][active])
    wire_sw = wire_bytes(sw, q_sw[BYTES][active], q_sw[PACKETS][active], q_sw[RECORDS][active])
    per_byte_bits = 8 * (wire_own + wire_sw) / d

    miss = np.zeros(hosts)
    cache, miss_cost = own.context_cache(c)
    if own.crypto_on_nic and cache is not None:
        miss = miss_ratio(own, flows.sender, flows.receiver, q_own, cache, hosts)
    # Resources: uplinks, downlinks, rack spine up and down, engines tx and rx.
    racks = int(network.rack_of.max()) + 1
    up, down, spine_up, spine_down = 0, hosts, 2 * hosts, 2 * hosts + racks
    eng_tx, eng_rx = 2 * hosts + 2 * racks, 3 * hosts + 2 * racks
    capacity = np.concatenate([np.full(2 * hosts, network.link_bps), np.full(2 * racks, network.spine_bps),
                               np.ones(2 * hosts)])
    idx = np.arange(len(active))
    cross = network.rack_of[s] != network.rack_of[r]
    flow_of = [idx, idx, idx[cross], idx[cross]]
    resource = [up + s, down + r, spine_up + network.rack_of[s][cross], spine_down + network.rack_of[r][cross]]
    coefficient = [per_byte_bits, per_byte_bits, per_byte_bits[cross], per_byte_bits[cross]]
    tx_lookup, rx_lookup = own.lookups_tx(), own.lookups_rx()
    if own.crypto_on_nic:
        pk, lk = q_own[PACKETS][active], q_own[LOOKUPS][active]
        tx_load = engine_load(c, pk, lk * tx_lookup, wire_own, miss[s], miss_cost)
        rx_load = engine_load(c, pk, lk * rx_lookup, wire_own, miss[r], miss_cost)
        on = q_own[BYTES][active] > 0
        flow_of += [idx[on], idx[on]]
        resource += [eng_tx + s[on], eng_rx + r[on]]
        coefficient += [tx_load[on] / d[on], rx_load[on] / d[on]]
    weight = np.maximum(q_own[CONNECTIONS][active] + q_sw[CONNECTIONS][active], 1e-9)
    rate = max_min_rates(d, weight, np.concatenate(flow_of), np.concatenate(resource),
                         np.concatenate(coefficient), capacity)
    scale = np.where(d > 0, rate / d, 0.0)

    sums = {}  # (own?, quantity) -> (sent, received) per host of the carried traffic
    for is_own, q in ((True, q_own), (False, q_sw)):
        for k in (BYTES, PACKETS, RECORDS):
            x = q[k][active] * scale
            sums[is_own, k] = (np.bincount(s, x, hosts), np.bincount(r, x, hosts))
    engine = None
    if own.crypto_on_nic:
        engine = engine_util(c, own, q_own[:, active], scale, s, r, miss, miss_cost, hosts)
    return host_results(paths, c, hosts, sums, miss, engine, per_host_all(flows, average[:, BYTES], hosts),
                        _per_host_flows(flows, average[WAITING, BYTES], hosts),
                        _per_host_flows(flows, average[STALE, BYTES], hosts))


def engine_util(c: Costs, own: Variant, q: np.ndarray, scale, s: np.ndarray, r: np.ndarray, miss: np.ndarray,
                miss_cost: float, hosts: int) -> np.ndarray:
    """Per NIC, the busier direction's crypto engine share taken by the carried offloaded traffic
    of flows ``q[quantity, flow]`` (sent by ``s``, received by ``r``)."""
    if _kernels is not None and np.ndim(scale) == 0 and q.flags.c_contiguous and q.dtype == np.float64:
        tx, rx = np.empty(hosts), np.empty(hosts)  # the expressions below, in one compiled pass
        _kernels.engine_shares(q, float(scale), np.ascontiguousarray(s, np.int64), np.ascontiguousarray(r, np.int64),
                               np.ascontiguousarray(miss, np.float64), float(own.per_packet_overhead + FRAMING),
                               float(own.per_record_overhead), float(own.lookups_tx()), float(own.lookups_rx()),
                               float(miss_cost), c.nic_crypto_pps, c.nic_crypto_bps, tx, rx)
        return np.maximum(tx, rx)
    lk = q[LOOKUPS] * scale
    pk = q[PACKETS] * scale
    wire = wire_bytes(own, q[BYTES] * scale, pk, q[RECORDS] * scale)
    tx = np.bincount(s, engine_load(c, pk, lk * own.lookups_tx(), wire, miss[s], miss_cost), hosts)
    rx = np.bincount(r, engine_load(c, pk, lk * own.lookups_rx(), wire, miss[r], miss_cost), hosts)
    return np.maximum(tx, rx)


def host_results(paths: PathVariants, c: Costs, hosts: int, sums: dict, miss: np.ndarray,
                 engine: np.ndarray | None, offered: np.ndarray, waiting: np.ndarray,
                 lost: np.ndarray) -> dict[str, np.ndarray]:
    """Per-host results from per-host sums of the carried traffic: ``sums[own?, quantity]`` =
    (sent, received) bytes, packets, records per second; offered, waiting and lost bytes per second
    sent plus received."""
    own, sw = paths.own, paths.fallback
    result: dict[str, np.ndarray] = {}
    stack = crypto = 0.0
    achieved = wire = overhead = np.zeros(hosts)
    latency_weighted = np.zeros(hosts)
    packets_total = np.zeros(hosts)
    for v, is_own in ((own, True), (sw, False)):
        b, p, rec = (sums[is_own, k][0] + sums[is_own, k][1] for k in (BYTES, PACKETS, RECORDS))
        tag = "own" if is_own else "software"
        for k, name in ((PACKETS, "packets"), (BYTES, "bytes")):
            result[f"{tag}_tx_{name}"], result[f"{tag}_rx_{name}"] = sums[is_own, k]
        st, cr = host_cycles(v, c, p, b, rec)
        stack, crypto = stack + st, crypto + cr
        achieved = achieved + b
        w_bytes = wire_bytes(v, b, p, rec)
        wire, overhead = wire + w_bytes, overhead + (w_bytes - b - p * FRAMING)
        if v.crypto_on_nic:
            lat = c.nic_crypto_latency_s + miss * c.nic_cache_miss_latency_s
        else:
            lat = np.divide(cr, np.maximum(p, 1e-300)) / c.host_clock_hz
        latency_weighted += lat * p
        packets_total += p
    result["nic_engine_util"] = engine if own.crypto_on_nic else np.zeros(hosts)
    software = sums[False, BYTES][0] + sums[False, BYTES][1]
    clock = c.host_clock_hz
    result.update({
        "offered_bps": 8 * offered,
        "achieved_bps": 8 * achieved,
        "software_bps": 8 * software,
        "waiting_bps": 8 * waiting,
        "lost_bps": 8 * lost,
        "wire_bps": 8 * wire,
        "overhead_bps": 8 * overhead,
        "cores_stack": stack / clock,
        "cores_crypto": crypto / clock,
        "cache_miss_ratio": miss,
        "added_latency_us": np.divide(latency_weighted, np.maximum(packets_total, 1e-300)) * 1e6,
    })
    return result


def _per_host_flows(flows: Flows, values: np.ndarray, hosts: int) -> np.ndarray:
    return np.bincount(flows.sender, values, hosts) + np.bincount(flows.receiver, values, hosts)


def per_host_all(flows: Flows, values: np.ndarray, hosts: int) -> np.ndarray:
    """Sent plus received per host, summed over categories (``values[category, flow]``)."""
    return _per_host_flows(flows, values.sum(axis=0), hosts)


def miss_ratio(v: Variant, sender: np.ndarray, receiver: np.ndarray, q: np.ndarray, cache: float,
               hosts: int, log_t: np.ndarray | None = None) -> np.ndarray:
    """Per NIC, the miss ratio of its context cache over the keys its offloaded traffic looks up.
    A flow's ``n`` connections are ``n`` keys (one per connection: PSP TX keys, kTLS contexts, per
    connection SAs) or one key (host-pair SAs: the pair's SA), each with an equal share of the lookups.
    ``log_t``: Che's characteristic times from the previous window (see ``lru_miss_ratio``)."""
    conns, lookups = q[CONNECTIONS], q[LOOKUPS]
    live = (conns > 0) & (lookups > 0)
    every = bool(live.all())  # usually: no gathers then
    pick = (lambda x: x) if every else (lambda x: x[live])  # noqa: E731
    keys = pick(conns) if v.key_per_connection() else np.ones(int(live.sum()))
    rate = pick(lookups) / np.maximum(keys, 1e-12)
    parts_rate, parts_mult, parts_group = [], [], []
    if v.lookups_tx():
        parts_rate.append(rate)
        parts_mult.append(keys)
        parts_group.append(pick(sender))
    if v.lookups_rx():
        parts_rate.append(rate)
        parts_mult.append(keys)
        parts_group.append(pick(receiver))
    if not parts_rate:
        return np.zeros(hosts)
    size = np.full(hosts, cache)  # NICs whose keys fit their cache miss 0
    return lru_miss_ratio(np.concatenate(parts_rate), np.concatenate(parts_mult), np.concatenate(parts_group),
                          size, hosts, log_t)
