"""The leaf-spine fabric of the packet tier: links as FIFO servers.

Each packet crosses its source host's uplink, for cross-rack traffic its
rack's spine uplink and the destination rack's spine downlink, and the
destination host's downlink.  Each link serialises packets at its rate
(host links at ``host_link_gbps``; a rack's spine links share
``hosts_per_rack × link / spine_oversubscription``), one FIFO per link,
served for a whole batch (a window) at once with
:func:`pspsim.model.commands.fifo_departures`; each hop adds
``hop_latency_us``.  A packet that finds more than ``buffer`` bytes queued
ahead of it is dropped.  Simplification: a dropped packet's service time
still counts on the links it already crossed (conservative: it delays later
packets slightly more than a real drop would).
"""

from __future__ import annotations

import numpy as np

from pspsim.model.commands import fifo_departures
from pspsim.scenario import FleetConfig


class Fabric:
    def __init__(self, fleet: FleetConfig, buffer_bytes: int) -> None:
        self.fleet = fleet
        self.buffer = buffer_bytes
        self.rack = np.arange(fleet.hosts) // fleet.hosts_per_rack
        self.busy_until = np.zeros(2 * fleet.hosts + 2 * fleet.racks)

    def carry(self, send: np.ndarray, src: np.ndarray, dst: np.ndarray,
              size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arrival time and dropped flag of each packet (send times, hosts, bytes)."""
        fleet, rack, hosts, racks = self.fleet, self.rack, self.fleet.hosts, self.fleet.racks
        link = fleet.host_link_gbps * 1e9 / 8
        spine = fleet.hosts_per_rack * link / fleet.spine_oversubscription
        hop = fleet.hop_latency_us * 1e-6
        cross = rack[src] != rack[dst]
        dropped = np.zeros(len(send), dtype=bool)
        t = send.astype(np.float64).copy()
        # servers: host uplinks, rack uplinks, rack downlinks, host downlinks
        stages = [(src, link, None), (hosts + rack[src], spine, cross),
                  (hosts + racks + rack[dst], spine, cross), (hosts + 2 * racks + dst, link, None)]
        for servers, rate, only in stages:
            use = ~dropped if only is None else (~dropped & only)
            if not use.any():
                continue
            service = size[use] / rate
            done = fifo_departures(t[use], servers[use], service, self.busy_until)
            waited = done - service - t[use]
            index = np.flatnonzero(use)
            dropped[index[waited * rate > self.buffer]] = True
            t[index] = done + hop
        return t, dropped
