"""pspsim plan: its boundaries agree with direct runs at their neighbours, with the
closed-form rotation bound and with the linear table-size prediction; its files
parse; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pspsim.cli.main import main
from pspsim.scenario import load_scenario, scenario_from_dict
from pspsim.study.runner import run_scenario

DELAY, SPREAD = 20.0, 40.0

SCENARIO = f"""
[run]
name = "plan-test"
seed = 5
duration = "20min"
window = "30s"
variants = ["psp", "ipsec-packet-offload", "ktls-offload", "ipsec-sw"]

[fleet]
racks = 2
hosts_per_rack = 4

[workload]
connections_per_host = {{ kind = "fixed", mean = 60 }}
peers_per_host = 4
connection_lifetime = "20min"

[keys]
psp_rotation_period = "10min"
psp_rekey_delay = "{DELAY:g}s"
psp_rekey_spread = "{SPREAD:g}s"

[costs.overrides]
"nic.psp_tx_key_capacity" = 400
"""


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plan")
    scenario = folder / "s.toml"
    scenario.write_text(SCENARIO)
    assert main(["plan", str(scenario), "-o", str(folder / "out"), "--replications", "2", "-j", "1", "-q"]) == 0
    return folder


def _answers(plan_dir: Path) -> dict:
    return json.loads((plan_dir / "out" / "plan.json").read_text())


def test_plan_files_exist_and_parse(plan_dir: Path) -> None:
    answers = _answers(plan_dir)
    assert {"variants", "psp_min_safe_rotation_s", "min_command_rate_per_s"} <= set(answers)
    for variant in ("psp", "ipsec-packet-offload", "ktls-offload", "ipsec-sw"):
        entry = answers["variants"][variant]
        assert {"cores_per_host", "cores_saving_vs_current", "nic_headroom"} <= set(entry)
        low, mean, high = (entry["cores_per_host"][k] for k in ("ci_low", "mean", "ci_high"))
        assert mean > 0 and low <= mean <= high
    assert answers["variants"]["ipsec-sw"]["nic_headroom"] is None  # no NIC table
    # the current variant saves nothing against itself
    assert answers["variants"]["ipsec-packet-offload"]["cores_saving_vs_current"]["per_host"]["mean"] == 0
    # software ESP costs more cores than packet offload: a negative saving (paired, so its share is tight)
    assert answers["variants"]["ipsec-sw"]["cores_saving_vs_current"]["fraction"]["ci_high"] < -0.5
    text = (plan_dir / "out" / "plan.md").read_text()
    assert "## 3. How often can PSP device keys rotate" in text and "Assumptions. Parameters:" in text
    assert (plan_dir / "out" / "plan.png").read_bytes()[:4] == b"\x89PNG"
    runs = (plan_dir / "out" / "plan_runs.csv").read_text().splitlines()
    assert len(runs) - 1 == sum(a["runs_taken"] for a in (answers["rotation"], answers["command_rate"])) + sum(
        o.get("runs_taken", 0) for o in answers["table_overflow"].values()) + 2 * 4 + 2 * 3  # + base + storms


def _direct(plan_dir: Path, **keys: float) -> list[dict]:
    """Direct runs (the runner, not the sweep machinery) of the test scenario with ``keys`` changed."""
    data = load_scenario(plan_dir / "s.toml").model_dump(mode="json")
    data["keys"] |= keys
    data["run"] |= {"variants": ["psp"], "replications": 2}
    return run_scenario(scenario_from_dict(data)).summary.to_dict("records")


def test_rotation_boundary_agrees_with_direct_runs_and_closed_form(plan_dir: Path) -> None:
    rot = _answers(plan_dir)["rotation"]
    assert rot["found"] and rot["unsafe_below_s"] is not None
    below = _direct(plan_dir, psp_rotation_period=rot["unsafe_below_s"])
    above = _direct(plan_dir, psp_rotation_period=rot["min_safe_s"])
    assert any(r["psp_stale_events"] > 0 or r["connections_lost"] > 0 for r in below)
    assert all(r["psp_stale_events"] == 0 and r["connections_lost"] == 0 for r in above)
    # closed form: a reconnect ends up to delay + spread after the rotation; the next rotation must come later
    assert rot["min_safe_s"] >= DELAY + SPREAD
    assert rot["unsafe_below_s"] <= DELAY + SPREAD + 30  # within one window of the bound
    assert rot["resolution_s"] == rot["min_safe_s"] - rot["unsafe_below_s"]


def test_command_rate_boundary_brackets_the_target(plan_dir: Path) -> None:
    rate = _answers(plan_dir)["command_rate"]
    assert rate["found"] and rate["fails_at_factor"] > rate["factor"]
    by_factor = {t["factor"]: t for t in rate["trials"]}
    assert by_factor[rate["factor"]]["ok"] and not by_factor[rate["fails_at_factor"]]["ok"]
    # the slowest PSP command alone, at the failing factor, may not exceed the target by more than the step
    assert 40.5e-6 * rate["factor"] * 1e6 < rate["target_p99_us"]
    assert math.isclose(_answers(plan_dir)["min_command_rate_per_s"], 1 / (40.5e-6 * rate["factor"]), rel_tol=1e-6)


def test_table_overflow_bracket_holds_and_matches_linear_prediction(plan_dir: Path) -> None:
    psp = _answers(plan_dir)["table_overflow"]["psp"]
    assert psp["simulated"] and psp["fits_at"] < psp["overflow_at"]
    # the linear prediction from the base run's peak entries lies near the simulated bracket
    assert 0.7 * psp["fits_at"] <= psp["predicted"] <= 1.3 * psp["overflow_at"]
    data = load_scenario(plan_dir / "s.toml").model_dump(mode="json")
    data["run"] |= {"variants": ["psp"], "replications": 2}
    outcome = {}
    for value in (psp["fits_at"], psp["overflow_at"]):
        data["workload"]["connections_per_host"] = {"kind": "fixed", "mean": value}
        rows = run_scenario(scenario_from_dict(data)).summary
        outcome[value] = bool(((rows["offload_fallbacks"] > 0) | (rows["hosts_over_nic_capacity_peak"] > 0)).any())
    assert outcome == {psp["fits_at"]: False, psp["overflow_at"]: True}


@pytest.mark.parametrize("args, message", [
    (["missing.toml"], "missing.toml"),
    (["{scenario}", "--current", "quic"], "--current"),
    (["{scenario}", "--setup-p99", "-3"], "--setup-p99"),
    (["{bad}"], "fleet.racks"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, capsys, args, message) -> None:
    scenario, bad = tmp_path / "s.toml", tmp_path / "bad.toml"
    scenario.write_text(SCENARIO)
    bad.write_text("[fleet]\nracks = 0\n")
    out = tmp_path / "out"
    argv = ["plan", *(a.format(scenario=scenario, bad=bad) for a in args), "-o", str(out), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pspsim: error:") and message in err
    assert not out.exists()


def test_dask_local_cluster_gives_the_same_plan(plan_dir: Path, tmp_path: Path) -> None:
    """The searches go through the sweep executors: a real Dask LocalCluster (2 worker processes)
    gives byte-identical plan.json and plan_runs.csv to the in-process run of the fixture."""
    out = tmp_path / "dask"
    argv = ["plan", str(plan_dir / "s.toml"), "-o", str(out), "--replications", "2", "--dask", "local", "-j", "2", "-q"]
    assert main(argv) == 0
    for name in ("plan.json", "plan_runs.csv"):
        assert (out / name).read_bytes() == (plan_dir / "out" / name).read_bytes()
