"""PSP's control plane as Linux 6.18 and mlx5 run it, at fleet scale (columnar).

Per connection (see the README, "How pspsim's PSP maps to Linux"):

* set-up: TLS handshake; each end ``rx-assoc`` (one ``PSP_GEN_SPI`` command on
  its NIC); when both are done each end ``tx-assoc`` (one TX key object
  created on its NIC, unless keys travel in descriptors); PSP is in use when
  both TX keys are installed.  Until then the traffic runs on the TLS it
  started with (``psp_before_upgrade = "tls"``) or waits (``"wait"``).  A full
  TX key table fails ``tx-assoc``: the connection stays on TLS or fails
  (``psp_on_full``).  At the end, each TX key is destroyed.
* rotation: each ``key-rotate`` is a ``PSP_ROTATE_KEY`` command; an
  association goes stale at the second rotation of its NIC after its
  creation (:mod:`pspsim.model.rotation`).
* re-keying after a rotation: every connection with an end on the rotated NIC
  moves to new keys ``psp_rekey_delay + U(0, psp_rekey_spread)`` later; with
  ``psp_rekey = "reconnect"`` (6.18: one association per socket) by a new
  connection (handshake, both associations, both TX keys; the old keys are
  destroyed once the new ones are in use); with ``"in-place"`` (the proposed
  series) only the rotated side's SPI and the peer's TX key change.
* stale: an association that goes stale before its connection moved to new
  keys is a ``stale-events`` count on that NIC; the connection carries no
  traffic from then (its RPCs cannot complete; its data waits in the send
  queue) until re-established; with no re-keying pending, its application
  notices after ``psp_stale_notice`` and reconnects.

Assumed, as parameters: the re-keying delay and spread, the stale notice
time, the upgrade traffic policy.  Connections that fell back to TLS stay
on TLS for their life.  A rotation is seen by connections whose
``rx-assoc`` was requested before it (the command takes microseconds).
"""

from __future__ import annotations

import numpy as np

from pspsim.model.calendar import Calendar
from pspsim.model.commands import COMMAND, CommandQueues
from pspsim.model.control import ControlWindow, conns_by_host, fits_on_both
from pspsim.model.rotation import RotationSchedule
from pspsim.model.sorting import argsort_stable, lexsort
from pspsim.model.traffic import OFFLOAD, SOFTWARE, STALE, WAITING, TrafficLedger
from pspsim.model.workload import Workload

try:  # the compiled rotation loop (setup.py builds it); the numpy loop below gives the same bytes
    from pspsim.model import _schedules
except ImportError:  # pragma: no cover - the compiled module is optional
    _schedules = None
if getattr(_schedules, "VERSION", 0) < 2:  # pragma: no cover
    _schedules = None  # a build older than this source (other signatures)

PSP, FELL_BACK, FAILED = 0, 1, 2
BOTH = -1
ONE_MORE_EACH_SIDE = 1 + (1 << 32)  # a version row (two int32) seen as one int64: +1 on both sides


def _rows(pairs: np.ndarray) -> np.ndarray:
    """An (n, 2) per-side array seen as n items, one per connection (int32 pairs as int64, float64
    pairs as complex128), to gather and scatter whole rows: numpy's fancy indexing of two-element
    rows is 5-15x slower than of single items.  Assignments through it copy bits; the only
    arithmetic on it is ``ONE_MORE_EACH_SIDE`` on versions, which are non-negative int32, so no
    carry crosses from one side into the other."""
    return pairs.view(np.int64 if pairs.dtype == np.int32 else np.complex128).reshape(-1)


