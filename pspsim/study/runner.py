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
place at the end, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from pspsim import __version__
from pspsim.costs.params import ParameterSet, load_parameter_set
from pspsim.model.simulation import FleetSimulation, VariantRun
from pspsim.model.streams import RandomStreams, replication_seed, replication_sequence
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from pspsim.scenario import Scenario
from pspsim.wire.errors import ConfigError


@dataclass
class Results:
    timeseries: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict
    packets: pd.DataFrame | None = None  # packet-tier summary, when a capture was asked for


def _summary_row(run: VariantRun, scenario: Scenario) -> dict[str, float]:
    ts = pd.DataFrame(run.rows)
    hosts = scenario.fleet.hosts
    duration = scenario.run.duration
    t = run.totals
    achieved = ts["achieved_gbps"].mean()
    return {
        "nic_entries_per_host_peak": float(run.host_peak_nic_entries.max()),
        "nic_entries_per_host_mean": float(ts["nic_entries_total"].mean() / hosts),
        "nic_bytes_per_host_peak": float(ts["nic_bytes_host_max"].max()),
        "host_state_bytes_per_host_mean": float(ts["host_state_bytes_total"].mean() / hosts),
        "hosts_over_nic_capacity_peak": float(ts["hosts_over_nic_capacity"].max()),
        "cores_mean": float(ts["cores_total"].mean()),
        "cores_crypto_mean": float(ts["cores_crypto"].mean()),
        "cores_per_100gbps": float(ts["cores_total"].mean() / max(achieved / 100, 1e-12)),
        "handshakes_per_s": t["handshakes"] / duration,
        "rekeys_per_s": t["rekeys"] / duration,
        "key_rotations": t["rotations"],
        "nic_commands_per_s": t["commands"] / duration,
        "command_delay_p50_us": float(ts["command_delay_p50_us"].median()),
        "command_delay_p99_us": float(ts["command_delay_p99_us"].max()),
        "connections_lost": t["connections_lost"],
        "bytes_lost": t["bytes_lost"],
        "offered_gbps_mean": float(ts["offered_gbps"].mean()),
        "achieved_gbps_mean": float(achieved),
        # delivered: what the network carried, less the traffic dropped on expired keys
        "achieved_fraction": float((t["achieved_bits"] - 8 * t["bytes_lost"]) / max(t["offered_bits"], 1e-12)),
        "overhead_gbps_mean": float(ts["overhead_gbps"].mean()),
        "cache_miss_ratio_max": float(ts["cache_miss_ratio_max"].max()),
        "added_latency_us_mean": float(ts["added_latency_us_mean"].mean()),
    }


@dataclass
class RunOutput:
    """One (replication, variant) run: its time series and its summary row, each
    carrying the key columns (scenario, variant, replication, seed, spawn_key)."""

    timeseries: pd.DataFrame
    summary: dict[str, object]
    wall_time_s: float


def resolve_parameters(scenario: Scenario) -> ParameterSet:
    """The scenario's parameter set with its overrides applied."""
    return load_parameter_set(scenario.costs.parameter_set).with_overrides(scenario.costs.overrides)


def run_one(scenario: Scenario, params: ParameterSet, replication: int, variant: str) -> RunOutput:
    """Run one variant for one replication; self-contained and deterministic, so
    any executor (a process pool, a Dask worker) gives the same bytes.

    Replication ``r`` draws from ``SeedSequence(scenario.run.seed).spawn(...)[r]``;
    every variant of it gets fresh generators from that same sequence (common
    random numbers), so the workload and the random events are the same."""
    t0 = time.time()
    seq = replication_sequence(scenario.run.seed, replication)
    costs = params.costs()
    streams = RandomStreams.from_sequence(seq)
    workload = generate_workload(scenario, streams.workload)
    run = FleetSimulation(scenario, make_variant(variant, costs, scenario.keys), workload, costs, streams).run()
    key = {"scenario": scenario.run.name, "variant": variant, "replication": replication,
           "seed": replication_seed(seq), "spawn_key": str(replication)}
    timeseries = pd.DataFrame([key | row for row in run.rows])
    return RunOutput(timeseries, key | _summary_row(run, scenario), time.time() - t0)


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
    capture_variants: Sequence[str] = ("psp",),
) -> Results:
    """Run every replication and variant of ``scenario``; returns tidy tables.

    With ``capture_host``, replication 0 also runs the packet tier for each
    variant (sampling the scenario's ``[packets]`` hosts, or that host) and
    writes its traffic as pcap files into ``capture_dir``, for ``capture_variants``."""
    started = time.time()
    params = params or resolve_parameters(scenario)
    costs = params.costs()
    series, summary, packet_rows = [], [], []
    for replication in range(scenario.run.replications):
        for name in scenario.run.variants:
            out = run_one(scenario, params, replication, name)
            series.append(out.timeseries)
            summary.append(out.summary)
            if capture_host is not None and replication == 0 and name in capture_variants:
                seq = replication_sequence(scenario.run.seed, replication)
                streams = RandomStreams.from_sequence(seq)
                workload = generate_workload(scenario, streams.workload)
                key = {k: out.summary[k] for k in ("scenario", "variant", "replication", "seed")}
                packet_rows.append(key | _capture(scenario, name, costs, workload, seq, capture_host, capture_dir))
            if progress:
                progress(f"{name} (replication {replication}): {out.wall_time_s:.1f} s")
    manifest = manifest_for(scenario, params, time.time() - started)
    return Results(pd.concat(series, ignore_index=True), pd.DataFrame(summary), manifest,
                   pd.DataFrame(packet_rows) if packet_rows else None)


def _capture(scenario, name, costs, workload, seq, host, directory) -> dict[str, object]:
    from pspsim.packets.tier import PacketTier, result_row

    if not 0 <= host < scenario.fleet.hosts:
        raise ConfigError(f"--pcap host {host} is not in the fleet (0..{scenario.fleet.hosts - 1})")
    if scenario.packets.hosts is None:
        scenario = scenario.model_copy(update={"packets": scenario.packets.model_copy(update={"hosts": [host]})})
    tier = PacketTier(scenario, name, costs, workload, RandomStreams.from_sequence(seq).packets,
                      capture_host=host, capture_dir=str(directory))
    return result_row(tier.run())


def check_results_folder(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier pspsim results folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / "manifest.json").exists():
        raise ConfigError(f"{out}: refusing to replace a folder that is not pspsim results (no manifest.json)")


def write_results(results: Results, out_dir: str | os.PathLike[str], figure: bool = True,
                  captures: str | os.PathLike[str] | None = None) -> Path:
    """Write the tables, manifest and figure to ``out_dir`` (replacing it) atomically;
    the files in ``captures`` (pcaps, key files) go to ``out_dir/pcap``."""
    out = Path(out_dir)
    check_results_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        results.timeseries.to_parquet(tmp / "timeseries.parquet", index=False)
        results.summary.to_parquet(tmp / "summary.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(results.manifest, indent=2, sort_keys=True) + "\n")
        if results.packets is not None:
            results.packets.to_parquet(tmp / "packets.parquet", index=False)
        if captures is not None:  # moved, not copied: captures can be large
            shutil.move(str(captures), str(tmp / "pcap"))
            os.makedirs(captures, exist_ok=True)
        if figure:
            from pspsim.figures import comparison_figure

            comparison_figure(results.timeseries, tmp / "comparison.png")
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
