"""Per-host sums of per-flow quantities, kept up to date from each window's moves,
and the data plane of a window computed from them when nothing saturates.

What it models: nothing new.  It computes the same per-host results as
:func:`pspsim.model.dataplane.window_dataplane` at a cost proportional to the
flows a window touches, not to the fleet:

* :class:`HostSums`: for per-flow features ``phi(flow's quantities)`` that are
  not linear in them (engine loads, the busier of packet and bit rate flow by
  flow; cached keys), the sum over the flows each host sends (or receives).
  Linear ones (bytes, packets, records per category, wire bits, cross-rack
  bits) come from the ledger's own per-host sums
  (:class:`~pspsim.model.traffic.TrafficLedger`, built with the racks'
  ``crossing`` flags), kept move by move.  A window's sums are the level's sums
  plus ``phi(average) - phi(before)`` over the touched flows; then the level's
  sums move by ``phi(after) - phi(before)``.  Sums of disjoint flow sets,
  so they combine by addition: one partition (rack) of a fleet can keep its
  own and a coordinator adds them (docs/SCALING.md).
* :class:`IncrementalDataplane`: max-min fair sharing gives every flow its
  demand exactly when no resource's demand exceeds its capacity (a resource
  that fits never saturates, and a flow is only cut by a saturated resource:
  Bertsekas and Gallager, section 6.5.2).  Per-host and per-rack loads are
  linear in the flows' wire bits, and the engine loads are sums of per-flow
  loads, so the check is on the sums.  If every resource is below
  ``1 - MARGIN`` of its capacity the window's results follow from the sums;
  otherwise the full progressive filling runs on the dense average, exactly
  as before.  Context-cache misses (Che) are solved only for the NICs whose
  keys may exceed their cache, from those NICs' flows, in the same order as
  the dense computation, starting Newton's iteration from each NIC's root of the
  previous window (so with the same result to Che's solver tolerance, 1e-10 on
  ``log T``).

Differences from the dense computation: sums are formed in a different
order (incrementally), so results agree to float rounding (relative 1e-12
in practice), not bit for bit; the sums are rebuilt from the level every
``RESYNC`` windows so rounding does not accumulate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pspsim.costs.params import Costs
from pspsim.model.dataplane import (
    Network,
    PathVariants,
    engine_load,
    engine_util,
    host_results,
    miss_ratio,
    window_dataplane,
    wire_bytes,
)
from pspsim.model.sorting import csr
from pspsim.model.traffic import (
    BYTES,
    CONNECTIONS,
    LOOKUPS,
    OFFLOAD,
    PACKETS,
    RECORDS,
    SOFTWARE,
    STALE,
    WAITING,
    Flows,
    WindowTraffic,
)

MARGIN = 1e-6  # a resource within this share of its capacity goes to the exact solver
RESYNC = 256  # windows between rebuilds of the sums from the level


def members(index: tuple[np.ndarray, np.ndarray], groups: np.ndarray) -> np.ndarray:
    """Every item of ``groups`` (their concatenated CSR ranges)."""
    order, bounds = index
    lo, hi = bounds[groups], bounds[groups + 1]
    lengths = hi - lo
    ends = np.cumsum(lengths)
    return order[np.repeat(lo - ends + lengths, lengths) + np.arange(ends[-1] if ends.size else 0)]


class HostSums:
    """Per host, sums of per-flow features over the flows it sends (by ``sender``) or receives.

    ``features(q)`` maps quantities ``q[category, quantity, flow]`` of flows ``ids`` to a
    (k, flows) array; ``by_receiver[j]`` says whether feature ``j`` is summed at the receiver."""

    def __init__(self, flows: Flows, hosts: int, features: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 by_receiver: np.ndarray) -> None:
        self.flows, self.hosts, self.features = flows, hosts, features
        self.by_receiver = np.asarray(by_receiver, dtype=bool)
        self.k = len(self.by_receiver)
        self.sums = np.zeros((self.k, hosts))
        self.windows = 0

    def _index(self, ids: np.ndarray) -> np.ndarray:
        """Each (feature, flow)'s bin: feature j of a flow goes to its receiver's or sender's bin j."""
        group = np.where(self.by_receiver[:, None], self.flows.receiver[ids], self.flows.sender[ids])
        return (np.arange(self.k)[:, None] * self.hosts + group).ravel()

    def _bin(self, ids: np.ndarray, values: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        index = self._index(ids) if index is None else index
        return np.bincount(index, values.ravel(), self.k * self.hosts).reshape(self.k, self.hosts)

    def window(self, traffic: WindowTraffic) -> np.ndarray:
        """The window's sums (k, hosts); then the level's sums move on."""
        self.windows += 1
        if self.windows % RESYNC == 1:  # rebuild from the level (also the first window)
            everything = np.arange(self.flows.count)
            self.sums = self._bin(everything, self.features(traffic.level, everything))
            ids = traffic.touched
            after = self.features(traffic.touched_after, ids)
            return self.sums + self._bin(ids, self.features(traffic.average, ids) - after)
        ids = traffic.touched
        if not len(ids):
            return self.sums.copy()
        index = self._index(ids)  # the same bins for the window's average and its level after
        before = self.features(traffic.before, ids)
        out = self.sums + self._bin(ids, self.features(traffic.average, ids) - before, index)
        self.sums += self._bin(ids, self.features(traffic.touched_after, ids) - before, index)
        return out


# Feature rows of the data plane: (name, summed at the receiver?)
_LINEAR = [(c, k) for c in (OFFLOAD, SOFTWARE) for k in (BYTES, PACKETS, RECORDS)]


class IncrementalDataplane:
    """The data plane of each window from per-host sums; the dense solver when anything is near
    capacity.  Same results as :func:`~pspsim.model.dataplane.window_dataplane` (see the module
    docstring for the rounding)."""

    def __init__(self, paths: PathVariants, c: Costs, flows: Flows, network: Network) -> None:
        self.paths, self.c, self.flows, self.network = paths, c, flows, network
        self.hosts = hosts = len(network.rack_of)
        own = paths.own
        self.cache, self.miss_cost = own.context_cache(c)
        self.uses_cache = own.crypto_on_nic and self.cache is not None
        self.by_sender = csr(flows.sender, hosts)
        self.by_receiver = csr(flows.receiver, hosts)
        # Rows that are sums of nonlinear per-flow features: engine loads (the busier of packet and bit
        # rate, flow by flow) and cached keys.  Every other row is linear in the flows' quantities and
        # follows from the ledger's per-host sums (_linear_rows).
        names = []
        if own.crypto_on_nic:
            names += [("engine", False), ("engine", True)]
        if self.uses_cache:
            names += [("keys", side) for side, on in ((False, own.lookups_tx()), (True, own.lookups_rx())) if on]
        self.row = {name: j for j, name in enumerate(names)}
        self.sums = HostSums(flows, hosts, self._features, np.array([n[-1] for n in names])) if names else None
        self.solver_windows = 0
        self.log_t = np.full(hosts, np.nan)  # Che's log T per NIC from the last window: the next solve starts there

    def _linear_rows(self, host_average: np.ndarray) -> dict[tuple, np.ndarray]:
        """The linear rows per host from the ledger's per-host sums of the window averages
        (``host_average[host, side, part, category, quantity]``, side 1 = received)."""
        own, sw = self.paths.own, self.paths.fallback
        rows: dict[tuple, np.ndarray] = {}
        for side in (False, True):
            q = host_average[:, int(side), 0].transpose(1, 2, 0)  # (categories, quantities, hosts)
            crossing = host_average[:, int(side), 1].transpose(1, 2, 0)
            for c_, k in _LINEAR:
                rows["lin", c_, k, side] = q[c_, k]
            rows["offered", side] = q[:, BYTES].sum(axis=0)
            rows["waiting", side] = q[WAITING, BYTES]
            rows["lost", side] = q[STALE, BYTES]
            for name, x in (("wire", q), ("cross", crossing)):
                rows[name, side] = 8 * (wire_bytes(own, x[OFFLOAD, BYTES], x[OFFLOAD, PACKETS], x[OFFLOAD, RECORDS])
                                        + wire_bytes(sw, x[SOFTWARE, BYTES], x[SOFTWARE, PACKETS],
                                                     x[SOFTWARE, RECORDS]))
        return rows

    def _features(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        own, c = self.paths.own, self.c
        o = np.ascontiguousarray(q[OFFLOAD])  # one gather of the flows' rows; the arithmetic on contiguous rows
        active = (o[BYTES] + q[SOFTWARE, BYTES]) > 0
        rows = []
        if own.crypto_on_nic:  # engine loads with no cache misses
            w_own = wire_bytes(own, o[BYTES], o[PACKETS], o[RECORDS])
            for lookup in (own.lookups_tx(), own.lookups_rx()):
                rows.append(np.where(active, engine_load(c, o[PACKETS], o[LOOKUPS] * lookup, w_own, 0.0,
                                                         self.miss_cost), 0.0))
        if self.uses_cache:
            live = (o[CONNECTIONS] > 0) & (o[LOOKUPS] > 0)
            keys = np.where(live, o[CONNECTIONS] if own.key_per_connection() else 1.0, 0.0)
            rows += [keys for on in (own.lookups_tx(), own.lookups_rx()) if on]
        return np.stack(rows)

    def window(self, traffic: WindowTraffic) -> dict[str, np.ndarray]:
        per_host = self._linear_rows(traffic.host_average)
        if self.sums is not None:
            sums = self.sums.window(traffic)
            per_host.update({name: sums[j] for name, j in self.row.items()})
        row = lambda *name: per_host[name]  # noqa: E731
        hosts, own, c, net = self.hosts, self.paths.own, self.c, self.network
        limit = 1.0 - MARGIN
        racks = int(net.rack_of.max()) + 1
        fits = (row("wire", False).max(initial=0) <= limit * net.link_bps
                and row("wire", True).max(initial=0) <= limit * net.link_bps
                and np.bincount(net.rack_of, row("cross", False), racks).max() <= limit * net.spine_bps
                and np.bincount(net.rack_of, row("cross", True), racks).max() <= limit * net.spine_bps)
        miss = np.zeros(hosts)
        engine = None
        near: tuple[np.ndarray, np.ndarray] | None = None  # flows of the NICs whose keys may spill, offloaded
        if fits and self.uses_cache:
            keys = sum(row("keys", side) for side in (False, True) if ("keys", side) in self.row)
            maybe = np.flatnonzero(keys > self.cache * limit)
            if len(maybe):
                if len(maybe) < hosts:
                    ids = self._flows_of(maybe)
                    near = ids, traffic.category_of(ids, OFFLOAD)
                else:  # every NIC (kTLS offload spills on all): every flow
                    near = np.arange(self.flows.count), traffic.category_of(None, OFFLOAD)
                miss = self._miss(near, maybe)
        if fits and own.crypto_on_nic:
            engine = np.maximum(row("engine", False), row("engine", True))
            missing = np.flatnonzero(miss > 0)
            if len(missing):
                engine[missing] = self._engine(near, missing, miss)[missing]
            fits = engine.max(initial=0) <= limit
        if not fits:
            self.solver_windows += 1
            return window_dataplane(self.paths, c, self.flows, traffic.full(), net)
        linear = {(c_ == OFFLOAD, k): (row("lin", c_, k, False), row("lin", c_, k, True)) for c_, k in _LINEAR}
        both = lambda name: row(name, False) + row(name, True)  # noqa: E731
        return host_results(self.paths, c, hosts, linear, miss, engine, both("offered"), both("waiting"),
                            both("lost"))

    def _flows_of(self, nics: np.ndarray) -> np.ndarray:
        """Every flow sent or received by ``nics``, sorted."""
        seen = np.zeros(self.flows.count, bool)  # union without a hash table
        seen[members(self.by_sender, nics)] = True
        seen[members(self.by_receiver, nics)] = True
        return np.flatnonzero(seen)

    def _part(self, near: tuple[np.ndarray, np.ndarray], nics: np.ndarray, tx: bool, rx: bool):
        """The flows of ``near`` sent (``tx``) or received (``rx``) by ``nics``, in flow order."""
        ids, q = near
        if len(nics) == self.hosts and tx and rx:  # every NIC (kTLS offload spills on all): all of them
            return ids, q
        mine = np.zeros(self.hosts, bool)
        mine[nics] = True
        keep = np.zeros(len(ids), bool)
        for side, ends in ((tx, self.flows.sender), (rx, self.flows.receiver)):
            if side:
                keep |= mine[ends[ids]]
        if keep.all():  # the engine's NICs are those whose keys spill: usually all of near's
            return ids, q
        picked = np.flatnonzero(keep)  # a random half: positions and `take`, 4x faster than a mask
        return ids[picked], q.take(picked, axis=1)

    def _miss(self, near: tuple[np.ndarray, np.ndarray], nics: np.ndarray) -> np.ndarray:
        """Che's miss ratio for ``nics`` from their own flows (others: 0, their keys fit)."""
        own = self.paths.own
        ids, q = self._part(near, nics, bool(own.lookups_tx()), bool(own.lookups_rx()))
        miss = miss_ratio(own, self.flows.sender[ids], self.flows.receiver[ids], q, self.cache, self.hosts,
                          self.log_t)
        out = np.zeros(self.hosts)
        out[nics] = miss[nics]
        return out

    def _engine(self, near: tuple[np.ndarray, np.ndarray], nics: np.ndarray, miss: np.ndarray) -> np.ndarray:
        """Engine share of ``nics`` with their cache misses, from their flows (as the dense path, which
        leaves out flows without bytes: their load is 0, and adding 0 changes no sum)."""
        ids, q = self._part(near, nics, True, True)
        return engine_util(self.c, self.paths.own, q, 1.0, self.flows.sender[ids], self.flows.receiver[ids], miss,
                           self.miss_cost, self.hosts)
