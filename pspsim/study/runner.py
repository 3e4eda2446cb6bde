"""Run a scenario for every variant and replication; results as DataFrames and files.

Seeds: replication ``r`` uses the r-th child of ``SeedSequence(run.seed)``;
each of its variants gets fresh generators from that child, one per purpose
(:mod:`pspsim.model.streams`), so every variant sees the same workload and
the same random events, and adding a variant changes no other variant's
numbers.  :func:`run_one` runs one (replication, variant) and is what
executors distribute.

Files (``write_results``): ``timeseries.parquet`` (one row per window,
variant and replication), ``summary.parquet`` (one row per variant and
replication), ``manifest.json`` (the resolved scenario, the resolved cost
parameters, seed, package versions, wall time) and ``comparison.png``.
They are written to a temporary folder beside the target and moved into
place at the end, so a failed run leaves nothing half-written, and the
leftovers of a run killed while moving them are repaired by the next.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from pspsim import __version__
from pspsim.costs.params import ParameterSet, load_parameter_set
from pspsim.model.control import REKEY_KINDS
from pspsim.model.simulation import FleetSimulation, VariantRun
from pspsim.model.streams import RandomStreams, replication_seed, replication_sequence
from pspsim.model.variants import make_variant
from pspsim.model.workload import Workload, generate_workload
from pspsim.scenario import Scenario
from pspsim.study.allocator import (
    TRIM_ABOVE_FRACTION,
    TRIM_FREE_BYTES,
    FreedMemoryWatch,
    physical_memory,
    release_freed_memory,
)
from pspsim.study.budget import duration_text
from pspsim.wire.errors import ConfigError

# Relative wall time of each variant's run (fleet-1k, 24 h, one process; plaintext = 1): the order in
# which runs are handed to an executor, longest first, so that the slowest run does not start last
# (longest-processing-time-first scheduling).  It orders work only; results do not depend on it.
RELATIVE_COST = {"ktls-offload": 4.3, "psp": 3.8, "ipsec-crypto-offload": 2.0, "ipsec-packet-offload": 1.8,
                 "ipsec-sw": 1.4, "tls-user": 1.0, "ktls-sw": 1.1, "plaintext": 1.0}


def slowest_first(runs: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """``(replication, variant)`` runs ordered by ``RELATIVE_COST``, longest first (stable)."""
    return sorted(runs, key=lambda run: -RELATIVE_COST.get(run[1], 1.0))


@dataclass
class Results:
    timeseries: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict
    packets: pd.DataFrame | None = None  # packet-tier summary, when a capture was asked for
    nic_counters: pd.DataFrame | None = None  # per NIC at run end, Linux counter names (one row per NIC)


def _summary_row(run: VariantRun, scenario: Scenario) -> dict[str, float]:
    """The summary of one run; every column is defined in the README ("Result columns")."""
    ts = pd.DataFrame(run.rows)
    hosts, duration = scenario.fleet.hosts, scenario.run.duration
    t = run.totals
    span = ts["window_s"]
    mean = lambda col: float((ts[col] * span).sum() / span.sum())  # noqa: E731  time-weighted
    achieved = mean("achieved_gbps")
    per_s = {f"{kind}_per_s": t[kind] / duration for kind in REKEY_KINDS}
    return {
        "nic_entries_per_host_peak": float(ts["nic_entries_host_max"].max()),
        "nic_entries_per_host_mean": mean("nic_entries_total") / hosts,
        "nic_bytes_per_host_peak": float(ts["nic_bytes_host_max"].max()),
        "host_state_bytes_per_host_mean": mean("host_state_bytes_total") / hosts,
        "hosts_over_nic_capacity_peak": float(ts["hosts_over_nic_capacity"].max()),
        "cores_mean": mean("cores_total"),
        "cores_peak": float(ts["cores_total"].max()),
        "cores_crypto_mean": mean("cores_crypto"),
        "cores_per_100gbps": mean("cores_total") / (achieved / 100) if achieved > 0 else float("nan"),
        "handshakes_per_s": t["handshakes"] / duration,
        "handshakes_per_s_peak": float(ts["handshakes_per_s"].max()),
        "rekeys_per_s": sum(t[kind] for kind in REKEY_KINDS) / duration,
        "rekeys_per_s_peak": float(ts["rekeys_per_s"].max()),
        **per_s,
        "key_rotations": t["key_rotations"],
        "psp_stale_events": t["psp_stale_events"],
        "offload_fallbacks": t["offload_fallbacks"],
        "offload_failures": t["offload_failures"],
        "nic_commands_per_s": t["nic_commands"] / duration,
        "command_delay_p50_us": run.command_delay_p50_s * 1e6,
        "command_delay_p99_us": run.command_delay_p99_s * 1e6,
        "command_delay_max_us": run.command_delay_max_s * 1e6,
        "connections_lost": t["connections_lost"],
        "bytes_lost": t["lost_bits"] / 8,
        "offered_gbps_mean": mean("offered_gbps"),
        "achieved_gbps_mean": achieved,
        "achieved_fraction": t["achieved_bits"] / t["offered_bits"] if t["offered_bits"] > 0 else float("nan"),
        "software_fallback_gbps_mean": mean("software_fallback_gbps"),
        "overhead_gbps_mean": mean("overhead_gbps"),
        "cache_miss_ratio_max": float(ts["cache_miss_ratio_max"].max()),
        "added_latency_us_mean": mean("added_latency_us_mean"),
    }


@dataclass
class RunOutput:
    """One (replication, variant) run: its time series and its summary row, each
    carrying the key columns (scenario, variant, replication, seed, spawn_key)."""

    timeseries: pd.DataFrame
    summary: dict[str, object]
    wall_time_s: float
    nic_counters: pd.DataFrame | None = None  # one row per NIC at the end of the run


def resolve_parameters(scenario: Scenario) -> ParameterSet:
    """The scenario's parameter set with its overrides applied."""
    return load_parameter_set(scenario.costs.parameter_set).with_overrides(scenario.costs.overrides)


