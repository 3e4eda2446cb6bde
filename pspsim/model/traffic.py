"""Who sends what, and how: host-pair flows and the traffic ledger.

Flows: every ordered (client, server) host pair with a connection is pair
``p``; flow ``2p`` is its client-to-server direction (requests), flow
``2p + 1`` the reverse (responses).  The data plane shares links and NIC
engines between flows, not connections (flow-level model, as SimGrid and
flowSim do), so the cost of a window is the pairs', not the connections'.

Each connection's traffic is at any time in one category:

* ``OFFLOAD``: the variant's own path (PSP on the NIC, IPsec or kTLS offload,
  software IPsec/TLS for the software variants, plaintext);
* ``SOFTWARE``: a software fallback (PSP before its upgrade completes or when
  its TX key did not fit: userspace TLS; kTLS offload that did not fit:
  software kTLS; IPsec offload that did not fit: software ESP);
* ``WAITING``: sends nothing yet (PSP upgrade with ``psp_before_upgrade =
  "wait"``, an IPsec SA that failed to install);
* ``STALE``: sends nothing: its PSP association went stale (the data waits in
  the send queue); these bytes are ``bytes_lost``.

The ledger records when each connection moves between categories (steps in
a :class:`~pspsim.model.calendar.Calendar`) and gives, per window, each
flow's time-averaged bytes, packets, records, key lookups and connections
per category: a connection alive for 10 s of a 60 s window counts 1/6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspsim.model.calendar import Calendar
from pspsim.model.workload import Workload

OFFLOAD, SOFTWARE, WAITING, STALE = 0, 1, 2, 3
CATEGORIES = ("offload", "software", "waiting", "stale")
BYTES, PACKETS, RECORDS, LOOKUPS, CONNECTIONS = range(5)
QUANTITIES = ("bytes", "packets", "records", "lookups", "connections")
GONE = -1


def _ceil_div(x: np.ndarray, d: float) -> np.ndarray:
    return np.maximum(1.0, np.ceil(x / d))


@dataclass(frozen=True)
class Flows:
    """The flow table and each connection's per-second quantities in each direction."""

    pair_of: np.ndarray  # (connections,) pair index
    sender: np.ndarray  # (flows,) host
    receiver: np.ndarray  # (flows,) host
    request: np.ndarray  # (quantities, connections): client -> server, per second
    response: np.ndarray  # (quantities, connections): server -> client, per second

    @property
    def count(self) -> int:
        return len(self.sender)


def build_flows(w: Workload, mss: float, record_bytes: float, tso_bytes: float) -> Flows:
    """Per connection: bytes, packets (``mss`` payload each), TLS records, key lookups (one per
    TSO/GSO burst of up to ``tso_bytes``: the NIC takes the key once per burst) and 1 connection."""
    hosts = w.hosts
    pair_ids, pair_of = np.unique(w.client.astype(np.int64) * hosts + w.server, return_inverse=True)
    client, server = pair_ids // hosts, pair_ids % hosts
    sender = np.empty(2 * len(pair_ids), dtype=np.int64)
    receiver = np.empty_like(sender)
    sender[0::2], sender[1::2] = client, server
    receiver[0::2], receiver[1::2] = server, client
    msgs = w.msgs_per_s.astype(np.float64)
    req = w.msg_bytes.astype(np.float64)
    resp = req * w.response_ratio

    def quantities(size: np.ndarray) -> np.ndarray:
        some = size > 0
        # stored connection by connection (one cache line per connection), seen as (quantities, connections)
        return np.stack([
            size * msgs,
            np.where(some, msgs * _ceil_div(size, mss), 0.0),
            np.where(some, msgs * _ceil_div(size, record_bytes), 0.0),
            np.where(some, msgs * _ceil_div(size, tso_bytes), 0.0),
            np.ones(len(size)),
        ], axis=1).T

    return Flows(pair_of.astype(np.int64), sender, receiver, quantities(req), quantities(resp))


@dataclass(frozen=True)
class WindowTraffic:
    """One window's time-averaged quantities per flow, shape (categories, quantities, flows),
    kept sparse: flows ``touched`` by the window's moves had ``before`` as their level at the
    window start and ``average`` over the window; every other flow's average is its
    ``level`` (unchanged in the window)."""

    rows: np.ndarray  # (flows, categories, quantities): the ledger's level after the window, flow by flow
    touched: np.ndarray  # (t,) flows, sorted
    before: np.ndarray  # (categories, quantities, t)
    average: np.ndarray  # (categories, quantities, t)

    @property
    def level(self) -> np.ndarray:
        """The level after the window as (categories, quantities, flows) (a view)."""
        return self.rows.transpose(1, 2, 0)

    def after(self, flows: np.ndarray) -> np.ndarray:
        """The level after the window of ``flows``, (categories, quantities, len(flows))."""
        return self.rows[flows].transpose(1, 2, 0)

    def full(self) -> np.ndarray:
        """The dense (categories, quantities, flows) average."""
        out = np.ascontiguousarray(self.level)
        out[:, :, self.touched] = self.average
        return out

    def of(self, flows: np.ndarray) -> np.ndarray:
        """The average of some flows (sorted ids), shape (categories, quantities, len(flows))."""
        out = self.rows[flows]
        pos = np.searchsorted(self.touched, flows)
        hit = pos < len(self.touched)
        hit[hit] = self.touched[pos[hit]] == flows[hit]
        out[hit] = self.average[:, :, pos[hit]].transpose(2, 0, 1)
        return out.transpose(1, 2, 0)


