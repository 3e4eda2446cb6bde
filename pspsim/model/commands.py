"""NIC firmware command queues: one FIFO server of finite rate per NIC.

Key and SA installs, deletes and rotations are firmware commands.  Each NIC
serves them one at a time at ``rate`` commands per second after a fixed
``latency``.  A batch of commands (times and NICs, from one simulation
window) is served in one vectorised pass: within a NIC, the departure of
command i is ``max(arrival_i, departure_{i-1}) + 1/rate``, which unrolls to
a running maximum; a NIC still busy from the previous batch starts late.
Delays (queueing + service + latency) are kept as a log-spaced histogram,
so percentiles cost nothing per command and memory stays constant.
"""

from __future__ import annotations

import numpy as np

_BINS = np.concatenate([[0.0], np.logspace(-7, 4, 441)])  # 100 ns .. 10^4 s, 40 bins per decade


class CommandQueues:
    def __init__(self, nics: int, rate: float, latency: float) -> None:
        if rate <= 0:
            raise ValueError("command rate must be positive")
        self.service = 1.0 / rate
        self.latency = latency
        self.busy_until = np.zeros(nics)
        self.histogram = np.zeros(len(_BINS) - 1, dtype=np.int64)
        self.served = 0
        self.per_nic = np.zeros(nics, dtype=np.int64)

    def serve(self, times: np.ndarray, nics: np.ndarray) -> np.ndarray:
        """Completion time of each command (same order as given)."""
        n = len(times)
        if n == 0:
            return np.empty(0)
        span = float(times.max() - min(times.min(), 0.0)) + 1.0
        order = np.argsort(nics * span + (times - min(times.min(), 0.0)))  # by NIC, then time
        t, q = times[order], nics[order]
        first = np.ones(n, dtype=bool)
        first[1:] = q[1:] != q[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        k = np.arange(n) - group_start  # position within the NIC's batch
        t = t.copy()
        t[first] = np.maximum(t[first], self.busy_until[q[first]])
        # departure_i = (k_i + 1) * s + max_{j <= i in group} (t_j - k_j * s); groups kept apart by an offset
        offset = np.cumsum(first) * (abs(t).max() + (n + 1) * self.service + 1.0)
        running = np.maximum.accumulate(t - k * self.service + offset) - offset
        done = running + (k + 1) * self.service
        last = np.ones(n, dtype=bool)
        last[:-1] = q[:-1] != q[1:]
        self.busy_until[q[last]] = done[last]
        finished = np.empty(n)
        finished[order] = done + self.latency
        delay = finished - times
        bins = np.clip(np.searchsorted(_BINS, delay, side="right") - 1, 0, len(self.histogram) - 1)
        self.histogram += np.bincount(bins, minlength=len(self.histogram))
        self.served += n
        self.per_nic += np.bincount(nics, minlength=len(self.per_nic))
        return finished

    def percentile(self, p: float) -> float:
        """Delay percentile in seconds (upper edge of its histogram bin)."""
        if self.served == 0:
            return 0.0
        rank = np.searchsorted(np.cumsum(self.histogram), p / 100 * self.served)
        return float(_BINS[min(rank + 1, len(_BINS) - 1)])
