"""TLS's control plane (userspace TLS, software kTLS, kTLS NIC offload), columnar.

* Set-up: a TLS 1.3 handshake (client and server cycles; resumption-weighted).
  kTLS offload then creates a TX and an RX context on each end's NIC (one
  command each, bulk DEK allocation as mlx5 uses for kTLS); until they are
  installed the socket runs software kTLS.  A full TX or RX context table:
  that socket stays on software kTLS for its life, as Linux does when device
  offload cannot be set up (``TlsTxSw``/``TlsRxSw`` instead of
  ``TlsTxDevice``/``TlsRxDevice``).
* Re-keying by age and bytes: a connection re-keys at ages ``k * I`` (k >= 1),
  ``I = min(tls_rekey_interval, tls_rekey_bytes / busier direction's byte
  rate)``, never after it ends.  ``tls_rekey = "key-update"``: a TLS 1.3
  KeyUpdate; ``"reconnect"``: a new connection (handshake).  kTLS offload
  contexts cannot be re-keyed in place, so kTLS offload always reconnects
  (new contexts created, old ones destroyed; the new ones are assumed to fit,
  since the old ones are freed right after).
"""

from __future__ import annotations

import numpy as np

from pspsim.model.calendar import EPOCH, window_of
from pspsim.model.commands import COMMAND, CommandQueues
from pspsim.model.control import ControlWindow, fits_on_both
from pspsim.model.sorting import argsort_stable
from pspsim.model.traffic import OFFLOAD, SOFTWARE, TrafficLedger
from pspsim.model.workload import Workload

try:  # the compiled re-key schedule (setup.py builds it); the numpy version below gives the same
    from pspsim.model import _schedules
except ImportError:  # pragma: no cover - the compiled module is optional
    _schedules = None
if getattr(_schedules, "VERSION", 0) < 2:  # pragma: no cover
    _schedules = None  # a build older than this source (other signatures)


def rekey_times(start: np.ndarray, end: np.ndarray, interval: np.ndarray, horizon: float, window: float):
    """Every re-key (connection index, time) at ages k*interval, k >= 1, within [0, min(end, horizon))
    (the first k is the first past time 0: a re-key due exactly at 0 belongs to before the run),
    grouped by the window ``[i * window, (i + 1) * window)`` it falls in (in connection order, then k,
    within a window: :meth:`RekeySchedule.take` orders a window's by time); and where each window's
    start (``bounds[i]:bounds[i + 1]``).  Grouping by window is a counting sort of small integers,
    where sorting a day's re-keys by time at once (21 M for fleet-1k) took 3 s.  The numpy version of
    :class:`RekeySchedule`'s compiled epochs (the same numbers)."""
    stop = np.minimum(end, horizon)
    first = np.maximum(1.0, np.floor(np.maximum(-start, 0) / interval) + 1)  # first k with start + k I >= 0
    last = np.ceil((stop - start) / interval) - 1  # last k with start + k I < stop
    count = np.maximum(0, last - first + 1)
    count = np.where(np.isfinite(count), count, 0).astype(np.int64)
    conn = np.repeat(np.arange(len(start)), count)
    k = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    times = start[conn] + k * interval[conn]
    del k
    if (times < 0).any():  # rounding just below 0: in no window (as before time 0)
        conn, times = conn[times >= 0], times[times >= 0]
    win = window_of(times, window).astype(np.int64)  # the windows' own edges, not the division's rounding
    order = argsort_stable(win)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(win, minlength=1))])
    return conn[order], times[order], bounds