def _unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, return_inverse=True)`` by one sort."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.ones(len(xs), dtype=bool)
    first[1:] = xs[1:] != xs[:-1]
    inverse = np.empty(len(x), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return xs[first], inverse


class TrafficLedger:
    """Each connection's category over time; per-window averages per flow and category."""

    def __init__(self, flows: Flows, window: float, end: np.ndarray) -> None:
        self.flows = flows
        self.end = end
        self.rows = np.zeros((flows.count, len(CATEGORIES), len(QUANTITIES)))  # level, flow by flow
        self.category = np.full(len(flows.pair_of), GONE, dtype=np.int8)
        self._steps = Calendar(window, ("conn", "to"))

    def move(self, time: np.ndarray, conns: np.ndarray, to: int | np.ndarray) -> None:
        """From ``time`` on, connection ``conns`` runs in category ``to`` (GONE: it ended).
        Moves at or after a connection's end are ignored (its departure is the last move)."""
        conns = np.asarray(conns, dtype=np.int64)
        to = np.broadcast_to(np.asarray(to, dtype=np.int8), conns.shape)
        keep = (time < self.end[conns]) | (to == GONE)
        self._steps.push(np.asarray(time, dtype=np.float64)[keep], conn=conns[keep], to=to[keep])

    def window(self, index: int, t0: float, t1: float) -> WindowTraffic:
        """Apply window ``index``'s moves; returns the window's time-averaged quantities as a
        :class:`WindowTraffic` (the flows the moves touched, and the level of the others).

        Costs what the window's moves cost: the untouched flows' average is their level,
        which is not copied."""
        steps = self._steps.take(index)
        cats, quants = len(CATEGORIES), len(QUANTITIES)
        if len(steps["conn"]) == 0:
            empty = np.empty((cats, quants, 0))
            return WindowTraffic(self.rows, np.empty(0, np.int64), empty, empty)
        conn, to = steps["conn"].astype(np.int64), steps["to"].astype(np.int8)
        order = np.lexsort((steps["time"], conn))  # by connection, then time
        conn, to, time = conn[order], to[order], steps["time"][order]
        first = np.ones(len(conn), dtype=bool)
        first[1:] = conn[1:] != conn[:-1]
        came_from = np.empty_like(to)
        came_from[first] = self.category[conn[first]]
        came_from[~first] = to[:-1][~first[1:]]
        last = np.ones(len(conn), dtype=bool)
        last[:-1] = conn[:-1] != conn[1:]
        self.category[conn[last]] = to[last]
        weight = (t1 - np.clip(time, t0, t1)) / max(t1 - t0, 1e-12)  # share of the window after the move
        pairs, inverse = _unique_inverse(self.flows.pair_of[conn])
        touched = np.empty(2 * len(pairs), np.int64)
        touched[0::2], touched[1::2] = 2 * pairs, 2 * pairs + 1  # sorted: each pair's two directions
        local = np.concatenate([2 * inverse, 2 * inverse + 1])
        n = len(touched)
        before = self.rows[touched].transpose(1, 2, 0)
        request, response = self.flows.request, self.flows.response
        w2 = np.concatenate([weight, weight])
        level, average = before, before
        # quantities in groups: all five at once for a window's usual few thousand moves (one bincount),
        # one at a time for window 0's whole population (memory); each bin sums the same values in order
        groups = [range(quants)] if len(conn) < 200_000 else [range(q, q + 1) for q in range(quants)]
        for sign, category in ((1.0, to), (-1.0, came_from)):  # added, then taken away (as two sums)
            live = np.concatenate([category != GONE] * 2)
            index_ = np.concatenate([category, category]).astype(np.int64)[live] * n + local[live]
            full = np.empty((quants, cats, n))
            part = np.empty((quants, cats, n))
            for group in groups:
                qs = list(group)
                pick = slice(None) if len(qs) == quants else slice(qs[0], qs[0] + 1)
                values = np.concatenate([request[pick, conn], response[pick, conn]], axis=1)[:, live]
                idx = (np.arange(len(qs))[:, None] * (cats * n) + index_).ravel()
                size = len(qs) * cats * n
                full[qs] = np.bincount(idx, (sign * values).ravel(), size).reshape(len(qs), cats, n)
                part[qs] = np.bincount(idx, (sign * values * w2[live]).ravel(), size).reshape(len(qs), cats, n)
            level = level + full.transpose(1, 0, 2)
            average = average + part.transpose(1, 0, 2)
        self.rows[touched] = level.transpose(2, 0, 1)
        return WindowTraffic(self.rows, touched, before, average)

    def live(self, category: int | None = None) -> np.ndarray:
        """Connections alive now (optionally: in ``category``)."""
        if category is None:
            return np.flatnonzero(self.category != GONE)
        return np.flatnonzero(self.category == category)
