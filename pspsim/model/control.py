"""What a variant's control plane did in one window, and small columnar helpers.

Every control plane (PSP, IPsec, TLS) reports into one :class:`ControlWindow`:
event counts under the names of the summary (``handshakes``, ``psp_rekeys``,
``child_sa_rekeys``, ``ike_sa_rekeys``, ``tls_key_updates``,
``key_reconnects``, ``psp_stale_events``, ``offload_fallbacks``,
``offload_failures``, ``key_rotations``) and the CPU cycles it spent per host,
split into set-up (handshakes) and re-keying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspsim.model.sorting import argsort_stable, csr
from pspsim.model.workload import Workload

try:  # the compiled slot count (setup.py builds it); the numpy version below gives the same answer
    from pspsim.model import _queues
except ImportError:  # pragma: no cover - the compiled module is optional
    _queues = None
if not hasattr(_queues, "fits_in_order"):  # pragma: no cover - a build older than this source
    _queues = None

COUNTS = ("handshakes", "psp_rekeys", "child_sa_rekeys", "ike_sa_rekeys", "tls_key_updates", "key_reconnects",
          "psp_stale_events", "offload_fallbacks", "offload_failures", "key_rotations")
REKEY_KINDS = ("psp_rekeys", "child_sa_rekeys", "ike_sa_rekeys", "tls_key_updates", "key_reconnects")


class ControlWindow:
    def __init__(self, hosts: int, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, t1
        self.counts = dict.fromkeys(COUNTS, 0.0)
        self.setup_cycles = np.zeros(hosts)
        self.rekey_cycles = np.zeros(hosts)

    def count(self, name: str, n: float) -> None:
        self.counts[name] += n

    def _add(self, target: np.ndarray, hosts: np.ndarray, cycles: float) -> None:
        if len(hosts) and cycles:
            target += np.bincount(hosts, minlength=len(target)) * cycles

    def handshakes(self, clients: np.ndarray, servers: np.ndarray, client_cycles: float, server_cycles: float,
                   rekey: bool = False) -> None:
        """One key-establishment exchange per (client, server) pair of ends; re-keying ones
        (reconnects) are charged as re-key CPU."""
        target = self.rekey_cycles if rekey else self.setup_cycles
        self.count("handshakes", len(clients))
        self._add(target, np.asarray(clients, dtype=np.int64), client_cycles)
        self._add(target, np.asarray(servers, dtype=np.int64), server_cycles)

    def cycles_at_both(self, a: np.ndarray, b: np.ndarray, cycles: float, rekey: bool = False) -> None:
        target = self.rekey_cycles if rekey else self.setup_cycles
        self._add(target, np.asarray(a, dtype=np.int64), cycles)
        self._add(target, np.asarray(b, dtype=np.int64), cycles)

    def rekey_cycles_at(self, hosts: np.ndarray, cycles: float) -> None:
        self._add(self.rekey_cycles, np.asarray(hosts, dtype=np.int64), cycles)

    @property
    def rekeys(self) -> float:
        return sum(self.counts[k] for k in REKEY_KINDS)


@dataclass(frozen=True)
class HostIndex:
    """Every connection (over the whole run) with an end on each host: host ``h``'s are
    ``conn[bounds[h]:bounds[h + 1]]``, those it is the client of, then those it serves, each in
    start order (the ones open at time 0 by age, not by row: see :func:`conns_by_host`)."""

    conn: np.ndarray  # int32 (int64 past 2**31 connections)
    bounds: np.ndarray  # int64, hosts + 1

    def __call__(self, host: int) -> np.ndarray:
        return self.conn[self.bounds[host]:self.bounds[host + 1]]


def conns_by_host(w: Workload) -> HostIndex:
    """The :class:`HostIndex` of the workload.  The connections open at time 0 are listed by age,
    though their rows are in client order: a rotation asks a NIC's connections to re-key in this
    order, and connections re-keyed at the same time queue their commands in it, so row order
    would make each peer's share arrive client host by client host."""
    n, k = len(w), w.running
    by_age = argsort_stable(w.start[:k])  # the running rows in start order
    ends = np.empty(2 * n, dtype=w.client.dtype)  # each end's host, the connections in start order
    ends[:k], ends[k:n] = w.client[:k][by_age], w.client[k:]
    ends[n:n + k], ends[n + k:] = w.server[:k][by_age], w.server[k:]
    order, bounds = csr(ends, w.hosts)
    del ends
    order[order >= n] -= n  # a server end's position is n + its connection's
    row = np.empty(n, dtype=np.int64 if n > np.iinfo(np.int32).max else np.int32)  # position -> row
    row[:k], row[k:] = by_age, np.arange(k, n, dtype=row.dtype)
    return HostIndex(row[order], bounds.astype(np.int64))


def rank_within(groups: np.ndarray) -> np.ndarray:
    """For items already in order, each one's rank among the earlier items of its group."""
    n = len(groups)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    order = argsort_stable(groups)
    g = groups[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start
    return rank


def fits_on_both(nic_a: np.ndarray, nic_b: np.ndarray, when: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Installs that each need one free slot on two NICs, taken in time order: which fit.

    Each install takes the next slot on both of its NICs (an install that fails on one
    NIC still takes its turn on the other: conservative by at most the failures)."""
    n = len(nic_a)
    order = argsort_stable(when)
    if _queues is not None:  # the same ranks, counted in one pass
        fits = np.empty(n, np.uint8)
        _queues.fits_in_order(order.astype(np.int64, copy=False), np.ascontiguousarray(nic_a, np.int64),
                              np.ascontiguousarray(nic_b, np.int64), np.ascontiguousarray(free, np.float64), fits)
        return fits.view(bool)
    nics = np.concatenate([nic_a[order], nic_b[order]])
    slot = np.concatenate([np.arange(n), np.arange(n)])  # interleave by time: a then b of each install
    by_time = argsort_stable(slot)
    rank = np.empty(2 * n, dtype=np.int64)
    rank[by_time] = rank_within(nics[by_time])
    ok = (rank[:n] < free[nic_a[order]]) & (rank[n:] < free[nic_b[order]])
    fits = np.empty(n, dtype=bool)
    fits[order] = ok
    return fits
