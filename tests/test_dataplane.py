"""The data plane: max-min fair sharing of full-duplex links, and CPU from carried traffic."""

import numpy as np
import pytest

from pspsim.costs import load_parameter_set
from pspsim.model import dataplane
from pspsim.model.dataplane import FRAMING, Network, PathVariants, window_dataplane
from pspsim.model.traffic import BYTES, CATEGORIES, CONNECTIONS, LOOKUPS, OFFLOAD, PACKETS, QUANTITIES, Flows
from pspsim.model.variants import make_variant
from pspsim.scenario import KeysConfig

COSTS = load_parameter_set().costs()
MSS = 1460


def _flows(pairs, payload_bps):
    """Hand-built flows: pairs (sender, receiver) each carrying ``payload_bps`` bytes/s of
    full-size packets in one direction (the reverse flow of each pair is empty)."""
    n = len(pairs)
    sender = np.array([p for s, r in pairs for p in (s, r)])
    receiver = np.array([p for s, r in pairs for p in (r, s)])
    average = np.zeros((len(CATEGORIES), len(QUANTITIES), 2 * n))
    for i, rate in enumerate(payload_bps):
        average[OFFLOAD, BYTES, 2 * i] = rate
        average[OFFLOAD, PACKETS, 2 * i] = rate / MSS
        average[OFFLOAD, LOOKUPS, 2 * i] = rate / 65536
        average[OFFLOAD, CONNECTIONS, 2 * i] = 1
    none = np.zeros(n, np.float32)  # the flows' quantities are given as ``average``, not drawn
    flows = Flows(np.arange(n), sender, receiver, none, none, 0.0, MSS, 16384.0, 65536.0)
    return flows, average


