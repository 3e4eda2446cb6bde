"""One variant on one fleet and workload: the control plane in simpy, the data
plane per window in numpy.

Control plane (simpy events carrying arrays, never a process per connection):

* a window process: each window applies the connections that arrived and
  ended in it to the per-host rates (``numpy.bincount``), creates and removes
  IPsec SAs, issues the NIC commands of set-up, teardown and rekeys, serves
  them through the per-NIC command queues, and runs the data plane;
* for PSP, one process per NIC rotates its device key on a staggered
  schedule (two generations live).  Every connection with its receive side
  on that NIC must rekey (new SPI from the NIC, new TX key on the peer)
  before the next rotation; a rekey that completes later finds its key gone:
  the connection is counted as lost and the traffic towards it is dropped
  from the moment its key died until the rekey completes.

Approximations, on purpose: per-host rates are sampled at window ends (a
connection shorter than a window never shows in the rates, but its
handshake, commands and rekeys do); TLS KeyUpdates and IKE SA rekeys are
fluid (expected counts); CHILD_SA rekeys and PSP rekeys are exact events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from pspsim.costs.params import Costs
from pspsim.model.commands import CommandQueues
from pspsim.model.dataplane import HostRates, window_costs
from pspsim.model.streams import RandomStreams
from pspsim.model.variants import Variant
from pspsim.model.workload import Workload
from pspsim.scenario import Scenario


@dataclass
class VariantRun:
    """Everything one run produced: per-window rows and end-of-run totals."""

    rows: list[dict[str, float]]
    totals: dict[str, float]
    host_peak_nic_entries: np.ndarray
    host_mean_cores: np.ndarray


def _ceil_div(x: np.ndarray, d: float) -> np.ndarray:
    return np.maximum(1.0, np.ceil(x / d))


class FleetSimulation:
    def __init__(self, scenario: Scenario, variant: Variant, workload: Workload, costs: Costs,
                 streams: RandomStreams) -> None:
        self.sc, self.v, self.w, self.c, self.streams = scenario, variant, workload, costs, streams
        fleet = scenario.fleet
        self.hosts = fleet.hosts
        self.rack_of = np.arange(self.hosts) // fleet.hosts_per_rack
        self.window = scenario.run.window
        self.duration = scenario.run.duration
        self._per_connection_rates()
        self.rates = HostRates.zeros(self.hosts)
        self.queues = CommandQueues(self.hosts, 1.0 / variant.command_service_s, costs.nic_command_latency_s)
        self.end_order = np.argsort(workload.end, kind="stable")
        self.end_sorted = workload.end[self.end_order]
        self.rows: list[dict[str, float]] = []
        self.totals = dict(connections_lost=0.0, bytes_lost=0.0, handshakes=0.0, rekeys=0.0, rotations=0.0,
                           commands=0.0, offered_bits=0.0, achieved_bits=0.0, core_seconds=0.0)
        self.peak_entries = np.zeros(self.hosts)
        self.core_sum = np.zeros(self.hosts)
        self._rotations_in_window = 0
        if variant.sa_based:
            self._init_sas()
        if variant.name == "psp":
            self._init_psp_rekeys()

    # -- per-connection quantities --------------------------------------------
    def _per_connection_rates(self) -> None:
        w, v = self.w, self.v
        msgs = w.msgs_per_s.astype(np.float64)
        req = w.msg_bytes.astype(np.float64)
        resp = req * w.response_ratio
        self.req_bps, self.resp_bps = req * msgs, resp * msgs
        self.req_pps = msgs * _ceil_div(req, v.mss)
        self.resp_pps = np.where(resp > 0, msgs * _ceil_div(resp, v.mss), 0.0)
        record = self.c.net_tls_record_bytes
        self.req_rps = msgs * _ceil_div(req, record) if v.uses_records else np.zeros(len(w))
        self.resp_rps = np.where(resp > 0, msgs * _ceil_div(resp, record), 0.0) if v.uses_records else self.req_rps
        self.cross = self.rack_of[w.client] != self.rack_of[w.server]
        keys = self.sc.keys
        if v.uses_records:  # TLS rekey every interval, or earlier when the byte budget runs out
            busiest = np.maximum(self.req_bps, self.resp_bps)
            interval = np.minimum(keys.tls_rekey_interval, keys.tls_rekey_bytes / np.maximum(busiest, 1e-9))
            self.tls_rekey_rate = 1.0 / np.maximum(interval, 1e-9)
        else:
            self.tls_rekey_rate = np.zeros(len(w))

    def _apply(self, ids: np.ndarray, sign: float) -> None:
        """Add (sign +1) or remove (-1) connections from the per-host rates."""
        if len(ids) == 0:
            return
        c, s, h = self.w.client[ids], self.w.server[ids], self.hosts
        r = self.rates

        def add(target: np.ndarray, hosts: np.ndarray, values: np.ndarray) -> None:
            target += sign * np.bincount(hosts, values, minlength=h)

        for side, other, out_b, in_b, out_p, in_p, out_r, in_r in (
            (c, s, self.req_bps, self.resp_bps, self.req_pps, self.resp_pps, self.req_rps, self.resp_rps),
            (s, c, self.resp_bps, self.req_bps, self.resp_pps, self.req_pps, self.resp_rps, self.req_rps),
        ):
            add(r.tx_bytes, side, out_b[ids])
            add(r.rx_bytes, side, in_b[ids])
            add(r.tx_packets, side, out_p[ids])
            add(r.rx_packets, side, in_p[ids])
            add(r.tx_records, side, out_r[ids])
            add(r.rx_records, side, in_r[ids])
            add(r.cross_rack_tx_bytes, side, np.where(self.cross[ids], out_b[ids], 0.0))
            add(r.connections, side, np.ones(len(ids)))
            add(r.tls_rekeys, side, self.tls_rekey_rate[ids])

    # -- IPsec SAs ---------------------------------------------------------------
    def _init_sas(self) -> None:
        keys, w = self.sc.keys, self.w
        if keys.ipsec_sa_granularity == "host-pair":
            lo, hi = np.minimum(w.client, w.server), np.maximum(w.client, w.server)
            pair_ids, self.sa_of = np.unique(lo.astype(np.int64) * self.hosts + hi, return_inverse=True)
            self.sa_a, self.sa_b = (pair_ids // self.hosts).astype(np.int64), (pair_ids % self.hosts).astype(np.int64)
        else:
            self.sa_of = np.arange(len(w))
            self.sa_a, self.sa_b = w.client.astype(np.int64), w.server.astype(np.int64)
        n = len(self.sa_a)
        self.sa_count = np.zeros(n, dtype=np.int64)
        self.sa_start = np.zeros(n)
        jitter = keys.ipsec_rekey_jitter * self.streams.rekey_jitter.uniform(0, 1, n)
        self.sa_interval = keys.ipsec_child_rekey * (1 - jitter)

    def _update_sas(self, arrivals: np.ndarray, departures: np.ndarray, t0: float):
        """Returns (new SA indices, removed SA indices) after this window's churn."""
        n = len(self.sa_count)
        before = self.sa_count.copy() if (len(arrivals) or len(departures)) else self.sa_count
        if len(arrivals):
            self.sa_count += np.bincount(self.sa_of[arrivals], minlength=n)
        if len(departures):
            self.sa_count -= np.bincount(self.sa_of[departures], minlength=n)
        touched = np.unique(np.concatenate([self.sa_of[arrivals], self.sa_of[departures]]))
        new = touched[(before[touched] == 0) & (self.sa_count[touched] > 0)]
        gone = touched[(before[touched] > 0) & (self.sa_count[touched] == 0)]
        if len(new):  # the SA starts with the first connection that needs it
            first = np.full(n, np.inf)
            np.minimum.at(first, self.sa_of[arrivals], self.w.start[arrivals])
            self.sa_start[new] = np.where(np.isfinite(first[new]), first[new], t0)
            if t0 == 0:  # SAs of connections already running: rekey phases spread over one interval
                running = new[self.sa_start[new] == 0]
                self.sa_start[running] = -self.streams.rekey_jitter.uniform(0, self.sa_interval[running])
                new = new[self.sa_start[new] > 0]
        return new, gone

    def _sa_window(self, t0: float, t1: float):
        """CHILD_SA rekeys in [t0, t1) and SA entries per host at t1 (make-before-break)."""
        active = np.flatnonzero(self.sa_count > 0)
        s, interval = self.sa_start[active], self.sa_interval[active]

        def rekeys_before(x: np.ndarray) -> np.ndarray:
            return np.maximum(0.0, np.ceil(np.maximum(x, 0) / interval) - 1)

        n_rekeys = rekeys_before(t1 - s) - rekeys_before(t0 - s)
        # Make-before-break: every SA generation replaced less than `overlap` ago is still installed.
        overlap = self.sc.keys.ipsec_rekey_overlap
        pairs = 1.0 + rekeys_before(t1 - s + 1e-9) - rekeys_before(t1 - s - overlap + 1e-9)
        a, b = self.sa_a[active], self.sa_b[active]
        sa_pairs = np.bincount(a, pairs, minlength=self.hosts) + np.bincount(b, pairs, minlength=self.hosts)
        rekeying = active[n_rekeys > 0]
        first_rekey = s[n_rekeys > 0] + interval[n_rekeys > 0] * np.ceil((t0 - s[n_rekeys > 0]) / interval[n_rekeys > 0])
        per_host_rekeys = np.bincount(a, n_rekeys, minlength=self.hosts) + np.bincount(b, n_rekeys, minlength=self.hosts)
        active_pairs = np.bincount(a, minlength=self.hosts) + np.bincount(b, minlength=self.hosts)
        return sa_pairs, per_host_rekeys, rekeying, first_rekey, active_pairs

    # -- PSP rotation and rekeys -------------------------------------------------
    def _init_psp_rekeys(self) -> None:
        keys, w = self.sc.keys, self.w
        period = keys.psp_rotation_period
        self.rotation_offset = self.streams.rotation.uniform(0, period, self.hosts)
        events = []
        for rx_side, tx_side in ((w.client, w.server), (w.server, w.client)):
            off = self.rotation_offset[rx_side]
            k_first = np.floor((w.start - off) / period) + 1  # first rotation after the start
            k_last = np.ceil((np.minimum(w.end, self.duration) - off) / period) - 1  # last before the end
            count = np.maximum(0, k_last - k_first + 1).astype(np.int64)
            conn = np.repeat(np.arange(len(w)), count)
            k = np.repeat(k_first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
            rx = rx_side[conn]
            events.append((conn, rx, tx_side[conn], self.rotation_offset[rx] + k * period))
        conn, rx, tx, when = (np.concatenate(parts) for parts in zip(*events))
        ready = when + keys.psp_rekey_delay + self.streams.rekey_delay.uniform(0, keys.psp_rekey_spread, len(when))
        order = np.argsort(ready, kind="stable")
        self.rk_conn, self.rk_rx, self.rk_tx = conn[order], rx[order], tx[order]
        self.rk_rotation, self.rk_ready = when[order], ready[order]
        self.rk_done = np.full(len(order), np.nan)  # completion, once served
        self.rk_pos = 0
        # When each connection direction got its current SPI (0: client to server,
        # receive side on the server; 1: the reverse); its generation decides when it dies.
        self.spi_allocated = np.repeat(np.maximum(w.start, 0.0)[:, None], 2, axis=1)

    def _rotations(self, env: simpy.Environment, nic: int):
        period = self.sc.keys.psp_rotation_period
        yield env.timeout(self.rotation_offset[nic])
        while True:  # the older key is replaced; the previous one still verifies
            self._rotations_in_window += 1
            yield env.timeout(period)

    def _psp_rekey_requests(self, t1: float):
        """The rekeys requested before t1: their NIC commands (RX NIC: a new SPI;
        peer NIC: add the new TX key and delete the old one, with keys in a table)."""
        end = np.searchsorted(self.rk_ready, t1, side="left")
        sl = slice(self.rk_pos, end)
        self.rk_pos = end
        per_rekey = 1 + 2 * self.v.nic_entries_per_connection
        nics = np.concatenate([self.rk_rx[sl]] + [self.rk_tx[sl]] * (per_rekey - 1))
        return sl, nics, np.tile(self.rk_ready[sl], per_rekey), per_rekey

    def _spi_death(self, nic: np.ndarray, allocated: np.ndarray) -> np.ndarray:
        """When an SPI allocated at ``allocated`` on ``nic`` dies: at the second
        rotation after its generation became active (two generations live)."""
        period = self.sc.keys.psp_rotation_period
        offset = self.rotation_offset[nic]
        generation = np.floor((allocated - offset) / period)
        return offset + (generation + 2) * period

    def _psp_rekey_outcomes(self, sl: slice, done: np.ndarray, per_rekey: int):
        """Per-host rekeys, connections lost and bytes dropped, given command completions.

        A completed rekey replaces the direction's SPI; if the old SPI died before
        that (its generation rotated out), the connection was lost from the
        death until the completion, and the traffic towards it was dropped."""
        conn, rx, tx = self.rk_conn[sl], self.rk_rx[sl], self.rk_tx[sl]
        finished = done.reshape(per_rekey, -1).max(axis=0) if len(conn) else np.empty(0)
        self.rk_done[sl] = finished
        direction = (rx != self.w.server[conn]).astype(np.int64)
        end = self.w.end[conn]
        flows = conn * 2 + direction
        if len(np.unique(flows)) == len(flows):  # the usual case: one rekey per direction in the batch
            dies = self._spi_death(rx, self.spi_allocated[conn, direction])
            self.spi_allocated[conn, direction] = finished
        else:  # a direction rekeyed twice: each completion replaces the SPI of the one before
            dies = np.zeros(len(conn))
            for i in np.argsort(finished, kind="stable"):
                c, d = conn[i], direction[i]
                dies[i] = self._spi_death(rx[i:i + 1], self.spi_allocated[c, d:d + 1])[0]
                self.spi_allocated[c, d] = finished[i]
        lost = (finished > dies) & (end > dies)
        towards_rx = np.where(direction == 0, self.req_bps[conn], self.resp_bps[conn])
        outage = np.clip(np.minimum(end, finished) - dies, 0, None)
        per_host = np.bincount(rx, minlength=self.hosts) + np.bincount(tx, minlength=self.hosts)
        return per_host, int(lost.sum()), float((towards_rx * outage)[lost].sum())

    def _psp_unrekeyed_losses(self) -> tuple[int, float]:
        """Connection directions whose SPI died before the end with no rekey after it."""
        w, horizon = self.w, np.minimum(self.w.end, self.duration)
        live = (w.start < self.duration)
        lost, dropped = 0, 0.0
        for d, rx, rate in ((0, w.server, self.req_bps), (1, w.client, self.resp_bps)):
            dies = self._spi_death(rx, self.spi_allocated[:, d])
            gone = live & (dies < horizon)
            lost += int(gone.sum())
            dropped += float((rate * (horizon - dies))[gone].sum())
        return lost, dropped

    # -- the run -------------------------------------------------------------------
    def run(self) -> VariantRun:
        env = simpy.Environment()
        if self.v.name == "psp":
            for nic in range(self.hosts):
                env.process(self._rotations(env, nic))
        env.process(self._windows(env))
        env.run(until=self.duration + self.window / 2)
        if self.v.name == "psp":
            lost, dropped = self._psp_unrekeyed_losses()
            self.totals["connections_lost"] += lost
            self.totals["bytes_lost"] += dropped
        return VariantRun(self.rows, self.totals, self.peak_entries, self.core_sum / max(len(self.rows), 1))

    def _windows(self, env: simpy.Environment):
        w, v, keys = self.w, self.v, self.sc.keys
        start_pos = end_pos = 0
        n_windows = math.ceil(self.duration / self.window - 1e-9)
        for index in range(n_windows):
            t0, t1 = index * self.window, min((index + 1) * self.window, self.duration)
            yield env.timeout(t1 - env.now)
            length = t1 - t0
            start_next = np.searchsorted(w.start, t1, side="left")
            end_next = np.searchsorted(self.end_sorted, t1, side="left")
            arrivals = np.arange(start_pos, start_next)
            departures = self.end_order[end_pos:end_next]
            start_pos, end_pos = start_next, end_next
            self._apply(arrivals, +1.0)
            self._apply(departures, -1.0)
            opened = arrivals[arrivals >= w.running]  # the running ones were set up before time 0

            hosts = self.hosts
            ends = lambda ids: np.concatenate([w.client[ids], w.server[ids]])  # noqa: E731
            handshake_cycles = np.zeros(hosts)
            rekey_cycles = np.zeros(hosts)
            rekeys = np.zeros(hosts)
            cmd_times, cmd_nics = [], []
            lost = lost_bytes = 0.0

            def commands(nics: np.ndarray, times: np.ndarray, per_event: int) -> None:
                if per_event and len(nics):
                    cmd_nics.append(np.repeat(nics, per_event))
                    cmd_times.append(np.repeat(times, per_event))

            if v.sa_based:
                new, gone = self._update_sas(arrivals, departures, t0)
                sa_pairs, sa_rekeys, rekeying, first_rekey, active_pairs = self._sa_window(t0, t1)
                new_ends = np.concatenate([self.sa_a[new], self.sa_b[new]])
                handshake_cycles += np.bincount(new_ends, minlength=hosts) * v.handshake_cycles()
                if keys.ipsec_sa_granularity == "host-pair":
                    handshake_cycles += np.bincount(new_ends, minlength=hosts) * (
                        self.c.host_ike_sa_setup_initiator_cycles + self.c.host_ike_sa_setup_responder_cycles) / 2
                ike = active_pairs * length / keys.ipsec_ike_rekey  # fluid: expected IKE SA rekeys
                rekeys += sa_rekeys + ike
                rekey_cycles += sa_rekeys * v.rekey_cycles() + ike * self.c.host_ike_sa_rekey_cycles
                nic_entries = sa_pairs * v.nic_entries_per_connection
                host_state = sa_pairs * v.host_bytes_per_connection
                handshakes = len(new)
                commands(new_ends, np.tile(self.sa_start[new], 2), v.commands_per_setup)
                gone_ends = np.concatenate([self.sa_a[gone], self.sa_b[gone]])
                commands(gone_ends, np.full(len(gone_ends), t1), v.commands_per_teardown)
                commands(np.concatenate([self.sa_a[rekeying], self.sa_b[rekeying]]), np.tile(first_rekey, 2),
                         v.commands_per_rekey)
            else:
                arriving_ends = ends(opened)
                handshake_cycles += np.bincount(arriving_ends, minlength=hosts) * v.handshake_cycles()
                handshakes = len(opened) if v.name != "plaintext" else 0
                nic_entries = self.rates.connections * v.nic_entries_per_connection
                host_state = self.rates.connections * v.host_bytes_per_connection
                commands(arriving_ends, np.tile(w.start[opened], 2), v.commands_per_setup)
                commands(ends(departures), np.tile(w.end[departures], 2), v.commands_per_teardown)
                if v.uses_records:
                    tls = self.rates.tls_rekeys * length  # fluid: expected KeyUpdates / reconnects
                    rekeys += tls
                    rekey_cycles += tls * v.rekey_cycles()
                    if v.commands_per_rekey:  # re-install NIC contexts
                        n = self.streams.events.poisson(tls)
                        commands(np.repeat(np.arange(hosts), n), self.streams.events.uniform(t0, t1, n.sum()),
                                 v.commands_per_rekey)
            if v.name == "psp":
                psp_slice, psp_nics, psp_times, per_rekey = self._psp_rekey_requests(t1)
                psp_first = sum(len(t) for t in cmd_times)
                cmd_nics.append(psp_nics)
                cmd_times.append(psp_times)
            queued = sum(len(t) for t in cmd_times)
            delays = done = np.empty(0)
            if queued:
                times = np.concatenate(cmd_times)
                done = self.queues.serve(times, np.concatenate(cmd_nics))
                delays = done - times
            if v.name == "psp":
                per_host, lost, lost_bytes = self._psp_rekey_outcomes(psp_slice, done[psp_first:], per_rekey)
                rekeys += per_host
                rekey_cycles += per_host * v.rekey_cycles()
                nic_entries = nic_entries.astype(float)
            rotations, self._rotations_in_window = self._rotations_in_window, 0

            dp = window_costs(v, self.c, self.rates, nic_entries, handshake_cycles / length, rekey_cycles / length,
                              self.rack_of, self.sc.fleet.host_link_gbps * 1e9, self.sc.fleet.spine_oversubscription,
                              self.sc.fleet.hosts_per_rack)
            nic_bytes = nic_entries * v.nic_bytes_per_entry + v.nic_fixed_bytes
            self.peak_entries = np.maximum(self.peak_entries, nic_entries)
            self.core_sum += dp["cores_total"]
            t = self.totals
            t["connections_lost"] += lost
            t["bytes_lost"] += lost_bytes
            t["handshakes"] += handshakes
            t["rekeys"] += float(rekeys.sum()) / 2  # each rekey counted at both ends
            t["rotations"] += rotations
            t["commands"] += queued
            t["offered_bits"] += float(dp["offered_bps"].sum()) * length / 2
            t["achieved_bits"] += float(dp["achieved_bps"].sum()) * length / 2
            t["core_seconds"] += float(dp["cores_total"].sum()) * length
            over_capacity = int((nic_entries > v.nic_capacity).sum())
            self.rows.append({
                "time_s": t1,
                "connections": float(self.rates.connections.sum() / 2),
                "offered_gbps": float(dp["offered_bps"].sum()) / 2e9,
                "achieved_gbps": float(dp["achieved_bps"].sum()) / 2e9,
                "overhead_gbps": float(dp["overhead_bps"].sum()) / 2e9,
                "cores_total": float(dp["cores_total"].sum()),
                "cores_stack": float(dp["cores_stack"].sum()),
                "cores_crypto": float(dp["cores_crypto"].sum()),
                "cores_handshake": float(dp["cores_handshake"].sum()),
                "cores_rekey": float(dp["cores_rekey"].sum()),
                "cores_host_p50": float(np.percentile(dp["cores_total"], 50)),
                "cores_host_p99": float(np.percentile(dp["cores_total"], 99)),
                "nic_entries_total": float(nic_entries.sum()),
                "nic_entries_host_p50": float(np.percentile(nic_entries, 50)),
                "nic_entries_host_max": float(nic_entries.max()),
                "nic_bytes_host_max": float(nic_bytes.max()),
                "hosts_over_nic_capacity": over_capacity,
                "host_state_bytes_total": float(host_state.sum()),
                "host_state_bytes_host_max": float(host_state.max()),
                "nic_engine_util_p50": float(np.percentile(dp["nic_engine_util"], 50)),
                "nic_engine_util_max": float(dp["nic_engine_util"].max()),
                "cache_miss_ratio_mean": float(dp["cache_miss_ratio"].mean()),
                "cache_miss_ratio_max": float(dp["cache_miss_ratio"].max()),
                "added_latency_us_mean": float(dp["added_latency_us"].mean()),
                "handshakes": float(handshakes),
                "rekeys": float(rekeys.sum()) / 2,
                "rotations": float(rotations),
                "nic_commands": float(queued),
                "command_delay_p50_us": float(np.percentile(delays, 50) * 1e6) if len(delays) else 0.0,
                "command_delay_p99_us": float(np.percentile(delays, 99) * 1e6) if len(delays) else 0.0,
                "connections_lost": float(lost),
                "bytes_lost": float(lost_bytes),
            })