_last_workload: dict[str, Workload] = {}  # this process's last workload (see replication_workload)


def replication_workload(scenario: Scenario, replication: int) -> Workload:
    """Replication ``replication``'s workload, drawn from its workload stream.  Every variant of a
    replication has the same one (common random numbers), so a process that runs several of them
    one after another (a pool or Dask worker, or ``run_scenario`` in process) draws it once: it keeps
    the last one (its arrays are read-only; ``forget_workload`` drops it).  Runs of another
    replication in between draw theirs again."""
    key = json.dumps([scenario.fleet.model_dump(mode="json"), scenario.workload.model_dump(mode="json"),
                      float(scenario.run.duration), int(scenario.run.seed), int(replication)])
    if key not in _last_workload:
        _last_workload.clear()
        streams = RandomStreams.from_sequence(replication_sequence(scenario.run.seed, replication))
        _last_workload[key] = generate_workload(scenario, streams.workload)
    return _last_workload[key]


def forget_workload() -> None:
    """Drop the workload ``replication_workload`` keeps."""
    _last_workload.clear()


def run_one(scenario: Scenario, params: ParameterSet, replication: int, variant: str,
            heartbeat_s: float | None = None) -> RunOutput:
    """Run one variant for one replication; self-contained and deterministic, so
    any executor (a process pool, a Dask worker) gives the same bytes.

    Replication ``r`` draws from ``SeedSequence(scenario.run.seed).spawn(...)[r]``;
    every variant of it gets fresh generators from that same sequence (common
    random numbers), so the workload and the random events are the same.  With
    ``heartbeat_s``, a line on this process's stderr every ``heartbeat_s`` seconds says
    how far the run has got (a long run is not silent)."""
    t0 = time.time()
    # what an earlier run of this process left, if much: its peak is not added to this one's
    release_freed_memory(if_resident_above=TRIM_ABOVE_FRACTION * physical_memory(), if_free_above=TRIM_FREE_BYTES)
    seq = replication_sequence(scenario.run.seed, replication)
    costs = params.costs()
    streams = RandomStreams.from_sequence(seq)
    workload = replication_workload(scenario, replication)
    sim = FleetSimulation(scenario, make_variant(variant, costs, scenario.keys), workload, costs, streams)
    beat = None if heartbeat_s is None else Heartbeat(f"{variant} (replication {replication})",
                                                      scenario.run.duration, heartbeat_s, t0)
    watch = FreedMemoryWatch()  # freed heap handed back as the run goes, not only between runs

    def after_window(simulated: float) -> None:
        watch(simulated)
        if beat is not None:
            beat(simulated)

    run = sim.run(after_window)
    key = {"scenario": scenario.run.name, "variant": variant, "replication": replication,
           "seed": replication_seed(seq), "spawn_key": str(replication)}
    timeseries = pd.DataFrame([key | row for row in run.rows])
    counters = None
    if run.nic_counters:
        counters = pd.DataFrame({"nic": np.arange(scenario.fleet.hosts)} | {
            name: np.asarray(values, dtype=np.float64) for name, values in run.nic_counters.items()})
        for column, value in reversed(key.items()):
            counters.insert(0, column, value)
    return RunOutput(timeseries, key | _summary_row(run, scenario), time.time() - t0, counters)