def _run(variant, pairs, payload_bps, hosts, link_gbps=100.0, racks=1, oversubscription=1.0):
    flows, average = _flows(pairs, payload_bps)
    rack_of = np.arange(hosts) * racks // hosts
    network = Network(link_gbps * 1e9, hosts // racks * link_gbps * 1e9 / oversubscription, rack_of)
    v = make_variant(variant, COSTS, KeysConfig())
    paths = PathVariants(v, make_variant(v.fallback, COSTS, KeysConfig()))
    return window_dataplane(paths, COSTS, flows, average, network)


def wire_per_payload(v):
    return (MSS + FRAMING + v.per_packet_overhead) / MSS


def test_a_congested_receiver_limits_exactly_the_flows_into_it():
    # Hosts 0 and 1 both send 80 Gb/s of payload to host 2; host 0 also sends 30 Gb/s to host 3.
    gb = 1e9 / 8
    dp = _run("plaintext", [(0, 2), (1, 2), (0, 3)], [80 * gb, 80 * gb, 30 * gb], hosts=4)
    ratio = wire_per_payload(make_variant("plaintext", COSTS, KeysConfig()))
    # Host 2's downlink (100 Gb/s on the wire) is shared equally: 50 Gb/s of wire each.
    into_2 = 100 / ratio
    # Host 0's uplink carries 50 (to 2) + 30 (to 3) of wire: not full, so 0 -> 3 gets its whole demand.
    achieved = dp["achieved_bps"] / 1e9
    assert achieved[2] == pytest.approx(into_2, rel=1e-6)
    assert achieved[3] == pytest.approx(30, rel=1e-6)
    assert achieved[1] == pytest.approx(into_2 / 2, rel=1e-6)
    assert achieved[0] == pytest.approx(into_2 / 2 + 30, rel=1e-6)


def test_links_are_full_duplex():
    gb = 1e9 / 8
    dp = _run("plaintext", [(0, 1), (1, 0)], [90 * gb, 90 * gb], hosts=2)
    # Each host sends 90 and receives 90 Gb/s of payload: both directions fit a 100 G link.
    assert dp["achieved_bps"] == pytest.approx(np.full(2, 180e9), rel=1e-9)


def test_cpu_follows_the_carried_traffic_not_the_offered():
    gb = 1e9 / 8
    fits = _run("ipsec-sw", [(0, 1)], [50 * gb], hosts=2)
    double = _run("ipsec-sw", [(0, 1)], [200 * gb], hosts=2)  # twice the link
    assert double["offered_bps"][0] == pytest.approx(4 * fits["offered_bps"][0])
    per_gbit = lambda dp: (dp["cores_stack"] + dp["cores_crypto"])[0] / dp["achieved_bps"][0]  # noqa: E731
    assert per_gbit(double) == pytest.approx(per_gbit(fits), rel=1e-9)
    v = make_variant("ipsec-sw", COSTS, KeysConfig())
    capped = 100e9 / 8 / wire_per_payload(v)
    assert double["achieved_bps"][0] == pytest.approx(8 * capped, rel=1e-9)
    # Cycles priced by hand from the cost parameters at the capped rate: stack + ESP + AES per packet and byte.
    packets = capped / MSS
    cycles = packets * (COSTS.host_stack_cycles_per_packet + COSTS.host_ipsec_sw_cycles_per_packet
                        + COSTS.host_aes_gcm_cycles_per_call) + capped * COSTS.host_aes_gcm_cycles_per_byte
    assert (double["cores_stack"] + double["cores_crypto"])[0] == pytest.approx(cycles / COSTS.host_clock_hz, rel=1e-9)


def test_the_spine_limits_only_cross_rack_flows():
    gb = 1e9 / 8
    # 4 hosts, 2 racks of 2, oversubscription 4: each rack has 2 * 100 / 4 = 50 Gb/s up the spine.
    dp = _run("plaintext", [(0, 2), (1, 3), (0, 1)], [40 * gb, 40 * gb, 10 * gb], hosts=4, racks=2,
              oversubscription=4.0)
    ratio = wire_per_payload(make_variant("plaintext", COSTS, KeysConfig()))
    achieved = dp["achieved_bps"] / 1e9
    assert achieved[2] == pytest.approx(25 / ratio, rel=1e-6)  # half of the 50 Gb/s spine share
    assert achieved[3] == pytest.approx(25 / ratio, rel=1e-6)
    assert achieved[1] == pytest.approx(25 / ratio + 10, rel=1e-6)  # the in-rack flow is not limited


def test_nic_engine_limits_offloaded_traffic_by_packets_with_cache_misses():
    # Engine of 1 Mpps, so 100 Gb/s of 1460-byte packets (8.5 Mpps) cannot pass: about 1 Mpps does.
    from dataclasses import replace

    slow = replace(COSTS, nic_crypto_pps=1e6)
    flows, average = _flows([(0, 1)], [100e9 / 8])
    v = make_variant("ipsec-packet-offload", slow, KeysConfig())
    dp = window_dataplane(PathVariants(v, make_variant(v.fallback, slow, KeysConfig())), slow, flows, average,
                          Network(100e9, 200e9, np.zeros(2, dtype=int)))
    pps = dp["achieved_bps"][0] / 8 / MSS
    assert pps == pytest.approx(1e6, rel=1e-6)  # one key: no misses
    assert dp["nic_engine_util"][0] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.skipif(dataplane._kernels is None, reason="compiled kernels not built")
@pytest.mark.parametrize("name", ["ipsec-crypto-offload", "psp", "ktls-offload"])
def test_compiled_engine_shares_are_numpys_even_with_nan_and_inf(monkeypatch, name):
    """The compiled engine pass against the numpy expressions, byte for byte: ordinary loads, a NaN
    lookup count (numpy's ``maximum`` lets NaN win), an infinite miss cost (0 * inf is NaN where a
    direction has no lookups), a read-only input."""
    costs = load_parameter_set().costs()
    rng = np.random.default_rng(1)
    hosts, n = 6, 50
    s, r = rng.integers(0, hosts, n), rng.integers(0, hosts, n)
    own = make_variant(name, costs, KeysConfig())
    q = rng.lognormal(5, 2, (5, n))
    q_nan = q.copy()
    q_nan[3, 7] = np.nan
    read_only = q.copy()
    read_only.setflags(write=False)
    miss = rng.uniform(0, 1, hosts)
    for values, miss_cost in ((q, 2.0), (q_nan, 2.0), (q, np.inf), (read_only, 2.0)):
        fast = dataplane.engine_util(costs, own, values, 1.0, s, r, miss, miss_cost, hosts)
        with monkeypatch.context() as m, np.errstate(invalid="ignore"):  # 0 * inf: NaN on purpose
            m.setattr(dataplane, "_kernels", None)
            slow = dataplane.engine_util(costs, own, values, 1.0, s, r, miss, miss_cost, hosts)
        assert fast.tobytes() == slow.tobytes()
