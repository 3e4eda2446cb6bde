"""`pspsim run`, the runner API, scenario validation and determinism."""

import json

import pandas as pd
import pytest

from pspsim.cli.main import main
from pspsim.scenario import load_scenario, scenario_from_dict
from pspsim.study.runner import run_scenario, write_results
from pspsim.wire.errors import ConfigError

SMALL = """
[run]
name = "small"
seed = {seed}
duration = "20min"
window = "2min"
variants = ["psp", "ipsec-sw", "ktls-offload", "plaintext"]
[fleet]
racks = 2
hosts_per_rack = 3
[workload]
connections_per_host = {{ kind = "exponential", mean = 40 }}
peers_per_host = 2
connection_lifetime = "5min"
[keys]
psp_rotation_period = "5min"
"""


def _write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_writes_tables_manifest_and_figure(tmp_path, capsys):
    path = _write(tmp_path, SMALL.format(seed=1))
    out = tmp_path / "out"
    assert main(["run", str(path), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.png", "manifest.json", "nic_counters.parquet",
                                                     "summary.parquet",
                                                     "timeseries.parquet"]
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(summary["variant"]) == ["psp", "ipsec-sw", "ktls-offload", "plaintext"]
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert len(ts) == 4 * 10 and {"scenario", "variant", "replication", "seed"} <= set(ts.columns)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["scenario"]["run"]["name"] == "small"
    assert manifest["parameters"]["values"]["nic.cmd_ktls_context_create_s"] == 4.95e-6
    assert "wall_time_s" in manifest and "numpy" in manifest["versions"]
    assert "cores_per_100gbps" in capsys.readouterr().out


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    outs = []
    for i, seed in enumerate((4, 4, 5)):
        path = _write(tmp_path, SMALL.format(seed=seed), f"s{i}.toml")
        out = tmp_path / f"o{i}"
        assert main(["run", "-q", "--no-figure", str(path), "-o", str(out)]) == 0
        outs.append(out)
    for name in ("timeseries.parquet", "summary.parquet"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
        assert (outs[0] / name).read_bytes() != (outs[2] / name).read_bytes()


@pytest.mark.parametrize(
    "change, message",
    [
        (("racks = 2", "racks = 0"), "fleet.racks: Input should be greater than 0"),
        (("racks = 2", "rakcs = 2"), "fleet.rakcs: unknown key"),
        (('duration = "20min"', 'duration = "soon"'), "run.duration: 'soon' is not a duration"),
        (('"plaintext"]', '"plaintext", "quic"]'), "run.variants.4"),
        (("peers_per_host = 2", "peers_per_host = 9"), "peers_per_host must be below the 6 hosts"),
        (("seed = 1", "seed = 1\nseed = 2"), "not valid TOML"),
    ],
)
def test_bad_scenarios_give_one_line_exit_2_and_no_output(tmp_path, capsys, change, message):
    path = _write(tmp_path, SMALL.format(seed=1).replace(*change))
    out = tmp_path / "never"
    assert main(["run", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pspsim: error: {path}") and message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_unknown_cost_parameter_override_is_refused(tmp_path, capsys):
    path = _write(tmp_path, SMALL.format(seed=1) + '[costs.overrides]\n"nic.warp_drive" = 1\n')
    assert main(["run", str(path), "-o", str(tmp_path / "o")]) == 2
    assert "unknown cost parameter 'nic.warp_drive'" in capsys.readouterr().err


def test_python_api_returns_dataframes_and_rewrites_atomically(tmp_path):
    sc = scenario_from_dict({"run": {"duration": "10min", "variants": ["psp", "plaintext"], "replications": 2},
                             "fleet": {"racks": 1, "hosts_per_rack": 4},
                             "workload": {"peers_per_host": 2}})
    results = run_scenario(sc)
    assert set(results.summary["replication"]) == {0, 1}
    assert results.timeseries.groupby(["variant", "replication"]).size().tolist() == [10, 10, 10, 10]
    out = write_results(results, tmp_path / "r", figure=False)
    write_results(results, out, figure=False)  # replacing an existing folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_shipped_experiments_are_valid():
    from pathlib import Path

    for path in sorted(Path("experiments").glob("*.toml")):
        load_scenario(path)


def test_missing_scenario_file():
    with pytest.raises(ConfigError, match="no such scenario file"):
        load_scenario("/nonexistent.toml")


def test_params_show(capsys):
    assert main(["params", "show"]) == 0
    out = capsys.readouterr().out
    assert "cx7-x86-2026" in out and "nic.ipsec_sa_cache_entries" in out and "fastSwan" in out
    assert main(["params", "show", "--kind", "assumed", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "name,value,unit,kind,source" and all(",assumed," in line for line in lines[1:])
    assert main(["params", "show", "no-such-set"]) == 2
    assert "no parameter set 'no-such-set'" in capsys.readouterr().err


def test_output_folder_is_only_replaced_when_it_holds_results(tmp_path, capsys):
    path = _write(tmp_path, SMALL.format(seed=1))
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    assert main(["run", "-q", "--no-figure", str(path), "-o", str(precious)]) == 2
    assert "not pspsim results" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "do not delete"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["run", "-q", str(path), "-o", str(a_file)]) == 2
    out = tmp_path / "out"
    assert main(["run", "-q", "--no-figure", str(path), "-o", str(out)]) == 0
    assert main(["run", "-q", "--no-figure", str(path), "-o", str(out)]) == 0  # a results folder: replaced


def test_executor_gets_the_slowest_runs_first_and_the_tables_keep_their_order():
    from pspsim.study.executors import SerialExecutor

    class Recording(SerialExecutor):
        def __init__(self):
            self.order = []

        def submit(self, fn, *args, **kwargs):
            self.order.append(args[-2:])
            return super().submit(fn, *args, **kwargs)

    scenario = scenario_from_dict({**_small_dict(), "run": {**_small_dict()["run"], "replications": 2}})
    executor = Recording()
    pooled = run_scenario(scenario, executor=executor)
    # kTLS offload (every NIC's cache spills: Che each window) first, then PSP, ...; replications in order
    assert executor.order == [(0, "ktls-offload"), (1, "ktls-offload"), (0, "psp"), (1, "psp"),
                              (0, "ipsec-sw"), (1, "ipsec-sw"), (0, "plaintext"), (1, "plaintext")]
    serial = run_scenario(scenario)
    pd.testing.assert_frame_equal(pooled.summary, serial.summary)
    pd.testing.assert_frame_equal(pooled.timeseries, serial.timeseries)
    assert list(serial.summary["variant"]) == ["psp", "ipsec-sw", "ktls-offload", "plaintext"] * 2


def _small_dict():
    import tomllib

    return tomllib.loads(SMALL.format(seed=3))
