"""IPsec's control plane (IKEv2 + xfrm, software or NIC offload), columnar.

* One IKE SA per host pair, alive while any connection of the pair lives,
  whatever the CHILD_SA granularity: IKE_SA_INIT + IKE_AUTH when the pair's
  first connection opens (initiator: the lower-numbered host; responder: the
  other), re-keyed at ages ``k * ipsec_ike_rekey``.  Its first CHILD_SA comes
  with IKE_AUTH (RFC 7296 1.2).
* CHILD_SAs per host pair or per connection (``ipsec_sa_granularity``); every
  further CHILD_SA of an IKE SA is a CREATE_CHILD_SA.  A CHILD_SA re-keys at
  ages ``k * I``, ``I = ipsec_child_rekey * (1 - jitter * U)``, ``U ~ U(0, 1)``
  per SA from the re-key jitter stream (the same draw for every IPsec
  variant), never after it is gone; make-before-break keeps the old pair
  installed ``ipsec_rekey_overlap`` after each re-key (strongSwan
  ``make_before_break``).
* Offload: each end holds an inbound and an outbound SA per CHILD_SA pair on
  its NIC; set-up adds them (two ``ipsec_sa_add`` per end), teardown deletes
  them, a re-key adds the new pair and deletes the old after the overlap.
  Traffic of a new SA waits until its adds complete.  A full table: strongSwan
  ``hw_offload = auto`` runs that SA in software ESP; ``yes`` fails it, and
  its traffic waits until a slot frees (retried each window).  Re-keys are
  assumed to find room (the old pair is deleted after the overlap).
* SAs alive at time 0 have re-key phases uniform over their interval.
"""

from __future__ import annotations

import numpy as np

from pspsim.model.calendar import Calendar, periodic_bounds
from pspsim.model.commands import COMMAND, CommandQueues
from pspsim.model.control import ControlWindow, fits_on_both, rank_within
from pspsim.model.sorting import argsort_stable, csr, lexsort, unique_inverse
from pspsim.model.traffic import OFFLOAD, SOFTWARE, WAITING, TrafficLedger
from pspsim.model.workload import Workload

try:  # the compiled passes (setup.py builds them); the numpy expressions below give the same bytes
    from pspsim.model import _schedules
except ImportError:  # pragma: no cover - the compiled module is optional
    _schedules = None
if not all(hasattr(_schedules, f) for f in ("events_in", "sa_pairs")):  # pragma: no cover
    _schedules = None  # a build older than this source


def _events_in(start: np.ndarray, interval: np.ndarray, t0: float, t1: np.ndarray):
    """Per SA, the ages k*interval (k >= 1) falling in [t0, t1): (sa position, time), each time
    ``start + k * interval`` inside the bounds (:func:`~pspsim.model.calendar.periodic_bounds`)."""
    if _schedules is not None:
        return _schedules.events_in(np.ascontiguousarray(start, np.float64), np.ascontiguousarray(interval, np.float64),
                                    float(t0), np.ascontiguousarray(np.broadcast_to(t1, start.shape), np.float64))
    first, last = periodic_bounds(start, interval, t0, t1)
    first = np.maximum(1.0, first)
    count = np.maximum(0, last - first + 1).astype(np.int64)
    pos = np.repeat(np.arange(len(start)), count)
    k = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    return pos, start[pos] + k * interval[pos]


