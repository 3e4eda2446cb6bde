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

try:  # the compiled inner loop (setup.py builds it); the numpy one gives the same bytes
    from pspsim.model import _kernels as _ledger_fast
except ImportError:  # pragma: no cover - exercised when the extension is not built
    _ledger_fast = None
from pspsim.model.sorting import lexsort, unique_inverse
from pspsim.model.workload import Workload

OFFLOAD, SOFTWARE, WAITING, STALE = 0, 1, 2, 3
CATEGORIES = ("offload", "software", "waiting", "stale")
BYTES, PACKETS, RECORDS, LOOKUPS, CONNECTIONS = range(5)
QUANTITIES = ("bytes", "packets", "records", "lookups", "connections")
GONE = -1
RESYNC = 256  # windows between rebuilds of the per-host sums from the flows' level
HOST_SUM_ELEMENTS = 1 << 22  # values summed per host by one bincount (32 MiB; see TrafficLedger._host_sums)
SCRATCH_FLOWS = 1 << 16  # touched flows (and moves) up to which the ledger keeps its working space (36 MiB),
SCRATCH_SHARE = 8  # or up to this share of the flows (fleet-10k: 250,000 of 2 M, 140 MB; its windows touch 160,000)


def _ceil_div(x: np.ndarray, d: float) -> np.ndarray:
    return np.maximum(1.0, np.ceil(x / d))


@dataclass(frozen=True)
class Flows:
    """The flow table, and each connection's per-second quantities in each direction, computed
    when asked from its message size and rate (a window needs them for the connections it moves
    only, so they are not kept: 80 bytes per connection less)."""

    pair_of: np.ndarray  # (connections,) pair index (int32)
    sender: np.ndarray  # (flows,) host
    receiver: np.ndarray  # (flows,) host
    msg_bytes: np.ndarray  # (connections,) float32 request size, as drawn
    msgs_per_s: np.ndarray  # (connections,) float32
    response_ratio: float  # response size / request size (0: bulk)
    mss: float  # payload bytes per packet
    record_bytes: float  # payload bytes per TLS record
    tso_bytes: float  # payload bytes per TSO/GSO burst (one key lookup)

    @property
    def count(self) -> int:
        return len(self.sender)

    def quantities(self, conns: np.ndarray | slice, response: bool) -> np.ndarray:
        """(quantities, len(conns)) per second of ``conns`` in one direction: bytes, packets
        (``mss`` payload each), TLS records, key lookups (one per TSO/GSO burst: the NIC takes
        the key once per burst) and 1 connection."""
        size = self.msg_bytes[conns].astype(np.float64)
        if response:
            size = size * self.response_ratio
        msgs = self.msgs_per_s[conns].astype(np.float64)
        some = size > 0
        return np.stack([
            size * msgs,
            np.where(some, msgs * _ceil_div(size, self.mss), 0.0),
            np.where(some, msgs * _ceil_div(size, self.record_bytes), 0.0),
            np.where(some, msgs * _ceil_div(size, self.tso_bytes), 0.0),
            np.ones(len(size)),
        ])

    def bytes_per_s(self, response: bool) -> np.ndarray:
        """Every connection's bytes per second in one direction."""
        size = self.msg_bytes.astype(np.float64)
        if response:
            size = size * self.response_ratio
        return size * self.msgs_per_s.astype(np.float64)


def build_flows(w: Workload, mss: float, record_bytes: float, tso_bytes: float) -> Flows:
    """The flows of the workload's host pairs (see :class:`Flows`)."""
    hosts = w.hosts
    pair_ids, pair_of, _, _ = unique_inverse(w.client.astype(np.int64) * hosts + w.server)
    client, server = pair_ids // hosts, pair_ids % hosts
    sender = np.empty(2 * len(pair_ids), dtype=np.int64)
    receiver = np.empty_like(sender)
    sender[0::2], sender[1::2] = client, server
    receiver[0::2], receiver[1::2] = server, client
    return Flows(pair_of.astype(np.int32), sender, receiver, w.msg_bytes, w.msgs_per_s, float(w.response_ratio),
                 float(mss), float(record_bytes), float(tso_bytes))


