"""The data plane of one window: host aggregates turned into costs, per host.

Inputs are per-host rates (bytes, packets and records per second, each
direction) and per-host state counts; outputs are per-host arrays.  Model,
per host:

* CPU: every packet pays the plain stack cost; the variant adds its
  protection cycles (per packet, byte, record), handshakes and rekeys.
  Cores = cycles per second / clock.
* NIC crypto engine (offloaded variants): packets and bytes per direction
  against the engine's capacity.  Keys looked up in a NIC table go through
  a context cache; with uniform access over ``entries`` live keys and a
  cache of ``C`` entries the miss ratio is ``1 - C/entries``, and each miss
  costs ``miss_cost`` packet-times of the engine (a fetch over PCIe), so
  capacity falls by ``1 + miss_ratio * miss_cost``.  PSP receive derives
  keys and never misses; PSP transmit with keys in the descriptor neither.
* Achieved throughput = offered, scaled down to the tightest of: host link,
  NIC line rate, engine capacity, and the rack's share of the spine
  (oversubscription) for cross-rack traffic.
* Added latency per packet: software crypto cycles / clock, or the NIC's
  crypto latency stretched by cache misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspsim.costs.params import Costs
from pspsim.model.variants import Variant


@dataclass
class HostRates:
    """Per-host offered rates (arrays of length hosts), maintained by the simulation."""

    tx_bytes: np.ndarray
    rx_bytes: np.ndarray
    tx_packets: np.ndarray
    rx_packets: np.ndarray
    tx_records: np.ndarray
    rx_records: np.ndarray
    cross_rack_tx_bytes: np.ndarray
    connections: np.ndarray  # live connection endpoints on the host
    tls_rekeys: np.ndarray  # expected TLS rekeys per second (fluid)

    @classmethod
    def zeros(cls, hosts: int) -> HostRates:
        return cls(*(np.zeros(hosts) for _ in range(9)))


def window_costs(
    variant: Variant,
    costs: Costs,
    rates: HostRates,
    nic_entries: np.ndarray,
    handshake_cycles: np.ndarray,
    rekey_cycles: np.ndarray,
    rack_of: np.ndarray,
    link_bps: float,
    oversubscription: float,
    hosts_per_rack: int,
) -> dict[str, np.ndarray]:
    """Per-host results of one window (all arrays of length hosts); cycles are per second."""
    packets = rates.tx_packets + rates.rx_packets
    payload = rates.tx_bytes + rates.rx_bytes
    records = rates.tx_records + rates.rx_records
    stack = packets * costs.host_stack_cycles_per_packet
    crypto = np.broadcast_to(variant.crypto_cycles(packets, payload, records), packets.shape)
    handshake, rekey = handshake_cycles, rekey_cycles
    clock = costs.host_clock_hz

    overhead = packets * variant.per_packet_overhead + records * variant.per_record_overhead
    # On the wire: payload, protocol overhead, and 78 B per packet of TCP/IP headers and Ethernet framing.
    tx_wire_bits = 8 * (rates.tx_bytes + rates.tx_packets * (variant.per_packet_overhead + 78)
                        + rates.tx_records * variant.per_record_overhead)
    rx_wire_bits = 8 * (rates.rx_bytes + rates.rx_packets * (variant.per_packet_overhead + 78)
                        + rates.rx_records * variant.per_record_overhead)

    hosts = len(packets)
    miss = np.zeros(hosts)
    engine_util = np.zeros(hosts)
    scale = np.ones(hosts)
    latency = np.zeros(hosts)
    if variant.crypto_on_nic:
        if variant.nic_table_lookups():
            cache = costs.nic_ipsec_sa_cache_entries
            miss = np.where(nic_entries > cache, 1 - cache / np.maximum(nic_entries, 1), 0.0)
        if variant.name == "psp":
            tx_miss, rx_miss = miss, np.zeros(hosts)  # RX derives keys: no lookups
        else:
            tx_miss = rx_miss = miss
        pps = costs.nic_crypto_pps
        bps = costs.nic_crypto_bps
        tx_need = np.maximum(rates.tx_packets * (1 + tx_miss * costs.nic_ipsec_sa_miss_cost) / pps, tx_wire_bits / bps)
        rx_need = np.maximum(rates.rx_packets * (1 + rx_miss * costs.nic_ipsec_sa_miss_cost) / pps, rx_wire_bits / bps)
        engine_util = np.maximum(tx_need, rx_need)
        scale = np.minimum(scale, 1 / np.maximum(engine_util, 1))
        latency += costs.nic_crypto_latency_s + miss * costs.nic_cache_miss_latency_s
    else:
        per_packet = np.divide(crypto, packets, out=np.zeros(hosts), where=packets > 0)
        latency += per_packet / clock
    link = min(link_bps, costs.nic_line_rate_bps)
    scale = np.minimum(scale, link / np.maximum(np.maximum(tx_wire_bits, rx_wire_bits), 1))
    scale = np.minimum(scale, 1.0)
    # Spine: each rack's cross-rack traffic shares hosts_per_rack * link / oversubscription.
    cross_bits = 8 * rates.cross_rack_tx_bytes * np.divide(tx_wire_bits, 8 * np.maximum(rates.tx_bytes, 1e-9))
    racks = rack_of.max() + 1
    demand = np.bincount(rack_of, weights=cross_bits * scale, minlength=racks)
    uplink = hosts_per_rack * link_bps / oversubscription
    rack_scale = np.minimum(1.0, uplink / np.maximum(demand, 1e-9))[rack_of]
    local_share = 1 - np.divide(cross_bits, np.maximum(tx_wire_bits, 1e-9))
    achieved_scale = scale * (local_share + (1 - local_share) * rack_scale)

    cycles = stack + crypto + handshake + rekey
    return {
        "offered_bps": 8 * payload,
        "achieved_bps": 8 * payload * achieved_scale,
        "wire_bps": (tx_wire_bits + rx_wire_bits) * achieved_scale,
        "overhead_bps": 8 * overhead * achieved_scale,
        "cores_total": cycles / clock,
        "cores_stack": stack / clock,
        "cores_crypto": crypto / clock,
        "cores_handshake": handshake / clock,
        "cores_rekey": rekey / clock,
        "nic_engine_util": engine_util,
        "cache_miss_ratio": miss,
        "added_latency_us": latency * 1e6,
    }
