"""The leaf-spine fabric of the packet tier: links as tail-drop FIFO queues.

Each packet crosses its source host's uplink, for cross-rack traffic its
rack's spine uplink and the destination rack's spine downlink, and the
destination host's downlink.  Each link serialises packets at its rate
(host links at ``host_link_gbps``; a rack's spine links share
``hosts_per_rack x link / spine_oversubscription``) through one FIFO with a
buffer of ``buffer`` bytes; each hop adds ``hop_latency_us``.

Tail drop, decided on arrival: a packet that finds ``backlog + its size >
buffer`` (backlog: the bytes still to be served on that link, including the
rest of the packet in service) is dropped there and never occupies the link
or any later one.  Under a sustained load ``rho > 1`` such a link delivers
the fraction ``~1 / rho`` of what is offered (the M/D/1/K and D/D/1/K
results; ``tests/test_fabric.py`` checks both).

Speed: a batch (one chunk of a window) is first served as if buffers were
infinite, in one vectorised pass (:func:`pspsim.model.commands.fifo_departures`);
only the links where some packet would then have found its buffer full are
served again, packet by packet, with the drop decided on arrival.  Both
paths give the same answer where no packet is dropped.
"""

from __future__ import annotations

import numpy as np

from pspsim.model.commands import fifo_departures
from pspsim.scenario import FleetConfig


def tail_drop_fifo(arrivals: np.ndarray, servers: np.ndarray, size: np.ndarray, rate: float,
                   buffer: float, busy_until: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Departure time and dropped flag of each packet at its server (a link of
    ``rate`` bytes/s with ``buffer`` bytes); updates ``busy_until``."""
    service = size / rate
    trial = busy_until.copy()
    done = fifo_departures(arrivals, servers, service, trial)
    backlog = (done - service - arrivals) * rate
    over = backlog + size > buffer * (1 + 1e-12)
    dropped = np.zeros(len(arrivals), dtype=bool)
    if not over.any():
        busy_until[:] = trial
        return done, dropped
    redo = np.isin(servers, np.unique(servers[over]))
    keep = np.ones(len(busy_until), dtype=bool)
    keep[servers[redo]] = False
    busy_until[keep] = trial[keep]
    index = np.flatnonzero(redo)
    index = index[np.argsort(arrivals[index], kind="stable")]
    busy = busy_until
    limit = buffer * (1 + 1e-12)
    for i, t, q, n, s in zip(index.tolist(), arrivals[index].tolist(), servers[index].tolist(),
                             size[index].tolist(), service[index].tolist()):
        b = busy[q]
        if (b - t) * rate + n > limit:  # no room: dropped on arrival
            dropped[i] = True
            continue
        b = (b if b > t else t) + s
        busy[q] = b
        done[i] = b
    done[dropped] = np.nan
    return done, dropped


class Fabric:
    def __init__(self, fleet: FleetConfig, buffer_bytes: int) -> None:
        self.fleet = fleet
        self.buffer = buffer_bytes
        self.rack = np.arange(fleet.hosts) // fleet.hosts_per_rack
        self.busy_until = np.zeros(2 * fleet.hosts + 2 * fleet.racks)
        self.sent = self.dropped = 0

    def carry(self, send: np.ndarray, src: np.ndarray, dst: np.ndarray,
              size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arrival time and dropped flag of each packet (send times, hosts, bytes).
        A dropped packet's arrival time is NaN."""
        fleet, rack, hosts, racks = self.fleet, self.rack, self.fleet.hosts, self.fleet.racks
        link = fleet.host_link_gbps * 1e9 / 8
        spine = fleet.hosts_per_rack * link / fleet.spine_oversubscription
        hop = fleet.hop_latency_us * 1e-6
        size = np.asarray(size, dtype=np.float64)
        cross = rack[src] != rack[dst]
        dropped = np.zeros(len(send), dtype=bool)
        t = np.asarray(send, dtype=np.float64).copy()
        # servers: host uplinks, rack uplinks, rack downlinks, host downlinks
        stages = [(src, link, None), (hosts + rack[src], spine, cross),
                  (hosts + racks + rack[dst], spine, cross), (hosts + 2 * racks + dst, link, None)]
        for servers, rate, only in stages:
            use = ~dropped if only is None else (~dropped & only)
            if not use.any():
                continue
            index = np.flatnonzero(use)
            done, lost = tail_drop_fifo(t[index], servers[index], size[index], rate, self.buffer,
                                        self.busy_until)
            dropped[index[lost]] = True
            t[index] = done + hop
        t[dropped] = np.nan
        self.sent += len(send)
        self.dropped += int(dropped.sum())
        return t, dropped
