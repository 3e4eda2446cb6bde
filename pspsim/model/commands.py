"""FIFO servers, served a batch at a time: NIC command queues and fabric links.

Within one server, the departure of item i is ``max(arrival_i,
departure_{i-1}) + service_i``.  The compiled loop (``_queues.fifo_serve``)
is that recurrence, over the batch in arrival order; without it the
recurrence unrolls to ``S_i + max_{j<=i}(a_j - S_{j-1})`` with ``S`` the
running sum of service times, a running maximum served in one vectorised
pass.  A server still busy from the previous batch starts late.  Commands
that wait for others (:meth:`CommandQueues.serve_dependent`) are served in
one pass in time order.

:class:`CommandQueues`: key and SA installs, deletes and rotations are NIC
firmware commands, served one at a time, each type with its own service
time (``nic.cmd_*_s``), then a fixed ``latency``.  Delays (queueing + service + latency) are kept as a
log-spaced histogram, so percentiles cost nothing per command and memory
stays constant.
"""

from __future__ import annotations

import numpy as np

from pspsim.model.sorting import argsort_stable

try:  # the compiled FIFO (setup.py builds it); the numpy one below agrees to about a nanosecond
    from pspsim.model import _queues
except ImportError:  # pragma: no cover - exercised when the extension is not built
    _queues = None
if not all(hasattr(_queues, f) for f in ("fifo_serve", "fifo_serve_dependent", "dependents_of",
                                         "delay_histogram")):  # pragma: no cover
    _queues = None  # a build older than this source

_BINS = np.concatenate([[0.0], np.logspace(-7, 4, 441)])  # 100 ns .. 10^4 s, 40 bins per decade


def fifo_departures(arrivals: np.ndarray, servers: np.ndarray, service: np.ndarray,
                    busy_until: np.ndarray) -> np.ndarray:
    """Departure time of each item (same order as given); updates ``busy_until``.  Items of one
    server are served in arrival order, ties in the order given."""
    n = len(arrivals)
    if n == 0:
        return np.empty(0)
    by_time = argsort_stable(arrivals)
    if _queues is not None:
        out = np.empty(n)
        busy = busy_until if busy_until.dtype == np.float64 and busy_until.flags.c_contiguous \
            else np.ascontiguousarray(busy_until, dtype=np.float64)
        _queues.fifo_serve(np.ascontiguousarray(arrivals, dtype=np.float64),
                            np.ascontiguousarray(servers, dtype=np.int64),
                            np.ascontiguousarray(np.broadcast_to(service, (n,)), dtype=np.float64),
                            by_time, busy, out)
        if busy is not busy_until:
            busy_until[:] = busy
        return out
    return _fifo_numpy(arrivals, servers, service, busy_until, by_time)


def _fifo_numpy(arrivals: np.ndarray, servers: np.ndarray, service: np.ndarray, busy_until: np.ndarray,
                by_time: np.ndarray) -> np.ndarray:
    """:func:`fifo_departures` without the compiled loop: a running maximum per server, the
    servers kept apart by an offset (exact to about a nanosecond on times of days)."""
    n = len(arrivals)
    keys = servers[by_time]
    if len(busy_until) < 32768:  # numpy sorts 16-bit integers with a radix sort
        keys = keys.astype(np.int16)
    order = by_time[argsort_stable(keys)]  # by server, then time, then input order
    t, q, s = arrivals[order], servers[order], service[order]
    first = np.ones(n, dtype=bool)
    first[1:] = q[1:] != q[:-1]
    t = t.copy()
    t[first] = np.maximum(t[first], busy_until[q[first]])
    cum = np.cumsum(s)
    base = np.maximum.accumulate(np.where(first, cum - s, 0.0))  # service done before each group
    within = cum - base  # S_i within the group
    # departure_i = S_i + max_{j <= i in group}(t_j - S_{j-1}); groups kept apart by an offset
    offset = np.cumsum(first) * (abs(t).max() + cum[-1] + 1.0)
    running = np.maximum.accumulate(t - (within - s) + offset) - offset
    done = running + within
    last = np.ones(n, dtype=bool)
    last[:-1] = q[:-1] != q[1:]
    busy_until[q[last]] = done[last]
    out = np.empty(n)
    out[order] = done
    return out


#: NIC firmware commands, each with its own service time (parameter ``nic.cmd_<name>_s``).
COMMANDS = ("psp_gen_spi", "psp_rotate_key", "psp_tx_key_create", "psp_tx_key_destroy", "ipsec_sa_add",
            "ipsec_sa_delete", "ktls_context_create", "ktls_context_destroy")
COMMAND = {name: i for i, name in enumerate(COMMANDS)}