class Heartbeat:
    """Called with the simulated time after each window: every ``every_s`` seconds of wall time,
    one stderr line such as ``psp (replication 0): 6 h of 24 h simulated, 2.5 min``."""

    def __init__(self, label: str, duration: float, every_s: float, started: float) -> None:
        self.label, self.duration, self.every_s = label, duration, every_s
        self.started = self.last = started

    def __call__(self, simulated: float) -> None:
        now = time.time()
        if now - self.last >= self.every_s and simulated < self.duration:
            self.last = now
            print(f"  {self.label}: {duration_text(simulated)} of {duration_text(self.duration)} simulated, "
                  f"{duration_text(now - self.started)}", file=sys.stderr, flush=True)


def manifest_for(scenario: Scenario, params: ParameterSet, wall_time_s: float) -> dict:
    return {
        "scenario": scenario.model_dump(mode="json"),
        "parameters": {"set": params.name, "values": {n: p.value for n, p in params.parameters.items()},
                       "overridden": sorted(n for n, p in params.parameters.items() if p.kind == "override")},
        "seed": scenario.run.seed,
        "versions": {"pspsim": __version__, "python": platform.python_version(),
                     **{pkg: metadata.version(pkg) for pkg in ("numpy", "pandas", "simpy", "pyarrow", "cryptography")}},
        "wall_time_s": round(wall_time_s, 3),
    }


def run_scenario(
    scenario: Scenario,
    params: ParameterSet | None = None,
    progress: Callable[[str], None] | None = None,
    capture_host: int | None = None,
    capture_dir: str | os.PathLike[str] | None = None,
    executor: Executor | None = None,
    capture_variants: Sequence[str] = ("psp",),
    heartbeat_s: float | None = None,
) -> Results:
    """Run every replication and variant of ``scenario``; returns tidy tables.

    With ``capture_host``, replication 0 also runs the packet tier for each
    variant (sampling the scenario's ``[packets]`` hosts, or that host) and
    writes its traffic as pcap files into ``capture_dir``, for ``capture_variants``.  With
    ``executor`` (a ``concurrent.futures.Executor``), the runs go through it: same tables.  With
    ``heartbeat_s``, each run says how far it has got every ``heartbeat_s`` seconds (on the stderr
    of the process that runs it), besides ``progress`` when it is done."""
    started = time.time()
    params = params or resolve_parameters(scenario)
    costs = params.costs()
    series, summary, packet_rows, counters = [], [], [], []
    runs = [(replication, name) for replication in range(scenario.run.replications) for name in scenario.run.variants]
    if executor is None:
        outputs: Iterable[RunOutput] = (run_one(scenario, params, r, name, heartbeat_s=heartbeat_s) for r, name in runs)
    else:  # all submitted at once, slowest first (the workers finish together); collected in order
        futures = {run: executor.submit(run_one, scenario, params, *run, heartbeat_s=heartbeat_s)
                   for run in slowest_first(runs)}
        outputs = (futures[run].result() for run in runs)
    for (replication, name), out in zip(runs, outputs):
        series.append(out.timeseries)
        if out.nic_counters is not None:
            counters.append(out.nic_counters)
        summary.append(out.summary)
        if capture_host is not None and replication == 0 and name in capture_variants:
            seq = replication_sequence(scenario.run.seed, replication)
            RandomStreams.from_sequence(seq)  # the tier's streams are the sequence's second spawn, as always
            workload = replication_workload(scenario, replication)
            key = {k: out.summary[k] for k in ("scenario", "variant", "replication", "seed")}
            packet_rows.append(key | _capture(scenario, name, costs, workload, seq, capture_host, capture_dir))
        if progress:
            progress(f"{name} (replication {replication}): {out.wall_time_s:.1f} s")
    forget_workload()  # this process's copy (workers' copies go with the workers)
    manifest = manifest_for(scenario, params, time.time() - started)
    return Results(pd.concat(series, ignore_index=True), pd.DataFrame(summary), manifest,
                   pd.DataFrame(packet_rows) if packet_rows else None,
                   pd.concat(counters, ignore_index=True) if counters else None)