def _by_time(rows: dict[str, np.ndarray], kept: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``kept`` of calendar rows as filed, in time order (ties in filing order): what a stable
    sort of every row by time, then the same filter, gives, for the cost of the rows kept."""
    kept = kept[argsort_stable(rows["time"][kept])]
    return {name: values[kept] for name, values in rows.items()}


def _both(side_0: np.ndarray, side_1: np.ndarray) -> np.ndarray:
    """Per-side values as rows for :func:`_rows` of a float64 (n, 2) array."""
    out = np.empty((len(side_0), 2))
    out[:, 0], out[:, 1] = side_0, side_1
    return _rows(out)


class PspControl:
    def __init__(self, keys, costs, workload: Workload, ledger: TrafficLedger, queues: CommandQueues,
                 schedule: RotationSchedule, delay_rng: np.random.Generator, window: float,
                 tx_keys_on_nic: bool, windows: int | None = None) -> None:
        self.keys, self.c, self.w, self.ledger, self.queues = keys, costs, workload, ledger, queues
        self.schedule, self.rng = schedule, delay_rng
        self.tx_keys_on_nic = tx_keys_on_nic
        n, hosts = len(workload), workload.hosts
        # Per side: creation of the current association on its NIC (NaN: none) and the latest
        # re-keying requested (-inf: none), written in the window the connection starts (_start_rows)
        self.made, self.scheduled = np.empty((n, 2)), np.empty((n, 2))
        self.rows_written = 0
        self.version = np.zeros((n, 2), dtype=np.int32)
        self.mode = np.zeros(n, dtype=np.int8)
        self.is_stale = np.zeros(n, dtype=bool)  # carrying nothing until re-established
        self.lost = np.zeros(n, dtype=bool)
        self.tx_keys = np.zeros(hosts)
        self.stale_events = np.zeros(hosts)
        self.rotations = np.zeros(hosts)
        self.by_host = conns_by_host(workload)
        # ``windows``: how many windows the run takes; checks and requests past them are dropped
        self.requests = Calendar(window, ("conn", "side", "trigger", "reconnect"), windows)
        self.checks = Calendar(window, ("conn", "side", "version"), windows)
        self.capacity = costs.nic_psp_tx_key_capacity if tx_keys_on_nic else np.inf
        self._rekey_keys, self._rekey_first = np.empty(0, np.int64), np.empty(0)  # the compiled stale test's hash table

    # -- helpers ------------------------------------------------------------------
    def _start_rows(self, t1: float) -> None:
        """Write the first ``made`` and ``scheduled`` of the connections that start by ``t1``, the
        end of the window about to run (:meth:`Workload.started_before`).  Reads of rows are of
        connections that arrived, or masked by ``start <= r`` for a rotation at ``r``, which is
        before ``t1`` (``RotationSchedule.between``).  Later rows stay unwritten, so their pages
        (memory-mapped) are not resident until then: the day's connections take 2.2 GB here at
        fleet-10k (70 M), of which the 10 M open at time 0 need 0.3 GB.  That lowers the peak of
        window 0; the rows of ended connections are not given back, so by the end of the day all
        of it is resident."""
        upto = self.w.started_before(t1, inclusive=True)
        if upto > self.rows_written:
            self.made[self.rows_written:upto] = np.nan
            self.scheduled[self.rows_written:upto] = -np.inf
            self.rows_written = upto

    def _rekey_table(self, requests: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The compiled stale test's hash table of associations asked to re-key (at most two per
        request), empty, at most half full: kept from window to window and grown when a window
        asks for more, so its memory follows the busiest window's requests, not the run's
        connections."""
        size = 1 << max(10, (4 * requests - 1).bit_length())
        if len(self._rekey_keys) < size:
            self._rekey_keys, self._rekey_first = np.full(size, -1, np.int64), np.empty(size)
        return self._rekey_keys, self._rekey_first, 64 - (len(self._rekey_keys).bit_length() - 1)

    def _rekey_delay(self, count: int) -> np.ndarray:
        return self.keys.psp_rekey_delay + self.rng.uniform(0, self.keys.psp_rekey_spread, count)

    def _nic(self, conn: np.ndarray, side: np.ndarray) -> np.ndarray:
        """The NIC of each connection's side (0: client, 1: server)."""
        return np.where(side == 0, self.w.client[conn], self.w.server[conn])

    def _schedule_checks(self, conns: np.ndarray, sides: np.ndarray) -> None:
        at = 2 * conns + sides  # (conn, side) in the flattened per-side arrays: one gather each
        if _schedules is not None:  # the same times, compiled
            when = np.empty(len(conns))
            _schedules.stale_times(conns.astype(np.int64, copy=False), sides.astype(np.int64, copy=False),
                                   self.w.client, self.w.server, self.made, self.schedule.phase,
                                   float(self.schedule.period), when)
        else:
            when = self.schedule.stale_time(self._nic(conns, sides), self.made.reshape(-1)[at])
        self.checks.push(when, conn=conns, side=sides, version=self.version.reshape(-1)[at])

    def _rotation_requests(self, t1: float, out: ControlWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rotations in the window: ROTATE_KEY commands, and the re-keyings they ask for."""
        nics, times = self.schedule.between(out.t0, t1)
        self.rotations += np.bincount(nics, minlength=len(self.rotations))
        out.count("key_rotations", len(nics))
        reconnect = self.keys.psp_rekey == "reconnect"
        if _schedules is not None and self.by_host.conn.dtype == np.int32 and len(nics):
            conn, when, side, trigger = self._rotation_requests_compiled(nics, times, reconnect)
            if len(conn):
                self.requests.push(when, conn=conn, side=side, trigger=trigger,
                                   reconnect=np.full(len(conn), reconnect))
            return nics, times, np.full(len(nics), COMMAND["psp_rotate_key"])
        conn_parts, time_parts, side_parts, trig_parts = [], [], [], []
        w = self.w
        for nic, r in zip(nics, times):  # one rotation: the connections with an end on this NIC
            conns = self.by_host(nic)
            side = (w.client[conns] != nic).astype(np.int64)
            made = self.made[conns, side]
            ok = (w.start[conns] <= r) & (w.end[conns] > r) & (self.mode[conns] == PSP) & ~(made >= r)
            ok &= self.scheduled[conns, side] <= r  # nothing already asked for after this rotation
            conns, side = conns[ok], side[ok]
            when = r + self._rekey_delay(len(conns))
            self.scheduled[conns, side] = when
            if self.keys.psp_rekey == "reconnect":
                self.scheduled[conns, 1 - side] = np.maximum(self.scheduled[conns, 1 - side], when)
            trig_parts.append(np.full(len(conns), r))
            conn_parts.append(conns)
            time_parts.append(when)
            side_parts.append(side)
        if conn_parts:
            self.requests.push(np.concatenate(time_parts), conn=np.concatenate(conn_parts),
                               side=np.concatenate(side_parts), trigger=np.concatenate(trig_parts),
                               reconnect=np.full(sum(map(len, conn_parts)), self.keys.psp_rekey == "reconnect"))
        return nics, times, np.full(len(nics), COMMAND["psp_rotate_key"])

    def _rotation_requests_compiled(self, nics: np.ndarray, times: np.ndarray, reconnect: bool):
        """The loop of ``_rotation_requests`` compiled, with the same random numbers: the re-key
        delays are ``uniform`` draws in request order, so the loop takes them from one draw of as
        many as the rotating NICs have connections, and the generator is then put back and moved
        on by exactly the draws used (``uniform`` and ``random`` take one 64-bit output a value)."""
        w, keys, index = self.w, self.keys, self.by_host
        bit_generator = self.rng.bit_generator
        saved = bit_generator.state
        most = int((index.bounds[nics + 1] - index.bounds[nics]).sum())
        uniforms = self.rng.random(most)
        conn, when, side, trigger, used = _schedules.rotation_requests(
            np.ascontiguousarray(nics, np.int64), np.ascontiguousarray(times, np.float64), index.conn, index.bounds,
            w.client, w.start, w.end, self.mode, PSP, self.made, self.scheduled, uniforms,
            float(keys.psp_rekey_delay), float(keys.psp_rekey_spread), reconnect)
        bit_generator.state = saved
        self.rng.random(used)
        return conn, when, side, trigger

    def _still_needed(self, requests: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The requests that still have work when they fall due: their connection is alive and on
        PSP, and the association on the triggering side is older than the trigger; a reconnect also
        when either side's association has seen a rotation of its NIC since it was made.  That
        covers rotations whose own request was not made because this reconnect was pending
        (``_rotation_requests``): it re-keys both sides, so it must not be dropped while one of
        them still needs it.  ``requests`` as filed (``Calendar.take(by_time=False)``); the ones
        kept are returned in time order (as a stable sort of all of them by time would list them)."""
        conn, time = requests["conn"].astype(np.int64), requests["time"]
        side = requests["side"].astype(np.int64)
        if _schedules is not None and len(conn):  # the same test, compiled
            keep = np.empty(len(conn), np.uint8)
            _schedules.still_needed(conn, side, np.ascontiguousarray(time, np.float64),
                                    np.ascontiguousarray(requests["trigger"], np.float64),
                                    requests["reconnect"].astype(bool).view(np.uint8), self.made, self.w.end,
                                    self.mode, PSP, self.w.client, self.w.server, self.schedule.phase,
                                    float(self.schedule.period), keep)
            return _by_time(requests, np.flatnonzero(keep))
        made = self.made[conn]
        alive = (self.w.end[conn] > time) & (self.mode[conn] == PSP)
        trigger_side_old = ~(made[np.arange(len(conn)), side] >= requests["trigger"])  # not set up yet: True
        with np.errstate(invalid="ignore"):
            nics = np.stack([self.w.client[conn], self.w.server[conn]], axis=1)
            rotated_since = (self.schedule.next_after(nics, made) <= time[:, None]).any(axis=1)
        reconnect = requests["reconnect"].astype(bool)
        keep = alive & (trigger_side_old | (reconnect & rotated_since))
        return _by_time(requests, np.flatnonzero(keep))

    def _stale(self, index: int, t1: float, requests: dict, out: ControlWindow) -> None:
        """This window's stale checks: associations still in use at their stale time.  The checks are
        tested one by one in the order they were filed, and the few that fail are put in time order
        (the order of a stable sort of all of them by time, without sorting them all)."""
        chk = self.checks.take(index, by_time=False)
        conn, side, s = chk["conn"].astype(np.int64), chk["side"].astype(np.int64), chk["time"]
        if not len(conn):
            return
        current = self.version.reshape(-1)[2 * conn + side] == chk["version"]
        # a re-keying that runs in this window before the stale time replaces the association
        # first: a reconnect both sides', an in-place re-key its own side's
        early = np.zeros(len(conn), dtype=bool)
        if len(requests["conn"]) and _schedules is not None:  # each association's first re-key, compiled
            keys, first, shift = self._rekey_table(len(requests["conn"]))
            flags = np.empty(len(conn), np.uint8)
            _schedules.early_rekeys(requests["conn"].astype(np.int64), requests["side"].astype(np.int64),
                                    np.ascontiguousarray(requests["time"], np.float64),
                                    requests["reconnect"].astype(bool).view(np.uint8), conn, side,
                                    np.ascontiguousarray(s, np.float64), keys, first, shift, flags)
            early = flags.view(bool)
        elif len(requests["conn"]):  # each association's first re-key of the window (sorted, searched)
            asked_conn, asked_side = requests["conn"].astype(np.int64), requests["side"].astype(np.int64)
            both = requests["reconnect"].astype(bool)
            asked = np.concatenate([2 * asked_conn + asked_side, 2 * asked_conn[both] + 1 - asked_side[both]])
            at = np.concatenate([requests["time"], requests["time"][both]])
            order = lexsort((at, asked))
            asked, at = asked[order], at[order]
            first = np.ones(len(asked), dtype=bool)
            first[1:] = asked[1:] != asked[:-1]
            asked, at = asked[first], at[first]
            checked = 2 * conn + side
            pos = np.empty(len(conn), np.int64)
            by_key = argsort_stable(checked)  # sorted needles: each search starts where the last ended
            pos[by_key] = np.minimum(np.searchsorted(asked, checked[by_key]), len(asked) - 1)
            early = (asked[pos] == checked) & (at[pos] < s)
        valid = _by_time(chk, np.flatnonzero(current & ~early & (self.w.end[conn] > s) & (self.mode[conn] == PSP)))
        conn, side, s = valid["conn"].astype(np.int64), valid["side"].astype(np.int64), valid["time"]
        nic = self._nic(conn, side)
        self.stale_events += np.bincount(nic, minlength=len(self.stale_events))
        out.count("psp_stale_events", len(conn))
        newly = ~self.is_stale[conn]
        first = np.unique(conn[newly], return_index=True)[1]
        fresh, fresh_time = conn[newly][first], s[newly][first]
        self.is_stale[fresh] = True
        self.lost[fresh] = True
        self.ledger.move(fresh_time, fresh, STALE)
        # nobody is re-keying it: the application notices and reconnects
        fresh_side = side[newly][first]
        idle = self.scheduled[fresh, fresh_side] <= fresh_time
        when = fresh_time[idle] + self.keys.psp_stale_notice
        self.scheduled[fresh[idle]] = when[:, None]
        self.requests.push(when, conn=fresh[idle], side=fresh_side[idle], trigger=fresh_time[idle],
                           reconnect=np.ones(idle.sum(), dtype=bool))

    # -- one window ---------------------------------------------------------------
    def window(self, index: int, t0: float, t1: float, arrivals: np.ndarray, departures: np.ndarray,
               out: ControlWindow) -> None:
        w, c, keys = self.w, self.c, self.keys
        self._start_rows(t1)
        running = arrivals[w.start[arrivals] < 0]
        opened = arrivals[w.start[arrivals] >= 0]
        # Connections open at time 0: associations of the generation active then, TX keys installed.
        if len(running):
            _rows(self.made)[running] = 0.0
            self._install(running, np.zeros(len(running)), out, initial=True)
            self._schedule_checks(np.repeat(running, 2), np.tile([0, 1], len(running)))
        start_mode = SOFTWARE if keys.psp_before_upgrade == "tls" else WAITING
        self.ledger.move(w.start[opened], opened, start_mode)
        hs_client, hs_server = c.tls_handshake_client_cycles, c.tls_handshake_server_cycles
        out.handshakes(w.client[opened], w.server[opened], hs_client, hs_server)
        out.cycles_at_both(w.client[opened], w.server[opened], c.host_psp_key_exchange_cycles)

        rot_nics, rot_times, rot_kinds = self._rotation_requests(t1, out)
        requests = self._still_needed(self.requests.take(index, by_time=False))
        self._stale(index, t1, requests, out)
        late = self._still_needed(self.requests.take(index, by_time=False))  # stale-notice reconnects in this window
        req_conn = np.concatenate([requests["conn"], late["conn"]]).astype(np.int64)
        req_time = np.concatenate([requests["time"], late["time"]])
        req_side = np.concatenate([requests["side"], late["side"]]).astype(np.int64)
        reconnect = np.concatenate([requests["reconnect"], late["reconnect"]]).astype(bool)

        # Who does what: new connections and reconnects allocate an SPI on both ends;
        # in-place re-keys on the rotated side only.
        req_side = np.where(reconnect, BOTH, req_side)
        new_conn = np.concatenate([opened, req_conn[reconnect]])
        new_time = np.concatenate([w.start[opened], req_time[reconnect]])
        ip_conn, ip_side, ip_time = req_conn[~reconnect], req_side[~reconnect], req_time[~reconnect]
        out.handshakes(w.client[req_conn[reconnect]], w.server[req_conn[reconnect]], hs_client, hs_server,
                       rekey=True)
        out.cycles_at_both(w.client[req_conn[reconnect]], w.server[req_conn[reconnect]],
                           c.host_psp_key_exchange_cycles, rekey=True)
        out.count("key_reconnects", int(reconnect.sum()))
        out.count("psp_rekeys", len(ip_conn))
        out.rekey_cycles_at(self._nic(ip_conn, ip_side), c.host_psp_key_exchange_cycles)
        out.rekey_cycles_at(self._nic(ip_conn, 1 - ip_side), c.host_psp_key_exchange_cycles)

        # TX keys destroyed at the end: installed before this window, or set up and ended inside it
        installed = ~np.isnan(self.made[departures, 0])
        opened_here = w.start[departures] >= t0
        is_gone = (self.mode[departures] == PSP) & (installed | opened_here)
        gone = departures[is_gone]
        new_here = ~installed & opened_here
        gone_new = departures[new_here]
        gone_old = departures[is_gone & ~new_here]  # gone minus gone_new (departures are distinct)
        n_new, n_ip = len(new_conn), len(ip_conn)
        gen_nics = np.concatenate([self.w.client[new_conn], self.w.server[new_conn], self._nic(ip_conn, ip_side)])
        gen_times = np.concatenate([new_time, new_time, ip_time])
        destroy_nics = (np.concatenate([self.w.client[gone], self.w.server[gone]]) if self.tx_keys_on_nic
                        else np.empty(0, np.int64))
        destroy_times = np.tile(w.end[gone], 2) if self.tx_keys_on_nic else np.empty(0)
        # Commands: GEN_SPI per end (new connections, reconnects) or on the rotated side (in place),
        # ROTATE_KEY, TX key destroys of ended connections; then, with TX keys on the NIC, each TX key
        # create once the connection's GEN_SPIs are done, and the old keys' destroys once the new
        # ones are in.  One FIFO queue per NIC serves them all in order of issue.
        n_gen, n_first = len(gen_times), len(gen_times) + len(rot_times) + len(destroy_times)
        times = [gen_times, rot_times, destroy_times]
        nics = [gen_nics, rot_nics, destroy_nics]
        kinds = [np.full(n_gen, COMMAND["psp_gen_spi"]), rot_kinds,
                 np.full(len(destroy_times), COMMAND["psp_tx_key_destroy"])]
        none = np.full(n_first, -1)
        dep_a, dep_b = [none], [none]
        if self.tx_keys_on_nic:
            pair_a, pair_b = np.arange(n_new), n_new + np.arange(n_new)  # each new connection's two GEN_SPIs
            in_place = 2 * n_new + np.arange(n_ip)
            creates = n_first + np.arange(2 * n_new + n_ip)  # TX key creates: both ends, then in place
            reconn = np.arange(len(opened), n_new)
            times += [np.zeros(2 * n_new + n_ip), np.zeros(2 * len(reconn) + n_ip)]
            peer_nics = self._nic(ip_conn, 1 - ip_side)
            nics += [np.concatenate([self.w.client[new_conn], self.w.server[new_conn], peer_nics]),
                     np.concatenate([self.w.client[new_conn[reconn]], self.w.server[new_conn[reconn]], peer_nics])]
            kinds += [np.full(2 * n_new + n_ip, COMMAND["psp_tx_key_create"]),
                      np.full(2 * len(reconn) + n_ip, COMMAND["psp_tx_key_destroy"])]
            dep_a += [np.concatenate([pair_a, pair_a, in_place]),
                      creates[np.concatenate([reconn, reconn, 2 * n_new + np.arange(n_ip)])]]
            dep_b += [np.concatenate([pair_b, pair_b, np.full(n_ip, -1)]),
                      np.concatenate([creates[n_new + reconn], creates[n_new + reconn], np.full(n_ip, -1)])]
        done = self.queues.serve_dependent(np.concatenate(times), np.concatenate(nics), np.concatenate(kinds),
                                           np.concatenate(dep_a), np.concatenate(dep_b))
        spi_done = done[:n_first]
        tx_done = done[n_first:n_first + 2 * n_new + n_ip]
        spi = spi_done[: len(gen_times)]
        if self.tx_keys_on_nic:
            old = nics[-1]
            before = np.concatenate([self.w.client[gone_old], self.w.server[gone_old]])
            self.tx_keys -= np.bincount(np.concatenate([before, old]), minlength=len(self.tx_keys))
            self.tx_keys += np.bincount(self._nic(ip_conn, 1 - ip_side), minlength=len(self.tx_keys))  # in-place
            ready_new = np.maximum(tx_done[:n_new], tx_done[n_new:2 * n_new])
            ready_ip = tx_done[2 * n_new:]
        else:
            ready_new = np.maximum(spi[:n_new], spi[n_new:2 * n_new])
            ready_ip = spi[2 * n_new:]

        # New connections and reconnects: both associations replaced.
        if n_new:
            made_a, made_b = spi[:n_new], spi[n_new:2 * n_new]
            n_open = len(opened)
            self._install(new_conn, ready_new, out, initial=False, setup=n_open, window_end=t1)
            _rows(self.made)[new_conn] = _both(made_a, made_b)
            _rows(self.version)[new_conn] += ONE_MORE_EACH_SIDE
            self._back_from_stale(new_conn, ready_new)
            self._schedule_checks(np.concatenate([new_conn, new_conn]),
                                  np.concatenate([np.zeros(n_new, np.int64), np.ones(n_new, np.int64)]))
        if self.tx_keys_on_nic and len(gone_new):  # set up and ended in this window: their keys go too
            kept = gone_new[self.mode[gone_new] == PSP]
            self.tx_keys -= np.bincount(np.concatenate([self.w.client[kept], self.w.server[kept]]),
                                        minlength=len(self.tx_keys))
        if n_ip:
            self.made[ip_conn, ip_side] = spi[2 * n_new:]
            self.version[ip_conn, ip_side] += 1
            self._back_from_stale(ip_conn, ready_ip)
            self._schedule_checks(ip_conn, ip_side)

    def _install(self, conns: np.ndarray, ready: np.ndarray, out: ControlWindow, initial: bool,
                 setup: int = 0, window_end: float | None = None) -> None:
        """TX keys for ``conns`` (in time order of ``ready``; the ``initial`` ones, open at time 0,
        oldest first, as the fleet the run starts from installed them, whatever their row order):
        those that fit run PSP from ``ready``; the others stay on TLS or fail (``psp_on_full``).  Reconnects of a
        connection already on PSP keep PSP only if their new keys fit too.

        ``conns[setup:]`` are reconnects.  With ``window_end``, a reconnect that fits, is not stale,
        ran on its offload when the window began and is ready before ``window_end`` is not moved
        to its offload again: nothing else moves it in this window before then (a stale one was
        moved by ``_stale`` and is excluded; a fallback is no longer on PSP and asks for no
        reconnect; a connection opened in this window did not run when it began), so the ledger
        would drop the move as one to the category it is in; not making it saves pushing and
        sorting it (a short-rotation window: 830,000 of them)."""
        nic_a, nic_b = self.w.client[conns], self.w.server[conns]
        if np.isfinite(self.capacity):
            order_by = self.w.start[conns] if initial else ready  # at time 0: by age (start), not by row
            fits = fits_on_both(nic_a, nic_b, order_by, np.maximum(self.capacity - self.tx_keys, 0))
        else:
            fits = np.ones(len(conns), dtype=bool)
        if self.tx_keys_on_nic:
            self.tx_keys += np.bincount(nic_a[fits], minlength=len(self.tx_keys))
            self.tx_keys += np.bincount(nic_b[fits], minlength=len(self.tx_keys))
        moved = fits
        if window_end is not None and setup < len(conns):
            again = np.zeros(len(conns), dtype=bool)
            tail = slice(setup, None)
            again[tail] = fits[tail] & (ready[tail] < window_end) & ~self.is_stale[conns[tail]] & (
                self.ledger.category[conns[tail]] == OFFLOAD)  # the windows applied so far: up to this one
            moved = fits & ~again
        self.ledger.move(np.where(initial, self.w.start[conns[moved]], ready[moved]), conns[moved], OFFLOAD)
        misfit = conns[~fits]
        if len(misfit):
            fail = self.keys.psp_on_full == "fail"
            self.mode[misfit] = FAILED if fail else FELL_BACK
            out.count("offload_failures" if fail else "offload_fallbacks", len(misfit))
            when = np.where(initial, self.w.start[misfit], ready[~fits])
            self.ledger.move(when, misfit, WAITING if fail else SOFTWARE)

    def _back_from_stale(self, conns: np.ndarray, ready: np.ndarray) -> None:
        stale = self.is_stale[conns]
        back = conns[stale]
        self.is_stale[back] = False
        self.ledger.move(ready[stale], back, np.where(self.mode[back] == PSP, OFFLOAD, SOFTWARE))

    def nic_entries(self) -> np.ndarray:
        return self.tx_keys.copy()
