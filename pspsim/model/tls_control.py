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

from pspsim.model.commands import COMMAND, CommandQueues
from pspsim.model.control import ControlWindow, fits_on_both
from pspsim.model.sorting import argsort_stable
from pspsim.model.traffic import OFFLOAD, SOFTWARE, TrafficLedger
from pspsim.model.workload import Workload

try:  # the compiled re-key schedule (setup.py builds it); the numpy version below gives the same
    from pspsim.model import _schedules
except ImportError:  # pragma: no cover - the compiled module is optional
    _schedules = None
if not all(hasattr(_schedules, f) for f in ("rekeys_by_window",)):  # pragma: no cover
    _schedules = None  # a build older than this source


def rekey_times(start: np.ndarray, end: np.ndarray, interval: np.ndarray, horizon: float, window: float):
    """Every re-key (connection index, time) at ages k*interval, k >= 1, within [0, min(end, horizon))
    (the first k is the first past time 0: a re-key due exactly at 0 belongs to before the run),
    grouped by the window ``[i * window, (i + 1) * window)`` it falls in (in connection order, then k,
    within a window: :func:`window_rekeys` orders a window's by time); and where each window's start
    (``bounds[i]:bounds[i + 1]``).  Grouping by window is a one-pass counting sort of small integers,
    where sorting a day's re-keys by time at once (21 M for fleet-1k) took 3 s.  Compiled: two passes
    over the connections, without per-re-key temporaries (the same numbers)."""
    if _schedules is not None and horizon / window < 1e8:  # (a window table per window of the horizon)
        as_float = lambda x: np.ascontiguousarray(x, np.float64)  # noqa: E731
        return _schedules.rekeys_by_window(as_float(start), as_float(end), as_float(interval), float(horizon),
                                           float(window))
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
    win = np.floor(times / window).astype(np.int64)
    win -= times < win * window  # the windows' own edges (index * window), not the division's rounding
    win += times >= (win + 1) * window
    order = argsort_stable(win)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(win, minlength=1))])
    return conn[order], times[order], bounds


def window_rekeys(conn: np.ndarray, times: np.ndarray, bounds: np.ndarray, index: int):
    """Window ``index``'s re-keys from :func:`rekey_times`, in time order (ties: connection, then k),
    as a stable sort of every re-key by time would list them."""
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
        self.rekeys = rekey_times(workload.start, workload.end, interval, horizon, window)
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
        rk, rk_t = window_rekeys(*self.rekeys, index)
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
        # Which new sockets get device contexts (in start order; the socket stays on software kTLS
        # otherwise, and the driver issues no create for it).
        candidates = np.concatenate([running, opened])
        when = np.concatenate([np.zeros(len(running)), w.start[opened]])
        free = np.maximum(self.capacity - self.contexts / 2, 0)  # contexts are TX + RX: per direction
        fits = fits_on_both(w.client[candidates].astype(np.int64), w.server[candidates].astype(np.int64), when, free)
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
