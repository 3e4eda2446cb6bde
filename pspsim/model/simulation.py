"""One variant on one fleet and workload: the control plane event by event,
the data plane window by window.

A simpy process steps through the windows.  In each window the variant's
control plane (:mod:`pspsim.model.psp_control`, :mod:`~pspsim.model.ipsec_control`,
:mod:`~pspsim.model.tls_control`) handles the connections that opened and
ended, rotations, re-keys, stale associations and table-full fallbacks,
serving its firmware commands through per-NIC queues; every change of how a
connection's traffic runs goes to the traffic ledger; then the data plane
shares the network and NIC engines among the flows max-min fairly and prices
the CPU of what was carried (:mod:`pspsim.model.dataplane`).

Events carry arrays; nothing is a Python object per connection.  The
definitions of every column are in the README ("Result columns").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from pspsim.costs.params import Costs
from pspsim.model.aggregates import IncrementalDataplane
from pspsim.model.calendar import Calendar
from pspsim.model.commands import COMMANDS, CommandQueues
from pspsim.model.control import COUNTS, ControlWindow
from pspsim.model.dataplane import Network, PathVariants, window_dataplane
from pspsim.model.ipsec_control import IpsecControl
from pspsim.model.psp_control import PspControl
from pspsim.model.rotation import RotationSchedule
from pspsim.model.streams import RandomStreams
from pspsim.model.tls_control import TlsControl
from pspsim.model.traffic import GONE, OFFLOAD, TrafficLedger, build_flows
from pspsim.model.variants import Variant, make_variant
from pspsim.model.workload import Workload
from pspsim.scenario import Scenario


@dataclass
class VariantRun:
    """Everything one run produced: per-window rows, end-of-run totals and per-NIC counters."""

    rows: list[dict[str, float]]
    totals: dict[str, float]
    nic_counters: dict[str, np.ndarray]
    command_delay_p50_s: float
    command_delay_p99_s: float
    command_delay_max_s: float


class PlainControl:
    """No keys: connections just send."""

    def __init__(self, ledger: TrafficLedger, workload: Workload) -> None:
        self.ledger, self.w = ledger, workload

    def window(self, index, t0, t1, arrivals, departures, out: ControlWindow) -> None:
        self.ledger.move(self.w.start[arrivals], arrivals, OFFLOAD)

    def nic_entries(self) -> np.ndarray:
        return np.zeros(self.w.hosts)


class FleetSimulation:
    def __init__(self, scenario: Scenario, variant: Variant, workload: Workload, costs: Costs,
                 streams: RandomStreams, incremental: bool = True) -> None:
        self.sc, self.v, self.w, self.c = scenario, variant, workload, costs
        fleet, keys = scenario.fleet, scenario.keys
        self.hosts = fleet.hosts
        self.rack_of = np.arange(self.hosts) // fleet.hosts_per_rack
        self.window, self.duration = scenario.run.window, scenario.run.duration
        self.flows = build_flows(workload, variant.mss, costs.net_tls_record_bytes, costs.net_tso_max_bytes)
        crossing = self.rack_of[self.flows.sender] != self.rack_of[self.flows.receiver]
        n_windows = math.ceil(self.duration / self.window - 1e-9)
        self.window_ends = [min((index + 1) * self.window, self.duration) for index in range(n_windows)]
        self.ledger = TrafficLedger(self.flows, self.window, workload.end, self.hosts, crossing, windows=n_windows)
        service = np.array([getattr(costs, f"nic_cmd_{name}_s") for name in COMMANDS])
        self.queues = CommandQueues(self.hosts, service, costs.nic_command_latency_s)
        self.paths = PathVariants(variant, make_variant(variant.fallback, costs, keys))
        self.network = Network.of(fleet, costs, self.rack_of)
        # per-host sums kept from window to window; the dense solver only when a resource is near capacity
        self.dataplane = IncrementalDataplane(self.paths, costs, self.flows, self.network) if incremental else None
        self.control = self._control(streams)
        self.index_type = np.int32 if len(workload) < 2**31 else np.int64
        # each connection's end, filed when it arrives: the live connections' ends, not the run's
        # (a sort of every end time at set-up cost fleet-10k 2.2 GB for a moment and 280 MB kept)
        self.ends = Calendar(self.window, ("conn",), len(self.window_ends))
        self.window_end_times = np.array(self.window_ends)
        self.live_ends = np.zeros(self.hosts)
        self.rows: list[dict[str, float]] = []
        self.per_nic = {k: np.zeros(self.hosts) for k in (
            "own_tx_packets", "own_rx_packets", "own_tx_bytes", "own_rx_bytes",
            "software_tx_packets", "software_rx_packets", "software_tx_bytes", "software_rx_bytes")}
        self.totals = dict.fromkeys(COUNTS, 0.0) | dict(
            offered_bits=0.0, achieved_bits=0.0, lost_bits=0.0, core_seconds=0.0, nic_commands=0.0)

    def _control(self, streams: RandomStreams):
        v, keys, w = self.v, self.sc.keys, self.w
        args = (keys, self.c, w, self.ledger, self.queues)
        if v.name == "psp":
            schedule = RotationSchedule.draw(keys.psp_rotation_schedule, keys.psp_rotation_period, self.rack_of,
                                             keys.psp_rack_wave_gap, streams.rotation)
            return PspControl(*args, schedule, streams.rekey_delay, self.window,
                              windows=len(self.window_ends), tx_keys_on_nic=keys.psp_tx_key_placement == "nic-table")
        if v.sa_based:
            return IpsecControl(*args, offload=v.crypto_on_nic, jitter_rng=streams.rekey_jitter, window=self.window,
                                windows=len(self.window_ends))
        if v.uses_records:
            busiest = np.maximum(self.flows.bytes_per_s(False), self.flows.bytes_per_s(True))
            return TlsControl(*args, offload=v.crypto_on_nic, reconnect=v.rekey_by_reconnect,
                              byte_rates=busiest, horizon=self.duration, window=self.window)
        return PlainControl(self.ledger, w)

    # -- the run -------------------------------------------------------------------
    def run(self, heartbeat: Callable[[float], None] | None = None) -> VariantRun:
        """Run every window; ``heartbeat(t)`` is called after each, with the simulated time reached."""
        env = simpy.Environment()
        env.process(self._windows(env, heartbeat))
        env.run()
        self.totals["connections_lost"] = 0.0
        if isinstance(self.control, PspControl):
            self.totals["connections_lost"] = float(self.control.lost.sum())
        nic = self._nic_counters()
        q = self.queues
        return VariantRun(self.rows, self.totals, nic, q.percentile(50), q.percentile(99), q.max_delay)

    def _nic_counters(self) -> dict[str, np.ndarray]:
        """Per NIC at the end of the run, under Linux's names: ``psp get-stats`` (rx/tx bytes
        count the encrypted TCP segment, without PSP header and ICV), mlx5 IPsec ethtool
        counters, ``/proc/net/tls_stat``.  Packet and byte counts are of the carried traffic."""
        n, v, ctl = self.per_nic, self.v, self.control
        tcp = 20  # TCP header inside the encrypted part, per packet
        if isinstance(ctl, PspControl):
            zero = np.zeros(self.hosts)
            return {"key-rotations": ctl.rotations, "stale-events": ctl.stale_events,
                    "rx-packets": n["own_rx_packets"], "rx-bytes": n["own_rx_bytes"] + tcp * n["own_rx_packets"],
                    "rx-auth-fail": zero, "rx-error": zero, "rx-bad": zero,
                    "tx-packets": n["own_tx_packets"], "tx-bytes": n["own_tx_bytes"] + tcp * n["own_tx_packets"],
                    "tx-error": zero}
        if isinstance(ctl, IpsecControl) and v.crypto_on_nic:
            return {"ipsec_rx_pkts": n["own_rx_packets"], "ipsec_rx_bytes": n["own_rx_bytes"],
                    "ipsec_tx_pkts": n["own_tx_packets"], "ipsec_tx_bytes": n["own_tx_bytes"]}
        if isinstance(ctl, TlsControl) and v.name != "tls-user":
            return ctl.tls_stat()
        return {}

    def _windows(self, env: simpy.Environment, heartbeat: Callable[[float], None] | None):
        w, c = self.w, self.c
        start_pos = 0
        for index, t1 in enumerate(self.window_ends):
            t0 = index * self.window
            yield env.timeout(t1 - env.now)
            length = t1 - t0
            start_next = w.started_before(t1)
            arrivals = np.arange(start_pos, start_next)
            start_pos = start_next
            ends = w.end[arrivals]  # each goes to the first window that ends after it (after the run: none)
            self.ends.push(ends, at=np.searchsorted(self.window_end_times, ends, side="right"),
                           conn=arrivals.astype(self.index_type))
            # the connections (all arrived) ending before t1, in order of their end (ties: in connection order)
            departures = self.ends.take(index)["conn"].astype(self.index_type, copy=False)
            self.ledger.move(w.end[arrivals], arrivals, GONE)
            for ids, sign in ((arrivals, 1.0), (departures, -1.0)):
                self.live_ends += sign * (np.bincount(w.client[ids], minlength=self.hosts)
                                          + np.bincount(w.server[ids], minlength=self.hosts))
            out = ControlWindow(self.hosts, t0, t1)
            self.control.window(index, t0, t1, arrivals, departures, out)
            traffic = self.ledger.window(index, t0, t1)
            dp = self.dataplane.window(traffic) if self.dataplane else \
                window_dataplane(self.paths, c, self.flows, traffic.full(), self.network)
            self._record(t1, length, out, dp)
            if heartbeat is not None:
                heartbeat(t1)

    def _record(self, t1: float, length: float, out: ControlWindow, dp: dict[str, np.ndarray]) -> None:
        v, clock = self.v, self.c.host_clock_hz
        setup = out.setup_cycles / length / clock
        rekey = out.rekey_cycles / length / clock
        cores = dp["cores_stack"] + dp["cores_crypto"] + setup + rekey
        entries = self.control.nic_entries()
        nic_bytes = entries * v.nic_bytes_per_entry + v.nic_fixed_bytes
        if v.sa_based:
            host_state = self.control.host_sa_pairs() * v.host_bytes_per_connection
        else:
            host_state = self.live_ends * v.host_bytes_per_connection
        delays = self.queues.take_window_delays()
        for key, total in self.per_nic.items():
            total += dp[key] * length
        counts = out.counts
        t = self.totals
        for name in COUNTS:
            t[name] += counts[name]
        half = 0.5  # per-host figures count each byte at its sender and its receiver
        t["offered_bits"] += float(dp["offered_bps"].sum()) * half * length
        t["achieved_bits"] += float(dp["achieved_bps"].sum()) * half * length
        t["lost_bits"] += float(dp["lost_bps"].sum()) * half * length
        t["core_seconds"] += float(cores.sum()) * length
        t["nic_commands"] += len(delays)
        gbps = lambda key: float(dp[key].sum()) * half / 1e9  # noqa: E731
        cores_p50, cores_p99 = (float(x) for x in np.percentile(cores, [50, 99]))  # one partition for both
        delay_p50, delay_p99 = (float(x) for x in np.percentile(delays, [50, 99])) if len(delays) else (0.0, 0.0)
        row = {
            "time_s": t1,
            "window_s": length,
            "connections": float(self.live_ends.sum() / 2),
            "offered_gbps": gbps("offered_bps"),
            "achieved_gbps": gbps("achieved_bps"),
            "software_fallback_gbps": gbps("software_bps"),
            "waiting_gbps": gbps("waiting_bps"),
            "lost_gbps": gbps("lost_bps"),
            "overhead_gbps": gbps("overhead_bps"),
            "cores_total": float(cores.sum()),
            "cores_stack": float(dp["cores_stack"].sum()),
            "cores_crypto": float(dp["cores_crypto"].sum()),
            "cores_handshake": float(setup.sum()),
            "cores_rekey": float(rekey.sum()),
            "cores_host_p50": cores_p50,
            "cores_host_p99": cores_p99,
            "cores_host_max": float(cores.max()),
            "nic_entries_total": float(entries.sum()),
            "nic_entries_host_p50": float(np.percentile(entries, 50)),
            "nic_entries_host_max": float(entries.max()),
            "nic_bytes_host_max": float(nic_bytes.max()),
            "hosts_over_nic_capacity": int((entries > v.nic_capacity).sum()),
            "host_state_bytes_total": float(host_state.sum()),
            "host_state_bytes_host_max": float(host_state.max()),
            "nic_engine_util_p50": float(np.percentile(dp["nic_engine_util"], 50)),
            "nic_engine_util_max": float(dp["nic_engine_util"].max()),
            "cache_miss_ratio_mean": float(dp["cache_miss_ratio"].mean()),
            "cache_miss_ratio_max": float(dp["cache_miss_ratio"].max()),
            "added_latency_us_mean": float(dp["added_latency_us"].mean()),
            **{f"{name}_in_window": float(counts[name]) for name in COUNTS},
            "rekeys_in_window": float(out.rekeys),
            "nic_commands_in_window": float(len(delays)),
            "handshakes_per_s": counts["handshakes"] / length,
            "rekeys_per_s": out.rekeys / length,
            "command_delay_p50_us": delay_p50 * 1e6,
            "command_delay_p99_us": delay_p99 * 1e6,
            "command_delay_max_us": float(delays.max() * 1e6) if len(delays) else 0.0,
        }
        self.rows.append(row)