@dataclass(frozen=True)
class WindowTraffic:
    """One window's time-averaged quantities per flow, shape (categories, quantities, flows),
    kept sparse: flows ``touched`` by the window's moves had ``before`` as their level at the
    window start and ``average`` over the window; every other flow's average is its
    ``level`` (unchanged in the window).  Valid until the ledger's next window (``before``,
    ``average`` and ``touched_after`` may be views of its working space, and ``rows`` is its level)."""

    rows: np.ndarray  # (flows, categories, quantities): the ledger's level after the window, flow by flow
    touched: np.ndarray  # (t,) flows, sorted
    before: np.ndarray  # (categories, quantities, t)
    average: np.ndarray  # (categories, quantities, t)
    host_average: np.ndarray  # (hosts, 2, 2, categories, quantities): see TrafficLedger (per-host sums)
    touched_after: np.ndarray  # (categories, quantities, t): the touched flows' level after the window
    dense: DenseAverages | None = None  # the ledger's every-flow averages kept from window to window

    @property
    def level(self) -> np.ndarray:
        """The level after the window as (categories, quantities, flows) (a view)."""
        return self.rows.transpose(1, 2, 0)

    def full(self) -> np.ndarray:
        """The dense (categories, quantities, flows) average."""
        out = np.ascontiguousarray(self.level)
        out[:, :, self.touched] = self.average
        return out

    def category_of(self, flows: np.ndarray | None, category: int) -> np.ndarray:
        """The average of some flows (sorted ids; None: every flow) in one category, as one
        contiguous (quantities, len(flows)) array."""
        if self.dense is not None:  # kept by the ledger: a gather from one contiguous array
            every = self.dense.get(self, category)
            return every if flows is None else every[:, flows]
        if flows is None:
            return _every_flow(self, category)
        out = np.ascontiguousarray(self.rows[flows, category]).T.copy()
        pos = np.searchsorted(self.touched, flows)
        hit = pos < len(self.touched)
        hit[hit] = self.touched[pos[hit]] == flows[hit]
        out[:, hit] = self.average[category][:, pos[hit]]
        return out


def _every_flow(traffic: WindowTraffic, category: int) -> np.ndarray:
    """Every flow's average in ``category`` as a new (quantities, flows) array."""
    out = np.ascontiguousarray(traffic.rows[:, category]).T.copy()  # row by row, then transposed (cache lines)
    out[:, traffic.touched] = traffic.average[category]
    return out


class DenseAverages:
    """Every flow's window average in some categories, as contiguous (quantities, flows) arrays kept
    from window to window.  A category asked for once (kTLS offload's data plane asks for every flow's
    offloaded traffic in every window) is from then on updated by the ledger at the cost of the flows
    the window touched (last window's get their level back, this window's their average), instead of
    being gathered from the 32 MB level each window.  Callers get read-only views."""

    def __init__(self) -> None:
        self.arrays: dict[int, np.ndarray] = {}
        self.touched = np.empty(0, np.int64)  # the flows whose entries hold an average, not the level

    def get(self, traffic: WindowTraffic, category: int) -> np.ndarray:
        if category not in self.arrays:
            self.arrays[category] = _every_flow(traffic, category)
        view = self.arrays[category].view()
        view.flags.writeable = False
        return view

    def update(self, rows: np.ndarray, touched: np.ndarray, average: np.ndarray) -> None:
        """After a window's moves: ``rows`` the level, ``average[category, quantity, t]`` of the
        ``touched`` flows."""
        by_flow = average.transpose(2, 0, 1)  # (t, categories, quantities): the compiled ledger's own layout
        for category, out in self.arrays.items():
            if hasattr(_ledger_fast, "dense_update") and by_flow.flags.c_contiguous:
                _ledger_fast.dense_update(out, rows, category, self.touched, touched, by_flow)
                continue
            out[:, self.touched] = rows[self.touched, category].T  # unchanged since, unless touched again
            out[:, touched] = average[category]
        self.touched = touched.copy()