def _capture(scenario, name, costs, workload, seq, host, directory) -> dict[str, object]:
    from pspsim.packets.result import result_row
    from pspsim.packets.tier import PacketTier

    if not 0 <= host < scenario.fleet.hosts:
        raise ConfigError(f"--pcap host {host} is not in the fleet (0..{scenario.fleet.hosts - 1})")
    if scenario.packets.hosts is None:
        scenario = scenario.model_copy(update={"packets": scenario.packets.model_copy(update={"hosts": [host]})})
    tier = PacketTier(scenario, name, costs, workload, RandomStreams.from_sequence(seq).packets,
                      capture_host=host, capture_dir=str(directory))
    return result_row(tier.run())


_PID_FILE = ".pspsim-writing"


def _writer_alive(folder: Path) -> bool:
    """Whether the run that is writing ``folder`` (its pid file) is still running."""
    try:
        pid = int((folder / _PID_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def recover_results_folder(out: Path) -> list[str]:
    """Clean up after a run that was killed while writing ``out``; returns what was done.

    A kill between the two renames that swap new results in leaves ``out``
    missing and the earlier results in ``.out.old``: they are put back.  A
    kill after the swap leaves ``.out.old`` beside the new ``out``: it is
    removed.  A kill while writing leaves a ``.out.xxxxxxxx`` folder: it is
    removed unless the run that writes it is still alive."""
    done: list[str] = []
    parent = out.parent if str(out.parent) else Path(".")
    old = parent / f".{out.name}.old"
    if old.is_dir() and not old.is_symlink():
        if not out.exists() and not out.is_symlink():
            old.rename(out)
            done.append(f"restored the earlier results from {old}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old}")
    if parent.is_dir():
        pattern = re.compile(rf"\.{re.escape(out.name)}\.[A-Za-z0-9_]{{8}}")
        for leftover in parent.iterdir():
            if pattern.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink() \
                    and not _writer_alive(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
                done.append(f"removed {leftover}, left by an interrupted run")
    return done


def check_results_folder(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier pspsim results folder."""
    out = Path(out)
    if out.is_symlink():
        raise ConfigError(f"{out}: is a symbolic link; give the folder it points to")
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / "manifest.json").exists():
        raise ConfigError(f"{out}: refusing to replace a folder that is not pspsim results (no manifest.json)")


def write_results(results: Results, out_dir: str | os.PathLike[str],
                  figure: Callable[[pd.DataFrame, Path], object] | None = None,
                  captures: str | os.PathLike[str] | None = None) -> Path:
    """Write the tables, manifest and figure to ``out_dir`` (replacing it) atomically;
    the files in ``captures`` (pcaps, key files) go to ``out_dir/pcap``.

    The files are written to a hidden folder beside the target (holding the
    writer's pid until complete), then swapped in with two renames: the
    earlier folder to ``.NAME.old``, the new one to ``NAME``, and the old one
    removed.  Leftovers of a run killed at any point are repaired by the next
    call (:func:`recover_results_folder`)."""
    out = Path(out_dir)
    recover_results_folder(out)
    check_results_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / _PID_FILE).write_text(str(os.getpid()))
        results.timeseries.to_parquet(tmp / "timeseries.parquet", index=False)
        results.summary.to_parquet(tmp / "summary.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(results.manifest, indent=2, sort_keys=True,
                                                      allow_nan=False) + "\n")
        if results.nic_counters is not None:
            results.nic_counters.to_parquet(tmp / "nic_counters.parquet", index=False)
        if results.packets is not None:
            results.packets.to_parquet(tmp / "packets.parquet", index=False)
        if captures is not None:  # moved, not copied: captures can be large
            shutil.move(str(captures), str(tmp / "pcap"))
            os.makedirs(captures, exist_ok=True)
        if figure:  # drawn by the caller's function (figures sit above the study layer)
            figure(results.timeseries, tmp / "comparison.png")
        (tmp / _PID_FILE).unlink()
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