class RekeyTimers:
    """Re-keys at ages ``k * interval`` (k >= 1) of SAs that come and go, taken window by window at
    the cost of the SAs that re-key in the window or start in it, not of every live SA.

    Each SA's next re-key is filed in a calendar under the window it falls in, tagged with the SA's
    incarnation (an SA that empties and comes back is a new one, with a new start).  A window takes
    the rows filed under it, keeps those of SAs still in the same incarnation and alive (or gone in
    this window), adds the SAs started in it, lists the re-keys of those in the window as
    :func:`_events_in` does (an SA gone in the window: before its last connection's end), and files
    the next re-key of the ones still alive.  The list comes out as a scan of every live SA gives it
    (by SA, then time), so the results are the same bytes.  The scan it replaces went over every
    live CHILD_SA and IKE SA each window: at fleet-10k, 1 M host-pair SAs twice a window for some
    17,000 re-keys (docs/SCALING.md, step 54)."""

    def __init__(self, count: int, window: float, windows: int | None) -> None:
        self.calendar = Calendar(window, ("sa", "incarnation"), windows)
        self.incarnation = np.zeros(count, dtype=np.int64)
        self._gone = np.zeros(count, dtype=bool)  # scratch: the SAs gone in this window

    def take(self, index: int, t0: float, t1: float, start: np.ndarray, interval: np.ndarray, counts: np.ndarray,
             new: np.ndarray, gone: np.ndarray, last_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window ``index``'s re-keys (SA, time), by SA then time.  ``new``: SAs started in the window
        (``start`` set), ``gone``: SAs that lost their last connection in it (at ``last_end``);
        ``counts``: connections per SA after the window."""
        self.incarnation[new] += 1
        due = self.calendar.take(index, by_time=False)
        sa = due["sa"].astype(np.int64, copy=False)
        self._gone[gone] = True
        ok = (due["incarnation"] == self.incarnation[sa]) & ((counts[sa] > 0) | self._gone[sa])
        ids = np.concatenate([sa[ok], new])
        until = np.where(counts[ids] > 0, t1, np.minimum(last_end[ids], t1))
        self._gone[gone] = False
        pos, times = _events_in(start[ids], interval[ids], t0, until)
        rekeyed = ids[pos]
        order = np.lexsort((times, rekeyed))
        alive = ids[counts[ids] > 0]
        self._file_next(alive, start[alive], interval[alive], t1)
        return rekeyed[order], times[order]

    def _file_next(self, sa: np.ndarray, start: np.ndarray, interval: np.ndarray, t: float) -> None:
        """File each SA's first re-key at or after ``t`` under the window its time falls in."""
        with np.errstate(invalid="ignore"):  # an infinite interval (never re-keyed): at inf, not filed
            first, _ = periodic_bounds(start, interval, t, t)
            time = start + np.maximum(first, 1.0) * interval
        self.calendar.push(time, sa=sa, incarnation=self.incarnation[sa])  # filed by window_of(time)


class IpsecControl:
    def __init__(self, keys, costs, workload: Workload, ledger: TrafficLedger, queues: CommandQueues,
                 offload: bool, jitter_rng: np.random.Generator, window: float, windows: int | None = None) -> None:
        self.keys, self.c, self.w, self.ledger, self.queues = keys, costs, workload, ledger, queues
        self.offload = offload
        w, hosts = workload, workload.hosts
        lo, hi = np.minimum(w.client, w.server).astype(np.int64), np.maximum(w.client, w.server).astype(np.int64)
        ike_ids, self.ike_of, _, _ = unique_inverse(lo * hosts + hi)
        self.ike_a, self.ike_b = ike_ids // hosts, ike_ids % hosts
        if keys.ipsec_sa_granularity == "host-pair":
            self.sa_of = self.ike_of
            self.sa_a, self.sa_b, self.sa_ike = self.ike_a, self.ike_b, np.arange(len(ike_ids))
        else:
            self.sa_of = np.arange(len(w))
            self.sa_a, self.sa_b, self.sa_ike = lo, hi, self.ike_of
        n_sa, n_ike = len(self.sa_a), len(ike_ids)
        interval = keys.ipsec_child_rekey * (1 - keys.ipsec_rekey_jitter * jitter_rng.uniform(0, 1, n_sa))
        self.interval = np.where(interval > 0, interval, np.inf)  # 0: never re-keyed (as the packet tier)
        self.phase_rng = jitter_rng
        self.ike_count = np.zeros(n_ike, dtype=np.int64)  # connections per IKE SA and per CHILD_SA
        self.sa_count = self.ike_count if self.sa_of is self.ike_of else np.zeros(n_sa, dtype=np.int64)
        self.sa_start = np.full(n_sa, np.nan)
        # each SA's first connection's start, the order SAs take table slots in at one time; a host-pair
        # SA alive at time 0 has a re-key phase for its start, so it keeps this apart
        host_pair = keys.ipsec_sa_granularity == "host-pair"
        self.sa_opened = np.full(n_sa, np.nan) if host_pair else self.sa_start
        self.sa_mode = np.full(n_sa, OFFLOAD, dtype=np.int8)
        self.sa_installed = np.zeros(n_sa, dtype=bool)
        self.ike_start = np.full(n_ike, np.nan)
        self.sa_pairs_on_nic = np.zeros(hosts)  # installed SA pairs with an end on the NIC
        self.conns_of_sa = csr(self.sa_of, n_sa)
        self.nic_pairs = np.zeros(hosts)  # incl. old pairs kept for make-before-break
        self.host_pairs = np.zeros(hosts)
        self.later_deletes = Calendar(window, ("nic",), windows)  # old SA pairs deleted after the overlap
        self.child_rekeys = RekeyTimers(n_sa, window, windows)
        self.ike_rekeys = RekeyTimers(n_ike, window, windows)
        self.ike_interval = np.full(n_ike, keys.ipsec_ike_rekey if keys.ipsec_ike_rekey > 0 else np.inf)
        self.index = 0

    def _count(self, counts: np.ndarray, of: np.ndarray, arrivals: np.ndarray, departures: np.ndarray):
        """Connections per SA move by the window's arrivals and departures; returns the SAs set up
        (from 0 connections) and those gone (to 0).  Costs what the window's connections cost."""
        touched, at, _, _ = unique_inverse(np.concatenate([of[arrivals], of[departures]]))
        before = counts[touched]
        added = np.bincount(at[:len(arrivals)], minlength=len(touched))
        after = before + added - np.bincount(at[len(arrivals):], minlength=len(touched))
        counts[touched] = after
        # an SA whose connections all come and go inside the window is set up and torn down in it
        new = touched[(before == 0) & (added > 0)]
        gone = touched[(after == 0) & ((before > 0) | (added > 0))]
        return new, gone

    def _first_start(self, of: np.ndarray, arrivals: np.ndarray, new: np.ndarray, size: int) -> np.ndarray:
        first = np.full(size, np.inf)
        np.minimum.at(first, of[arrivals], self.w.start[arrivals])
        return first[new]

    def window(self, index: int, t0: float, t1: float, arrivals: np.ndarray, departures: np.ndarray,
               out: ControlWindow) -> None:
        w, c, keys = self.w, self.c, self.keys
        # Departure times decide when an SA that empties in this window goes.
        last_end = np.full(len(self.sa_count), -np.inf)
        np.maximum.at(last_end, self.sa_of[departures], w.end[departures])
        ike_last_end = np.full(len(self.ike_count), -np.inf)
        np.maximum.at(ike_last_end, self.ike_of[departures], w.end[departures])

        new_ike, gone_ike = self._count(self.ike_count, self.ike_of, arrivals, departures)
        if self.sa_count is self.ike_count:  # host-pair CHILD_SAs: one per IKE SA, counted once
            new_sa, gone_sa = new_ike, gone_ike
        else:
            new_sa, gone_sa = self._count(self.sa_count, self.sa_of, arrivals, departures)
        ike_start = self._first_start(self.ike_of, arrivals, new_ike, len(self.ike_count))
        sa_start = self._first_start(self.sa_of, arrivals, new_sa, len(self.sa_count))
        # Alive at time 0: re-key phases uniform over the interval (per-connection SAs: their age).
        # Never re-keyed (interval 0, read as infinite): the draws are made all the same, and the SA keeps
        # its first connection's start, before time 0 (a start of -0.0 would read as set up at 0).
        running_ike = ike_start < 0
        phase = -self.phase_rng.uniform(0, keys.ipsec_ike_rekey, running_ike.sum())
        if keys.ipsec_ike_rekey > 0:
            ike_start[running_ike] = phase
        running_sa = sa_start < 0
        if keys.ipsec_sa_granularity == "host-pair":
            self.sa_opened[new_sa] = sa_start
            interval = self.interval[new_sa[running_sa]]  # phases U(0, I): U(0, 1) * I, the same bytes
            finite = np.isfinite(interval)
            phase = -(self.phase_rng.uniform(0, 1, len(interval)) * np.where(finite, interval, 0.0))
            sa_start[running_sa] = np.where(finite, phase, sa_start[running_sa])
        self.ike_start[new_ike], self.sa_start[new_sa] = ike_start, sa_start

        # Set-ups inside the run: IKE SAs, and CHILD_SAs beyond the first of their IKE SA.
        fresh_ike = new_ike[~running_ike]
        out.handshakes(self.ike_a[fresh_ike], self.ike_b[fresh_ike], c.host_ike_sa_setup_initiator_cycles,
                       c.host_ike_sa_setup_responder_cycles)
        fresh_sa = new_sa[~running_sa]
        if keys.ipsec_sa_granularity == "connection" and len(fresh_sa):
            order = argsort_stable(self.sa_start[fresh_sa])
            ranked = fresh_sa[order]
            is_new_ike = np.isin(self.sa_ike[ranked], fresh_ike)
            extra = ranked[~(is_new_ike & (rank_within(self.sa_ike[ranked]) == 0))]
            out.handshakes(self.sa_a[extra], self.sa_b[extra], self._child_cycles(), self._child_cycles())

        # Re-keys in the window (never after the SA is gone).
        child, child_t = self.child_rekeys.take(index, t0, t1, self.sa_start, self.interval, self.sa_count,
                                                new_sa, gone_sa, last_end)
        out.count("child_sa_rekeys", len(child))
        out.cycles_at_both(self.sa_a[child], self.sa_b[child], self._child_cycles(), rekey=True)
        ike, _ = self.ike_rekeys.take(index, t0, t1, self.ike_start, self.ike_interval, self.ike_count,
                                      new_ike, gone_ike, ike_last_end)
        out.count("ike_sa_rekeys", len(ike))
        out.cycles_at_both(self.ike_a[ike], self.ike_b[ike], c.host_ike_sa_rekey_cycles, rekey=True)

        self.index = index
        self._offload(t0, t1, arrivals, new_sa, gone_sa, last_end, child, child_t, out)
        # State: SA pairs per host, with the old pairs kept for make-before-break.
        if _schedules is not None:  # the same sums in one pass over the SAs
            _schedules.sa_pairs(self.sa_start, self.interval, self.sa_count, self.sa_installed.view(np.uint8),
                                self.sa_a, self.sa_b, t1, keys.ipsec_rekey_overlap, self.host_pairs, self.nic_pairs)
            return
        live = np.flatnonzero(self.sa_count > 0)
        s, interval = self.sa_start[live], self.interval[live]
        before = lambda x: np.maximum(0.0, np.ceil(np.maximum(x, 0) / interval) - 1)  # noqa: E731
        pairs = 1.0 + before(t1 - s + 1e-9) - before(t1 - s - keys.ipsec_rekey_overlap + 1e-9)
        a, b = self.sa_a[live], self.sa_b[live]
        self.host_pairs = np.bincount(a, pairs, len(self.host_pairs)) + np.bincount(b, pairs, len(self.host_pairs))
        on_nic = self.sa_installed[live]
        self.nic_pairs = (np.bincount(a[on_nic], pairs[on_nic], len(self.nic_pairs))
                          + np.bincount(b[on_nic], pairs[on_nic], len(self.nic_pairs)))

    def _child_cycles(self) -> float:
        c = self.c
        return c.host_ike_child_rekey_cycles_pfs if self.keys.ipsec_pfs else c.host_ike_child_rekey_cycles

    def _offload(self, t0, t1, arrivals, new_sa, gone_sa, last_end, child, child_t, out: ControlWindow) -> None:
        w = self.w
        if not self.offload:
            self.ledger.move(w.start[arrivals], arrivals, OFFLOAD)
            return
        # SAs gone: delete both directions on both ends.
        gone = gone_sa[self.sa_installed[gone_sa]]
        self.sa_installed[gone] = False
        self.sa_pairs_on_nic -= np.bincount(self.sa_a[gone], minlength=len(self.sa_pairs_on_nic))
        self.sa_pairs_on_nic -= np.bincount(self.sa_b[gone], minlength=len(self.sa_pairs_on_nic))
        # New SAs, and failed ones still alive (retried at the window start), try to install.
        failed = (self.sa_mode == WAITING) & (self.sa_count > 0)
        failed[new_sa] = False
        retry = np.flatnonzero(failed)
        trying = np.concatenate([new_sa, retry])
        when = np.concatenate([np.maximum(self.sa_start[new_sa], 0.0), np.full(len(retry), t0)])
        # in time order; ties (SAs alive at time 0, retries at the window start) oldest first, by their
        # first connection's start, as the fleet the run starts from installed them, not by SA id
        # (per-connection SAs: rows, in client order for those open at time 0; host pairs: pair ids)
        order = lexsort((self.sa_opened[trying], when))
        trying, when = trying[order], when[order]
        capacity = self.c.nic_ipsec_sa_capacity / 2  # inbound + outbound per pair
        free = np.maximum(capacity - self.sa_pairs_on_nic, 0)
        fits = fits_on_both(self.sa_a[trying], self.sa_b[trying], when, free)
        ok, ok_t = trying[fits], when[fits]
        retried_now = np.isin(ok, retry)  # failed before, found a slot now
        # alive at time 0 and installed now (not retried after failing): installed before the run, no commands
        preinstalled = (self.sa_start[ok] < 0) & ~retried_now
        ok_cmd, ok_t = ok[~preinstalled], ok_t[~preinstalled]
        child_t = child_t[self.sa_installed[child]]
        child = child[self.sa_installed[child]]
        ends = lambda ids: np.concatenate([self.sa_a[ids], self.sa_b[ids]])  # noqa: E731
        adds = np.concatenate([np.repeat(ends(ok_cmd), 2), np.repeat(ends(child), 2)])
        add_t = np.concatenate([np.repeat(np.tile(ok_t, 2), 2), np.repeat(np.tile(child_t, 2), 2)])
        overlap = self.keys.ipsec_rekey_overlap
        # Old pairs are deleted after the overlap: in the window that time falls in.
        self.later_deletes.push(np.repeat(np.tile(child_t + overlap, 2), 2), nic=np.repeat(ends(child), 2))
        due = self.later_deletes.take(self.index)
        deletes = np.concatenate([np.repeat(ends(gone), 2), due["nic"].astype(np.int64)])
        delete_t = np.concatenate([np.repeat(np.tile(last_end[gone], 2), 2), due["time"]])
        done = self.queues.serve(np.concatenate([add_t, delete_t]), np.concatenate([adds, deletes]),
                                 np.concatenate([np.full(len(adds), COMMAND["ipsec_sa_add"]),
                                                 np.full(len(deletes), COMMAND["ipsec_sa_delete"])]))
        n = len(ok_cmd)
        installed = np.full(len(ok), -np.inf)
        installed[~preinstalled] = done[: 4 * n].reshape(2, n, 2).max(axis=(0, 2)) if n else np.empty(0)
        self.sa_installed[ok] = True
        self.sa_pairs_on_nic += np.bincount(self.sa_a[ok], minlength=len(self.sa_pairs_on_nic))
        self.sa_pairs_on_nic += np.bincount(self.sa_b[ok], minlength=len(self.sa_pairs_on_nic))
        misfit = trying[~fits]
        new_misfit = misfit[np.isin(misfit, new_sa)]
        mode = SOFTWARE if self.keys.ipsec_hw_offload == "auto" else WAITING
        self.sa_mode[new_misfit] = mode
        out.count("offload_fallbacks" if mode == SOFTWARE else "offload_failures", len(new_misfit))
        self.sa_mode[ok] = OFFLOAD
        brief = ok[np.isin(ok, gone_sa)]  # installed and already gone in this window: deleted too
        if len(brief):
            self.sa_installed[brief] = False
            self.sa_pairs_on_nic -= np.bincount(self.sa_a[brief], minlength=len(self.sa_pairs_on_nic))
            self.sa_pairs_on_nic -= np.bincount(self.sa_b[brief], minlength=len(self.sa_pairs_on_nic))
            ends_brief = np.concatenate([self.sa_a[brief], self.sa_b[brief]])
            self.queues.serve(np.repeat(np.tile(last_end[brief], 2), 2), np.repeat(ends_brief, 2),
                              np.full(4 * len(brief), COMMAND["ipsec_sa_delete"]))
        # Connections: those of an SA installed now run offloaded from its installation; the others
        # follow their SA (a connection of a new SA waits for the SA's adds).
        ready = np.full(len(self.sa_mode), -np.inf)
        ready[ok] = installed
        sa = self.sa_of[arrivals]
        waiting_for_sa = ready[sa] > w.start[arrivals]
        self.ledger.move(w.start[arrivals], arrivals, np.where(waiting_for_sa, WAITING, self.sa_mode[sa]))
        retried = ok[retried_now]
        order_, bounds = self.conns_of_sa
        for sa_id, t in zip(retried, ready[retried]):  # few: SAs that found a slot after failing
            conns = order_[bounds[sa_id]:bounds[sa_id + 1]]
            conns = conns[(w.start[conns] < t) & (w.end[conns] > t)]
            self.ledger.move(np.full(len(conns), t), conns, OFFLOAD)
        fresh = arrivals[waiting_for_sa]
        self.ledger.move(ready[self.sa_of[fresh]], fresh, OFFLOAD)

    def nic_entries(self) -> np.ndarray:
        return 2 * self.nic_pairs  # inbound + outbound SA per pair

    def host_sa_pairs(self) -> np.ndarray:
        return self.host_pairs
