"""The packet tier's fabric: serialisation, queueing, propagation, drops."""

import numpy as np

from pspsim.packets.fabric import Fabric
from pspsim.scenario import FleetConfig

FLEET = FleetConfig(racks=2, hosts_per_rack=2, host_link_gbps=8, spine_oversubscription=2, hop_latency_us=1)


def test_same_rack_two_hops_cross_rack_four():
    fabric = Fabric(FLEET, buffer_bytes=10**9)
    arrive, dropped = fabric.carry(np.array([0.0, 1.0]), np.array([0, 0]), np.array([1, 2]), np.array([1000.0, 1000.0]))
    link = 1000 / 1e9  # 1000 bytes at 1 GB/s
    spine = 1000 / (2 * 1e9 / 2)
    assert np.allclose(arrive, [2 * link + 2e-6, 1.0 + 2 * link + 2 * spine + 4e-6])
    assert not dropped.any()


def test_queueing_and_drops_on_overflow():
    fabric = Fabric(FLEET, buffer_bytes=2500)
    send = np.zeros(5)
    arrive, dropped = fabric.carry(send, np.zeros(5, dtype=int), np.ones(5, dtype=int), np.full(5, 1000.0))
    # the first three fit in the uplink buffer (0, 1000, 2000 bytes ahead); the last two are dropped
    assert dropped.tolist() == [False, False, False, True, True]
    assert np.all(np.diff(arrive[~dropped]) > 0)
