"""What a run would need, estimated from the scenario before it starts.

A scenario with ``window = 1e-9`` or a billion racks is valid but cannot
finish; rather than hang, the command refuses it in one line naming what it
would need and which setting to change (``--force`` runs it anyway).

The estimate counts what the fleet model's cost grows with:

* connections = hosts x mean connections per host x (1 + duration /
  lifetime): the ones open at time 0 and the arrivals that keep the count
  steady (the workload's own rule, :mod:`pspsim.model.workload`);
* windows = ceil(duration / window);
* runs = variants x replications, run ``jobs`` at a time (``-j``): each worker
  process holds one run's memory, so memory grows with the workers and time
  shrinks with them;
* packet-tier packets (``crosscheck``, ``run --pcap``): sampled connections
  (at most ``packets.max_connections``) x ``packets.duration`` x messages
  per second x (segments per request and response);
* PSP re-keys: each rotation of a NIC asks every connection with an end on
  it to re-key, so the live connections (hosts x connections per host) are
  asked ``2 / psp_rotation_period`` times a second (an upper bound with
  reconnect re-keys); the busiest window holds those of the NICs that rotate
  in it, which depends on ``psp_rotation_schedule`` (:func:`psp_rekeys`).  A
  2-minute rotation puts about a million in each window of the
  short-rotation scenario (5 M NIC commands), a cost the terms above do not
  have (they were measured with daily rotation).

Time = runs x (connections x ``SECONDS_PER_CONNECTION`` + hosts x
``SECONDS_PER_HOST`` + windows x
(``SECONDS_PER_WINDOW`` + hosts x ``SECONDS_PER_HOST_WINDOW``)) + packets x
``SECONDS_PER_PACKET``; memory = connections x ``BYTES_PER_CONNECTION`` +
hosts x ``BYTES_PER_HOST`` + windows x runs x ``BYTES_PER_WINDOW`` + a fixed base; a
scenario with PSP adds, for its PSP runs, re-keys x ``SECONDS_PER_REKEY`` of time and its largest
window's re-keys x ``BYTES_PER_REKEY`` of memory for each PSP run at once.  The
coefficients were measured on the development machine (one core of a
2-core VM, idle and with the other core busy) and rounded up; benchmarks/bench_budget.py compares the estimate
with measured runs.  A faster machine only makes the refusal conservative.  Limits: the memory this machine has
available (``/proc/meminfo`` MemAvailable) and ``MAX_HOURS`` of wall time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from pspsim.scenario import Scenario
from pspsim.wire.errors import ConfigError

# Measured (see the module docstring); rounded up.
SECONDS_PER_CONNECTION = 1.0e-5  # fleet-1k, 24 h, 7 M connections: 5.0e-6 (plaintext) to 2.4e-5 (kTLS offload) per
# variant, 7.5e-6 on average over the 8 variants, idle (the slowest variant sets the wall time of a -j run)
SECONDS_PER_WINDOW = 2.5e-3  # measured 1.25e-3 idle, 2.0e-3 busy (100 hosts, 1,440 windows)
SECONDS_PER_HOST_WINDOW = 1.0e-6  # measured 2.7e-7 idle, 8e-7 at load 11 (100 -> 1,000 hosts, 2 variants)
SECONDS_PER_PACKET = 2.0e-5  # bench_packet_tier: about 7e-6 per packet sealed, carried and opened
SECONDS_PER_HOST = 3.0e-5  # workload: each host draws its peers (one numpy call per host)
BYTES_PER_HOST = 256  # per-host arrays of the workload and the model
BYTES_PER_CONNECTION = 140  # peak RSS less the base, per connection of the run: fleet-10k PSP 117 (7.8 GiB, 70 M),
# fleet-1k PSP 126 (1.02 GiB, 7 M); bench_budget's 1.2 M-connection run about 120
BYTES_PER_WINDOW = 4096  # one result row per window and variant run, kept until the end
# PSP re-key waves, beyond the terms above (peak RSS and wall time less the estimate without them,
# over the mean re-keys of a window / of the run; staggered rotations): memory on three runs, short
# rotation (1 M a window, 60 M in all) 1,040 bytes, 500,000 connections at a 1-minute rotation with
# 30 s windows 1,050 bytes, in-place re-keys at a 5-minute rotation (160,000 a window) 670 bytes;
# time on one, short rotation, 0.68 us (the other two were over-estimated without the term)
BYTES_PER_REKEY = 1500
SECONDS_PER_REKEY = 1.0e-6
BASE_BYTES = 200 << 20  # measured 140 MiB: interpreter, numpy, pandas, simpy
MAX_HOURS = 24.0
SEGMENT_BYTES = 1448  # TCP payload per packet at a 1500-byte MTU


class BudgetExceeded(ConfigError):
    """The run would need more memory or time than this machine has: one line, exit 2."""


@dataclass(frozen=True)
class Estimate:
    connections: float
    windows: float
    runs: int
    packets: float
    memory_bytes: float
    seconds: float
    rekeys: float = 0.0  # a PSP run's re-keys
    busiest_rekeys: float = 0.0  # and those of its busiest window


def estimate(scenario: Scenario, packets: bool = False, jobs: int = 1) -> Estimate:
    """Connections, windows, runs, packets, peak memory and wall time of a run whose variant
    runs go ``jobs`` at a time (one per worker process)."""
    run, fleet, w = scenario.run, scenario.fleet, scenario.workload
    hosts = float(fleet.hosts)
    per_host = w.connections_per_host.mean
    life = w.connection_lifetime
    connections = hosts * per_host * (1 + (run.duration / life if life > 0 else 0))
    windows = math.ceil(run.duration / run.window - 1e-9)
    runs = len(run.variants) * run.replications
    n_packets = 0.0
    if packets:
        sampled = min(float(scenario.packets.max_connections), connections)
        per_message = 2 + w.message_bytes.mean * (1 + w.response_ratio) / SEGMENT_BYTES
        n_packets = sampled * scenario.packets.duration * w.messages_per_second.mean * per_message
        n_packets *= len(run.variants)
    workers = max(1, min(jobs, runs))
    per_run = connections * BYTES_PER_CONNECTION + hosts * BYTES_PER_HOST + BASE_BYTES
    memory = workers * per_run + windows * runs * BYTES_PER_WINDOW + (BASE_BYTES if workers > 1 else 0)
    seconds = math.ceil(runs / workers) * (connections * SECONDS_PER_CONNECTION + hosts * SECONDS_PER_HOST
                                           + windows * (SECONDS_PER_WINDOW + hosts * SECONDS_PER_HOST_WINDOW)) \
        + n_packets * SECONDS_PER_PACKET
    rekeys, widest = psp_rekeys(scenario)
    if rekeys:  # the PSP runs (one per replication), as many at once as there are workers
        at_once = min(workers, run.replications)
        memory += at_once * widest * BYTES_PER_REKEY
        seconds += math.ceil(run.replications / at_once) * rekeys * SECONDS_PER_REKEY
    return Estimate(connections, float(windows), runs, n_packets, memory, seconds, rekeys, widest)


def psp_rekeys(scenario: Scenario) -> tuple[float, float]:
    """A PSP run's re-key requests, in all and in its busiest window (0, 0 without PSP).  Each
    rotation of a NIC asks every live connection with an end on it to re-key (about ``2 x live /
    hosts`` ends a NIC), so every connection is asked twice a period: exactly so with in-place
    re-keys, an upper bound with reconnects (a reconnect still pending covers the other end's
    rotation).  The busiest window holds the NICs that rotate in it: every NIC when they are
    synchronized, the racks whose rotations fall within one window's length of each other (rack
    ``r`` at ``r x gap`` modulo the period: a gap of a whole period puts every rack at once), or
    for staggered phases the mean ``hosts x window / period`` plus three standard deviations
    (Poisson); their ends are ``2 x live / hosts`` a NIC on average, plus three standard deviations
    of the server ends the workload draws."""
    run, w, keys, fleet = scenario.run, scenario.workload, scenario.keys, scenario.fleet
    if "psp" not in run.variants:
        return 0.0, 0.0
    hosts = float(fleet.hosts)
    live = hosts * w.connections_per_host.mean
    period = keys.psp_rotation_period
    schedule, gap = keys.psp_rotation_schedule, keys.psp_rack_wave_gap
    if schedule == "synchronized":
        nics = hosts
    elif schedule == "rack-waves":
        nics = _racks_within(fleet.racks, gap, period, run.window) * fleet.hosts_per_rack
    else:
        mean = hosts * run.window / period
        nics = min(hosts, mean + 3 * math.sqrt(mean) + 1)
    ends = nics * 2 * live / hosts  # their connection ends: as clients exactly, as servers as drawn
    return 2 * live / period * run.duration, min(2 * live, ends + 3 * math.sqrt(ends / 2))


def _racks_within(racks: int, gap: float, period: float, window: float) -> int:
    """The most racks whose rotation offsets (``r x gap`` modulo ``period``) lie within ``window``
    of each other, around the circle: an upper bound on the racks that rotate in one window."""
    offsets = np.sort(np.mod(np.arange(racks) * gap, period))
    around = np.concatenate([offsets, offsets + period])
    return int((np.searchsorted(around, offsets + window, side="left") - np.arange(racks)).max())


def available_memory() -> float:
    """Bytes of memory available to a new run (MemAvailable; physical memory if unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _amount(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value < 1e6 else f"{value:.2e} {unit}"


def bytes_text(value: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if value >= size:
            return f"{value / size:,.3g} {unit}" if value < 1e6 * size else f"{value / size:.2e} {unit}"
    return f"{value:,.0f} B"


def duration_text(seconds: float) -> str:
    """``seconds`` in the largest unit it reaches, to three digits: ``45 s``, ``2.5 min``, ``1 day``."""
    if math.isfinite(seconds):
        seconds = float(f"{seconds:.3g}")  # 59.99 s is 1 min, 86,401 s 1 day
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{seconds / size:,.3g}" if seconds < 1e6 * size else f"{seconds / size:.2e}"
            return f"{text} {unit[:-1] if text == '1' and unit.endswith('s') else unit}"
    return f"{seconds:.3g} s"


def _largest_setting(scenario: Scenario, est: Estimate, packets: bool) -> str:
    """The setting that most of the cost comes from, as advice."""
    per_run_windows = est.windows * (SECONDS_PER_WINDOW + scenario.fleet.hosts * SECONDS_PER_HOST_WINDOW)
    per_run_connections = est.connections * SECONDS_PER_CONNECTION + scenario.fleet.hosts * SECONDS_PER_HOST
    parts = {
        "run.window (larger) or run.duration (shorter)": est.runs * per_run_windows,
        "fleet.racks/hosts_per_rack, workload.connections_per_host or run.duration":
            est.runs * per_run_connections,
    }
    if packets:
        parts["packets.duration or packets.max_connections"] = est.packets * SECONDS_PER_PACKET
    if est.rekeys:  # one PSP run per replication
        parts["keys.psp_rotation_period (longer)"] = scenario.run.replications * est.rekeys * SECONDS_PER_REKEY
    if est.memory_bytes > available_memory():
        memory = {
            "run.window (larger) or run.duration (shorter)": est.windows * est.runs * BYTES_PER_WINDOW,
            "fleet.racks/hosts_per_rack, workload.connections_per_host or run.duration":
                est.connections * BYTES_PER_CONNECTION,
            # a wave holds the connections of the NICs that rotate in one window
            "workload.connections_per_host, keys.psp_rotation_schedule (staggered) or keys.psp_rotation_period "
            "(longer)": est.busiest_rekeys * BYTES_PER_REKEY,
        }
        return max(memory, key=memory.__getitem__)
    return max(parts, key=parts.__getitem__)


def jobs_that_fit(scenario: Scenario, jobs: int, packets: bool = False) -> int:
    """The most worker processes, at most ``jobs``, whose runs fit this machine's memory at once
    (at least 1: whether one run fits is :func:`check_budget`'s question)."""
    memory = available_memory()
    while jobs > 1 and estimate(scenario, packets, jobs).memory_bytes > memory:
        jobs -= 1
    return jobs


def check_budget(scenario: Scenario, packets: bool = False, max_hours: float = MAX_HOURS,
                 jobs: int = 1) -> Estimate:
    """Raise :class:`BudgetExceeded` (one line) when the run, ``jobs`` variant runs at a time,
    cannot fit this machine."""
    est = estimate(scenario, packets, jobs)
    memory = available_memory()
    problems = []
    if est.memory_bytes > memory:
        problems.append(f"{bytes_text(est.memory_bytes)} of memory ({bytes_text(memory)} available)")
    if est.seconds > max_hours * 3600:
        problems.append(f"about {duration_text(est.seconds)} ({max_hours:g} h allowed)")
    if problems:
        what = (f"{_amount(est.connections, 'connections')}, {_amount(est.windows, 'windows')}, "
                f"{est.runs} variant runs" + (f", {_amount(est.packets, 'packets')}" if packets else ""))
        raise BudgetExceeded(
            f"this run would need {' and '.join(problems)} for {what}; change "
            f"{_largest_setting(scenario, est, packets)}, or pass --force to run it anyway")
    return est
