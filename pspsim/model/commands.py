"""FIFO servers, served a batch at a time: NIC command queues and fabric links.

Within one server, the departure of item i is ``max(arrival_i,
departure_{i-1}) + service_i``, which unrolls to ``S_i + max_{j<=i}(a_j -
S_{j-1})`` with ``S`` the running sum of service times: a running maximum,
so a whole batch (one simulation window) is served in one vectorised pass.
A server still busy from the previous batch starts late.

:class:`CommandQueues`: key and SA installs, deletes and rotations are NIC
firmware commands, served one at a time at ``rate`` per second after a
fixed ``latency``.  Delays (queueing + service + latency) are kept as a
log-spaced histogram, so percentiles cost nothing per command and memory
stays constant.
"""

from __future__ import annotations

import numpy as np

_BINS = np.concatenate([[0.0], np.logspace(-7, 4, 441)])  # 100 ns .. 10^4 s, 40 bins per decade


def fifo_departures(arrivals: np.ndarray, servers: np.ndarray, service: np.ndarray,
                    busy_until: np.ndarray) -> np.ndarray:
    """Departure time of each item (same order as given); updates ``busy_until``."""
    n = len(arrivals)
    if n == 0:
        return np.empty(0)
    by_time = np.argsort(arrivals, kind="stable")
    keys = servers[by_time]
    if len(busy_until) < 32768:  # numpy sorts 16-bit integers with a radix sort
        keys = keys.astype(np.int16)
    order = by_time[np.argsort(keys, kind="stable")]  # by server, then time, then input order
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


class CommandQueues:
    def __init__(self, nics: int, rate: float, latency: float) -> None:
        if rate <= 0:
            raise ValueError("command rate must be positive")
        self.service = 1.0 / rate
        self.latency = latency
        self.busy_until = np.zeros(nics)
        self.histogram = np.zeros(len(_BINS) - 1, dtype=np.int64)
        self.served = 0

    def serve(self, times: np.ndarray, nics: np.ndarray) -> np.ndarray:
        """Completion time of each command (same order as given)."""
        if len(times) == 0:
            return np.empty(0)
        finished = fifo_departures(times, nics, np.full(len(times), self.service), self.busy_until) + self.latency
        delay = finished - times
        bins = np.clip(np.searchsorted(_BINS, delay, side="right") - 1, 0, len(self.histogram) - 1)
        self.histogram += np.bincount(bins, minlength=len(self.histogram))
        self.served += len(times)
        return finished

    def percentile(self, p: float) -> float:
        """Delay percentile in seconds (upper edge of its histogram bin)."""
        if self.served == 0:
            return 0.0
        rank = np.searchsorted(np.cumsum(self.histogram), p / 100 * self.served)
        return float(_BINS[min(rank + 1, len(_BINS) - 1)])
