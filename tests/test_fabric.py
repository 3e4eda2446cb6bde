"""The packet tier's fabric: serialisation, queueing, propagation, tail drops
checked against queueing results and an independent M/D/1/K event loop."""

from collections import deque

import numpy as np
import pytest

from pspsim.packets.fabric import Fabric
from pspsim.scenario import FleetConfig

FLEET = FleetConfig(racks=2, hosts_per_rack=2, host_link_gbps=8, spine_oversubscription=2, hop_latency_us=1)
PACKET = 1500.0
RATE = 1e9  # bytes/s of an 8 Gb/s link


def test_same_rack_two_hops_cross_rack_four():
    fabric = Fabric(FLEET, buffer_bytes=10**9)
    arrive, dropped = fabric.carry(np.array([0.0, 1.0]), np.array([0, 0]), np.array([1, 2]), np.array([1000.0, 1000.0]))
    link = 1000 / 1e9  # 1000 bytes at 1 GB/s
    spine = 1000 / (2 * 1e9 / 2)
    assert np.allclose(arrive, [2 * link + 2e-6, 1.0 + 2 * link + 2 * spine + 4e-6])
    assert not dropped.any()


def test_a_dropped_packet_does_not_occupy_the_link():
    fabric = Fabric(FLEET, buffer_bytes=2500)
    send = np.zeros(5)
    arrive, dropped = fabric.carry(send, np.zeros(5, dtype=int), np.ones(5, dtype=int), np.full(5, 1000.0))
    # backlog 0 and 1000 leave room for 1000 more; 2000 + 1000 > 2500: the rest are dropped on arrival
    assert dropped.tolist() == [False, False, True, True, True]
    # a packet arriving when the two accepted ones are nearly served finds room: drops took no link time
    late, lost = fabric.carry(np.array([1.6e-6]), np.array([0]), np.array([1]), np.array([1000.0]))
    assert not lost[0]
    assert late[0] == pytest.approx(2e-6 + 1e-6 + 1e-6 + 1e-6 + 1e-6, rel=1e-9)  # uplink free at 2 us


def md1k_delivered(arrivals: np.ndarray, service: float, k: int) -> float:
    """Independent M/D/1/K: a deque of departure times; an arrival that finds
    K packets in the system (queue + server) is lost."""
    system: deque[float] = deque()
    last = 0.0
    delivered = 0
    for t in arrivals.tolist():
        while system and system[0] <= t:
            system.popleft()
        if len(system) >= k:
            continue
        last = max(t, last) + service
        system.append(last)
        delivered += 1
    return delivered / len(arrivals)


@pytest.mark.parametrize("load", [1.1, 1.5, 2.0])
@pytest.mark.parametrize("process", ["poisson", "periodic"])
def test_overload_delivers_capacity_over_load(load, process):
    rng = np.random.default_rng(7)
    n, k = 40_000, 40
    service = PACKET / RATE
    gaps = rng.exponential(service / load, n) if process == "poisson" else np.full(n, service / load)
    send = np.cumsum(gaps)
    fleet = FleetConfig(racks=1, hosts_per_rack=2, host_link_gbps=8, hop_latency_us=0)
    fabric = Fabric(fleet, buffer_bytes=int(k * PACKET))
    delivered = 0
    for chunk in np.array_split(np.arange(n), 7):  # in chunks, as the tier sends windows
        _, dropped = fabric.carry(send[chunk], np.zeros(len(chunk), int), np.ones(len(chunk), int),
                                  np.full(len(chunk), PACKET))
        delivered += int((~dropped).sum())
    fraction = delivered / n
    assert fabric.sent == n and fabric.dropped + delivered == n  # conservation
    assert abs(fraction - md1k_delivered(send, service, k)) < 0.02
    assert abs(fraction - 1 / load) < 0.02  # the long-run result for an overloaded tail-drop queue


def test_underload_drops_nothing_and_keeps_fifo_order():
    rng = np.random.default_rng(2)
    send = np.sort(rng.uniform(0, 1e-3, 400))
    fabric = Fabric(FLEET, buffer_bytes=10**6)
    arrive, dropped = fabric.carry(send, np.zeros(400, int), np.full(400, 3), np.full(400, 1000.0))
    assert not dropped.any() and np.all(np.diff(arrive) > 0)
