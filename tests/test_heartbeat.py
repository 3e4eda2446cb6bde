"""A long run is not silent: ``run_one(..., heartbeat_s)`` prints how far it has got."""

import re

import numpy as np

from pspsim.study.runner import Heartbeat, resolve_parameters, run_one
from tests.sim_helpers import scenario


def test_a_run_says_how_far_it_has_got_and_its_tables_do_not_change(capsys):
    sc = scenario(run={"duration": "10min", "variants": ["psp"]})
    params = resolve_parameters(sc)
    quiet = run_one(sc, params, 0, "psp")
    assert capsys.readouterr().err == ""
    loud = run_one(sc, params, 0, "psp", heartbeat_s=0.0)  # a line after every window but the last
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 9
    simulated = [float(re.search(r": ([\d.]+) min of 10 min simulated", line).group(1)) for line in lines]
    assert simulated == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert all(line.startswith("  psp (replication 0): ") for line in lines)
    assert quiet.timeseries.equals(loud.timeseries)
    assert {k: v for k, v in quiet.summary.items() if k != "wall_time_s"} == {
        k: v for k, v in loud.summary.items() if k != "wall_time_s"}


def test_the_heartbeat_waits_its_interval(capsys, monkeypatch):
    clock = iter(np.arange(100.0, 200.0, 10.0))  # each call 10 s later
    monkeypatch.setattr("pspsim.study.runner.time.time", lambda: float(next(clock)))
    beat = Heartbeat("psp (replication 0)", 86400.0, 25.0, started=95.0)
    for hour in range(1, 9):
        beat(3600.0 * hour)
    err = capsys.readouterr().err.splitlines()
    assert err == ["  psp (replication 0): 3 h of 1 day simulated, 25 s",  # 120 - 95
                   "  psp (replication 0): 6 h of 1 day simulated, 55 s"]  # 150 - 95