class TrafficLedger:
    """Each connection's category over time; per-window averages per flow and category.

    Per-host sums too, kept as the moves are applied: ``host_level[h, side, part, category,
    quantity]`` sums the level of the flows host ``h`` sends (side 0) or receives (side 1),
    over all of them (part 0) or those that cross racks (part 1, per ``crossing``); each
    window's :class:`WindowTraffic` carries the same sums of the window averages
    (``host_average``).  The data plane's linear per-host loads follow from them at a cost of
    the window's moves, not its flows.  They are rebuilt from the flows' level every
    ``RESYNC`` windows, so rounding does not accumulate."""

    def __init__(self, flows: Flows, window: float, end: np.ndarray, hosts: int | None = None,
                 crossing: np.ndarray | None = None, windows: int | None = None) -> None:
        self.flows = flows
        self.end = end
        if hosts is None:
            hosts = max(flows.sender.max(initial=-1), flows.receiver.max(initial=-1)) + 1
        self.hosts = int(hosts)
        self.crossing = np.zeros(flows.count, np.uint8) if crossing is None else np.asarray(crossing, np.uint8)
        self.host_level = np.zeros((self.hosts, 2, 2, len(CATEGORIES), len(QUANTITIES)))
        self.rows = np.zeros((flows.count, len(CATEGORIES), len(QUANTITIES)))  # level, flow by flow
        self.category = np.full(len(flows.pair_of), GONE, dtype=np.int8)
        self._steps = Calendar(window, ("conn", "to"), windows)  # moves past the run: dropped
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None  # the compiled loop's (see _space)
        self.dense = DenseAverages()

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
        which is not copied.  A move to the category its connection is already in (a PSP
        reconnect's move to the offload it runs on) changes nothing and is dropped: applying it
        would only touch its flows and add rounding."""
        steps = self._steps.take(index, by_time=False)  # sorted below by connection, then time (stable)
        if index % RESYNC == RESYNC - 1:
            self._resync_host_level()
        host_average = self.host_level.copy()
        if len(steps["conn"]) == 0:
            return self._untouched(host_average)
        conn, to = steps["conn"].astype(np.int64, copy=False), steps["to"].astype(np.int8, copy=False)
        time = steps.pop("time")
        del steps  # window 0 moves every connection open at time 0: no copy kept longer than needed
        order = lexsort((time, conn))  # by connection, then time
        conn, to, time = conn[order], to[order], time[order]
        del order
        first = np.ones(len(conn), dtype=bool)
        first[1:] = conn[1:] != conn[:-1]
        came_from = np.empty_like(to)
        came_from[first] = self.category[conn[first]]
        came_from[~first] = to[:-1][~first[1:]]
        changes = to != came_from  # a move to the category the connection is in changes nothing: dropped
        if not changes.all():
            conn, to, came_from, time = conn[changes], to[changes], came_from[changes], time[changes]
            if len(conn) == 0:
                return self._untouched(host_average)
        last = np.ones(len(conn), dtype=bool)
        last[:-1] = conn[:-1] != conn[1:]
        self.category[conn[last]] = to[last]
        weight = (t1 - np.clip(time, t0, t1)) / max(t1 - t0, 1e-12)  # share of the window after the move
        del time
        pairs, inverse, by_pair, pair_start = unique_inverse(self.flows.pair_of[conn])
        touched = np.empty(2 * len(pairs), np.int64)
        touched[0::2], touched[1::2] = 2 * pairs, 2 * pairs + 1  # sorted: each pair's two directions
        if _ledger_fast is not None:
            n = len(touched)
            # every flow touched (window 0): their level after the window is the level itself, not copied
            every = n == self.flows.count and getattr(_ledger_fast, "AFTER_OPTIONAL", False)
            out, values = self._space(n, len(conn), planes=2 if every else 3)
            f = self.flows
            _ledger_fast.apply_moves(
                conn, to, came_from, weight, inverse, by_pair, pair_start, touched, f.msg_bytes, f.msgs_per_s,
                f.response_ratio, f.mss, f.record_bytes, f.tso_bytes, self.rows, out, values, f.sender, f.receiver,
                self.crossing, self.host_level, host_average)
            average = out[1, :n].transpose(1, 2, 0)
            self.dense.update(self.rows, touched, average)
            after = self.rows.transpose(1, 2, 0) if every else out[2, :n].transpose(1, 2, 0)
            return WindowTraffic(self.rows, touched, out[0, :n].transpose(1, 2, 0), average, host_average,
                                 after, self.dense)
        before, average = self._apply(conn, to, came_from, weight, inverse, touched)
        after = self.rows[touched].transpose(1, 2, 0)
        self.host_level += self._host_sums(touched, after - before)
        host_average += self._host_sums(touched, average - before)
        self.dense.update(self.rows, touched, average)
        return WindowTraffic(self.rows, touched, before, average, host_average, after, self.dense)

    def _untouched(self, host_average: np.ndarray) -> WindowTraffic:
        """A window without moves: every flow at its level."""
        empty, none = np.empty((len(CATEGORIES), len(QUANTITIES), 0)), np.empty(0, np.int64)
        self.dense.update(self.rows, none, empty)
        return WindowTraffic(self.rows, none, empty, empty, host_average, empty, self.dense)

    def _host_sums(self, flows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per-host sums (hosts, 2, 2, categories, quantities) of ``values[category, quantity, flow]``.

        One ``bincount`` over a block of (category, quantity) rows at a time, each bin adding its
        flows in order, so the sums do not depend on the block: blocks of at most
        ``HOST_SUM_ELEMENTS`` values keep the copies small when every flow is summed (a resync:
        fleet-10k's 2 M flows took 0.9 GB for a moment in one block); a window's flows fit in one."""
        out = np.zeros_like(self.host_level)
        per_flow = values.reshape(-1, len(flows))  # (categories * quantities, flows)
        block = max(1, HOST_SUM_ELEMENTS // max(len(flows), 1))
        for side, hosts_of in ((0, self.flows.sender), (1, self.flows.receiver)):
            for part, keep in ((0, slice(None)), (1, self.crossing[flows] == 1)):
                h = hosts_of[flows][keep]
                sums = out.reshape(self.hosts, 2, 2, -1)[:, side, part]  # (hosts, rows): a view of out
                for lo in range(0, per_flow.shape[0], block):
                    rows = per_flow[lo:lo + block]
                    index = (np.arange(rows.shape[0])[:, None] * self.hosts + h).ravel()
                    sums[:, lo:lo + block] = np.bincount(index, rows[:, keep].ravel(),
                                                         rows.shape[0] * self.hosts).reshape(-1, self.hosts).T
        return out

    def _resync_host_level(self) -> None:
        """Rebuild the per-host sums from the flows' level."""
        everything = np.arange(self.flows.count)
        self.host_level = self._host_sums(everything, self.rows.transpose(1, 2, 0))

    def _space(self, flows: int, moves: int, planes: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """The compiled loop's output (3, flows, categories, quantities) and working space
        (moves, 2, quantities): kept from window to window up to ``SCRATCH_FLOWS`` touched flows or
        ``1 / SCRATCH_SHARE`` of the flows, whichever is more (a window's usual moves), so their
        pages are not faulted in again each window (fleet-10k: 77 MB a window, 22 of a plaintext
        window's 77 ms in the loop); fresh beyond (window 0), without the working space (80 bytes
        a move: 0.8 GB for fleet-10k's 10 M connections open at time 0) when the loop can compute
        the values again; ``planes=2`` leaves out the level after (fresh output only)."""
        shape = (len(CATEGORIES), len(QUANTITIES))
        limit = max(SCRATCH_FLOWS, self.flows.count // SCRATCH_SHARE)
        if flows > limit or moves > limit:  # no values kept: the loop computes them twice
            kept = 0 if getattr(_ledger_fast, "RECOMPUTES_VALUES", False) else moves
            return np.empty((planes, flows, *shape)), np.empty((kept, 2, len(QUANTITIES)))
        if self._scratch is None or self._scratch[0].shape[1] < max(flows, moves):
            have = 0 if self._scratch is None else self._scratch[0].shape[1]
            size = min(limit, max(flows, moves, 2 * have))
            self._scratch = (np.empty((3, size, *shape)), np.empty((size, 2, len(QUANTITIES))))
        return self._scratch

    def _apply(self, conn, to, came_from, weight, inverse, touched) -> tuple[np.ndarray, np.ndarray]:
        """The numpy implementation of the compiled ``apply_moves``: each bin sums the moves in
        order, additions then removals.  Updates the level; returns (before, average) of the
        ``touched`` flows as (categories, quantities, touched)."""
        cats, quants = len(CATEGORIES), len(QUANTITIES)
        local = np.concatenate([2 * inverse, 2 * inverse + 1])
        n = len(touched)
        before = self.rows[touched].transpose(1, 2, 0)
        w2 = np.concatenate([weight, weight])
        level, average = before, before
        # quantities in groups: all five at once for a window's usual few thousand moves (one bincount),
        # one at a time for window 0's whole population (memory); each bin sums the same values in order
        groups = [range(quants)] if len(conn) < 200_000 else [range(q, q + 1) for q in range(quants)]
        values_all = np.concatenate([self.flows.quantities(conn, False), self.flows.quantities(conn, True)], axis=1)
        for sign, category in ((1.0, to), (-1.0, came_from)):  # added, then taken away (as two sums)
            live = np.concatenate([category != GONE] * 2)
            index_ = np.concatenate([category, category]).astype(np.int64)[live] * n + local[live]
            full = np.empty((quants, cats, n))
            part = np.empty((quants, cats, n))
            for group in groups:
                qs = list(group)
                pick = slice(None) if len(qs) == quants else slice(qs[0], qs[0] + 1)
                values = values_all[pick][:, live]
                idx = (np.arange(len(qs))[:, None] * (cats * n) + index_).ravel()
                size = len(qs) * cats * n
                full[qs] = np.bincount(idx, (sign * values).ravel(), size).reshape(len(qs), cats, n)
                part[qs] = np.bincount(idx, (sign * values * w2[live]).ravel(), size).reshape(len(qs), cats, n)
            level = level + full.transpose(1, 0, 2)
            average = average + part.transpose(1, 0, 2)
        self.rows[touched] = level.transpose(2, 0, 1)
        return before, average

    def live(self, category: int | None = None) -> np.ndarray:
        """Connections alive now (optionally: in ``category``)."""
        if category is None:
            return np.flatnonzero(self.category != GONE)
        return np.flatnonzero(self.category == category)