class CommandQueues:
    """One FIFO firmware command queue per NIC; each command type its own service time.

    A command issued at ``t`` completes at its FIFO departure plus the fixed
    ``latency``; what it installs is not in use before then."""

    def __init__(self, nics: int, service_s: np.ndarray, latency: float) -> None:
        service_s = np.asarray(service_s, dtype=np.float64)
        if len(service_s) != len(COMMANDS) or (service_s <= 0).any():
            raise ValueError("every command type needs a positive service time")
        self.service = service_s
        self.latency = latency
        self.busy_until = np.zeros(nics)
        self.histogram = np.zeros(len(_BINS) - 1, dtype=np.int64)
        self.by_kind = np.zeros(len(COMMANDS), dtype=np.int64)
        self.served = 0
        self.max_delay = 0.0
        self.window_delays: list[np.ndarray] = []  # delays served since the last take_window_delays()

    def take_window_delays(self) -> np.ndarray:
        out = np.concatenate(self.window_delays) if self.window_delays else np.empty(0)
        self.window_delays = []
        return out

    def serve(self, times: np.ndarray, nics: np.ndarray, kinds: np.ndarray, commit: bool = True) -> np.ndarray:
        """Completion time of each command (same order as given).  With ``commit=False`` the
        statistics are not updated (the caller restores ``busy_until``)."""
        if len(times) == 0:
            return np.empty(0)
        kinds = np.asarray(kinds, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        finished = fifo_departures(times, np.asarray(nics, dtype=np.int64),
                                   self.service[kinds], self.busy_until) + self.latency
        if not commit:
            return finished
        self._record(times, finished, kinds)
        return finished

    def serve_dependent(self, times: np.ndarray, nics: np.ndarray, kinds: np.ndarray, dep_a: np.ndarray,
                        dep_b: np.ndarray) -> np.ndarray:
        """Completion time of each command, where command ``j`` with ``dep_a[j] >= 0`` is issued only
        when command ``dep_a[j]`` (and ``dep_b[j]``, if >= 0) has completed, at the later completion
        (for example: a TX key create once both ends' GEN_SPI are done); the others are issued at
        ``times[j]``.  All share each NIC's FIFO queue in order of issue.  Dependencies must point
        to commands that do not themselves wait on later ones (no cycles)."""
        times = np.asarray(times, dtype=np.float64).copy()
        nics = np.asarray(nics, dtype=np.int64)
        kinds = np.asarray(kinds, dtype=np.int64)
        dep_a, dep_b = np.asarray(dep_a, dtype=np.int64), np.asarray(dep_b, dtype=np.int64)
        n = len(times)
        if n == 0:
            return np.empty(0)
        if dep_a.max() >= n or dep_b.max() >= n:
            raise ValueError("a dependency points past the last command")
        if _queues is not None:
            dependents, bounds = _queues.dependents_of(dep_a, dep_b)
            finished = np.empty(n)
            independent = np.flatnonzero(dep_a < 0)
            independent = independent[argsort_stable(times[independent])]
            served = _queues.fifo_serve_dependent(times, nics, np.ascontiguousarray(self.service[kinds]), dep_a, dep_b,
                                                   dependents, bounds, independent,
                                                   self.latency, self.busy_until, finished)
            if served != n:
                raise ValueError("command dependencies form a cycle")
        else:
            finished = self._serve_dependent_rounds(times, nics, kinds, dep_a, dep_b)
        self._record(times, finished, kinds)
        return finished

    def _serve_dependent_rounds(self, times, nics, kinds, dep_a, dep_b) -> np.ndarray:
        """:meth:`serve_dependent` without the compiled loop: serve every command together, issue
        the dependent ones at their dependencies' completions, and repeat until the issue times
        stop moving (they only move later; a few rounds).  Writes the issue times into ``times``."""
        saved = self.busy_until.copy()
        waits = dep_a >= 0
        second = np.where(dep_b >= 0, dep_b, dep_a)
        finished = np.full(len(times), -np.inf)
        for _ in range(100):  # monotone and bounded: a few rounds in practice
            issued = times.copy()
            issued[waits] = np.maximum(finished[dep_a[waits]], finished[second[waits]])
            ready = np.isfinite(issued)
            self.busy_until[:] = saved
            now = np.full(len(times), np.inf)
            now[ready] = fifo_departures(issued[ready], nics[ready], self.service[kinds[ready]],
                                         self.busy_until) + self.latency
            if np.array_equal(now, finished):
                break
            finished = now
        times[waits] = issued[waits]
        return finished

    def _record(self, times: np.ndarray, finished: np.ndarray, kinds: np.ndarray) -> None:
        delay = finished - times
        self.window_delays.append(delay)
        if _queues is not None:  # the binary search's bins, clipped and counted in one compiled pass
            _queues.delay_histogram(np.ascontiguousarray(delay, np.float64), _BINS, self.histogram)
        else:
            bins = np.clip(np.searchsorted(_BINS, delay, side="right") - 1, 0, len(self.histogram) - 1)
            self.histogram += np.bincount(bins, minlength=len(self.histogram))
        self.by_kind += np.bincount(kinds, minlength=len(COMMANDS))
        self.served += len(times)
        self.max_delay = max(self.max_delay, float(delay.max()))

    def percentile(self, p: float) -> float:
        """Delay percentile in seconds over every command served, interpolated within its
        histogram bin (40 bins per decade: within 6 %)."""
        if self.served == 0:
            return 0.0
        cumulative = np.cumsum(self.histogram)
        target = p / 100 * self.served
        rank = int(np.searchsorted(cumulative, target))
        rank = min(rank, len(self.histogram) - 1)
        below = cumulative[rank - 1] if rank else 0
        share = (target - below) / max(self.histogram[rank], 1)
        lo, hi = _BINS[rank], _BINS[rank + 1]
        return min(float(lo + (hi - lo) * min(max(share, 0.0), 1.0)), self.max_delay)