class RekeySchedule:
    """The re-keys of every connection, taken window by window in time order (ties: connection,
    then k), as a stable sort of every re-key by time would list them.

    Compiled, they are made an epoch (``EPOCH`` windows) at a time, when a window of it is first
    taken, from the connections started before the epoch ends: memory follows an epoch's re-keys,
    not the run's (fleet-1k: 21 M re-keys, 340 MB, if made at once; fleet-10k: 3.4 GB).  Without the
    compiled module, or for a horizon of 1e8 windows or more, :func:`rekey_times` makes them all at
    once."""

    def __init__(self, start: np.ndarray, end: np.ndarray, interval: np.ndarray, horizon: float,
                 window: float) -> None:
        self.start, self.end = np.ascontiguousarray(start, np.float64), np.ascontiguousarray(end, np.float64)
        self.interval = np.ascontiguousarray(interval, np.float64)
        self.horizon, self.window = horizon, window
        self.compiled = _schedules is not None and horizon / window < 1e8
        # the workload's connections open at time 0 come first (negative starts, in any order), then the
        # others in start order (Workload): an epoch needs only those started before it ends
        opened = self.start >= 0
        self.running = int(opened.argmax()) if opened.any() else len(self.start)
        del opened
        later = self.start[self.running:]
        self.by_start = bool(np.all(later[1:] >= later[:-1]))
        self._epoch = -1
        self._made = None if self.compiled else rekey_times(start, end, self.interval, horizon, window)

    def _windows_of_epoch(self, epoch: int):
        if self._epoch != epoch:
            self._made = None  # the previous epoch's re-keys go first
            first = epoch * EPOCH
            limit = self.running + int(np.searchsorted(self.start[self.running:], (first + EPOCH) * self.window)) \
                if self.by_start else len(self.start)
            self._made = _schedules.rekeys_by_window(self.start, self.end, self.interval, float(self.horizon),
                                                     float(self.window), first, EPOCH, limit)
            self._epoch = epoch
        return self._made

    def take(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``index``'s re-keys (connections, times), in time order."""
        if self.compiled:
            conn, times, bounds = self._windows_of_epoch(index // EPOCH)
            index -= (index // EPOCH) * EPOCH
        else:
            conn, times, bounds = self._made
        if index + 1 >= len(bounds):
            return conn[:0], times[:0]
        lo, hi = bounds[index], bounds[index + 1]
        order = argsort_stable(times[lo:hi])
        return conn[lo:hi][order], times[lo:hi][order]


class TlsControl:
    def __init__(self, keys, costs, workload: Workload, ledger: TrafficLedger, queues: CommandQueues,
                 offload: bool, reconnect: bool, byte_rates: np.ndarray, horizon: float, window: float) -> None:
        self.keys, self.c, self.w, self.ledger, self.queues = keys, costs, workload, ledger, queues
        self.offload, self.reconnect = offload, reconnect
        interval = np.minimum(keys.tls_rekey_interval, keys.tls_rekey_bytes / np.maximum(byte_rates, 1e-300))
        self.rekeys = RekeySchedule(workload.start, workload.end, interval, horizon, window)
        self.contexts = np.zeros(workload.hosts)  # per NIC: TX + RX contexts installed
        self.on_nic = np.zeros(len(workload), dtype=bool)
        self.device_sockets = np.zeros(workload.hosts)  # TlsTxDevice/TlsRxDevice: sockets offloaded
        self.sw_sockets = np.zeros(workload.hosts)  # TlsTxSw/TlsRxSw: sockets in software kTLS
        self.capacity = min(costs.nic_ktls_tx_context_capacity, costs.nic_ktls_rx_context_capacity)

    def window(self, index: int, t0: float, t1: float, arrivals: np.ndarray, departures: np.ndarray,
               out: ControlWindow) -> None:
        w, c = self.w, self.c
        hs_client, hs_server = c.tls_handshake_client_cycles, c.tls_handshake_server_cycles
        opened = arrivals[w.start[arrivals] >= 0]
        running = arrivals[w.start[arrivals] < 0]
        out.handshakes(w.client[opened], w.server[opened], hs_client, hs_server)
        rk, rk_t = self.rekeys.take(index)
        if self.reconnect:
            out.handshakes(w.client[rk], w.server[rk], hs_client, hs_server, rekey=True)
            out.count("key_reconnects", len(rk))
        else:
            out.count("tls_key_updates", len(rk))
            out.cycles_at_both(w.client[rk], w.server[rk], c.host_tls_key_update_cycles, rekey=True)
        if not self.offload:
            self.ledger.move(w.start[arrivals], arrivals, OFFLOAD)
            for side in (w.client[arrivals], w.server[arrivals]):
                self.sw_sockets += np.bincount(side, minlength=len(self.sw_sockets))
            return
        # kTLS offload: contexts per end (TX and RX), installed by NIC commands.
        self.ledger.move(w.start[arrivals], arrivals, SOFTWARE)  # software kTLS until installed
        ends = lambda ids: (np.concatenate([w.client[ids], w.server[ids]]).astype(np.int64))  # noqa: E731
        set_up_here = np.isin(departures, arrivals)
        gone_new = departures[set_up_here & ~self.on_nic[departures]]  # set up and ended in this window
        gone = np.concatenate([departures[self.on_nic[departures]], gone_new])
        moved = self.on_nic[rk]  # reconnects of offloaded sockets: new contexts, old ones destroyed
        rk, rk_t = rk[moved], rk_t[moved]
        old = departures[self.on_nic[departures]]
        self.contexts -= np.bincount(np.repeat(ends(old), 2), minlength=len(self.contexts))
        self.on_nic[old] = False
        # Which new sockets get device contexts, in start order: those open at time 0 first, oldest
        # first, as the fleet the run starts from installed them (not in row order); the socket stays
        # on software kTLS otherwise, and the driver issues no create for it.
        candidates = np.concatenate([running, opened])
        free = np.maximum(self.capacity - self.contexts / 2, 0)  # contexts are TX + RX: per direction
        fits = fits_on_both(w.client[candidates].astype(np.int64), w.server[candidates].astype(np.int64),
                            w.start[candidates], free)
        new = opened[fits[len(running):]]
        create = np.concatenate([np.repeat(ends(new), 2), np.repeat(ends(rk), 2)])
        create_t = np.concatenate([np.repeat(np.tile(w.start[new], 2), 2), np.repeat(np.tile(rk_t, 2), 2)])
        destroy = np.concatenate([np.repeat(ends(gone), 2), np.repeat(ends(rk), 2)])
        destroy_t = np.concatenate([np.repeat(np.tile(w.end[gone], 2), 2), np.repeat(np.tile(rk_t, 2), 2)])
        done = self.queues.serve(np.concatenate([create_t, destroy_t]), np.concatenate([create, destroy]),
                                 np.concatenate([np.full(len(create), COMMAND["ktls_context_create"]),
                                                 np.full(len(destroy), COMMAND["ktls_context_destroy"])]))
        # installs of new sockets: the last of their four contexts completes
        n = len(new)
        ready = np.zeros(len(candidates))
        ready[len(running):][fits[len(running):]] = done[: 4 * n].reshape(2, n, 2).max(axis=(0, 2)) if n else []
        self._install(candidates, ready, fits, out, initial=len(running))
        kept = gone_new[self.on_nic[gone_new]]  # installed and already ended: their contexts go too
        self.contexts -= np.bincount(np.repeat(ends(kept), 2), minlength=len(self.contexts))
        self.on_nic[kept] = False

    def _install(self, conns: np.ndarray, ready: np.ndarray, fits: np.ndarray, out: ControlWindow,
                 initial: int) -> None:
        w = self.w
        ok = conns[fits]
        self.on_nic[ok] = True
        self.contexts += 2 * np.bincount(w.client[ok], minlength=len(self.contexts))
        self.contexts += 2 * np.bincount(w.server[ok], minlength=len(self.contexts))
        when = np.where(np.arange(len(conns)) < initial, w.start[conns], ready)
        self.ledger.move(when[fits], ok, OFFLOAD)
        out.count("offload_fallbacks", int((~fits).sum()))
        for side in (w.client, w.server):
            self.device_sockets += np.bincount(side[ok], minlength=len(self.device_sockets))
            self.sw_sockets += np.bincount(side[conns[~fits]], minlength=len(self.sw_sockets))

    def tls_stat(self) -> dict[str, np.ndarray]:
        """``/proc/net/tls_stat`` per host: sockets set up in device or software mode (each socket
        counts once per direction), and device contexts installed now."""
        out = {"TlsTxSw": self.sw_sockets, "TlsRxSw": self.sw_sockets}
        if self.offload:
            out |= {"TlsTxDevice": self.device_sockets, "TlsRxDevice": self.device_sockets,
                    "TlsCurrTxDevice": self.contexts / 2, "TlsCurrRxDevice": self.contexts / 2}
        return out

    def nic_entries(self) -> np.ndarray:
        return self.contexts.copy()
