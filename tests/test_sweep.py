"""Sweeps: sweep files, points, seeds, executors (this process, a real process
pool, a real Dask LocalCluster), failures, aggregation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pspsim.scenario import scenario_from_dict
from pspsim.study import load_sweep, read_sweep, run_sweep
from pspsim.study.aggregate import confidence_interval, summarize
from pspsim.study.executors import process_pool
from pspsim.study.runner import resolve_parameters, run_one
from pspsim.study.sweep import sweep_from_dict
from pspsim.wire.errors import ConfigError

distributed = pytest.importorskip("dask.distributed")

BASE = {
    "run": {"name": "tiny", "seed": 5, "duration": "20min", "window": "2min", "variants": ["psp", "ipsec-sw"]},
    "fleet": {"racks": 2, "hosts_per_rack": 3},
    "workload": {"connections_per_host": {"kind": "exponential", "mean": 20}, "peers_per_host": 2,
                 "connection_lifetime": "5min"},
    "keys": {"psp_rekey_delay": "5s"},
}
GRID = {"replications": 2, "grid": {"keys.psp_rotation_period": ["2min", "10min"],
                                    "keys.psp_rekey_spread": ["10s", "90s"]}}


def tiny_sweep(spec=GRID, **run):
    base = copy.deepcopy(BASE)
    base["run"].update(run)
    return sweep_from_dict(base, copy.deepcopy(spec), "tiny.toml")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dask_client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_grid_points_are_the_cartesian_product_resolved_in_seconds():
    sweep = tiny_sweep()
    assert sweep.fields == ("keys.psp_rotation_period", "keys.psp_rekey_spread")
    assert [p.resolved for p in sweep.points] == [
        {"keys.psp_rotation_period": 120.0, "keys.psp_rekey_spread": 10.0},
        {"keys.psp_rotation_period": 120.0, "keys.psp_rekey_spread": 90.0},
        {"keys.psp_rotation_period": 600.0, "keys.psp_rekey_spread": 10.0},
        {"keys.psp_rotation_period": 600.0, "keys.psp_rekey_spread": 90.0}]
    assert sweep.points[3].scenario.keys.psp_rotation_period == 600.0
    assert sweep.points[3].scenario.keys.psp_rekey_delay == 5.0  # the base's other values stay
    assert sweep.units() == {"keys.psp_rotation_period": "s", "keys.psp_rekey_spread": "s"}


@pytest.mark.parametrize("kind, n", [("latin-hypercube", 7), ("sobol", 8)])
def test_samples_are_stratified_within_bounds_and_repeatable(kind, n):
    spec = {"sample": {"kind": kind, "n": n, "seed": 4,
                       "bounds": {"keys.psp_rotation_period": ["2min", "30min"], "fleet.hosts_per_rack": [3, 9]}}}
    sweep = tiny_sweep(spec)
    periods = np.array([p.resolved["keys.psp_rotation_period"] for p in sweep.points])
    hosts = [p.resolved["fleet.hosts_per_rack"] for p in sweep.points]
    assert len(periods) == n and ((periods >= 120) & (periods <= 1800)).all()
    assert all(isinstance(h, int) and 3 <= h <= 9 for h in hosts)
    # one point in each of the n equal strata of the range (latin hypercube; also true of a
    # scrambled Sobol sample of a power of two points in each dimension)
    strata = np.floor((periods - 120) / (1680 / n)).astype(int)
    assert sorted(strata) == list(range(n))
    assert [p.resolved for p in tiny_sweep(spec).points] == [p.resolved for p in sweep.points]
    spec["sample"]["seed"] = 5
    assert [p.resolved for p in tiny_sweep(spec).points] != [p.resolved for p in sweep.points]


def test_serial_process_pool_and_dask_give_identical_folders(tmp_path, dask_client):
    sweep = tiny_sweep()
    serial = run_sweep(sweep, tmp_path / "serial")
    with process_pool(2) as pool:
        run_sweep(sweep, tmp_path / "pool", executor=pool)
    run_sweep(sweep, tmp_path / "dask", executor=dask_client)
    reference = folder_bytes(tmp_path / "serial")
    assert len([k for k in reference if k.startswith("runs/")]) == 4 * 2 * 2
    assert folder_bytes(tmp_path / "pool") == reference
    assert folder_bytes(tmp_path / "dask") == reference
    assert len(serial.runs) == 16 and serial.failures.empty
    # the point's fields are columns of every table, resolved
    ts = load_sweep(tmp_path / "serial", "timeseries")
    assert len(ts) == 16 * 10 and set(ts["keys.psp_rekey_spread"]) == {10.0, 90.0}
    assert list(serial.runs.columns[:3]) == ["point", "keys.psp_rotation_period", "keys.psp_rekey_spread"]


def test_replications_have_distinct_seeds_shared_by_points_and_variants(tmp_path):
    results = run_sweep(tiny_sweep(), tmp_path / "out")
    runs = results.runs
    per_replication = runs.groupby("replication")["seed"].unique()
    assert all(len(s) == 1 for s in per_replication)  # common random numbers across points and variants
    assert per_replication.map(lambda s: s[0]).nunique() == 2
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [s["seed"] for s in record["seeds"]] == [per_replication[r][0] for r in range(2)]
    # and the replications really draw different numbers
    psp = runs[(runs["variant"] == "psp") & (runs["point"] == 0)]
    assert psp["nic_entries_per_host_mean"].nunique() == 2


def test_each_run_equals_run_one_on_the_point_scenario(tmp_path):
    sweep = tiny_sweep()
    runs = run_sweep(sweep, tmp_path / "out").runs
    point = sweep.points[2]
    direct = run_one(point.scenario, resolve_parameters(point.scenario), 1, "psp").summary
    row = runs[(runs["point"] == 2) & (runs["replication"] == 1) & (runs["variant"] == "psp")].iloc[0]
    assert {k: row[k] for k in direct} == direct


def test_a_failing_point_is_recorded_and_the_others_complete(tmp_path):
    # a NIC that accepts no commands: the scenario is valid, the model refuses to run it
    spec = {"replications": 2, "grid": {"costs.overrides.nic.cmd_psp_gen_spi_s": [5e-6, 0]}}
    sweep = tiny_sweep(spec)
    with pytest.raises(ValueError, match="positive service time"):
        run_one(sweep.points[1].scenario, sweep.points[1].params, 0, "psp")
    with process_pool(2) as pool:
        results = run_sweep(sweep, tmp_path / "out", executor=pool)
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert failures[["point", "replication", "variant"]].values.tolist() == [
        [1, 0, "psp"], [1, 0, "ipsec-sw"], [1, 1, "psp"], [1, 1, "ipsec-sw"]]
    assert set(failures["error"]) == {"ValueError: every command type needs a positive service time"}
    assert len(results.runs) == 4 and set(results.runs["point"]) == {0}
    assert results.summary["point"].tolist() == [0, 0] and results.summary["replications"].tolist() == [2, 2]


def test_confidence_interval_matches_the_t_table_and_covers_95_percent():
    mean, std, n, low, high = confidence_interval(np.array([1.0, 2, 3, 4, 5]))
    # t(0.975, 4) = 2.776 (any t table); s = sqrt(2.5)
    assert (mean, n) == (3.0, 5) and std == pytest.approx(1.5811, abs=1e-4)
    assert high - mean == pytest.approx(2.776 * 1.5811 / np.sqrt(5), abs=2e-3)
    assert confidence_interval(np.array([7.0]))[1:] == pytest.approx([np.nan, 1, np.nan, np.nan], nan_ok=True)
    # coverage: 4000 groups of 5 normal draws; the interval holds the true mean ~95% of the time
    rng = np.random.default_rng(1)
    draws = rng.normal(10.0, 3.0, size=(4000, 5))
    frame = pd.DataFrame({"point": np.repeat(np.arange(4000), 5), "variant": "psp", "x": draws.ravel()})
    table = summarize(frame, ["point", "variant"])
    covered = ((table["x_ci_low"] <= 10.0) & (10.0 <= table["x_ci_high"])).mean()
    assert 0.935 <= covered <= 0.965  # binomial sd 0.0034
    assert (table["x_n"] == 5).all() and table["x_mean"].to_numpy() == pytest.approx(draws.mean(axis=1))


def test_summary_has_every_numeric_metric(tmp_path):
    results = run_sweep(tiny_sweep(), tmp_path / "out")
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet")
    metrics = [c for c in results.runs.columns if c not in ("point", "scenario", "variant", "replication", "seed",
                                                            "spawn_key", *tiny_sweep().fields)]
    assert metrics and all(f"{m}_{s}" in summary.columns for m in metrics
                           for s in ("mean", "std", "n", "ci_low", "ci_high"))
    assert len(summary) == 4 * 2 and (summary["replications"] == 2).all()
    group = results.runs[(results.runs["point"] == 1) & (results.runs["variant"] == "psp")]["cores_mean"]
    row = summary[(summary["point"] == 1) & (summary["variant"] == "psp")].iloc[0]
    assert row["cores_mean_mean"] == pytest.approx(group.mean()) and row["cores_mean_std"] == pytest.approx(group.std())


def test_sweep_file_with_base_merges_its_tables(tmp_path):
    (tmp_path / "base.toml").write_text('[run]\nname = "b"\nduration = "20min"\nwindow = "2min"\n'
                                        '[fleet]\nracks = 2\nhosts_per_rack = 3\n'
                                        '[workload]\npeers_per_host = 2\nconnections_per_host = { mean = 10 }\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.toml").write_text('[sweep]\nbase = "../base.toml"\nreplications = 3\n'
                                             '[sweep.grid]\n"fleet.racks" = [2, 3]\n'
                                             '[run]\nvariants = ["psp"]\n')
    sweep = read_sweep(tmp_path / "sub" / "s.toml")
    assert sweep.name == "b" and sweep.variants == ("psp",) and sweep.replications == 3
    assert [p.scenario.fleet.hosts for p in sweep.points] == [6, 9]


def test_resume_refuses_a_different_sweep(tmp_path):
    run_sweep(tiny_sweep(), tmp_path / "out")
    with pytest.raises(ConfigError, match="not empty; add --resume"):
        run_sweep(tiny_sweep(), tmp_path / "out")
    with pytest.raises(ConfigError, match="holds a different sweep"):
        run_sweep(tiny_sweep(seed=6), tmp_path / "out", resume=True)
    before = folder_bytes(tmp_path / "out")
    run_sweep(tiny_sweep(), tmp_path / "out", resume=True)  # nothing left to run: same folder
    assert folder_bytes(tmp_path / "out") == before


def test_scenario_errors_still_come_from_the_scenario():
    with pytest.raises(ConfigError, match=r"point 1 \(workload.peers_per_host = 7\): workload.peers_per_host "
                                          r"must be below the 6 hosts"):
        tiny_sweep({"grid": {"workload.peers_per_host": [2, 7]}})
    scenario_from_dict(BASE)  # the base itself is fine
